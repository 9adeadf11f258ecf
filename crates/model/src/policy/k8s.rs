//! Conversions from k8s-openapi objects (feature `k8s`): NetworkPolicy (validated, with the
//! implicit `policyTypes`), Namespace and Pod.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    ContainerPort, Direction, IpBlock, NetworkPolicy, Peer, PolicyError, PolicyNamespace,
    PolicyPod, PolicyPort, PolicyRule, PortRef, Protocol,
};
use crate::selector::{LabelSelector, Operator, Requirement};

impl TryFrom<&net::NetworkPolicy> for NetworkPolicy {
    type Error = PolicyError;

    fn try_from(np: &net::NetworkPolicy) -> Result<Self, PolicyError> {
        let namespace = np.metadata.namespace.clone().unwrap_or_default();
        let name = np.metadata.name.clone().unwrap_or_default();
        let spec = np.spec.clone().unwrap_or_default();
        let pod_selector = match &spec.pod_selector {
            Some(s) => selector(s, "spec.podSelector")?,
            None => LabelSelector::everything(),
        };
        let mut ingress = Vec::new();
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let f = format!("spec.ingress[{i}]");
            ingress.push(rule(r.from.as_deref(), r.ports.as_deref(), &f, "from")?);
        }
        let mut egress = Vec::new();
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let f = format!("spec.egress[{i}]");
            egress.push(rule(r.to.as_deref(), r.ports.as_deref(), &f, "to")?);
        }
        let policy_types = match &spec.policy_types {
            None => NetworkPolicy::implicit_policy_types(egress.len()),
            Some(types) => types
                .iter()
                .enumerate()
                .map(|(i, t)| match t.as_str() {
                    "Ingress" => Ok(Direction::Ingress),
                    "Egress" => Ok(Direction::Egress),
                    other => Err(PolicyError::new(
                        format!("spec.policyTypes[{i}]"),
                        format!("unsupported value {other:?}: must be Ingress or Egress"),
                    )),
                })
                .collect::<Result<_, _>>()?,
        };
        let mut p = NetworkPolicy {
            namespace,
            name,
            pod_selector,
            policy_types,
            ingress,
            egress,
        };
        p.validate()?;
        Ok(p)
    }
}

impl NetworkPolicy {
    /// The isolating stand-in ([`NetworkPolicy::isolating`]) of a NetworkPolicy that does not
    /// convert: the pods its `podSelector` selects (every pod of the namespace when the
    /// selector itself is invalid), in the directions of its `policyTypes` (both when they
    /// are invalid), with no rule allowing anything.
    pub fn fail_closed(np: &net::NetworkPolicy) -> NetworkPolicy {
        let spec = np.spec.clone().unwrap_or_default();
        let pod_selector = spec
            .pod_selector
            .as_ref()
            .and_then(|s| selector(s, "spec.podSelector").ok())
            .unwrap_or_else(LabelSelector::everything);
        let egress_rules = spec.egress.as_ref().map_or(0, Vec::len);
        let policy_types = match &spec.policy_types {
            None => NetworkPolicy::implicit_policy_types(egress_rules),
            Some(types) => {
                let mut dirs = Vec::new();
                for (t, d) in [
                    ("Ingress", Direction::Ingress),
                    ("Egress", Direction::Egress),
                ] {
                    if types.iter().any(|x| x == t) {
                        dirs.push(d);
                    }
                }
                if types.iter().any(|t| t != "Ingress" && t != "Egress") || dirs.is_empty() {
                    dirs = vec![Direction::Ingress, Direction::Egress];
                }
                dirs
            }
        };
        NetworkPolicy {
            namespace: np.metadata.namespace.clone().unwrap_or_default(),
            name: np.metadata.name.clone().unwrap_or_default(),
            pod_selector,
            policy_types,
            ingress: Vec::new(),
            egress: Vec::new(),
        }
    }
}

