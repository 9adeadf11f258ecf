//! Validation of NetworkPolicies as the API server does it; every error names its field.

use super::{
    Direction, IpBlock, NetworkPolicy, Peer, PolicyError, PolicyPort, PolicyRule, PortRef,
};

pub(crate) fn validate_policy(p: &mut NetworkPolicy) -> Result<(), PolicyError> {
    if p.namespace.is_empty() {
        return Err(PolicyError::new("metadata.namespace", "must not be empty"));
    }
    if p.name.is_empty() {
        return Err(PolicyError::new("metadata.name", "must not be empty"));
    }
    p.pod_selector = std::mem::take(&mut p.pod_selector).normalized();
    p.pod_selector.validate("spec.podSelector")?;
    let mut seen = Vec::new();
    for (i, d) in p.policy_types.iter().enumerate() {
        if seen.contains(d) {
            return Err(PolicyError::new(
                format!("spec.policyTypes[{i}]"),
                format!("duplicate value {:?}", d.as_str()),
            ));
        }
        seen.push(*d);
    }
    p.policy_types.sort();
    for (dir, rules) in [
        (Direction::Ingress, &mut p.ingress),
        (Direction::Egress, &mut p.egress),
    ] {
        let (list, peers) = match dir {
            Direction::Ingress => ("spec.ingress", "from"),
            Direction::Egress => ("spec.egress", "to"),
        };
        for (i, rule) in rules.iter_mut().enumerate() {
            validate_rule(rule, &format!("{list}[{i}]"), peers)?;
        }
    }
    Ok(())
}

fn validate_rule(rule: &mut PolicyRule, field: &str, peers: &str) -> Result<(), PolicyError> {
    for (j, peer) in rule.peers.iter_mut().enumerate() {
        let f = format!("{field}.{peers}[{j}]");
        match peer {
            Peer::Pods {
                namespace_selector: None,
                pod_selector: None,
            } => {
                return Err(PolicyError::new(
                    f,
                    "must specify a podSelector, a namespaceSelector or an ipBlock",
                ))
            }
            Peer::Pods {
                namespace_selector,
                pod_selector,
            } => {
                if let Some(s) = namespace_selector.take() {
                    let s = s.normalized();
                    s.validate(&format!("{f}.namespaceSelector"))?;
                    *namespace_selector = Some(s);
                }
                if let Some(s) = pod_selector.take() {
                    let s = s.normalized();
                    s.validate(&format!("{f}.podSelector"))?;
                    *pod_selector = Some(s);
                }
            }
            Peer::IpBlock(b) => validate_ip_block(b, &format!("{f}.ipBlock"))?,
        }
    }
    for (j, port) in rule.ports.iter().enumerate() {
        validate_port(port, &format!("{field}.ports[{j}]"))?;
    }
    Ok(())
}

fn validate_ip_block(b: &mut IpBlock, field: &str) -> Result<(), PolicyError> {
    b.cidr = b.cidr.trunc();
    for (k, e) in b.except.iter_mut().enumerate() {
        *e = e.trunc();
        let ef = format!("{field}.except[{k}]");
        if e.addr().is_ipv4() != b.cidr.addr().is_ipv4() {
            return Err(PolicyError::new(
                ef,
                format!("{e} is not of the same IP family as cidr {}", b.cidr),
            ));
        }
        if !b.cidr.contains(&*e) || e.prefix_len() <= b.cidr.prefix_len() {
            return Err(PolicyError::new(
                ef,
                format!("{e} must be a strict subset of cidr {}", b.cidr),
            ));
        }
    }
    b.except.sort();
    b.except.dedup();
    Ok(())
}

fn validate_port(p: &PolicyPort, field: &str) -> Result<(), PolicyError> {
    match (&p.port, p.end_port) {
        (Some(PortRef::Number(0)), _) => Err(PolicyError::new(
            format!("{field}.port"),
            "must be between 1 and 65535",
        )),
        (Some(PortRef::Name(n)), end) => {
            validate_port_name(n, &format!("{field}.port"))?;
            if end.is_some() {
                return Err(PolicyError::new(
                    format!("{field}.endPort"),
                    "may not be specified when port is a named port",
                ));
            }
            Ok(())
        }
        (None, Some(_)) => Err(PolicyError::new(
            format!("{field}.endPort"),
            "may not be specified without port",
        )),
        (Some(PortRef::Number(start)), Some(end)) if end < *start => Err(PolicyError::new(
            format!("{field}.endPort"),
            format!("{end} must be greater than or equal to port {start}"),
        )),
        _ => Ok(()),
    }
}

