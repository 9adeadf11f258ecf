//! What the kubelet adds to and does with a container's environment before it starts it: the
//! `KUBERNETES_SERVICE_*` variables naming the API's `kubernetes` Service (how in-cluster
//! clients such as CoreDNS, or `sarasa dns`, find the API), and the `$(VAR)` expansion of
//! `command` and `args` against the container's environment (Kubernetes' expansion rules:
//! `$(VAR)` becomes VAR's value when VAR is defined and stays as written otherwise; `$$(VAR)`
//! escapes to a literal `$(VAR)`).

use std::net::Ipv4Addr;

use crate::spec::LabSpec;

/// Port of the `kubernetes` Service (the API server creates it: 443 → the API's own port).
pub const KUBERNETES_SERVICE_PORT: u16 = 443;

/// The `kubernetes` Service's ClusterIP: the first address of the service CIDR.
pub fn kubernetes_service_ip(spec: &LabSpec) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(spec.service_cidr.network()) + 1)
}

/// The service-link variables the kubelet puts in every container for the `kubernetes`
/// Service (the ones a client library reads, plus the docker-link form).
pub fn kubernetes_service_env(spec: &LabSpec) -> Vec<(String, String)> {
    let ip = kubernetes_service_ip(spec);
    let port = KUBERNETES_SERVICE_PORT;
    [
        ("KUBERNETES_SERVICE_HOST", ip.to_string()),
        ("KUBERNETES_SERVICE_PORT", port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", port.to_string()),
        ("KUBERNETES_PORT", format!("tcp://{ip}:{port}")),
        ("KUBERNETES_PORT_443_TCP", format!("tcp://{ip}:{port}")),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".to_string()),
        ("KUBERNETES_PORT_443_TCP_PORT", port.to_string()),
        ("KUBERNETES_PORT_443_TCP_ADDR", ip.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Expands `$(VAR)` references in `input` from `env` (the last definition of a name wins, as
/// later entries of a container's env override earlier ones).
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            // `$$` is an escaped `$`.
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    // An unclosed reference is kept as written.
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![
            ("HOST".into(), "10.96.0.1".into()),
            ("PORT".into(), "80".into()),
            ("PORT".into(), "443".into()),
        ]
    }

    #[test]
    fn references_expand_and_unknown_ones_stay() {
        assert_eq!(
            expand("--apiserver=http://$(HOST):$(PORT)", &env()),
            "--apiserver=http://10.96.0.1:443"
        );
        assert_eq!(expand("$(MISSING)/x", &env()), "$(MISSING)/x");
        assert_eq!(expand("no refs", &env()), "no refs");
    }

    #[test]
    fn escapes_and_odd_dollars_are_kept_literal() {
        assert_eq!(expand("$$(HOST)", &env()), "$(HOST)");
        assert_eq!(expand("cost $5 $", &env()), "cost $5 $");
        assert_eq!(expand("$(HOST", &env()), "$(HOST");
    }

    #[test]
    fn the_kubernetes_service_is_the_first_service_address() {
        let spec =
            LabSpec::new("envtest", 1, crate::Backend::Vxlan, crate::CniMode::Bridge).unwrap();
        let env = kubernetes_service_env(&spec);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
    }
}
