//! State → nftables model of table `inet sarasa-policy` (pure, deterministic).
//!
//! Layout (see the crate docs for why):
//! ```text
//! chain forward  (filter hook forward priority 0, after service DNAT at prerouting -100)
//!     ct state established,related accept
//!     ip saddr vmap @egress-v4      ip6 saddr vmap @egress-v6     -> jump egr_<ns>_<pod>
//!     ip daddr vmap @ingress-v4     ip6 daddr vmap @ingress-v6    -> jump ing_<ns>_<pod>
//! chain ing_<ns>_<pod>   one rule per (peer, ports) of the policies selecting the pod:
//!     ip saddr @pods-<hash>-v4 meta l4proto . th dport { tcp . 80 } accept
//!     ip saddr . ip daddr @logged-v4 counter drop                     (logged recently)
//!     update @logged-v4 { ip saddr . ip daddr } log prefix "np in <ns>/<pod> " group N counter drop
//!     counter drop comment "selected by <policies>"
//! chain egr_<ns>_<pod>   the same with daddr, `return` instead of `accept`
//! ```
//! Only isolated pods (in that direction) with addresses get a chain and map elements; a pod
//! no policy selects misses the maps and passes. Peer sets are shared by every rule with the
//! same (namespace, selectors), and hold addresses of pods on every node.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use sarasa_nft::{
    ChainType, DataType, Expr, Field, Hook, Key, Keyword, MetaKey, Rule, Set, SetFlags, Stmt,
    Table, Value, Verdict,
};

use crate::ranges::{port_blocks, subtract};
use crate::state::PolicyState;
use crate::types::{Direction, Peer, PodKey, PolicyPod, PortRef, Protocol};

/// The table this crate owns.
pub const TABLE: &str = "sarasa-policy";
/// The base chain.
pub const FORWARD_CHAIN: &str = "forward";
/// Priority of the base chain: filter (0), after dstnat (-100) so services are judged on pod
/// addresses.
pub const FORWARD_PRIORITY: i32 = 0;

/// What to compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// Only pods on this node get chains and map entries (`None`: every pod; for tests and the
    /// benchmark). Peer sets always hold pods of every node.
    pub node: Option<String>,
    pub ipv4: bool,
    pub ipv6: bool,
    /// nflog group drops are logged to.
    pub log_group: u16,
    /// A (source, destination) pair is logged at most once per this many seconds.
    pub log_interval_secs: u32,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            node: None,
            ipv4: true,
            ipv6: false,
            log_group: 100,
            log_interval_secs: 5,
        }
    }
}

/// Name of the verdict map of `dir` for one family.
pub fn map_name(dir: Direction, v6: bool) -> &'static str {
    match (dir, v6) {
        (Direction::Ingress, false) => "ingress-v4",
        (Direction::Ingress, true) => "ingress-v6",
        (Direction::Egress, false) => "egress-v4",
        (Direction::Egress, true) => "egress-v6",
    }
}

/// Name of the dynamic set that rate-limits drop logging.
pub fn logged_set_name(v6: bool) -> &'static str {
    if v6 {
        "logged-v6"
    } else {
        "logged-v4"
    }
}

/// Name of the per-pod chain of `dir`: `ing_<ns>_<pod>` / `egr_<ns>_<pod>` (namespaces and pod
/// names hold no `_`, so it is unambiguous); hashed when longer than nft allows.
pub fn chain_name(dir: Direction, pod: &PodKey) -> String {
    let tag = match dir {
        Direction::Ingress => "ing",
        Direction::Egress => "egr",
    };
    let name = format!("{tag}_{}_{}", pod.namespace, pod.name);
    if name.len() <= 200 {
        name
    } else {
        let h = fnv64(name.as_bytes());
        format!("{}_{h:016x}", &name[..160])
    }
}

/// The log prefix of drops in the chain of `pod` in `dir`: `np in <ns>/<pod> ` (or `np out`),
/// hashed as `np in #<hash> ` when longer than nflog carries (127 bytes).
pub fn log_prefix(dir: Direction, pod: &PodKey) -> String {
    let d = match dir {
        Direction::Ingress => "in",
        Direction::Egress => "out",
    };
    let p = format!("np {d} {pod} ");
    if p.len() <= 127 {
        p
    } else {
        format!("np {d} #{:016x} ", fnv64(pod.to_string().as_bytes()))
    }
}