/// An IANA service name: 1-15 characters of `[a-z0-9-]`, at least one letter, no leading,
/// trailing or double hyphen.
pub fn validate_port_name(n: &str, field: &str) -> Result<(), PolicyError> {
    let ok = !n.is_empty()
        && n.len() <= 15
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && n.bytes().any(|b| b.is_ascii_lowercase())
        && !n.starts_with('-')
        && !n.ends_with('-')
        && !n.contains("--");
    if ok {
        Ok(())
    } else {
        Err(PolicyError::new(
            field,
            format!(
                "invalid port name {n:?}: must be 1-15 characters of [a-z0-9-] with at least \
                 one letter and no leading, trailing or double '-'"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{LabelSelector, Operator};
    use crate::Protocol;

    fn policy(ingress: Vec<PolicyRule>) -> NetworkPolicy {
        NetworkPolicy {
            namespace: "x".into(),
            name: "p".into(),
            pod_selector: LabelSelector::everything(),
            policy_types: vec![Direction::Ingress],
            ingress,
            egress: vec![],
        }
    }

    fn err(rule: PolicyRule) -> PolicyError {
        policy(vec![rule]).validate().unwrap_err()
    }

    fn block(cidr: &str, except: &[&str]) -> PolicyRule {
        PolicyRule {
            peers: vec![Peer::IpBlock(IpBlock {
                cidr: cidr.parse().unwrap(),
                except: except.iter().map(|e| e.parse().unwrap()).collect(),
            })],
            ports: vec![],
        }
    }

    fn port(port: Option<PortRef>, end_port: Option<u16>) -> PolicyRule {
        PolicyRule {
            peers: vec![],
            ports: vec![PolicyPort {
                protocol: Protocol::Tcp,
                port,
                end_port,
            }],
        }
    }

    #[test]
    fn except_outside_cidr() {
        let e = err(block("10.0.0.0/16", &["10.1.0.0/24"]));
        assert_eq!(e.field, "spec.ingress[0].from[0].ipBlock.except[0]");
        assert!(e.to_string().contains("strict subset"), "{e}");
        assert!(err(block("10.0.0.0/16", &["10.0.0.0/16"]))
            .to_string()
            .contains("strict subset"));
        assert!(err(block("10.0.0.0/16", &["fd00::/64"]))
            .to_string()
            .contains("family"));
        let mut ok = policy(vec![block("10.0.0.1/16", &["10.0.1.0/24"])]);
        ok.validate().unwrap();
        let Peer::IpBlock(b) = &ok.ingress[0].peers[0] else {
            panic!()
        };
        assert_eq!(b.cidr.to_string(), "10.0.0.0/16");
    }

    #[test]
    fn end_port_rules() {
        let e = err(port(Some(PortRef::Number(90)), Some(80)));
        assert_eq!(e.field, "spec.ingress[0].ports[0].endPort");
        let e = err(port(Some(PortRef::Name("http".into())), Some(80)));
        assert!(e.to_string().contains("named port"), "{e}");
        let e = err(port(None, Some(80)));
        assert!(e.to_string().contains("without port"));
        assert_eq!(
            err(port(Some(PortRef::Number(0)), None)).field,
            "spec.ingress[0].ports[0].port"
        );
        assert!(err(port(Some(PortRef::Name("Bad_Name".into())), None))
            .to_string()
            .contains("invalid port name"));
        let mut ok = policy(vec![port(Some(PortRef::Number(80)), Some(80))]);
        ok.validate().unwrap();
    }

    #[test]
    fn empty_peer_and_bad_selector() {
        let e = err(PolicyRule {
            peers: vec![Peer::Pods {
                namespace_selector: None,
                pod_selector: None,
            }],
            ports: vec![],
        });
        assert_eq!(e.field, "spec.ingress[0].from[0]");
        let e = err(PolicyRule {
            peers: vec![Peer::Pods {
                namespace_selector: Some(LabelSelector::default().expression(
                    "k",
                    Operator::DoesNotExist,
                    &["v"],
                )),
                pod_selector: None,
            }],
            ports: vec![],
        });
        assert_eq!(
            e.field,
            "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values"
        );
    }

    #[test]
    fn duplicate_policy_types() {
        let mut p = policy(vec![]);
        p.policy_types = vec![Direction::Egress, Direction::Egress];
        assert_eq!(p.validate().unwrap_err().field, "spec.policyTypes[1]");
    }
}
