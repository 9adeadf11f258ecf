//! Node validation: podCIDRs are valid CIDRs, at most one per family, fixed once set, inside
//! the cluster CIDRs and disjoint from every other Node's; the node-identity annotations the
//! fabric programs from (`sarasa.io/public-ip`, `sarasa.io/vtep-mac`) are a unicast address of
//! the node and a unicast MAC. A forged or mistaken Node is refused here, before any agent
//! turns it into routes.

use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_model::{special_address, MacAddr};
use serde_json::{json, Value};

use crate::error::{quote, FieldError};

/// The node's underlay address, as its agent publishes it.
pub const ANNOTATION_PUBLIC_IP: &str = "sarasa.io/public-ip";
/// The MAC of the node's VXLAN device, as its agent publishes it.
pub const ANNOTATION_VTEP_MAC: &str = "sarasa.io/vtep-mac";

fn cidrs(node: &Value) -> Vec<String> {
    let mut out: Vec<String> = crate::meta::path(node, "spec.podCIDRs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if out.is_empty() {
        if let Some(c) = crate::meta::path_str(node, "spec.podCIDR") {
            if !c.is_empty() {
                out.push(c.to_string());
            }
        }
    }
    out
}

/// Keeps `podCIDR` and `podCIDRs` consistent (podCIDR = podCIDRs[0]).
pub fn defaults(node: &mut Value) {
    let c = cidrs(node);
    if c.is_empty() {
        return;
    }
    if let Some(spec) = node.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("podCIDR".into(), json!(c[0]));
        spec.insert("podCIDRs".into(), json!(c));
    }
}

