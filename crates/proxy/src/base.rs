//! The fixed part of the tables: hooks, dispatch chains and the global maps and sets that
//! per-Service objects fill.
//!
//! ```text
//! main table `inet {table}`:
//! filter-prerouting  (prio -110)  ct state new → firewall-check       (loadBalancerSourceRanges;
//!                                                                      only while there are some)
//! filter-input/forward/output (-110) ct state new → endpoints-check   (no endpoints: reject/drop)
//! filter-forward (-110), filter-output-post-dnat (-90) ct state new → cluster-ips-check
//! nat-postrouting (100) → masquerading (only packets with the masquerade mark)
//!
//! each shard table `inet {table}-svcNN`:
//! nat-prerouting/nat-output (-100) → services → vmap @service-ips
//! nat-prerouting-nodeports/nat-output-nodeports (-99) → vmap @service-nodeports (local daddr)
//! (the four base chains only while a Service of the shard has an EndpointSlice)
//! ```

use ipnet::IpNet;
use sarasa_model::IpFamily;
use sarasa_nft::{
    Chain, ChainType, DataType, Expr, Family, Field, Hook, Key, Keyword, MetaKey, Policy,
    RejectKind, Rule, Set, Stmt, Table, Value, Verdict,
};

use crate::config::ProxyConfig;
use crate::names::global;

pub(crate) const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

pub(crate) fn addr_type(f: IpFamily) -> DataType {
    match f {
        IpFamily::V4 => DataType::Ipv4Addr,
        IpFamily::V6 => DataType::Ipv6Addr,
    }
}

pub(crate) fn saddr(f: IpFamily) -> Expr {
    Expr::Payload(match f {
        IpFamily::V4 => Field::IpSaddr,
        IpFamily::V6 => Field::Ip6Saddr,
    })
}

pub(crate) fn daddr(f: IpFamily) -> Expr {
    Expr::Payload(match f {
        IpFamily::V4 => Field::IpDaddr,
        IpFamily::V6 => Field::Ip6Daddr,
    })
}

/// `daddr . meta l4proto . th dport`.
pub(crate) fn service_tuple(f: IpFamily) -> Expr {
    Expr::Concat(vec![
        daddr(f),
        Expr::Meta(MetaKey::L4proto),
        Expr::Payload(Field::ThDport),
    ])
}

fn proto_port() -> Expr {
    Expr::Concat(vec![
        Expr::Meta(MetaKey::L4proto),
        Expr::Payload(Field::ThDport),
    ])
}

fn loopback(f: IpFamily) -> Value {
    let net: IpNet = match f {
        IpFamily::V4 => "127.0.0.0/8",
        IpFamily::V6 => "::1/128",
    }
    .parse()
    .expect("constant CIDR");
    Value::Prefix(net)
}

fn ct_new() -> Rule {
    Rule::new().eq(
        Expr::Ct(sarasa_nft::CtKey::State),
        Expr::keyword(Keyword::New),
    )
}

fn jump(c: &str) -> Verdict {
    Verdict::Jump(c.to_string())
}

fn svc_map(name: &str, f: IpFamily, comment: &str) -> Set {
    let mut s = Set::verdict_map(
        name,
        vec![addr_type(f), DataType::InetProto, DataType::InetService],
    );
    s.comment = Some(comment.to_string());
    s
}

fn port_map(name: &str, comment: &str) -> Set {
    let mut s = Set::verdict_map(name, vec![DataType::InetProto, DataType::InetService]);
    s.comment = Some(comment.to_string());
    s
}

fn cidr_set(name: &str, f: IpFamily, cidrs: &[IpNet], comment: &str) -> Set {
    let mut s = Set::new(name, vec![addr_type(f)]);
    s.flags.interval = true;
    s.comment = Some(comment.to_string());
    for c in cidrs {
        if IpFamily::of(&c.addr()) == f {
            s.insert(Key::one(c.trunc()));
        }
    }
    s
}

