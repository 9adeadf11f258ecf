//! Addresses a Service or an endpoint may not claim: the kernel's special addresses (loopback,
//! link-local, multicast, unspecified, broadcast) and the addresses the cluster itself lives on
//! (every Node's addresses and VXLAN address, the API server's). The fabric routes a Service's
//! externalIPs and LoadBalancer ingress to the nodes and every proxy DNATs them and its
//! endpoints, so such an address would redirect the cluster's own traffic: an externalIP of
//! 192.168.33.1 port 6443 takes the API server's address away from every pod.
//!
//! externalIPs can further be limited to an allow-list of CIDRs ([`Config::external_ip_cidrs`],
//! as Kubernetes' DenyServiceExternalIPs admission plugin and the externalip-webhook do).
//! Only addresses that are new in a write are checked, so an object stored before a rule
//! existed can still be updated.

use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_model::special_address;
use serde_json::Value;

use crate::config::Config;
use crate::error::{quote, FieldError};
use crate::meta;
use crate::resources::NODES;
use crate::store::Inner;
use crate::validate::node::ANNOTATION_PUBLIC_IP;

/// The addresses of the cluster's own machinery, each with whose it is.
#[derive(Debug, Default)]
pub struct Protected {
    addrs: Vec<(IpAddr, String)>,
}

impl Protected {
    /// The API server's addresses (advertised and listened on) and every Node's
    /// (`status.addresses`, `sarasa.io/public-ip`, the VXLAN address of each podCIDR).
    pub fn of(inner: &Inner, config: &Config) -> Self {
        let mut addrs = Vec::new();
        let api = config
            .advertise_address
            .iter()
            .chain(config.listen.iter())
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        for ip in api {
            addrs.push((ip, "the API server's".to_string()));
        }
        for node in inner.iter(NODES, None) {
            let whose = format!("node {}'s", meta::name(node));
            let status = meta::path(node, "status.addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.get("address")?.as_str()?.parse::<IpAddr>().ok());
            let public = node
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    ANNOTATION_PUBLIC_IP.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok());
            let fabric = meta::path(node, "spec.podCIDRs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str()?.parse::<IpNet>().ok())
                .map(|c| c.network());
            for ip in status.chain(public).chain(fabric) {
                addrs.push((ip, whose.clone()));
            }
        }
        Protected { addrs }
    }

    /// Why `ip` may not be claimed, or `None`.
    pub fn refuse(&self, ip: IpAddr) -> Option<String> {
        if let Some(kind) = special_address(ip) {
            return Some(format!("may not be a {kind} address"));
        }
        self.addrs
            .iter()
            .find(|(a, _)| *a == ip)
            .map(|(_, whose)| format!("may not be {whose} address"))
    }
}

/// Every string at `path` (an array of strings) with its index.
fn strings<'a>(v: &'a Value, path: &str) -> Vec<(usize, &'a str)> {
    meta::path(v, path)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, s.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}

fn had(old: Option<&Value>, path: &str, ip: &str) -> bool {
    old.is_some_and(|o| strings(o, path).iter().any(|(_, s)| *s == ip))
}

/// Whether a Service names addresses of its own (`spec.externalIPs`, `spec.loadBalancerIP`):
/// only then is [`Protected`] worth gathering.
pub fn claims_addresses(svc: &Value) -> bool {
    !strings(svc, "spec.externalIPs").is_empty()
        || meta::path_str(svc, "spec.loadBalancerIP").is_some_and(|s| !s.is_empty())
}