pub(crate) fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Compiles the whole table.
pub fn compile(state: &PolicyState, opts: &CompileOptions) -> Table {
    let mut c = Compiler {
        state,
        opts,
        table: Table::new(sarasa_nft::Family::Inet, TABLE),
        peer_sets: HashMap::new(),
        bodies: HashMap::new(),
    };
    c.base();
    let local: Vec<&PolicyPod> = state
        .pods()
        .filter(|p| !p.ips.is_empty())
        .filter(|p| opts.node.is_none() || p.node == opts.node)
        .collect();
    for pod in local {
        for dir in [Direction::Ingress, Direction::Egress] {
            c.pod_chain(pod, dir);
        }
    }
    c.table
}

struct Compiler<'a> {
    state: &'a PolicyState,
    opts: &'a CompileOptions,
    table: Table,
    /// Set base name by what it holds (so each is computed once).
    peer_sets: HashMap<SetSpec<'a>, String>,
    /// Allow rules by what they depend on.
    bodies: HashMap<BodyKey, Vec<Rule>>,
}

/// What the allow rules of a pod's chain depend on: the direction, the selecting policies
/// (by address: the state is borrowed for the whole compile) and, for ingress, the pod's
/// container ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BodyKey {
    dir: Direction,
    policies: Vec<usize>,
    ports: Vec<crate::types::ContainerPort>,
}

/// What a shared set holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SetSpec<'a> {
    /// Addresses of the pods a selector peer matches (`ns`: the policy's namespace, only when
    /// the peer has no namespaceSelector).
    Pods { ns: Option<&'a str>, peer: &'a Peer },
    /// An ipBlock.
    Block(&'a Peer),
    /// `addr . proto . port` of the pods matching a peer (`None`: every pod) that have the
    /// named port.
    Named {
        ns: Option<&'a str>,
        peer: Option<&'a Peer>,
        name: &'a str,
        protocol: Protocol,
    },
}

impl<'a> Compiler<'a> {
    fn families(&self) -> Vec<bool> {
        let mut f = Vec::new();
        if self.opts.ipv4 {
            f.push(false);
        }
        if self.opts.ipv6 {
            f.push(true);
        }
        f
    }

    fn base(&mut self) {
        let mut fwd = sarasa_nft::Chain::base(
            FORWARD_CHAIN,
            ChainType::Filter,
            Hook::Forward,
            FORWARD_PRIORITY,
            sarasa_nft::Policy::Accept,
        );
        fwd.push(
            Rule::new()
                .eq(
                    Expr::Ct(sarasa_nft::CtKey::State),
                    Expr::Keywords(vec![Keyword::Established, Keyword::Related]),
                )
                .verdict(Verdict::Accept),
        );
        for dir in [Direction::Egress, Direction::Ingress] {
            for v6 in self.families() {
                let field = addr_field(v6, dir == Direction::Egress);
                fwd.push(Rule::new().then(Stmt::Vmap {
                    key: Expr::Payload(field),
                    map: map_name(dir, v6).to_string(),
                }));
                let addr = if v6 {
                    DataType::Ipv6Addr
                } else {
                    DataType::Ipv4Addr
                };
                let mut map = Set::verdict_map(map_name(dir, v6), vec![addr]);
                map.comment = Some(format!("{} policy chain by pod address", dir.as_str()));
                self.table.add_set(map);
            }
        }
        for v6 in self.families() {
            let addr = if v6 {
                DataType::Ipv6Addr
            } else {
                DataType::Ipv4Addr
            };
            let mut logged = Set::new(logged_set_name(v6), vec![addr, addr]);
            logged.flags = SetFlags {
                interval: false,
                timeout: true,
                dynamic: true,
            };
            logged.timeout = Some(self.opts.log_interval_secs.max(1));
            logged.comment = Some("source . destination pairs logged recently".into());
            self.table.add_set(logged);
        }
        self.table.add_chain(fwd);
    }

