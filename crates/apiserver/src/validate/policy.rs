//! NetworkPolicy defaulting and validation.

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::error::{quote, FieldError};
use crate::validate::meta::{iana_svc_name, label_selector, push_all};
use crate::validate::pod::PROTOCOLS;

const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// Defaults `policyTypes` (Ingress, plus Egress when the egress list is non-empty — an empty
/// `egress: []` does not imply Egress, exactly as kube-apiserver's defaulting) and port
/// protocols.
pub fn defaults(np: &mut Value) {
    let Some(spec) = np.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        let mut types = vec![json!("Ingress")];
        if spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|rules| !rules.is_empty())
        {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), json!(types));
    }
    for dir in ["ingress", "egress"] {
        if let Some(Value::Array(rules)) = spec.get_mut(dir) {
            for r in rules {
                if let Some(Value::Array(ports)) = r.get_mut("ports") {
                    for p in ports {
                        if let Some(p) = p.as_object_mut() {
                            p.entry("protocol").or_insert(json!("TCP"));
                        }
                    }
                }
            }
        }
    }
}

pub fn validate(np: &Value, errs: &mut Vec<FieldError>) {
    let spec = np.get("spec").cloned().unwrap_or(json!({}));
    match spec.get("podSelector") {
        Some(sel) => label_selector(sel, "spec.podSelector", errs),
        None => errs.push(FieldError::required("spec.podSelector", "")),
    }
    if let Some(types) = spec.get("policyTypes").and_then(Value::as_array) {
        if types.len() > 2 {
            errs.push(FieldError::invalid(
                "spec.policyTypes",
                format!("{types:?}"),
                "may not specify more than two policyTypes",
            ));
        }
        for (i, t) in types.iter().enumerate() {
            let t = t.as_str().unwrap_or("");
            if t != "Ingress" && t != "Egress" {
                errs.push(FieldError::not_supported(
                    format!("spec.policyTypes[{i}]"),
                    quote(t),
                    &["Egress", "Ingress"],
                ));
            }
        }
    }
    for (dir, peers_key) in [("ingress", "from"), ("egress", "to")] {
        let Some(rules) = spec.get(dir).and_then(Value::as_array) else {
            continue;
        };
        for (i, rule) in rules.iter().enumerate() {
            let rp = format!("spec.{dir}[{i}]");
            if let Some(ports) = rule.get("ports").and_then(Value::as_array) {
                for (j, p) in ports.iter().enumerate() {
                    port(p, &format!("{rp}.ports[{j}]"), errs);
                }
            }
            if let Some(peers) = rule.get(peers_key).and_then(Value::as_array) {
                for (j, peer_v) in peers.iter().enumerate() {
                    peer(peer_v, &format!("{rp}.{peers_key}[{j}]"), errs);
                }
            }
        }
    }
}

