//! Shared sets: what each holds (a selector peer's pods, an ipBlock, the pods resolving a
//! named port), its content-derived name, its elements and single-pod membership (used by the
//! incremental compiler).

use std::net::IpAddr;

use sarasa_model::hash::fnv1a64;
use sarasa_nft::{DataType, Key, L4Proto, Set, Value};

use crate::compile::addr_type;
use crate::ranges::subtract;
use crate::state::PolicyState;
use crate::{IpBlock, Peer, PolicyPod, Protocol};

/// What a shared set holds. Content-addressed: equal specs are one set, named by a hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SetSpec {
    /// Addresses of the pods a selector peer matches (`ns`: the policy's namespace, only when
    /// the peer has no namespaceSelector).
    Pods { ns: Option<String>, peer: Peer },
    /// An ipBlock.
    Block(IpBlock),
    /// `addr . proto . port` of the pods matching a peer (`None`: every pod) that have the
    /// named port.
    Named {
        ns: Option<String>,
        peer: Option<Peer>,
        name: String,
        protocol: Protocol,
    },
}

impl SetSpec {
    /// Does the membership depend on pods (not only on constants)?
    pub(crate) fn has_pods(&self) -> bool {
        !matches!(self, SetSpec::Block(_))
    }

    /// The keys `pod` contributes in family `v6` when it matches (whatever its labels).
    pub(crate) fn candidates(&self, pod: &PolicyPod, v6: bool) -> Vec<Key> {
        let addrs = pod.ips.iter().filter(|a| a.is_ipv6() == v6);
        match self {
            SetSpec::Block(_) => Vec::new(),
            SetSpec::Pods { .. } => addrs.map(|a| Key::one(*a)).collect(),
            SetSpec::Named { name, protocol, .. } => match pod.named_port(name, *protocol) {
                Some(port) => addrs
                    .map(|a| {
                        Key(vec![
                            Value::Addr(*a),
                            Value::Proto(L4Proto::from(*protocol)),
                            Value::Port(port),
                        ])
                    })
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    /// Does `pod` belong (by labels, namespace labels, or address for ipBlock peers)?
    pub(crate) fn selects(&self, state: &PolicyState, pod: &PolicyPod, addr: IpAddr) -> bool {
        match self {
            SetSpec::Block(_) => false,
            SetSpec::Pods { ns, peer } => {
                state.peer_selects(ns.as_deref().unwrap_or(""), peer, pod)
            }
            SetSpec::Named { ns, peer, .. } => match peer {
                None => true,
                Some(Peer::IpBlock(b)) => b.contains(addr),
                Some(p) => state.peer_selects(ns.as_deref().unwrap_or(""), p, pod),
            },
        }
    }

    /// The whole set.
    pub(crate) fn build(&self, state: &PolicyState, name: &str, v6: bool) -> Set {
        let (_, text) = describe(self);
        let mut set = match self {
            SetSpec::Block(b) => {
                let mut s = Set::new(name, vec![addr_type(v6)]);
                s.flags.interval = true;
                for net in subtract(b.cidr, &b.except) {
                    s.insert(Key::one(net));
                }
                s
            }
            SetSpec::Pods { ns, peer } => {
                let mut s = Set::new(name, vec![addr_type(v6)]);
                for pod in state.peer_pods(ns.as_deref().unwrap_or(""), peer) {
                    for k in self.candidates(pod, v6) {
                        s.insert(k);
                    }
                }
                s
            }
            SetSpec::Named { ns, peer, .. } => {
                let mut s = Set::new(
                    name,
                    vec![addr_type(v6), DataType::InetProto, DataType::InetService],
                );
                // A selector peer narrows the pods to look at; otherwise every pod.
                let pods: Box<dyn Iterator<Item = &PolicyPod>> = match peer {
                    Some(p @ Peer::Pods { .. }) => state.peer_pods(ns.as_deref().unwrap_or(""), p),
                    _ => Box::new(state.pods()),
                };
                for pod in pods {
                    for k in self.candidates(pod, v6) {
                        if let Some(Value::Addr(a)) = k.0.first() {
                            if self.selects(state, pod, *a) {
                                s.insert(k);
                            }
                        }
                    }
                }
                s
            }
        };
        set.comment = Some(truncate(&text, 70));
        set
    }
}

impl SetSpec {
    /// The name without the family suffix: a prefix and a hash of the description.
    pub(crate) fn base_name(&self) -> String {
        let (prefix, text) = describe(self);
        format!("{prefix}-{:016x}", fnv1a64(text.as_bytes()))
    }
}

/// Set name prefix and a canonical description (hashed into the name, kept as comment).
fn describe(spec: &SetSpec) -> (&'static str, String) {
    fn pods_text(ns: Option<&str>, peer: &Peer) -> String {
        match peer {
            Peer::Pods {
                namespace_selector,
                pod_selector,
            } => {
                let nss = match (ns, namespace_selector) {
                    (_, Some(s)) => format!("ns {{{}}}", s.canonical()),
                    (Some(ns), None) => format!("ns {ns}"),
                    (None, None) => "ns ?".to_string(),
                };
                let pods = pod_selector
                    .as_ref()
                    .map(|s| s.canonical())
                    .unwrap_or_default();
                format!("{nss} pods {{{pods}}}")
            }
            Peer::IpBlock(b) => block_text(b),
        }
    }
    fn block_text(b: &IpBlock) -> String {
        let mut t = b.cidr.to_string();
        for e in &b.except {
            t.push_str(" -");
            t.push_str(&e.to_string());
        }
        t
    }
    match spec {
        SetSpec::Pods { ns, peer } => ("pods", pods_text(ns.as_deref(), peer)),
        SetSpec::Block(b) => ("cidr", block_text(b)),
        SetSpec::Named {
            ns,
            peer,
            name,
            protocol,
        } => {
            let who = match peer {
                None => "all pods".to_string(),
                Some(p) => pods_text(ns.as_deref(), p),
            };
            ("named", format!("{who} port {name}/{}", protocol.as_str()))
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
