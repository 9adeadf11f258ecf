//! The upstream e2e fixture (namespaces x, y, z; pods a, b, c serving TCP and UDP on 80 and
//! 81; spread over three nodes), a reachability table like upstream's, and the check that the
//! evaluator matches the expectation and the compiled tables match the evaluator.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use sarasa_nft::interp::{self, Env, Event, HookVerdict, Packet};
use sarasa_nft::{Hook, L4Proto, Table};
use sarasa_policy::*;

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
pub const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
pub const EXTERNAL: &str = "203.0.113.10";

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Node of pod (namespace index i, pod index j): spread so each node has pods of each ns.
pub fn node_of(i: usize, j: usize) -> usize {
    (i + j) % 3
}

pub fn pod_ip(i: usize, j: usize) -> IpAddr {
    format!("10.244.{}.{}", node_of(i, j) + 1, 10 + i * 3 + j)
        .parse()
        .unwrap()
}

pub fn node_ip(n: usize) -> IpAddr {
    format!("192.168.33.{}", 11 + n).parse().unwrap()
}

pub fn container_ports() -> Vec<ContainerPort> {
    let mut v = Vec::new();
    for port in [80, 81] {
        for (protocol, p) in [(Protocol::Tcp, "tcp"), (Protocol::Udp, "udp")] {
            v.push(ContainerPort {
                name: Some(format!("serve-{port}-{p}")),
                protocol,
                port,
            });
        }
    }
    v
}

pub fn make_pod(i: usize, j: usize) -> PolicyPod {
    PolicyPod {
        namespace: NAMESPACES[i].to_string(),
        name: PODS[j].to_string(),
        labels: labels(&[("pod", PODS[j])]),
        ips: vec![pod_ip(i, j)],
        ports: container_ports(),
        node: Some(NODES[node_of(i, j)].to_string()),
    }
}

/// The fixture: namespaces labelled `ns=<name>`, pods labelled `pod=<name>`.
pub fn cluster() -> PolicyState {
    let mut s = PolicyState::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        s.apply_namespace(PolicyNamespace::new(*ns, labels(&[("ns", ns)])));
        for j in 0..PODS.len() {
            s.apply_pod(make_pod(i, j));
        }
    }
    for (n, name) in NODES.iter().enumerate() {
        s.apply_node(*name, vec![node_ip(n)]);
    }
    s
}

/// A policy builder.
pub struct P(pub NetworkPolicy);

impl P {
    /// Selects `pod_selector` in `ns`; `policyTypes` as Kubernetes infers them unless set.
    pub fn new(ns: &str, name: &str, pod_selector: LabelSelector) -> P {
        P(NetworkPolicy {
            namespace: ns.into(),
            name: name.into(),
            pod_selector,
            policy_types: vec![],
            ingress: vec![],
            egress: vec![],
        })
    }
    pub fn types(mut self, t: &[Direction]) -> P {
        self.0.policy_types = t.to_vec();
        self
    }
    pub fn ingress(mut self, r: PolicyRule) -> P {
        self.0.ingress.push(r);
        self
    }
    pub fn egress(mut self, r: PolicyRule) -> P {
        self.0.egress.push(r);
        self
    }
    /// Applies the implicit policyTypes when none were set.
    pub fn build(mut self) -> NetworkPolicy {
        if self.0.policy_types.is_empty() {
            self.0.policy_types = NetworkPolicy::implicit_policy_types(self.0.egress.len());
        }
        self.0
    }
}

pub fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector::labels(pairs.iter().copied())
}

pub fn pods_peer(pod: Option<LabelSelector>, ns: Option<LabelSelector>) -> Peer {
    Peer::Pods {
        namespace_selector: ns,
        pod_selector: pod,
    }
}

pub fn block(cidr: &str, except: &[&str]) -> Peer {
    Peer::IpBlock(IpBlock {
        cidr: cidr.parse().unwrap(),
        except: except.iter().map(|e| e.parse().unwrap()).collect(),
    })
}

pub fn rule(peers: Vec<Peer>, ports: Vec<PolicyPort>) -> PolicyRule {
    PolicyRule { peers, ports }
}

pub fn port(protocol: Protocol, p: u16) -> PolicyPort {
    PolicyPort {
        protocol,
        port: Some(PortRef::Number(p)),
        end_port: None,
    }
}

pub fn named(protocol: Protocol, n: &str) -> PolicyPort {
    PolicyPort {
        protocol,
        port: Some(PortRef::Name(n.into())),
        end_port: None,
    }
}

pub fn range(protocol: Protocol, start: u16, end: u16) -> PolicyPort {
    PolicyPort {
        protocol,
        port: Some(PortRef::Number(start)),
        end_port: Some(end),
    }
}

pub fn any_port(protocol: Protocol) -> PolicyPort {
    PolicyPort {
        protocol,
        port: None,
        end_port: None,
    }
}

pub fn all_pods() -> Vec<PodKey> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| PodKey::new(*ns, *p)))
        .collect()
}