fn rule(
    peers: Option<&[net::NetworkPolicyPeer]>,
    ports: Option<&[net::NetworkPolicyPort]>,
    field: &str,
    peers_name: &str,
) -> Result<PolicyRule, PolicyError> {
    let mut out = PolicyRule::default();
    for (j, p) in peers.unwrap_or_default().iter().enumerate() {
        let f = format!("{field}.{peers_name}[{j}]");
        let peer = match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(PolicyError::new(
                    f,
                    "may not specify both ipBlock and another peer",
                ))
            }
            (Some(b), None, None) => Peer::IpBlock(ip_block(b, &format!("{f}.ipBlock"))?),
            (None, ns, pods) => Peer::Pods {
                namespace_selector: ns
                    .as_ref()
                    .map(|s| selector(s, &format!("{f}.namespaceSelector")))
                    .transpose()?,
                pod_selector: pods
                    .as_ref()
                    .map(|s| selector(s, &format!("{f}.podSelector")))
                    .transpose()?,
            },
        };
        out.peers.push(peer);
    }
    for (j, p) in ports.unwrap_or_default().iter().enumerate() {
        let f = format!("{field}.ports[{j}]");
        let protocol = match &p.protocol {
            None => Protocol::Tcp,
            Some(s) => parse_protocol(s, &format!("{f}.protocol"))?,
        };
        let port = match &p.port {
            None => None,
            Some(IntOrString::Int(n)) => {
                Some(PortRef::Number(port_number(*n, &format!("{f}.port"))?))
            }
            Some(IntOrString::String(s)) => Some(PortRef::Name(s.clone())),
        };
        let end_port = p
            .end_port
            .map(|n| port_number(n, &format!("{f}.endPort")))
            .transpose()?;
        out.ports.push(PolicyPort {
            protocol,
            port,
            end_port,
        });
    }
    Ok(out)
}

fn port_number(n: i32, field: &str) -> Result<u16, PolicyError> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(PolicyError::new(
            field,
            format!("{n} must be between 1 and 65535"),
        )),
    }
}

fn ip_block(b: &net::IPBlock, field: &str) -> Result<IpBlock, PolicyError> {
    let parse = |s: &str, f: &str| {
        s.parse::<ipnet::IpNet>()
            .map_err(|_| PolicyError::new(f, format!("invalid CIDR {s:?}")))
    };
    let cidr = parse(&b.cidr, &format!("{field}.cidr"))?;
    let except = b
        .except
        .iter()
        .flatten()
        .enumerate()
        .map(|(k, e)| parse(e, &format!("{field}.except[{k}]")))
        .collect::<Result<_, _>>()?;
    Ok(IpBlock { cidr, except })
}