fn port(p: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
    if !PROTOCOLS.contains(&proto) {
        errs.push(FieldError::not_supported(
            format!("{path}.protocol"),
            quote(proto),
            PROTOCOLS,
        ));
    }
    let port = p.get("port");
    match port {
        Some(Value::Number(n)) => {
            let v = n.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&v) {
                errs.push(FieldError::invalid(
                    format!("{path}.port"),
                    v.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        Some(Value::String(name)) => {
            push_all(errs, &format!("{path}.port"), name, iana_svc_name(name))
        }
        _ => {}
    }
    if let Some(end) = p.get("endPort").and_then(Value::as_i64) {
        match port {
            None | Some(Value::Null) => errs.push(FieldError::required(
                format!("{path}.port"),
                "must specify `port` when `endPort` is specified",
            )),
            Some(Value::String(_)) => errs.push(FieldError::forbidden(
                format!("{path}.endPort"),
                "may not be specified when `port` is non-numeric",
            )),
            Some(v) => {
                let start = v.as_i64().unwrap_or(0);
                if end < start {
                    errs.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        end.to_string(),
                        "must be greater than or equal to `port`",
                    ));
                } else if end > 65535 {
                    errs.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        end.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
}

fn peer(p: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let pod = p.get("podSelector").filter(|v| !v.is_null());
    let ns = p.get("namespaceSelector").filter(|v| !v.is_null());
    let ip = p.get("ipBlock").filter(|v| !v.is_null());
    if let Some(s) = pod {
        label_selector(s, &format!("{path}.podSelector"), errs);
    }
    if let Some(s) = ns {
        label_selector(s, &format!("{path}.namespaceSelector"), errs);
    }
    match (pod.is_some() || ns.is_some(), ip) {
        (false, None) => errs.push(FieldError::required(path, "must specify a peer")),
        (true, Some(_)) => errs.push(FieldError::forbidden(
            path,
            "may not specify more than 1 peer type",
        )),
        (false, Some(block)) => ip_block(block, &format!("{path}.ipBlock"), errs),
        (true, None) => {}
    }
}

fn ip_block(b: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let cidr_s = b.get("cidr").and_then(Value::as_str).unwrap_or("");
    if cidr_s.is_empty() {
        errs.push(FieldError::required(format!("{path}.cidr"), ""));
        return;
    }
    let Ok(cidr) = cidr_s.parse::<IpNet>() else {
        errs.push(FieldError::invalid(
            format!("{path}.cidr"),
            quote(cidr_s),
            CIDR_MSG,
        ));
        return;
    };
    let Some(except) = b.get("except").and_then(Value::as_array) else {
        return;
    };
    for (i, e) in except.iter().enumerate() {
        let es = e.as_str().unwrap_or("");
        let field = format!("{path}.except[{i}]");
        match es.parse::<IpNet>() {
            Err(_) => errs.push(FieldError::invalid(field, quote(es), CIDR_MSG)),
            Ok(ex) => {
                let strict_subset = cidr.contains(&ex.network())
                    && ex.prefix_len() > cidr.prefix_len()
                    && matches!(
                        (cidr, ex),
                        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                    );
                if !strict_subset {
                    errs.push(FieldError::invalid(
                        field,
                        quote(es),
                        "must be a strict subset of `cidr`",
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(np: Value) -> Vec<String> {
        let mut np = np;
        defaults(&mut np);
        let mut errs = Vec::new();
        validate(&np, &mut errs);
        errs.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn ip_block_rules() {
        let f = fields(json!({"spec": {"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/33"}},
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24", "10.0.1.0/24", "10.0.0.0/16"]}},
            {},
            {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}
        ]}]}}));
        assert_eq!(
            f,
            vec![
                "spec.ingress[0].from[0].ipBlock.cidr",
                "spec.ingress[0].from[1].ipBlock.except[0]",
                "spec.ingress[0].from[1].ipBlock.except[2]",
                "spec.ingress[0].from[2]",
                "spec.ingress[0].from[3]"
            ]
        );
    }

    #[test]
    fn port_rules() {
        let f = fields(json!({"spec": {"podSelector": {}, "egress": [{"ports": [
            {"port": 80, "endPort": 79},
            {"port": "http", "endPort": 90},
            {"endPort": 90},
            {"port": 80, "protocol": "ICMP"}
        ]}]}}));
        assert_eq!(
            f,
            vec![
                "spec.egress[0].ports[0].endPort",
                "spec.egress[0].ports[1].endPort",
                "spec.egress[0].ports[2].port",
                "spec.egress[0].ports[3].protocol"
            ]
        );
    }

    #[test]
    fn default_policy_types() {
        let mut np = json!({"spec": {"podSelector": {}, "egress": [{}]}});
        defaults(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        // An empty egress list does not make the policy an egress policy.
        let mut np = json!({"spec": {"podSelector": {}, "egress": []}});
        defaults(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
        // Given policyTypes are kept.
        let mut np = json!({"spec": {"podSelector": {}, "policyTypes": ["Egress"]}});
        defaults(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Egress"]));
    }
}