/// The main table's global sets and maps, empty of per-Service elements (the config's CIDRs
/// are filled in).
pub(crate) fn main_sets(config: &ProxyConfig) -> Vec<Set> {
    let mut sets = Vec::new();
    for f in FAMILIES {
        sets.push(svc_map(
            global::no_endpoint_services(f),
            f,
            "services without usable endpoints: reject or drop",
        ));
        sets.push(port_map(
            global::no_endpoint_nodeports(f),
            "NodePorts without usable endpoints: reject or drop",
        ));
        sets.push(svc_map(
            global::firewall_ips(f),
            f,
            "LoadBalancer IPs with loadBalancerSourceRanges",
        ));
        let mut cips = Set::new(global::cluster_ips(f), vec![addr_type(f)]);
        cips.comment = Some("allocated ClusterIPs".into());
        sets.push(cips);
        sets.push(cidr_set(
            global::service_cidrs(f),
            f,
            &config.service_cidrs,
            "service CIDRs",
        ));
        sets.push(cidr_set(
            global::cluster_cidrs(f),
            f,
            &config.cluster_cidrs,
            "cluster (pod) CIDRs",
        ));
    }
    sets
}

/// A shard table's global sets and maps, empty of per-Service elements. `cluster-cidrs-*` is
/// repeated here because rules can only name sets of their own table.
pub(crate) fn shard_sets(config: &ProxyConfig) -> Vec<Set> {
    let mut sets = Vec::new();
    for f in FAMILIES {
        sets.push(svc_map(
            global::service_ips(f),
            f,
            "ClusterIP, externalIP and LoadBalancer IP traffic",
        ));
        sets.push(port_map(global::service_nodeports(f), "NodePort traffic"));
        sets.push(cidr_set(
            global::cluster_cidrs(f),
            f,
            &config.cluster_cidrs,
            "cluster (pod) CIDRs",
        ));
    }
    sets
}

fn filter(name: &str, hook: Hook, prio: i32) -> Chain {
    Chain::base(name, ChainType::Filter, hook, prio, Policy::Accept)
}

fn nat(name: &str, hook: Hook, prio: i32) -> Chain {
    Chain::base(name, ChainType::Nat, hook, prio, Policy::Accept)
}

/// The main table with only its fixed part: everything that runs per packet or is global.
/// `firewall`: some Service has loadBalancerSourceRanges ([`firewall_chains`]).
pub(crate) fn main_base_table(config: &ProxyConfig, firewall: bool) -> Table {
    let mut t = Table::new(Family::Inet, &config.table);
    for s in main_sets(config) {
        t.add_set(s);
    }
    for c in firewall_chains(firewall) {
        t.add_chain(c);
    }
    t.add_chain(
        filter("filter-input", Hook::Input, -110)
            .rule(ct_new().verdict(jump(global::ENDPOINTS_CHECK))),
    );
    t.add_chain(
        filter("filter-forward", Hook::Forward, -110)
            .rule(ct_new().verdict(jump(global::ENDPOINTS_CHECK)))
            .rule(ct_new().verdict(jump(global::CLUSTER_IPS_CHECK))),
    );
    // After every shard's nat-output DNAT (-100, -99): what is still addressed to a ClusterIP
    // found no service port.
    t.add_chain(
        filter("filter-output-post-dnat", Hook::Output, -90)
            .rule(ct_new().verdict(jump(global::CLUSTER_IPS_CHECK))),
    );
    t.add_chain(
        nat("nat-postrouting", Hook::Postrouting, 100)
            .rule(Rule::new().verdict(jump(global::MASQUERADING))),
    );

    let mark = config.masquerade_mark;
    t.add_chain(
        Chain::new(global::MASQUERADING)
            .rule(
                Rule::new()
                    .eq(
                        Expr::And(Box::new(Expr::Meta(MetaKey::Mark)), mark),
                        Expr::Value(Value::Mark(0)),
                    )
                    .verdict(Verdict::Return),
            )
            .rule(Rule::new().then(Stmt::MarkAnd(!mark)))
            .rule(Rule::new().then(Stmt::Masquerade { fully_random: true })),
    );
    t.add_chain(
        Chain::new(global::REJECT)
            .rule(
                Rule::new()
                    .eq(
                        Expr::Meta(MetaKey::L4proto),
                        Expr::value(sarasa_nft::L4Proto::Tcp),
                    )
                    .then(Stmt::Reject(RejectKind::TcpReset)),
            )
            .rule(Rule::new().then(Stmt::Reject(RejectKind::IcmpxPortUnreachable))),
    );

    let mut endpoints_check = Chain::new(global::ENDPOINTS_CHECK);
    let mut firewall_check = Chain::new(global::FIREWALL_CHECK);
    let mut cluster_ips_check = Chain::new(global::CLUSTER_IPS_CHECK);
    for f in FAMILIES {
        endpoints_check.push(Rule::new().then(Stmt::Vmap {
            key: service_tuple(f),
            map: global::no_endpoint_services(f).into(),
        }));
        firewall_check.push(Rule::new().then(Stmt::Vmap {
            key: service_tuple(f),
            map: global::firewall_ips(f).into(),
        }));
        cluster_ips_check.push(
            Rule::new()
                .eq(daddr(f), Expr::Set(global::cluster_ips(f).into()))
                .then(Stmt::Reject(RejectKind::IcmpxPortUnreachable))
                .comment("a ClusterIP on a port no Service uses"),
        );
        cluster_ips_check.push(
            Rule::new()
                .eq(daddr(f), Expr::Set(global::service_cidrs(f).into()))
                .verdict(Verdict::Drop)
                .comment("an unallocated address of the service CIDR"),
        );
    }
    for f in FAMILIES {
        endpoints_check.push(nodeport_rule(f).then(Stmt::Vmap {
            key: proto_port(),
            map: global::no_endpoint_nodeports(f).into(),
        }));
    }
    t.add_chain(endpoints_check);
    t.add_chain(firewall_check);
    t.add_chain(cluster_ips_check);
    t
}