    fn pod_chain(&mut self, pod: &'a PolicyPod, dir: Direction) {
        let state = self.state;
        let policies = state.isolating_policies(pod, dir);
        if policies.is_empty() {
            return;
        }
        let key = pod.key();
        let name = chain_name(dir, &key);
        // Pods selected by the same policies (with the same container ports, which ingress
        // named ports resolve on) share the allow rules: build them once.
        let body_key = BodyKey {
            dir,
            policies: policies
                .iter()
                .map(|p| std::ptr::from_ref(*p) as usize)
                .collect(),
            ports: match dir {
                Direction::Ingress => pod.ports.clone(),
                Direction::Egress => Vec::new(),
            },
        };
        let mut rules: Vec<Rule> = match self.bodies.get(&body_key) {
            Some(body) => body.clone(),
            None => {
                let body = self.allow_rules(&policies, pod, dir);
                self.bodies.insert(body_key, body.clone());
                body
            }
        };
        let prefix = log_prefix(dir, &key);
        for v6 in self.families() {
            let pair = Expr::Concat(vec![
                Expr::Payload(addr_field(v6, true)),
                Expr::Payload(addr_field(v6, false)),
            ]);
            let set = logged_set_name(v6).to_string();
            rules.push(
                Rule::new()
                    .eq(pair.clone(), Expr::Set(set.clone()))
                    .counter()
                    .verdict(Verdict::Drop),
            );
            rules.push(
                Rule::new()
                    .then(Stmt::UpdateSet {
                        set,
                        key: pair,
                        timeout: None,
                    })
                    .then(Stmt::Log {
                        prefix: Some(prefix.clone()),
                        group: Some(self.opts.log_group),
                    })
                    .counter()
                    .verdict(Verdict::Drop),
            );
        }
        let names: Vec<String> = policies.iter().map(|p| p.key().to_string()).collect();
        rules.push(
            Rule::new()
                .counter()
                .verdict(Verdict::Drop)
                .comment(selected_by(&names)),
        );
        let mut chain = sarasa_nft::Chain::new(&name);
        chain.rules = rules;
        self.table.add_chain(chain);
        for addr in &pod.ips {
            let v6 = addr.is_ipv6();
            if !self.families().contains(&v6) {
                continue;
            }
            if let Some(map) = self.table.sets.get_mut(map_name(dir, v6)) {
                map.insert_verdict(Key::one(*addr), Verdict::Jump(name.clone()));
            }
        }
    }

    /// The allow rules of `pod`'s chain in `dir`, duplicates removed.
    fn allow_rules(
        &mut self,
        policies: &[&'a crate::types::NetworkPolicy],
        pod: &'a PolicyPod,
        dir: Direction,
    ) -> Vec<Rule> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen: HashSet<Rule> = HashSet::new();
        let verdict = match dir {
            Direction::Ingress => Verdict::Accept,
            Direction::Egress => Verdict::Return,
        };
        for policy in policies {
            for rule in policy.rules(dir) {
                for stmts in self.rule_matches(&policy.namespace, rule, pod, dir) {
                    let mut r = Rule {
                        stmts,
                        comment: None,
                    };
                    r.stmts.push(Stmt::Verdict(verdict.clone()));
                    if seen.insert(r.clone()) {
                        rules.push(r);
                    }
                }
            }
        }
        rules
    }