/// `spec.externalIPs` and `spec.loadBalancerIP`: no special or cluster address; externalIPs
/// inside the allow-list when one is configured.
pub fn service_spec(
    svc: &Value,
    old: Option<&Value>,
    protected: &Protected,
    config: &Config,
    errs: &mut Vec<FieldError>,
) {
    for (i, s) in strings(svc, "spec.externalIPs") {
        let Ok(ip) = s.parse::<IpAddr>() else {
            continue; // reported by service::validate
        };
        if had(old, "spec.externalIPs", s) {
            continue;
        }
        let field = format!("spec.externalIPs[{i}]");
        if let Some(why) = protected.refuse(ip) {
            errs.push(FieldError::invalid(field, quote(s), why));
        } else if let Some(allowed) = &config.external_ip_cidrs {
            if !allowed.iter().any(|c| c.contains(&ip)) {
                let list = if allowed.is_empty() {
                    "externalIPs are not allowed on this cluster".to_string()
                } else {
                    format!(
                        "must be within the allowed externalIP CIDRs {}",
                        allowed
                            .iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                errs.push(FieldError::forbidden(field, list));
            }
        }
    }
    if let Some(s) = meta::path_str(svc, "spec.loadBalancerIP") {
        let unchanged = old.and_then(|o| meta::path_str(o, "spec.loadBalancerIP")) == Some(s);
        if let (Ok(ip), false) = (s.parse::<IpAddr>(), unchanged) {
            if let Some(why) = protected.refuse(ip) {
                errs.push(FieldError::invalid("spec.loadBalancerIP", quote(s), why));
            }
        }
    }
}

/// A write of `status`: only the server's LoadBalancer controller (an internal write) may
/// change `status.loadBalancer`, and never to a special or cluster address.
pub fn load_balancer_status(
    svc: &Value,
    old: &Value,
    internal: bool,
    protected: &Protected,
    errs: &mut Vec<FieldError>,
) {
    let lb = |v: &Value| meta::path(v, "status.loadBalancer").cloned();
    let empty = |v: &Option<Value>| {
        v.as_ref()
            .is_none_or(|v| v.as_object().is_none_or(|o| o.is_empty()))
    };
    let (new_lb, old_lb) = (lb(svc), lb(old));
    if !internal && new_lb != old_lb && !(empty(&new_lb) && empty(&old_lb)) {
        errs.push(FieldError::forbidden(
            "status.loadBalancer",
            "may only be written by the LoadBalancer controller",
        ));
        return;
    }
    let ingress = meta::path(svc, "status.loadBalancer.ingress")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, e) in ingress.iter().enumerate() {
        let Some(s) = e.get("ip").and_then(Value::as_str) else {
            continue;
        };
        if let Ok(ip) = s.parse::<IpAddr>() {
            if let Some(why) = protected.refuse(ip) {
                errs.push(FieldError::invalid(
                    format!("status.loadBalancer.ingress[{i}].ip"),
                    quote(s),
                    why,
                ));
            }
        }
    }
}

/// The addresses a Pod's status newly claims (`status.podIP`, `status.podIPs[*].ip`), with
/// their field paths: none for a host-network pod (its addresses are its node's).
pub fn pod_status_claims(pod: &Value, old: &Value) -> Vec<(String, String)> {
    if meta::path(pod, "spec.hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Vec::new();
    }
    let ips = |p: &Value| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = meta::path_str(p, "status.podIP")
            .filter(|s| !s.is_empty())
            .map(|s| ("status.podIP".to_string(), s.to_string()))
            .into_iter()
            .collect();
        if let Some(list) = meta::path(p, "status.podIPs").and_then(Value::as_array) {
            for (i, e) in list.iter().enumerate() {
                if let Some(s) = e.get("ip").and_then(Value::as_str) {
                    out.push((format!("status.podIPs[{i}].ip"), s.to_string()));
                }
            }
        }
        out
    };
    let before: Vec<String> = ips(old).into_iter().map(|(_, ip)| ip).collect();
    ips(pod)
        .into_iter()
        .filter(|(_, ip)| !before.contains(ip))
        .collect()
}

/// A Pod's newly claimed addresses ([`pod_status_claims`]): no special or cluster address, so
/// a client allowed to write pods/status cannot feed a node's or the API server's address to
/// the EndpointSlice controller (and from there to every proxy).
pub fn pod_status(claims: &[(String, String)], protected: &Protected, errs: &mut Vec<FieldError>) {
    for (field, s) in claims {
        let Ok(ip) = s.parse::<IpAddr>() else {
            continue; // reported by the status validation
        };
        if let Some(why) = protected.refuse(ip) {
            errs.push(FieldError::invalid(field.clone(), quote(s), why));
        }
    }
}

