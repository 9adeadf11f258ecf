//! The NetworkPolicy semantics in plain Rust: is a new connection allowed? This is the oracle
//! the compiled ruleset is tested against, and what `sarasa policy matrix` computes.
//!
//! Decisions where Kubernetes leaves room (documented in the crate docs):
//! - `ipBlock` matches by address, pod addresses included (the upstream e2e tests "allow egress
//!   access to server in CIDR block" rely on it; Calico behaves so);
//! - a named port resolves on the destination pod (for ingress the selected pod, for egress
//!   each peer pod) and only against a container port of the same protocol; towards an
//!   address that is no pod it matches nothing;
//! - traffic between a pod and its own node is always allowed;
//! - a pod reaching itself (loopback) is always allowed.

use std::net::IpAddr;

use crate::state::PolicyState;
use crate::PolicyError;
use crate::{Direction, NetworkPolicy, Peer, PodKey, PolicyKey, PolicyPod, Protocol};

/// One end of a flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    Pod(PodKey),
    /// An address that belongs to no pod (outside client, a node, the internet).
    External(IpAddr),
}

/// The decision for one new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Did the source's egress policies allow it (true when the source is not isolated)?
    pub egress_allowed: bool,
    /// Did the destination's ingress policies allow it?
    pub ingress_allowed: bool,
    /// Policies that isolate the destination for ingress (empty: not isolated).
    pub ingress_isolated_by: Vec<PolicyKey>,
    /// Policies that isolate the source for egress.
    pub egress_isolated_by: Vec<PolicyKey>,
}

/// Is a new `protocol` connection from `src` to `dst` port `port` allowed?
pub fn allowed(
    state: &PolicyState,
    src: &Endpoint,
    dst: &Endpoint,
    protocol: Protocol,
    port: u16,
) -> Result<Verdict, PolicyError> {
    let src_pod = resolve(state, src, "src")?;
    let dst_pod = resolve(state, dst, "dst")?;
    let v6 = family_is_v6(src, dst, src_pod, dst_pod);
    let src_addr = address(src, src_pod, v6);
    let dst_addr = address(dst, dst_pod, v6);
    let mut verdict = Verdict {
        allowed: true,
        egress_allowed: true,
        ingress_allowed: true,
        ingress_isolated_by: Vec::new(),
        egress_isolated_by: Vec::new(),
    };
    if let (Some(s), Some(d)) = (src_pod, dst_pod) {
        if s.key() == d.key() {
            return Ok(verdict); // loopback never leaves the pod
        }
    }
    if let Some(s) = src_pod {
        let policies = state.isolating_policies(s, Direction::Egress);
        verdict.egress_isolated_by = policies.iter().map(|p| p.key()).collect();
        let own_node = own_node_address(state, s, dst_addr, dst_pod);
        if !policies.is_empty() && !own_node {
            verdict.egress_allowed = policies.iter().any(|p| {
                rule_allows(
                    state,
                    p,
                    Direction::Egress,
                    dst_pod,
                    dst_addr,
                    protocol,
                    port,
                    dst_pod,
                )
            });
        }
    }
    if let Some(d) = dst_pod {
        let policies = state.isolating_policies(d, Direction::Ingress);
        verdict.ingress_isolated_by = policies.iter().map(|p| p.key()).collect();
        let own_node = own_node_address(state, d, src_addr, src_pod);
        if !policies.is_empty() && !own_node {
            verdict.ingress_allowed = policies.iter().any(|p| {
                rule_allows(
                    state,
                    p,
                    Direction::Ingress,
                    src_pod,
                    src_addr,
                    protocol,
                    port,
                    Some(d),
                )
            });
        }
    }
    verdict.allowed = verdict.egress_allowed && verdict.ingress_allowed;
    Ok(verdict)
}

fn resolve<'a>(
    state: &'a PolicyState,
    e: &Endpoint,
    field: &str,
) -> Result<Option<&'a PolicyPod>, PolicyError> {
    match e {
        Endpoint::Pod(k) => state
            .pod(k)
            .map(Some)
            .ok_or_else(|| PolicyError::new(field, format!("unknown pod {k}"))),
        Endpoint::External(_) => Ok(None),
    }
}

