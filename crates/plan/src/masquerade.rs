//! Egress masquerade in sarasa's own nftables table (`inet sarasa-node`; the service proxy owns
//! `inet sarasa` and its shards): pod → outside-cluster traffic leaves with the node's address.
//! In a cluster set the table also clamps the MSS of TCP SYNs leaving through a cable device
//! (chain `forward`), whose MTU is below the pods'. Tunnels' underlay UDP skips conntrack
//! (chains `raw-prerouting` and `raw-output`, [`UntrackedTunnel`]).

use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_nft::{
    Chain, ChainType, Expr, Family, Field, Hook, MetaKey, Policy, Rule, Stmt, Table, Value,
    TCP_RST, TCP_SYN,
};

use crate::fabric::{GlobalSnat, Masquerade, UntrackedTunnel, CABLE_DEVICES};

pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "sarasa-node";
/// `srcnat`.
const PRIORITY: i32 = 100;
/// `mangle`: the MSS clamp's forward chain.
const CLAMP_PRIORITY: i32 = -150;
/// `raw`: before conntrack (-200) attaches an entry.
const RAW_PRIORITY: i32 = -300;

/// Drops CIDRs covered by another one (nft rejects overlapping intervals in a set).
fn collapse(cidrs: &[IpNet]) -> Vec<IpNet> {
    let mut sorted: Vec<IpNet> = cidrs.iter().map(|c| c.trunc()).collect();
    sorted.sort_by_key(|c| (c.prefix_len(), *c));
    sorted.dedup();
    let mut out: Vec<IpNet> = Vec::new();
    for c in sorted {
        if !out.iter().any(|o| o.contains(&c)) {
            out.push(c);
        }
    }
    out.sort();
    out
}

fn set_of(cidrs: &[IpNet]) -> Expr {
    Expr::AnonSet(
        collapse(cidrs)
            .into_iter()
            .map(|c| vec![Value::Prefix(c)])
            .collect(),
    )
}

/// `tcp flags & (syn | rst) == syn oifname { "sarasa-cable", "sarasa-wg" } tcp option maxseg
/// size set rt mtu`: SYNs (and SYN-ACKs) leaving through a cable carry an MSS the cable's MTU
/// fits.
fn clamp_chain() -> Chain {
    Chain::base(
        "forward",
        ChainType::Filter,
        Hook::Forward,
        CLAMP_PRIORITY,
        Policy::Accept,
    )
    .rule(
        // The flags first: every forwarded packet meets this rule, and nearly all of them are
        // not SYNs, which two compares tell (the device name is a set lookup).
        Rule::new()
            .eq(
                Expr::And(Box::new(Expr::Payload(Field::TcpFlags)), TCP_SYN | TCP_RST),
                Expr::Value(Value::Num(TCP_SYN)),
            )
            .eq(Expr::Meta(MetaKey::Oifname), cables())
            .then(Stmt::ClampMssToPmtu),
    )
}

fn cables() -> Expr {
    Expr::AnonSet(
        CABLE_DEVICES
            .iter()
            .map(|d| vec![Value::Ifname(d.to_string())])
            .collect(),
    )
}