/// Which pods a reachability expectation is about (upstream's `Peer{Namespace, Pod}`).
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub ns: Option<&'a str>,
    pub pod: Option<&'a str>,
}

pub fn any() -> Who<'static> {
    Who {
        ns: None,
        pod: None,
    }
}
pub fn ns(n: &str) -> Who<'_> {
    Who {
        ns: Some(n),
        pod: None,
    }
}
pub fn pod<'a>(n: &'a str, p: &'a str) -> Who<'a> {
    Who {
        ns: Some(n),
        pod: Some(p),
    }
}

impl Who<'_> {
    fn has(&self, k: &PodKey) -> bool {
        self.ns.is_none_or(|n| n == k.namespace) && self.pod.is_none_or(|p| p == k.name)
    }
}

/// The expected matrix.
pub struct Reach {
    pub pods: Vec<PodKey>,
    pub bits: Vec<Vec<bool>>,
}

impl Reach {
    pub fn new(default: bool) -> Reach {
        let pods = all_pods();
        let n = pods.len();
        Reach {
            pods,
            bits: vec![vec![default; n]; n],
        }
    }
    pub fn expect(&mut self, from: Who, to: Who, v: bool) -> &mut Self {
        for (i, f) in self.pods.iter().enumerate() {
            for (j, t) in self.pods.iter().enumerate() {
                if from.has(f) && to.has(t) {
                    self.bits[i][j] = v;
                }
            }
        }
        self
    }
    pub fn allow_loopback(&mut self) -> &mut Self {
        for i in 0..self.pods.len() {
            self.bits[i][i] = true;
        }
        self
    }
}

/// Asserts that the evaluator gives `want` for `protocol`/`port`, then that the compiled
/// tables agree with the evaluator on every pair and port (see [`agree`]).
pub fn check(state: &PolicyState, port: u16, protocol: Protocol, want: &Reach) {
    let m = matrix(state, &NAMESPACES, port, protocol).unwrap();
    assert_eq!(m.pods, want.pods);
    let got = m.allowed();
    assert!(
        got == want.bits,
        "{protocol:?}/{port}: computed (rows from, columns to; ! = differs from expected)\n{}\nexpected\n{}",
        render_bits(&m.pods, &got, Some(&want.bits)),
        render_bits(&m.pods, &want.bits, None)
    );
    agree(state);
}

fn l4(p: Protocol) -> L4Proto {
    match p {
        Protocol::Tcp => L4Proto::Tcp,
        Protocol::Udp => L4Proto::Udp,
        Protocol::Sctp => L4Proto::Sctp,
    }
}

/// One compiled table per node.
pub fn node_tables(state: &PolicyState) -> BTreeMap<String, sarasa_nft::Table> {
    NODES
        .iter()
        .map(|n| {
            let opts = CompileOptions {
                node: Some(n.to_string()),
                ..CompileOptions::default()
            };
            let t = compile(state, &opts);
            t.validate().unwrap();
            // Every compiled table programs over netlink in one batch: the agent never
            // needs `nft -f` for policy.
            let tx = sarasa_nft::diff_kernel(None, &t);
            if let Err(e) = sarasa_nft::wire::encode_batch(&[(t.family, t.name.as_str(), &tx)], 1) {
                panic!(
                    "node {n}: policy table not encodable ({e}):\n{}",
                    tx.script()
                );
            }
            (n.to_string(), t)
        })
        .collect()
}

/// Where a flow is judged: the forward hook of the source pod's node (egress) and of the
/// destination pod's node (ingress); node-originated packets skip forward on their own node.
fn judge(
    state: &PolicyState,
    tables: &BTreeMap<String, sarasa_nft::Table>,
    src: &Endpoint,
    dst: &Endpoint,
    protocol: Protocol,
    port: u16,
) -> (bool, Vec<String>) {
    let addr = |e: &Endpoint| match e {
        Endpoint::Pod(k) => state.pod(k).unwrap().ips[0],
        Endpoint::External(a) => *a,
    };
    let node = |e: &Endpoint| match e {
        Endpoint::Pod(k) => state.pod(k).unwrap().node.clone(),
        Endpoint::External(a) => NODES
            .iter()
            .enumerate()
            .find(|(n, _)| node_ip(*n) == *a)
            .map(|(_, name)| name.to_string()),
    };
    // Pods are judged in forward on their node; a node's own packets leave through output
    // and packets for the node arrive at input, neither of which is policed.
    let nodes: Vec<String> = match (src, dst) {
        (Endpoint::Pod(_), Endpoint::Pod(_)) => {
            let (s, d) = (node(src).unwrap(), node(dst).unwrap());
            if s == d {
                vec![s]
            } else {
                vec![s, d]
            }
        }
        (Endpoint::Pod(_), Endpoint::External(_)) => {
            let s = node(src).unwrap();
            if node(dst) == Some(s.clone()) {
                vec![]
            } else {
                vec![s]
            }
        }
        (Endpoint::External(_), Endpoint::Pod(_)) => {
            let d = node(dst).unwrap();
            if node(src) == Some(d.clone()) {
                vec![]
            } else {
                vec![d]
            }
        }
        _ => vec![],
    };
    let packet = Packet::new(addr(src), addr(dst), l4(protocol), 40000, port);
    let mut logs = Vec::new();
    for n in nodes {
        let t = forward(&tables[&n], &packet);
        logs.extend(t.logs.iter().cloned());
        if !t.accepted {
            return (false, logs);
        }
    }
    (true, logs)
}