fn family_is_v6(
    src: &Endpoint,
    dst: &Endpoint,
    src_pod: Option<&PolicyPod>,
    dst_pod: Option<&PolicyPod>,
) -> bool {
    match (src, dst) {
        (Endpoint::External(a), _) | (_, Endpoint::External(a)) => a.is_ipv6(),
        _ => src_pod
            .or(dst_pod)
            .and_then(|p| p.ips.first())
            .is_some_and(IpAddr::is_ipv6),
    }
}

fn address(e: &Endpoint, pod: Option<&PolicyPod>, v6: bool) -> Option<IpAddr> {
    match e {
        Endpoint::External(a) => Some(*a),
        Endpoint::Pod(_) => pod?.ips.iter().copied().find(|a| a.is_ipv6() == v6),
    }
}

/// Is `other` (an address that is no pod) one of the addresses of `pod`'s own node?
fn own_node_address(
    state: &PolicyState,
    pod: &PolicyPod,
    other: Option<IpAddr>,
    other_pod: Option<&PolicyPod>,
) -> bool {
    match (&pod.node, other, other_pod) {
        (Some(node), Some(addr), None) => state.node_addresses(node).contains(&addr),
        _ => false,
    }
}

/// Does some rule of `policy` in `dir` allow the peer (`peer_pod` / `peer_addr`) on
/// `protocol`/`port`, named ports resolving on `port_owner`?
#[allow(clippy::too_many_arguments)]
fn rule_allows(
    state: &PolicyState,
    policy: &NetworkPolicy,
    dir: Direction,
    peer_pod: Option<&PolicyPod>,
    peer_addr: Option<IpAddr>,
    protocol: Protocol,
    port: u16,
    port_owner: Option<&PolicyPod>,
) -> bool {
    policy.rules(dir).iter().any(|rule| {
        let ports_ok = rule.ports.is_empty()
            || rule
                .ports
                .iter()
                .any(|p| p.allows(protocol, port, port_owner));
        let peers_ok = rule.peers.is_empty()
            || rule.peers.iter().any(|peer| match peer {
                Peer::IpBlock(b) => peer_addr.is_some_and(|a| b.contains(a)),
                Peer::Pods { .. } => {
                    peer_pod.is_some_and(|p| state.peer_selects(&policy.namespace, peer, p))
                }
            });
        ports_ok && peers_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LabelSelector;
    use crate::{PolicyNamespace, PolicyRule};
    use std::collections::BTreeMap;

    fn state() -> PolicyState {
        let mut s = PolicyState::new();
        s.apply_namespace(PolicyNamespace::new("x", BTreeMap::new()));
        for (i, n) in ["a", "b"].iter().enumerate() {
            s.apply_pod(PolicyPod {
                namespace: "x".into(),
                name: n.to_string(),
                labels: BTreeMap::from([("pod".to_string(), n.to_string())]),
                ips: vec![format!("10.0.0.{}", i + 1).parse().unwrap()],
                ports: vec![],
                node: Some("n1".into()),
            });
        }
        s.apply_node("n1", vec!["192.168.33.11".parse().unwrap()]);
        s
    }

    #[test]
    fn deny_all_ingress_but_node_and_loopback_pass() {
        let mut s = state();
        s.apply_policy(NetworkPolicy {
            namespace: "x".into(),
            name: "deny".into(),
            pod_selector: LabelSelector::everything(),
            policy_types: vec![Direction::Ingress],
            ingress: vec![],
            egress: vec![],
        })
        .unwrap();
        let a = Endpoint::Pod(PodKey::new("x", "a"));
        let b = Endpoint::Pod(PodKey::new("x", "b"));
        let v = allowed(&s, &a, &b, Protocol::Tcp, 80).unwrap();
        assert!(!v.allowed && v.egress_allowed && !v.ingress_allowed);
        assert_eq!(v.ingress_isolated_by, vec![PodKey::new("x", "deny")]);
        assert!(allowed(&s, &a, &a, Protocol::Tcp, 80).unwrap().allowed);
        let node = Endpoint::External("192.168.33.11".parse().unwrap());
        assert!(allowed(&s, &node, &b, Protocol::Tcp, 80).unwrap().allowed);
        let other = Endpoint::External("192.168.33.12".parse().unwrap());
        assert!(!allowed(&s, &other, &b, Protocol::Tcp, 80).unwrap().allowed);
        assert!(allowed(
            &s,
            &Endpoint::Pod(PodKey::new("x", "zz")),
            &b,
            Protocol::Tcp,
            80
        )
        .is_err());
        let _ = PolicyRule::allow_all();
    }
}
