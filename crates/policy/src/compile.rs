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

use sarasa_model::hash::fnv1a64;
use sarasa_nft::{
    ChainType, DataType, Expr, Field, Hook, Keyword, MetaKey, Rule, Set, SetFlags, Stmt, Table,
    Verdict,
};

use crate::ranges::port_alternatives;
pub(crate) use crate::sets::SetSpec;
use crate::state::PolicyState;
use crate::{ContainerPort, Direction, NetworkPolicy, Peer, PodKey, PolicyPod, PortRef};

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
    /// Police IPv4 traffic.
    pub ipv4: bool,
    /// Police IPv6 traffic. Set it whenever pods have IPv6 addresses: a family not compiled
    /// has no maps, so its traffic is not policed at all.
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
    let name = if name.len() <= 200 {
        name
    } else {
        let h = fnv1a64(name.as_bytes());
        let mut cut = 160;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}_{h:016x}", &name[..cut])
    };
    // A name nft would not take unquoted becomes one it does (unchanged when valid).
    sarasa_nft::text::ident(&name).into_owned()
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
        format!("np {d} #{:016x} ", fnv1a64(pod.to_string().as_bytes()))
    }
}

/// Compiles the whole table (the same code path as [`crate::PolicyCompiler::new`]).
pub fn compile(state: &PolicyState, opts: &CompileOptions) -> Table {
    crate::incremental::PolicyCompiler::new(state.clone(), opts.clone()).into_table()
}

/// The families compiled, `false` = IPv4.
pub(crate) fn families(opts: &CompileOptions) -> Vec<bool> {
    let mut f = Vec::new();
    if opts.ipv4 {
        f.push(false);
    }
    if opts.ipv6 {
        f.push(true);
    }
    f
}

pub(crate) fn addr_type(v6: bool) -> DataType {
    if v6 {
        DataType::Ipv6Addr
    } else {
        DataType::Ipv4Addr
    }
}

/// The table without pods: the base chain, the verdict maps, the drop-log sets.
pub(crate) fn base_table(opts: &CompileOptions) -> Table {
    let mut table = Table::new(sarasa_nft::Family::Inet, TABLE);
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
        for v6 in families(opts) {
            let field = addr_field(v6, dir == Direction::Egress);
            fwd.push(Rule::new().then(Stmt::Vmap {
                key: Expr::Payload(field),
                map: map_name(dir, v6).to_string(),
            }));
            let mut map = Set::verdict_map(map_name(dir, v6), vec![addr_type(v6)]);
            map.comment = Some(format!("{} policy chain by pod address", dir.as_str()));
            table.add_set(map);
        }
    }
    for v6 in families(opts) {
        let mut logged = Set::new(logged_set_name(v6), vec![addr_type(v6), addr_type(v6)]);
        logged.flags = SetFlags {
            interval: false,
            timeout: true,
            dynamic: true,
        };
        logged.timeout = Some(opts.log_interval_secs.max(1));
        logged.comment = Some("source . destination pairs logged recently".into());
        table.add_set(logged);
    }
    table.add_chain(fwd);
    table
}

/// One pod's chain and the shared sets it refers to (name → spec, family).
pub(crate) struct BuiltChain {
    pub chain: sarasa_nft::Chain,
    pub sets: BTreeSet<String>,
}

/// Allow rules already built, by what they depend on: the direction, the selecting policies
/// and, for ingress, the pod's container ports (named ports resolve on them). Cleared when a
/// policy changes.
pub(crate) type Bodies =
    HashMap<(Direction, Vec<PodKey>, Vec<ContainerPort>), (Vec<Rule>, BTreeSet<String>)>;

/// Builds per-pod chains; remembers the names of set specs.
#[derive(Default)]
pub(crate) struct ChainBuilder {
    names: HashMap<SetSpec, String>,
    /// What each set name holds.
    specs: HashMap<String, (SetSpec, bool)>,
}

impl ChainBuilder {
    /// The spec and family of a set name this builder handed out.
    pub(crate) fn spec(&self, name: &str) -> Option<&(SetSpec, bool)> {
        self.specs.get(name)
    }