/// `endpoints[*].addresses` of an EndpointSlice written by a user or another controller (the
/// server's own EndpointSlice controller derives them from pods): no special or cluster address.
pub fn endpoint_slice(
    es: &Value,
    old: Option<&Value>,
    protected: &Protected,
    errs: &mut Vec<FieldError>,
) {
    let old_addrs: Vec<String> = old
        .and_then(|o| o.get("endpoints"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|e| strings(e, "addresses"))
        .map(|(_, s)| s.to_string())
        .collect();
    let eps = es
        .get("endpoints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, e) in eps.iter().enumerate() {
        for (j, s) in strings(e, "addresses") {
            let Ok(ip) = s.parse::<IpAddr>() else {
                continue; // an FQDN, or reported by endpointslice::validate
            };
            if old_addrs.iter().any(|o| o == s) {
                continue;
            }
            if let Some(why) = protected.refuse(ip) {
                errs.push(FieldError::invalid(
                    format!("endpoints[{i}].addresses[{j}]"),
                    quote(s),
                    why,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn protected() -> Protected {
        Protected {
            addrs: vec![
                ("192.168.33.1".parse().unwrap(), "the API server's".into()),
                ("192.168.33.11".parse().unwrap(), "node n1's".into()),
            ],
        }
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.field.clone()).collect()
    }

    #[test]
    fn external_ips_refuse_special_cluster_and_unlisted_addresses() {
        let mut config = Config::new("/nonexistent");
        config.external_ip_cidrs = Some(vec!["192.0.2.0/24".parse().unwrap()]);
        let svc = json!({"spec": {"externalIPs": [
            "192.0.2.50", "192.168.33.1", "127.0.0.1", "169.254.169.254", "203.0.113.9", "192.168.33.11"
        ]}});
        let mut errs = Vec::new();
        service_spec(&svc, None, &protected(), &config, &mut errs);
        assert_eq!(
            fields(&errs),
            [
                "spec.externalIPs[1]",
                "spec.externalIPs[2]",
                "spec.externalIPs[3]",
                "spec.externalIPs[4]",
                "spec.externalIPs[5]"
            ]
        );
        assert!(
            errs[0].to_string().contains("the API server's address"),
            "{}",
            errs[0]
        );
        assert!(errs[1].to_string().contains("loopback"), "{}", errs[1]);
        assert!(errs[2].to_string().contains("link-local"), "{}", errs[2]);
        // No allow-list: any ordinary address.
        config.external_ip_cidrs = None;
        let mut errs = Vec::new();
        service_spec(
            &json!({"spec": {"externalIPs": ["203.0.113.9"]}}),
            None,
            &protected(),
            &config,
            &mut errs,
        );
        assert!(errs.is_empty());
        // An address already stored is not checked again.
        let mut errs = Vec::new();
        let old = json!({"spec": {"externalIPs": ["192.168.33.1"]}});
        service_spec(&old, Some(&old), &protected(), &config, &mut errs);
        assert!(errs.is_empty());
    }

    #[test]
    fn load_balancer_status_is_the_controllers() {
        let old = json!({"status": {"loadBalancer": {}}});
        let new = json!({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}});
        let mut errs = Vec::new();
        load_balancer_status(&new, &old, false, &protected(), &mut errs);
        assert_eq!(fields(&errs), ["status.loadBalancer"]);
        let mut errs = Vec::new();
        load_balancer_status(&new, &old, true, &protected(), &mut errs);
        assert!(errs.is_empty());
        let bad = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.168.33.1"}]}}});
        let mut errs = Vec::new();
        load_balancer_status(&bad, &old, true, &protected(), &mut errs);
        assert_eq!(fields(&errs), ["status.loadBalancer.ingress[0].ip"]);
        // Other status fields stay writable.
        let mut errs = Vec::new();
        load_balancer_status(
            &json!({"status": {"conditions": []}}),
            &old,
            false,
            &protected(),
            &mut errs,
        );
        assert!(errs.is_empty());
    }

    #[test]
    fn endpoint_addresses_refuse_special_and_cluster_addresses() {
        let es = json!({"endpoints": [
            {"addresses": ["10.244.1.5"]},
            {"addresses": ["192.168.33.1", "127.0.0.1"]},
            {"addresses": ["169.254.169.254"]}
        ]});
        let mut errs = Vec::new();
        endpoint_slice(&es, None, &protected(), &mut errs);
        assert_eq!(
            fields(&errs),
            [
                "endpoints[1].addresses[0]",
                "endpoints[1].addresses[1]",
                "endpoints[2].addresses[0]"
            ]
        );
    }
}