/// `raw-prerouting`: `iifname LINK [ip daddr LOCAL] udp dport { PORTS } notrack`;
/// `raw-output`: `oifname LINK [ip daddr { PEERS }] udp dport { PORTS } notrack` (none when
/// the tunnel has no peer yet).
fn notrack_chains(tunnels: &[UntrackedTunnel]) -> [Chain; 2] {
    let base =
        |name, hook| Chain::base(name, ChainType::Filter, hook, RAW_PRIORITY, Policy::Accept);
    let (mut pre, mut out) = (
        base("raw-prerouting", Hook::Prerouting),
        base("raw-output", Hook::Output),
    );
    for t in tunnels {
        let ports = Expr::AnonSet(t.ports.iter().map(|p| vec![Value::Port(*p)]).collect());
        let untrack = |r: Rule| {
            r.eq(Expr::Payload(Field::UdpDport), ports.clone())
                .then(Stmt::Notrack)
        };
        let on = |key| Rule::new().eq(Expr::Meta(key), Expr::value(Value::Ifname(t.link.clone())));
        let mut received = on(MetaKey::Iifname);
        if let Some(addr) = t.local {
            received = received.eq(Expr::Payload(daddr_of(addr)), Expr::value(addr));
        }
        pre = pre.rule(untrack(received));
        let Some(peers) = &t.peers else {
            out = out.rule(untrack(on(MetaKey::Oifname)));
            continue;
        };
        // One rule per family of peers (none yet: none).
        for (field, v4) in [(Field::IpDaddr, true), (Field::Ip6Daddr, false)] {
            let set: Vec<Vec<Value>> = peers
                .iter()
                .filter(|p| p.is_ipv4() == v4)
                .map(|p| vec![Value::Addr(*p)])
                .collect();
            if !set.is_empty() {
                let sent = on(MetaKey::Oifname).eq(Expr::Payload(field), Expr::AnonSet(set));
                out = out.rule(untrack(sent));
            }
        }
    }
    [pre, out]
}

fn daddr_of(addr: IpAddr) -> Field {
    if addr.is_ipv4() {
        Field::IpDaddr
    } else {
        Field::Ip6Daddr
    }
}

/// GlobalNet's egress: `oifname { cables } ip saddr { cluster } ip daddr { other clusters'
/// global CIDRs } snat ip to EGRESS` (the pods' own addresses may overlap the other
/// clusters').
fn global_snat_rule(g: &GlobalSnat) -> Option<Rule> {
    let v4 = g.egress.is_ipv4();
    let (saddr, daddr) = if v4 {
        (Field::IpSaddr, Field::IpDaddr)
    } else {
        (Field::Ip6Saddr, Field::Ip6Daddr)
    };
    let family = |c: &&IpNet| c.addr().is_ipv4() == v4;
    let from: Vec<IpNet> = g.from.iter().filter(family).copied().collect();
    let to: Vec<IpNet> = g.to.iter().filter(family).copied().collect();
    if from.is_empty() || to.is_empty() {
        return None;
    }
    Some(
        Rule::new()
            .eq(Expr::Meta(MetaKey::Oifname), cables())
            .eq(Expr::Payload(saddr), set_of(&from))
            .eq(Expr::Payload(daddr), set_of(&to))
            .then(Stmt::Counter)
            .then(Stmt::Snat { addr: g.egress }),
    )
}