    /// The match statements of one rule, as alternatives (each a conjunction).
    fn rule_matches(
        &mut self,
        policy_ns: &'a str,
        rule: &'a crate::types::PolicyRule,
        pod: &'a PolicyPod,
        dir: Direction,
    ) -> Vec<Vec<Stmt>> {
        let peer_is_src = dir == Direction::Ingress;
        // Peers: `None` = any peer.
        let peers: Vec<Option<&'a Peer>> = if rule.peers.is_empty() {
            vec![None]
        } else {
            rule.peers.iter().map(Some).collect()
        };
        let mut out = Vec::new();
        // Numeric ports (and, for ingress, named ports resolved on this pod).
        let mut numeric = Vec::new();
        let mut named = Vec::new();
        for p in &rule.ports {
            match (&p.port, dir) {
                (Some(PortRef::Name(n)), Direction::Ingress) => {
                    if let Some(num) = pod.named_port(n, p.protocol) {
                        numeric.push((p.protocol, Some((num, num))));
                    }
                }
                (Some(PortRef::Name(n)), Direction::Egress) => named.push((n.as_str(), p.protocol)),
                (Some(PortRef::Number(s)), _) => {
                    numeric.push((p.protocol, Some((*s, p.end_port.unwrap_or(*s)))))
                }
                (None, _) => numeric.push((p.protocol, None)),
            }
        }
        let port_alts: Vec<Vec<Stmt>> = if rule.ports.is_empty() {
            vec![Vec::new()]
        } else {
            port_alternatives(&numeric)
        };
        for peer in &peers {
            for v6 in self.families() {
                let Some(peer_stmt) = self.peer_match(policy_ns, *peer, v6, peer_is_src) else {
                    continue;
                };
                for alt in &port_alts {
                    let mut stmts = peer_stmt.clone();
                    stmts.extend(alt.iter().cloned());
                    out.push(stmts);
                }
                for (name, protocol) in &named {
                    let spec = SetSpec::Named {
                        ns: peer.and_then(|p| pods_ns(policy_ns, p)),
                        peer: *peer,
                        name,
                        protocol: *protocol,
                    };
                    let set = self.set(spec, v6);
                    out.push(vec![Stmt::Match {
                        left: Expr::Concat(vec![
                            Expr::Payload(addr_field(v6, false)),
                            Expr::Meta(MetaKey::L4proto),
                            Expr::Payload(Field::ThDport),
                        ]),
                        op: sarasa_nft::CmpOp::Eq,
                        right: Expr::Set(set),
                    }]);
                }
            }
        }
        out
    }

    /// `ip saddr @set` (or daddr) for a peer in family `v6`; `Some(vec![])` for any peer but
    /// still restricted to the family; `None` when the peer cannot match this family.
    fn peer_match(
        &mut self,
        policy_ns: &'a str,
        peer: Option<&'a Peer>,
        v6: bool,
        src: bool,
    ) -> Option<Vec<Stmt>> {
        let field = addr_field(v6, src);
        let spec = match peer {
            None => {
                // Any address of this family: `meta nfproto` keeps v4 and v6 rules apart.
                return Some(vec![Stmt::Match {
                    left: Expr::Meta(MetaKey::Nfproto),
                    op: sarasa_nft::CmpOp::Eq,
                    right: Expr::keyword(if v6 { Keyword::Ipv6 } else { Keyword::Ipv4 }),
                }]);
            }
            Some(p @ Peer::IpBlock(b)) => {
                if b.cidr.addr().is_ipv6() != v6 {
                    return None;
                }
                SetSpec::Block(p)
            }
            Some(p @ Peer::Pods { .. }) => SetSpec::Pods {
                ns: pods_ns(policy_ns, p),
                peer: p,
            },
        };
        let set = self.set(spec, v6);
        Some(vec![Stmt::Match {
            left: Expr::Payload(field),
            op: sarasa_nft::CmpOp::Eq,
            right: Expr::Set(set),
        }])
    }

    /// The name of the set for `spec` in family `v6`, creating it on first use.
    fn set(&mut self, spec: SetSpec<'a>, v6: bool) -> String {
        let base = match self.peer_sets.get(&spec) {
            Some(b) => b.clone(),
            None => {
                let (prefix, text) = describe(&spec);
                let b = format!("{prefix}-{:016x}", fnv64(text.as_bytes()));
                self.peer_sets.insert(spec.clone(), b.clone());
                b
            }
        };
        let name = format!("{base}-{}", if v6 { "v6" } else { "v4" });
        if !self.table.sets.contains_key(&name) {
            let set = self.build_set(&spec, &name, v6);
            self.table.add_set(set);
        }
        name
    }

    fn build_set(&self, spec: &SetSpec<'a>, name: &str, v6: bool) -> Set {
        let addr_type = if v6 {
            DataType::Ipv6Addr
        } else {
            DataType::Ipv4Addr
        };
        let fam = |a: &&IpAddr| a.is_ipv6() == v6;
        let (_, text) = describe(spec);
        let mut set = match spec {
            SetSpec::Pods { ns, peer } => {
                let mut s = Set::new(name, vec![addr_type]);
                for pod in self.state.peer_pods(ns.unwrap_or(""), peer) {
                    for a in pod.ips.iter().filter(fam) {
                        s.insert(Key::one(*a));
                    }
                }
                s
            }
            SetSpec::Block(Peer::IpBlock(b)) => {
                let mut s = Set::new(name, vec![addr_type]);
                s.flags.interval = true;
                for net in subtract(b.cidr, &b.except) {
                    s.insert(Key::one(net));
                }
                s
            }
            SetSpec::Block(_) => Set::new(name, vec![addr_type]),
            SetSpec::Named {
                ns,
                peer,
                name: port_name,
                protocol,
            } => {
                let mut s = Set::new(
                    name,
                    vec![addr_type, DataType::InetProto, DataType::InetService],
                );
                let mut add = |pod: &PolicyPod, only: Option<&crate::types::IpBlock>| {
                    if let Some(port) = pod.named_port(port_name, *protocol) {
                        for a in pod.ips.iter().filter(fam) {
                            if only.is_none_or(|b| b.contains(*a)) {
                                s.insert(Key(vec![
                                    Value::Addr(*a),
                                    Value::Proto(protocol.l4()),
                                    Value::Port(port),
                                ]));
                            }
                        }
                    }
                };
                match peer {
                    None => self.state.pods().for_each(|p| add(p, None)),
                    Some(Peer::IpBlock(b)) => self.state.pods().for_each(|p| add(p, Some(b))),
                    Some(p @ Peer::Pods { .. }) => self
                        .state
                        .peer_pods(ns.unwrap_or(""), p)
                        .for_each(|p| add(p, None)),
                }
                s
            }
        };
        set.comment = Some(truncate(&text, 70));
        set
    }
}