/// Checks the compiled per-node tables against the evaluator for every pair of pods, from and
/// to an external address and the nodes, on TCP/UDP 80/81 and SCTP 80; and that every drop is
/// logged with a prefix naming the pod and direction that isolate it, and that the drop event
/// names the same policies as the evaluator.
pub fn agree(state: &PolicyState) {
    let tables = node_tables(state);
    let mut ends: Vec<Endpoint> = state.pods().map(|p| Endpoint::Pod(p.key())).collect();
    let ext = Endpoint::External(EXTERNAL.parse().unwrap());
    ends.push(ext.clone());
    for n in 0..NODES.len() {
        ends.push(Endpoint::External(node_ip(n)));
    }
    for src in &ends {
        for dst in &ends {
            if src == dst || matches!((src, dst), (Endpoint::External(_), Endpoint::External(_))) {
                continue;
            }
            for (protocol, port) in [
                (Protocol::Tcp, 80),
                (Protocol::Tcp, 81),
                (Protocol::Udp, 80),
                (Protocol::Udp, 81),
                (Protocol::Sctp, 80),
            ] {
                let v = allowed(state, src, dst, protocol, port).unwrap();
                let (ok, logs) = judge(state, &tables, src, dst, protocol, port);
                assert_eq!(
                    ok, v.allowed,
                    "compiled vs evaluated: {src:?} -> {dst:?} {protocol:?}/{port}: evaluator {v:?}"
                );
                if ok {
                    assert!(logs.is_empty(), "allowed flow logged: {logs:?}");
                    continue;
                }
                assert_eq!(logs.len(), 1, "{src:?} -> {dst:?}: {logs:?}");
                let addr = |e: &Endpoint| match e {
                    Endpoint::Pod(k) => state.pod(k).unwrap().ips[0],
                    Endpoint::External(a) => *a,
                };
                let ev = drop_event(state, &logs[0], addr(src), addr(dst), l4(protocol), port)
                    .expect("drop event");
                assert_eq!(&ev.src, src);
                assert_eq!(&ev.dst, dst);
                match ev.direction {
                    Direction::Egress => {
                        assert!(!v.egress_allowed);
                        assert_eq!(Endpoint::Pod(ev.pod.clone()), *src);
                        assert_eq!(ev.policies, v.egress_isolated_by);
                    }
                    Direction::Ingress => {
                        assert!(v.egress_allowed && !v.ingress_allowed);
                        assert_eq!(Endpoint::Pod(ev.pod.clone()), *dst);
                        assert_eq!(ev.policies, v.ingress_isolated_by);
                    }
                }
            }
        }
    }
}

/// A node for the policy table: it reads no node address (the table hooks only `forward`).
pub struct PolicyNode;

impl Env for PolicyNode {
    fn is_local(&self, _addr: IpAddr) -> bool {
        false
    }
    fn masquerade_source(&self, _oifname: Option<&str>, _daddr: IpAddr) -> Option<IpAddr> {
        None
    }
}

/// What the policy table did with a packet at the forward hook (from the one path of
/// `sarasa_nft::interp::run_hook`).
#[derive(Debug)]
pub struct Forward {
    pub accepted: bool,
    /// Chains entered, in order (the base chain first).
    pub chains: Vec<String>,
    /// `chain#index` of the rule that decided (`None`: the base policy).
    pub decided_by: Option<String>,
    /// Prefixes of `log` statements run.
    pub logs: Vec<String>,
    pub path: interp::Path,
}

/// Runs `packet` through `table` at the forward hook with the general interpreter.
pub fn forward(table: &Table, packet: &Packet) -> Forward {
    let mut paths = interp::run_hook(&[table], Hook::Forward, packet, &PolicyNode)
        .unwrap_or_else(|e| panic!("interpreter: {e}"));
    assert_eq!(paths.len(), 1, "the policy table has no numgen: {paths:#?}");
    let path = paths.remove(0);
    let accepted = match path.verdict {
        HookVerdict::Accept => true,
        HookVerdict::Drop => false,
        HookVerdict::Reject(k) => panic!("the policy table never rejects: {k:?}"),
    };
    let mut chains = Vec::new();
    let mut logs = Vec::new();
    for s in &path.steps {
        match &s.event {
            Event::EnterChain { .. } => chains.push(s.chain.clone()),
            Event::Log { prefix, .. } => logs.push(prefix.clone().unwrap_or_default()),
            _ => {}
        }
    }
    let decided_by = path
        .deciding_step()
        .filter(|s| !matches!(s.event, Event::ChainPolicy(_)))
        .and_then(|s| Some(format!("{}#{}", s.chain, s.rule?)));
    Forward {
        accepted,
        chains,
        decided_by,
        logs,
        path,
    }
}