pub fn validate(node: &Value, errs: &mut Vec<FieldError>) {
    identity_annotations(node, errs);
    let c = cidrs(node);
    if c.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.podCIDRs",
            format!("{c:?}"),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    let mut fams = Vec::new();
    for (i, s) in c.iter().enumerate() {
        match s.parse::<IpNet>() {
            Ok(n) => {
                let v6 = matches!(n, IpNet::V6(_));
                if fams.contains(&v6) {
                    errs.push(FieldError::invalid(
                        format!("spec.podCIDRs[{i}]"),
                        quote(s),
                        "may specify no more than one CIDR for each IP family",
                    ));
                }
                fams.push(v6);
            }
            Err(_) => errs.push(FieldError::invalid(
                format!("spec.podCIDRs[{i}]"),
                quote(s),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
        }
    }
}

pub fn validate_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    let o = cidrs(old);
    if !o.is_empty() && cidrs(new) != o {
        errs.push(FieldError::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
}

fn annotation<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

/// The addresses in `status.addresses` (of any type).
fn status_addresses(node: &Value) -> Vec<IpAddr> {
    crate::meta::path(node, "status.addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|a| a.get("address")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `sarasa.io/public-ip`: a unicast address that is one of the node's `status.addresses`;
/// `sarasa.io/vtep-mac`: a unicast MAC (not all-zero, not multicast or broadcast).
fn identity_annotations(node: &Value, errs: &mut Vec<FieldError>) {
    if let Some(v) = annotation(node, ANNOTATION_PUBLIC_IP) {
        let field = format!("metadata.annotations[{ANNOTATION_PUBLIC_IP}]");
        match v.parse::<IpAddr>() {
            Err(_) => errs.push(FieldError::invalid(
                field,
                quote(v),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )),
            Ok(ip) => {
                if let Some(kind) = special_address(ip) {
                    errs.push(FieldError::invalid(
                        field,
                        quote(v),
                        format!("must be a unicast address, not {kind}"),
                    ));
                } else if !status_addresses(node).contains(&ip) {
                    errs.push(FieldError::invalid(
                        field,
                        quote(v),
                        "must be one of the node's status.addresses",
                    ));
                }
            }
        }
    }
    if let Some(v) = annotation(node, ANNOTATION_VTEP_MAC) {
        let field = format!("metadata.annotations[{ANNOTATION_VTEP_MAC}]");
        match v.parse::<MacAddr>() {
            Err(_) => errs.push(FieldError::invalid(
                field,
                quote(v),
                "must be a MAC address of six hex octets separated by ':'",
            )),
            Ok(m) if !m.is_unicast() => errs.push(FieldError::invalid(
                field,
                quote(v),
                "must be a unicast MAC address (not all-zero, multicast or broadcast)",
            )),
            Ok(_) => {}
        }
    }
}

fn parsed(node: &Value) -> Vec<IpNet> {
    cidrs(node)
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .map(|c| c.trunc())
        .collect()
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// When the podCIDRs are set (on create, or from "" to a value): each lies in the cluster CIDR
/// of its family and overlaps no other Node's, as kube-controller-manager's `--cluster-cidr`
/// allocator guarantees for the CIDRs it hands out.
pub fn validate_cluster<'a>(
    node: &Value,
    old: Option<&Value>,
    others: impl Iterator<Item = &'a Value>,
    cluster_cidrs: &[IpNet],
    errs: &mut Vec<FieldError>,
) {
    let mine = cidrs(node);
    if mine.is_empty() || old.is_some_and(|o| cidrs(o) == mine) {
        return;
    }
    let name = crate::meta::name(node);
    let others: Vec<(String, Vec<IpNet>)> = others
        .filter(|o| crate::meta::name(o) != name)
        .map(|o| (crate::meta::name(o).to_string(), parsed(o)))
        .collect();
    for (i, s) in mine.iter().enumerate() {
        let Ok(net) = s.parse::<IpNet>() else {
            continue; // reported by `validate`
        };
        let net = net.trunc();
        let family: Vec<&IpNet> = cluster_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == net.addr().is_ipv4())
            .collect();
        if !family.iter().any(|c| c.contains(&net)) {
            let within = match family.as_slice() {
                [] => "no cluster CIDR of its family is configured".to_string(),
                f => format!(
                    "must lie within the cluster CIDR {}",
                    f.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            errs.push(FieldError::invalid(
                format!("spec.podCIDRs[{i}]"),
                quote(s),
                within,
            ));
            continue;
        }
        if let Some((other, theirs)) = others
            .iter()
            .find_map(|(n, cs)| cs.iter().find(|c| overlaps(c, &net)).map(|c| (n, c)))
        {
            errs.push(FieldError::invalid(
                format!("spec.podCIDRs[{i}]"),
                quote(s),
                format!("overlaps podCIDR {theirs} of node {other}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.field.clone()).collect()
    }

    fn node(name: &str, cidr: &str, ann: Value) -> Value {
        json!({"metadata": {"name": name, "annotations": ann},
               "spec": {"podCIDRs": [cidr]},
               "status": {"addresses": [{"type": "InternalIP", "address": "192.168.33.12"}]}})
    }

    #[test]
    fn identity_annotations_must_be_unicast_and_the_nodes() {
        let ok = node(
            "n2",
            "10.244.2.0/24",
            json!({ANNOTATION_PUBLIC_IP: "192.168.33.12", ANNOTATION_VTEP_MAC: "02:00:00:00:00:02"}),
        );
        let mut errs = Vec::new();
        validate(&ok, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        for (ann, field) in [
            (
                json!({ANNOTATION_VTEP_MAC: "00:00:00:00:00:00"}),
                "metadata.annotations[sarasa.io/vtep-mac]",
            ),
            (
                json!({ANNOTATION_VTEP_MAC: "ff:ff:ff:ff:ff:ff"}),
                "metadata.annotations[sarasa.io/vtep-mac]",
            ),
            (
                json!({ANNOTATION_VTEP_MAC: "01:00:5e:00:00:01"}),
                "metadata.annotations[sarasa.io/vtep-mac]",
            ),
            (
                json!({ANNOTATION_VTEP_MAC: "nope"}),
                "metadata.annotations[sarasa.io/vtep-mac]",
            ),
            (
                json!({ANNOTATION_PUBLIC_IP: "192.168.33.1"}),
                "metadata.annotations[sarasa.io/public-ip]",
            ),
            (
                json!({ANNOTATION_PUBLIC_IP: "127.0.0.1"}),
                "metadata.annotations[sarasa.io/public-ip]",
            ),
            (
                json!({ANNOTATION_PUBLIC_IP: "x"}),
                "metadata.annotations[sarasa.io/public-ip]",
            ),
        ] {
            let mut errs = Vec::new();
            validate(&node("n2", "10.244.2.0/24", ann.clone()), &mut errs);
            assert_eq!(fields(&errs), [field], "{ann}");
        }
    }

    #[test]
    fn pod_cidrs_inside_the_cluster_and_disjoint() {
        let cluster: Vec<IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
        let n1 = node("n1", "10.244.1.0/24", json!({}));
        let check = |n: &Value, old: Option<&Value>| {
            let mut errs = Vec::new();
            validate_cluster(n, old, [&n1].into_iter(), &cluster, &mut errs);
            errs
        };
        assert!(check(&node("n2", "10.244.2.0/24", json!({})), None).is_empty());
        // n1 itself, unchanged, is not its own conflict.
        assert!(check(&n1, Some(&n1)).is_empty());
        for bad in [
            "10.244.1.0/24",
            "10.244.0.0/20",
            "10.244.1.128/25",
            "192.168.33.0/24",
            "0.0.0.0/0",
        ] {
            let errs = check(&node("n2", bad, json!({})), None);
            assert_eq!(fields(&errs), ["spec.podCIDRs[0]"], "{bad}");
        }
        let errs = check(&node("n2", "10.244.1.0/24", json!({})), None);
        assert!(errs[0].to_string().contains("node n1"), "{}", errs[0]);
    }
}