/// The namespace a pod peer is relative to (`None` when it has a namespaceSelector).
fn pods_ns<'a>(policy_ns: &'a str, peer: &Peer) -> Option<&'a str> {
    match peer {
        Peer::Pods {
            namespace_selector: None,
            ..
        } => Some(policy_ns),
        _ => None,
    }
}

/// Set name prefix and a canonical description (hashed into the name, kept as comment).
fn describe(spec: &SetSpec<'_>) -> (&'static str, String) {
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
    fn block_text(b: &crate::types::IpBlock) -> String {
        let mut t = b.cidr.to_string();
        for e in &b.except {
            t.push_str(" -");
            t.push_str(&e.to_string());
        }
        t
    }
    match spec {
        SetSpec::Pods { ns, peer } => ("pods", pods_text(*ns, peer)),
        SetSpec::Block(peer) => ("cidr", pods_text(None, peer)),
        SetSpec::Named {
            ns,
            peer,
            name,
            protocol,
        } => {
            let who = match peer {
                None => "all pods".to_string(),
                Some(p) => pods_text(*ns, p),
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

/// The comment naming the policies that select a pod (fits nft's 100 characters together with
/// the content hash sarasa-nft appends).
fn selected_by(names: &[String]) -> String {
    let mut s = String::from("selected by");
    for (i, n) in names.iter().enumerate() {
        let rest = names.len() - i;
        if s.len() + n.len() + 1 > 60 {
            s.push_str(&format!(" +{rest} more"));
            return s;
        }
        s.push(' ');
        s.push_str(n);
    }
    s
}

fn addr_field(v6: bool, src: bool) -> Field {
    match (v6, src) {
        (false, true) => Field::IpSaddr,
        (false, false) => Field::IpDaddr,
        (true, true) => Field::Ip6Saddr,
        (true, false) => Field::Ip6Daddr,
    }
}

/// Port alternatives for `(protocol, Some((start, end)) | None)` entries: exact ports in one
/// anonymous concatenated set, protocol-only entries in one set of protocols, ranges as masked
/// blocks.
fn port_alternatives(ports: &[(Protocol, Option<(u16, u16)>)]) -> Vec<Vec<Stmt>> {
    let mut exact: BTreeSet<(Protocol, u16)> = BTreeSet::new();
    let mut any: BTreeSet<Protocol> = BTreeSet::new();
    let mut ranges: BTreeSet<(Protocol, u16, u16)> = BTreeSet::new();
    for (proto, range) in ports {
        match range {
            None => {
                any.insert(*proto);
            }
            Some((s, e)) if s == e => {
                exact.insert((*proto, *s));
            }
            Some((s, e)) => {
                ranges.insert((*proto, *s, *e));
            }
        }
    }
    exact.retain(|(p, _)| !any.contains(p));
    ranges.retain(|(p, _, _)| !any.contains(p));
    let l4 = || Expr::Meta(MetaKey::L4proto);
    let eq = |left, right| Stmt::Match {
        left,
        op: sarasa_nft::CmpOp::Eq,
        right,
    };
    let mut out = Vec::new();
    if !any.is_empty() {
        out.push(vec![if let (1, Some(p)) = (any.len(), any.first()) {
            eq(l4(), Expr::value(p.l4()))
        } else {
            eq(
                l4(),
                Expr::AnonSet(any.iter().map(|p| vec![Value::Proto(p.l4())]).collect()),
            )
        }]);
    }
    if let (1, Some((p, port))) = (exact.len(), exact.first().copied()) {
        out.push(vec![
            eq(l4(), Expr::value(p.l4())),
            eq(
                Expr::Payload(Field::ThDport),
                Expr::Value(Value::Port(port)),
            ),
        ]);
    } else if !exact.is_empty() {
        out.push(vec![eq(
            Expr::Concat(vec![l4(), Expr::Payload(Field::ThDport)]),
            Expr::AnonSet(
                exact
                    .iter()
                    .map(|(p, port)| vec![Value::Proto(p.l4()), Value::Port(*port)])
                    .collect(),
            ),
        )]);
    }
    for (p, s, e) in ranges {
        for (base, mask) in port_blocks(s, e) {
            let dport = if mask == 0xffff {
                Expr::Payload(Field::ThDport)
            } else {
                Expr::And(Box::new(Expr::Payload(Field::ThDport)), u32::from(mask))
            };
            out.push(vec![
                eq(l4(), Expr::value(p.l4())),
                eq(dport, Expr::Value(Value::Port(base))),
            ]);
        }
    }
    out
}