    /// The chain of `pod` in `dir`, or `None` when no policy isolates it in `dir`.
    pub(crate) fn pod_chain(
        &mut self,
        state: &PolicyState,
        opts: &CompileOptions,
        pod: &PolicyPod,
        dir: Direction,
        bodies: &mut Bodies,
    ) -> Option<BuiltChain> {
        let policies = state.isolating_policies(pod, dir);
        if policies.is_empty() {
            return None;
        }
        let key = pod.key();
        let body_key = (
            dir,
            policies.iter().map(|p| p.key()).collect::<Vec<_>>(),
            match dir {
                Direction::Ingress => pod.ports.clone(),
                Direction::Egress => Vec::new(),
            },
        );
        let (mut rules, sets) = match bodies.get(&body_key) {
            Some(b) => b.clone(),
            None => {
                let mut sets = BTreeSet::new();
                let rules = self.allow_rules(opts, &policies, pod, dir, &mut sets);
                bodies.insert(body_key, (rules.clone(), sets.clone()));
                (rules, sets)
            }
        };
        let prefix = log_prefix(dir, &key);
        for v6 in families(opts) {
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
                        group: Some(opts.log_group),
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
        let mut chain = sarasa_nft::Chain::new(chain_name(dir, &key));
        chain.rules = rules;
        Some(BuiltChain { chain, sets })
    }

    /// The allow rules of `pod`'s chain in `dir`, duplicates removed.
    fn allow_rules(
        &mut self,
        opts: &CompileOptions,
        policies: &[&NetworkPolicy],
        pod: &PolicyPod,
        dir: Direction,
        sets: &mut BTreeSet<String>,
    ) -> Vec<Rule> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen: HashSet<Vec<Stmt>> = HashSet::new();
        let verdict = match dir {
            Direction::Ingress => Verdict::Accept,
            Direction::Egress => Verdict::Return,
        };
        for policy in policies {
            for (i, rule) in policy.rules(dir).iter().enumerate() {
                for mut stmts in self.rule_matches(opts, &policy.namespace, rule, pod, dir, sets) {
                    stmts.push(Stmt::Verdict(verdict.clone()));
                    // The first policy rule that yields these matches names it (trace and
                    // `nft list` show which rule allowed a packet).
                    if seen.insert(stmts.clone()) {
                        rules.push(Rule {
                            stmts,
                            comment: Some(allow_comment(&policy.key().to_string(), dir, i)),
                        });
                    }
                }
            }
        }
        rules
    }