fn selector(s: &meta::LabelSelector, field: &str) -> Result<LabelSelector, PolicyError> {
    let mut out = LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for (i, r) in s.match_expressions.iter().flatten().enumerate() {
        out.match_expressions.push(Requirement {
            key: r.key.clone(),
            operator: Operator::parse(
                &r.operator,
                &format!("{field}.matchExpressions[{i}].operator"),
            )?,
            values: r.values.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

impl From<&core::Namespace> for PolicyNamespace {
    fn from(ns: &core::Namespace) -> Self {
        PolicyNamespace::new(
            ns.metadata.name.clone().unwrap_or_default(),
            ns.metadata.labels.clone().unwrap_or_default(),
        )
    }
}

impl TryFrom<&core::Pod> for PolicyPod {
    type Error = PolicyError;

    /// Host-network pods convert too; the agent should leave them out (their address is the
    /// node's, which policy does not police).
    fn try_from(pod: &core::Pod) -> Result<Self, PolicyError> {
        let mut ips = Vec::new();
        let status_ips = pod.status.as_ref().and_then(|s| s.pod_ips.as_ref());
        for (i, ip) in status_ips.into_iter().flatten().enumerate() {
            let a: IpAddr = ip.ip.parse().map_err(|_| {
                PolicyError::new(
                    format!("status.podIPs[{i}].ip"),
                    format!("invalid address {:?}", ip.ip),
                )
            })?;
            ips.push(a);
        }
        let mut ports = Vec::new();
        let spec = pod.spec.as_ref();
        for (c, container) in spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            for (j, p) in container.ports.iter().flatten().enumerate() {
                let f = format!("spec.containers[{c}].ports[{j}]");
                ports.push(ContainerPort {
                    name: p.name.clone(),
                    protocol: match &p.protocol {
                        None => Protocol::Tcp,
                        Some(s) => parse_protocol(s, &format!("{f}.protocol"))?,
                    },
                    port: port_number(p.container_port, &format!("{f}.containerPort"))?,
                });
            }
        }
        Ok(PolicyPod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips,
            ports,
            node: spec.and_then(|s| s.node_name.clone()),
        })
    }
}

/// `TCP`/`UDP`/`SCTP` (Kubernetes is case-sensitive here); `field` names it in errors.
fn parse_protocol(s: &str, field: &str) -> Result<Protocol, PolicyError> {
    Protocol::parse(s).ok_or_else(|| {
        PolicyError::new(
            field,
            format!("unsupported protocol {s:?}: must be TCP, UDP or SCTP"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    fn parse(v: serde_json::Value) -> net::NetworkPolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn implicit_policy_types() {
        let np = parse(json!({
            "metadata": {"namespace": "x", "name": "p"},
            "spec": {"podSelector": {}, "egress": [{}]}
        }));
        let p = NetworkPolicy::try_from(&np).unwrap();
        assert_eq!(p.policy_types, vec![Direction::Ingress, Direction::Egress]);
        assert!(p.ingress.is_empty());
        let np = parse(json!({
            "metadata": {"namespace": "x", "name": "p"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "egress": []}
        }));
        let p = NetworkPolicy::try_from(&np).unwrap();
        assert_eq!(p.policy_types, vec![Direction::Ingress]);
    }

    #[test]
    fn a_policy_that_does_not_convert_fails_closed() {
        // A bad rule: the stand-in keeps the selector and the implicit types, no rules.
        let np = parse(json!({
            "metadata": {"namespace": "x", "name": "p"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                     "egress": [{"ports": [{"port": 90, "endPort": 80}]}]}
        }));
        assert!(NetworkPolicy::try_from(&np).is_err());
        let p = NetworkPolicy::fail_closed(&np);
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("x", "p"));
        assert_eq!(p.pod_selector, LabelSelector::labels([("app", "db")]));
        assert_eq!(p.policy_types, [Direction::Ingress, Direction::Egress]);
        assert!(p.ingress.is_empty() && p.egress.is_empty());
        // A bad selector and bad types: every pod of the namespace, both directions.
        let np = parse(json!({
            "metadata": {"namespace": "x", "name": "q"},
            "spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
                     "policyTypes": ["Sideways"]}
        }));
        assert!(NetworkPolicy::try_from(&np).is_err());
        let q = NetworkPolicy::fail_closed(&np);
        assert_eq!(q.pod_selector, LabelSelector::everything());
        assert_eq!(q.policy_types, [Direction::Ingress, Direction::Egress]);
        // Valid types are kept.
        let np = parse(json!({
            "metadata": {"namespace": "x", "name": "r"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": "bogus"}}]}]}
        }));
        assert_eq!(
            NetworkPolicy::fail_closed(&np).policy_types,
            [Direction::Egress]
        );
    }

    #[test]
    fn full_policy_converts() {
        let np = parse(json!({
            "metadata": {"namespace": "x", "name": "p"},
            "spec": {
                "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "c"}}},
                        {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}}
                    ],
                    "ports": [{"port": 80}, {"protocol": "UDP", "port": "serve-81-udp"}, {"port": 1000, "endPort": 2000}]
                }]
            }
        }));
        let p = NetworkPolicy::try_from(&np).unwrap();
        assert_eq!(p.ingress[0].peers.len(), 2);
        assert_eq!(
            p.ingress[0].ports[1].port,
            Some(PortRef::Name("serve-81-udp".into()))
        );
        assert_eq!(p.ingress[0].ports[2].end_port, Some(2000));
    }

    #[test]
    fn bad_input_names_the_field() {
        let cases = [
            (
                json!({"ingress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]}),
                "spec.ingress[0].ports[0].protocol",
            ),
            (
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
                "spec.ingress[0].from[0].ipBlock.cidr",
            ),
            (
                json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.2.0.0/24"]}}]}]}),
                "spec.egress[0].to[0].ipBlock.except[0]",
            ),
            (
                json!({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
            ),
            (
                json!({"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
                "spec.ingress[0].ports[0].endPort",
            ),
            (
                json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
                "spec.podSelector.matchExpressions[0].operator",
            ),
            (
                json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
                "spec.ingress[0].from[0]",
            ),
            (json!({"policyTypes": ["Sideways"]}), "spec.policyTypes[0]"),
            (
                json!({"ingress": [{"ports": [{"port": 70000}]}]}),
                "spec.ingress[0].ports[0].port",
            ),
        ];
        for (spec, field) in cases {
            let np = parse(json!({"metadata": {"namespace": "x", "name": "p"}, "spec": spec}));
            let e = NetworkPolicy::try_from(&np).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn pod_and_namespace() {
        let pod: core::Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "a", "labels": {"pod": "a"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [
                {"name": "serve-80-tcp", "containerPort": 80},
                {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"}]}]},
            "status": {"podIPs": [{"ip": "10.244.1.2"}]}
        }))
        .unwrap();
        let p = PolicyPod::try_from(&pod).unwrap();
        assert_eq!(p.named_port("serve-81-udp", Protocol::Udp), Some(81));
        assert_eq!(p.named_port("serve-81-udp", Protocol::Tcp), None);
        assert_eq!(p.node.as_deref(), Some("node-1"));
        let ns: core::Namespace =
            serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        let ns = PolicyNamespace::from(&ns);
        assert_eq!(ns.labels["kubernetes.io/metadata.name"], "x");
    }
}