/// The table: one rule per family with pod CIDRs on this node; the MSS clamp in a cluster set;
/// GlobalNet's egress SNAT.
pub fn table(m: &Masquerade) -> Table {
    let mut chain = Chain::base(
        "postrouting",
        ChainType::Nat,
        Hook::Postrouting,
        PRIORITY,
        Policy::Accept,
    );
    for rule in m.global_snat.iter().filter_map(global_snat_rule) {
        chain = chain.rule(rule);
    }
    for (saddr, daddr, multicast, is_v4) in [
        (Field::IpSaddr, Field::IpDaddr, "224.0.0.0/4", true),
        (Field::Ip6Saddr, Field::Ip6Daddr, "ff00::/8", false),
    ] {
        let pods: Vec<IpNet> = m
            .pod_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == is_v4)
            .copied()
            .collect();
        if pods.is_empty() {
            continue;
        }
        let cluster: Vec<IpNet> = m
            .cluster_cidrs
            .iter()
            .chain(m.pod_cidrs.iter())
            .filter(|c| c.addr().is_ipv4() == is_v4)
            .copied()
            .collect();
        let multicast: IpNet = multicast.parse().expect("constant CIDR");
        chain = chain.rule(
            Rule::new()
                .eq(Expr::Payload(saddr), set_of(&pods))
                .ne(Expr::Payload(daddr), set_of(&cluster))
                .ne(Expr::Payload(daddr), Expr::Value(Value::Prefix(multicast)))
                .then(Stmt::Counter)
                .then(Stmt::Masquerade { fully_random: true }),
        );
    }
    let mut t = Table::new(Family::Inet, TABLE_NAME);
    t.add_chain(chain);
    if m.clamp_mss {
        t.add_chain(clamp_chain());
    }
    if !m.untracked.is_empty() {
        for chain in notrack_chains(&m.untracked) {
            t.add_chain(chain);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_masquerades_pods_leaving_the_cluster() {
        let m = Masquerade {
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            cluster_cidrs: vec![
                "10.244.0.0/16".parse().unwrap(),
                "10.244.1.0/24".parse().unwrap(),
            ],
            clamp_mss: false,
            global_snat: Vec::new(),
            untracked: Vec::new(),
        };
        let t = table(&m);
        t.validate().unwrap();
        let text = t.render();
        assert!(
            text.contains("type nat hook postrouting priority 100; policy accept;"),
            "{text}"
        );
        assert!(
            text.contains(
                "ip saddr { 10.244.1.0/24 } ip daddr != { 10.244.0.0/16 } ip daddr != 224.0.0.0/4 counter masquerade fully-random"
            ),
            "{text}"
        );
        assert!(!text.contains("ip6"), "{text}");
    }

    #[test]
    fn dual_stack_gets_an_ip6_rule() {
        let m = Masquerade {
            pod_cidrs: vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:244:1::/64".parse().unwrap(),
            ],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            clamp_mss: false,
            global_snat: Vec::new(),
            untracked: Vec::new(),
        };
        let text = table(&m).render();
        assert!(
            text.contains("ip6 saddr { fd00:10:244:1::/64 } ip6 daddr != { fd00:10:244:1::/64 } ip6 daddr != ff00::/8"),
            "{text}"
        );
    }

    /// The plan of node n1 of a 2-node cluster, in a cluster set when `remote` ranges are given.
    fn plan_masquerade(remote: &[&str]) -> Masquerade {
        plan_masquerade_global(remote, &[])
    }

    /// The same, dual-stack (IPv6 cluster and pod ranges as well), with GlobalNet's `egress`.
    fn plan_masquerade_global(remote: &[&str], egress: &[&str]) -> Masquerade {
        plan_of(sarasa_model::Backend::HostGw, remote, egress)
    }

    fn plan_of(backend: sarasa_model::Backend, remote: &[&str], egress: &[&str]) -> Masquerade {
        use crate::fabric::{compile, LocalNode, PeerNode};
        let vtep = (backend == sarasa_model::Backend::Vxlan)
            .then_some(sarasa_model::MacAddr([2, 0, 0, 0, 0, 1]));
        let peer = |name: &str, cidr: &str, ip: &str| PeerNode {
            name: name.into(),
            pod_cidrs: vec![cidr.parse().unwrap()],
            underlay_ip: Some(ip.parse().unwrap()),
            vtep_mac: vtep.map(|mut m| {
                m.0[5] = ip.len() as u8;
                m
            }),
            ..PeerNode::default()
        };
        let local = LocalNode {
            name: "n1".into(),
            backend,
            underlay_ip: "192.168.33.11".parse().unwrap(),
            uplink: "eth0".into(),
            uplink_mtu: 1500,
            vtep_mac: vtep,
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            remote_cluster_cidrs: remote.iter().map(|c| c.parse().unwrap()).collect(),
            global_egress: egress.iter().map(|e| e.parse().unwrap()).collect(),
        };
        let nodes = [
            peer("n1", "10.244.1.0/24", "192.168.33.11"),
            peer("n2", "10.244.2.0/24", "192.168.33.12"),
        ];
        let mut local = local;
        let mut nodes = nodes;
        if remote.iter().chain(egress).any(|c| c.contains(':')) {
            local
                .cluster_cidrs
                .push("fd00:10:244::/56".parse().unwrap());
            nodes[0]
                .pod_cidrs
                .push("fd00:10:244:1::/64".parse().unwrap());
            nodes[1]
                .pod_cidrs
                .push("fd00:10:244:2::/64".parse().unwrap());
        }
        compile(&nodes, &local).unwrap().masquerade
    }

    #[test]
    fn a_cluster_set_member_clamps_the_mss_on_the_cable() {
        let m = plan_masquerade(&["10.245.0.0/16", "10.97.0.0/16"]);
        assert!(m.clamp_mss);
        let t = table(&m);
        t.validate().unwrap();
        let text = t.render();
        assert!(
            text.contains("type filter hook forward priority -150; policy accept;"),
            "{text}"
        );
        assert!(
            text.contains(
                "tcp flags & (syn | rst) == syn meta oifname { \"sarasa-cable\", \"sarasa-wg\" } tcp option maxseg size set rt mtu"
            ),
            "{text}"
        );
        // The remote ranges are not masqueraded.
        assert!(
            text.contains("ip daddr != { 10.97.0.0/16, 10.244.0.0/16, 10.245.0.0/16 }"),
            "{text}"
        );
    }

    #[test]
    fn outside_a_cluster_set_there_is_no_clamp() {
        let m = plan_masquerade(&[]);
        assert!(!m.clamp_mss);
        let t = table(&m);
        assert_eq!(t.chains.keys().collect::<Vec<_>>(), ["postrouting"]);
        let text = t.render();
        assert!(!text.contains("maxseg"), "{text}");
        assert!(!text.contains("hook forward"), "{text}");
    }

    #[test]
    fn vxlan_tunnel_underlay_skips_conntrack() {
        let m = plan_of(sarasa_model::Backend::Vxlan, &[], &[]);
        let t = table(&m);
        t.validate().unwrap();
        let text = t.render();
        for line in [
            "type filter hook prerouting priority -300; policy accept;",
            "meta iifname \"eth0\" ip daddr 192.168.33.11 udp dport { 8472 } notrack",
            "type filter hook output priority -300; policy accept;",
            "meta oifname \"eth0\" ip daddr { 192.168.33.12 } udp dport { 8472 } notrack",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        assert!(!text.contains("wan0"), "{text}");
    }

    #[test]
    fn a_cluster_set_member_untracks_the_route_agent_and_the_cables() {
        let m = plan_of(sarasa_model::Backend::HostGw, &["10.245.0.0/16"], &[]);
        let text = table(&m).render();
        for line in [
            "meta iifname \"eth0\" ip daddr 192.168.33.11 udp dport { 4801 } notrack",
            "meta oifname \"eth0\" ip daddr { 192.168.33.12 } udp dport { 4801 } notrack",
            "meta iifname \"wan0\" udp dport { 4500, 4800 } notrack",
            "meta oifname \"wan0\" udp dport { 4500, 4800 } notrack",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        // Not a tunnel's: host-gw outside a set has none, and no raw chain.
        let m = plan_of(sarasa_model::Backend::HostGw, &[], &[]);
        assert!(m.untracked.is_empty());
        assert!(!table(&m).render().contains("notrack"));
    }

    #[test]
    fn globalnet_snats_the_clusters_pods_leaving_through_a_cable() {
        let m = plan_masquerade_global(&["242.1.0.0/16"], &["242.0.0.1"]);
        let t = table(&m);
        t.validate().unwrap();
        let text = t.render();
        assert!(
            text.contains(
                "meta oifname { \"sarasa-cable\", \"sarasa-wg\" } ip saddr { 10.244.0.0/16 } ip daddr { 242.1.0.0/16 } counter snat ip to 242.0.0.1"
            ),
            "{text}"
        );
        // Without a set, no egress rule even with an address.
        let m = plan_masquerade_global(&[], &["242.0.0.1"]);
        assert!(m.global_snat.is_empty());
        assert!(!table(&m).render().contains("snat"));
    }

    #[test]
    fn dual_stack_globalnet_snats_each_family_to_its_own_egress() {
        let m = plan_masquerade_global(
            &["242.1.0.0/16", "fd00:242:0:1::/112"],
            &["242.0.0.1", "fd00:242::1"],
        );
        let t = table(&m);
        t.validate().unwrap();
        let text = t.render();
        for want in [
            "ip saddr { 10.244.0.0/16 } ip daddr { 242.1.0.0/16 } counter snat ip to 242.0.0.1",
            "ip6 saddr { fd00:10:244::/56 } ip6 daddr { fd00:242:0:1::/112 } counter snat ip6 to fd00:242::1",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }
}