/// The main table's chains that depend on `firewall` (a Service with loadBalancerSourceRanges
/// exists): `filter-prerouting` only then, since it does nothing but jump to `firewall-check`
/// (every packet through the node passes a base chain); `filter-output` jumps there only then.
pub(crate) fn firewall_chains(firewall: bool) -> Vec<Chain> {
    let mut output = filter("filter-output", Hook::Output, -110)
        .rule(ct_new().verdict(jump(global::ENDPOINTS_CHECK)));
    if !firewall {
        return vec![output];
    }
    output.push(ct_new().verdict(jump(global::FIREWALL_CHECK)));
    vec![
        filter("filter-prerouting", Hook::Prerouting, -110)
            .rule(ct_new().verdict(jump(global::FIREWALL_CHECK))),
        output,
    ]
}

/// Shard table `i` with only its fixed part: the DNAT dispatch of its Services. `hooked`: with
/// the base chains that dispatch; a shard that holds no Service goes without them, so a new
/// connection passes only the shards that hold Services (3 of 32 in a fresh cluster, not 32).
pub(crate) fn shard_base_table(config: &ProxyConfig, i: usize, hooked: bool) -> Table {
    let mut t = Table::new(Family::Inet, config.shard_table(i));
    for s in shard_sets(config) {
        t.add_set(s);
    }
    if hooked {
        for c in shard_hooks() {
            t.add_chain(c);
        }
    }
    let mut services = Chain::new(global::SERVICES);
    for f in FAMILIES {
        services.push(Rule::new().then(Stmt::Vmap {
            key: service_tuple(f),
            map: global::service_ips(f).into(),
        }));
    }
    t.add_chain(services);
    // Same mark as in every shard; the main table's `masquerading` acts on it.
    t.add_chain(
        Chain::new(global::MARK_FOR_MASQUERADE)
            .rule(Rule::new().then(Stmt::MarkOr(config.masquerade_mark))),
    );
    t
}

/// A shard's base chains. A NAT hook stops at the first chain that binds a DNAT, so every
/// shard's IP dispatch (-100) runs before any shard's NodePort dispatch (-99): an IP match
/// wins over a NodePort match, as in kube-proxy's single `services` chain.
pub(crate) fn shard_hooks() -> [Chain; 4] {
    let mut pre_np = nat(global::NAT_PREROUTING_NODEPORTS, Hook::Prerouting, -99);
    let mut out_np = nat(global::NAT_OUTPUT_NODEPORTS, Hook::Output, -99);
    // NodePorts on every local address but loopback (as kube-proxy's nftables mode).
    for f in FAMILIES {
        let rule = nodeport_rule(f).then(Stmt::Vmap {
            key: proto_port(),
            map: global::service_nodeports(f).into(),
        });
        pre_np.push(rule.clone());
        out_np.push(rule);
    }
    [
        nat(global::NAT_PREROUTING, Hook::Prerouting, -100)
            .rule(Rule::new().verdict(jump(global::SERVICES))),
        nat(global::NAT_OUTPUT, Hook::Output, -100)
            .rule(Rule::new().verdict(jump(global::SERVICES))),
        pre_np,
        out_np,
    ]
}

fn nodeport_rule(f: IpFamily) -> Rule {
    Rule::new()
        .eq(Expr::FibDaddrType, Expr::keyword(Keyword::Local))
        .ne(daddr(f), Expr::Value(loopback(f)))
}