    /// The match statements of one rule, as alternatives (each a conjunction).
    fn rule_matches(
        &mut self,
        opts: &CompileOptions,
        policy_ns: &str,
        rule: &crate::PolicyRule,
        pod: &PolicyPod,
        dir: Direction,
        sets: &mut BTreeSet<String>,
    ) -> Vec<Vec<Stmt>> {
        let peer_is_src = dir == Direction::Ingress;
        // Peers: `None` = any peer.
        let peers: Vec<Option<&Peer>> = if rule.peers.is_empty() {
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
            for v6 in families(opts) {
                let Some(peer_stmt) = self.peer_match(policy_ns, *peer, v6, peer_is_src, sets)
                else {
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
                        peer: peer.cloned(),
                        name: name.to_string(),
                        protocol: *protocol,
                    };
                    let set = self.set(spec, v6, sets);
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

    /// `ip saddr @set` (or daddr) for a peer in family `v6`; `meta nfproto` for any peer;
    /// `None` when the peer cannot match this family.
    fn peer_match(
        &mut self,
        policy_ns: &str,
        peer: Option<&Peer>,
        v6: bool,
        src: bool,
        sets: &mut BTreeSet<String>,
    ) -> Option<Vec<Stmt>> {
        let field = addr_field(v6, src);
        let spec = match peer {
            None => {
                return Some(vec![Stmt::Match {
                    left: Expr::Meta(MetaKey::Nfproto),
                    op: sarasa_nft::CmpOp::Eq,
                    right: Expr::keyword(if v6 { Keyword::Ipv6 } else { Keyword::Ipv4 }),
                }]);
            }
            Some(Peer::IpBlock(b)) => {
                if b.cidr.addr().is_ipv6() != v6 {
                    return None;
                }
                SetSpec::Block(b.clone())
            }
            Some(p @ Peer::Pods { .. }) => SetSpec::Pods {
                ns: pods_ns(policy_ns, p),
                peer: p.clone(),
            },
        };
        let set = self.set(spec, v6, sets);
        Some(vec![Stmt::Match {
            left: Expr::Payload(field),
            op: sarasa_nft::CmpOp::Eq,
            right: Expr::Set(set),
        }])
    }

    /// The name of the set for `spec` in family `v6`, recorded in `sets`.
    fn set(&mut self, spec: SetSpec, v6: bool, sets: &mut BTreeSet<String>) -> String {
        let base = match self.names.get(&spec) {
            Some(b) => b.clone(),
            None => {
                let b = spec.base_name();
                self.names.insert(spec.clone(), b.clone());
                b
            }
        };
        let name = format!("{base}-{}", if v6 { "v6" } else { "v4" });
        if !self.specs.contains_key(&name) {
            self.specs.insert(name.clone(), (spec, v6));
        }
        sets.insert(name.clone());
        name
    }
}

/// The namespace a pod peer is relative to (`None` when it has a namespaceSelector).
fn pods_ns(policy_ns: &str, peer: &Peer) -> Option<String> {
    match peer {
        Peer::Pods {
            namespace_selector: None,
            ..
        } => Some(policy_ns.to_string()),
        _ => None,
    }
}

/// The comment of an allow rule: `allow <ns>/<policy> ingress[<i>]` (the policy's
/// `spec.ingress[i]` or `spec.egress[i]`), cut to fit nft's 100 characters.
pub fn allow_comment(policy: &str, dir: Direction, index: usize) -> String {
    let field = match dir {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let tail = format!(" {field}[{index}]");
    let room = 90usize.saturating_sub(tail.len() + "allow ".len());
    let name: String = policy.chars().take(room).collect();
    format!("allow {name}{tail}")
}

/// Reads an allow rule's comment back: policy (`ns/name`, possibly cut), direction, rule index.
pub fn parse_allow_comment(comment: &str) -> Option<(&str, Direction, usize)> {
    let rest = comment.strip_prefix("allow ")?;
    let (policy, field) = rest.rsplit_once(' ')?;
    let (dir, index) = field.strip_suffix(']')?.split_once('[')?;
    let dir = match dir {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        _ => return None,
    };
    Some((policy, dir, index.parse().ok()?))
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

pub(crate) fn addr_field(v6: bool, src: bool) -> Field {
    match (v6, src) {
        (false, true) => Field::IpSaddr,
        (false, false) => Field::IpDaddr,
        (true, true) => Field::Ip6Saddr,
        (true, false) => Field::Ip6Daddr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_comments_name_the_policy_rule_and_read_back() {
        let c = allow_comment("x/allow-web", Direction::Ingress, 2);
        assert_eq!(c, "allow x/allow-web ingress[2]");
        assert_eq!(
            parse_allow_comment(&c),
            Some(("x/allow-web", Direction::Ingress, 2))
        );
        let long = format!("ns/{}", "p".repeat(250));
        let c = allow_comment(&long, Direction::Egress, 11);
        assert!(c.len() <= 100 && c.ends_with(" egress[11]"), "{c}");
        check_comment_fits(&c);
        assert_eq!(parse_allow_comment("selected by x/a"), None);
    }

    #[test]
    fn hostile_pod_names_give_valid_chain_names_and_quoted_prefixes() {
        let pod = PodKey::new("ns\"; flush ruleset", "p}\n{");
        for dir in [Direction::Ingress, Direction::Egress] {
            let c = chain_name(dir, &pod);
            assert_eq!(sarasa_nft::text::ident(&c), c);
            let mut t = Table::new(sarasa_nft::Family::Inet, TABLE);
            t.add_chain(sarasa_nft::Chain::new(c).rule(Rule::new().then(Stmt::Log {
                prefix: Some(log_prefix(dir, &pod)),
                group: Some(1),
            })));
            let text = t.render();
            let log = text.lines().find(|l| l.contains("log prefix")).unwrap();
            assert!(log.contains("\"np "), "{log}");
            assert!(
                log.contains("log prefix \"np ") && log.contains(" group 1 comment \"sarasa:"),
                "{log}"
            );
            assert_eq!(log.matches('"').count(), 4, "{log}");
        }
    }

    fn check_comment_fits(c: &str) {
        assert!(c.len() <= 100 && !c.contains('"'));
    }

    #[test]
    fn hashed_names_are_pinned() {
        // Kernel chains and nflog prefixes of long pod names carry these hashes.
        let long = PodKey::new("x", "p".repeat(250));
        let chain = chain_name(Direction::Ingress, &long);
        assert_eq!(&chain[chain.len() - 17..], "_954ceab18002ad61");
        assert_eq!(
            log_prefix(Direction::Egress, &long),
            "np out #a9f9287a4f57d8b8 "
        );
    }
}
