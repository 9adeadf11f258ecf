//! The fixed part of the table: hooks, dispatch chains and the global maps and sets that
//! per-Service objects fill.
//!
//! ```text
//! filter-prerouting  (prio -110)  ct state new → firewall-check       (loadBalancerSourceRanges)
//! filter-input/forward/output (-110) ct state new → endpoints-check   (no endpoints: reject/drop)
//! filter-forward, filter-output-post-dnat (-90) ct state new → cluster-ips-check
//! nat-prerouting/nat-output (-100) → services → vmap @service-ips / @service-nodeports
//! nat-postrouting (100) → masquerading (only packets with the masquerade mark)
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

/// Global sets and maps, empty of per-Service elements (the config's CIDRs are filled in).
pub(crate) fn global_sets(config: &ProxyConfig) -> Vec<Set> {
    let mut sets = Vec::new();
    for f in FAMILIES {
        sets.push(svc_map(
            global::service_ips(f),
            f,
            "ClusterIP, externalIP and LoadBalancer IP traffic",
        ));
        sets.push(port_map(global::service_nodeports(f), "NodePort traffic"));
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

/// The table with only its fixed part.
pub(crate) fn base_table(config: &ProxyConfig) -> Table {
    let mut t = Table::new(Family::Inet, &config.table);
    for s in global_sets(config) {
        t.add_set(s);
    }
    let filter =
        |name: &str, hook, prio| Chain::base(name, ChainType::Filter, hook, prio, Policy::Accept);
    let nat =
        |name: &str, hook, prio| Chain::base(name, ChainType::Nat, hook, prio, Policy::Accept);

    t.add_chain(
        filter("filter-prerouting", Hook::Prerouting, -110)
            .rule(ct_new().verdict(jump(global::FIREWALL_CHECK))),
    );
    t.add_chain(
        filter("filter-input", Hook::Input, -110)
            .rule(ct_new().verdict(jump(global::ENDPOINTS_CHECK))),
    );
    t.add_chain(
        filter("filter-forward", Hook::Forward, -110)
            .rule(ct_new().verdict(jump(global::ENDPOINTS_CHECK)))
            .rule(ct_new().verdict(jump(global::CLUSTER_IPS_CHECK))),
    );
    t.add_chain(
        filter("filter-output", Hook::Output, -110)
            .rule(ct_new().verdict(jump(global::ENDPOINTS_CHECK)))
            .rule(ct_new().verdict(jump(global::FIREWALL_CHECK))),
    );
    // After nat-output's DNAT: what is still addressed to a ClusterIP found no service port.
    t.add_chain(
        filter("filter-output-post-dnat", Hook::Output, -90)
            .rule(ct_new().verdict(jump(global::CLUSTER_IPS_CHECK))),
    );
    t.add_chain(
        nat("nat-prerouting", Hook::Prerouting, -100)
            .rule(Rule::new().verdict(jump(global::SERVICES))),
    );
    t.add_chain(
        nat("nat-output", Hook::Output, -100).rule(Rule::new().verdict(jump(global::SERVICES))),
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
    t.add_chain(Chain::new(global::MARK_FOR_MASQUERADE).rule(Rule::new().then(Stmt::MarkOr(mark))));
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

    let mut services = Chain::new(global::SERVICES);
    let mut endpoints_check = Chain::new(global::ENDPOINTS_CHECK);
    let mut firewall_check = Chain::new(global::FIREWALL_CHECK);
    let mut cluster_ips_check = Chain::new(global::CLUSTER_IPS_CHECK);
    for f in FAMILIES {
        services.push(Rule::new().then(Stmt::Vmap {
            key: service_tuple(f),
            map: global::service_ips(f).into(),
        }));
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
    // NodePorts on every local address but loopback (as kube-proxy's nftables mode).
    for f in FAMILIES {
        services.push(nodeport_rule(f).then(Stmt::Vmap {
            key: proto_port(),
            map: global::service_nodeports(f).into(),
        }));
        endpoints_check.push(nodeport_rule(f).then(Stmt::Vmap {
            key: proto_port(),
            map: global::no_endpoint_nodeports(f).into(),
        }));
    }
    t.add_chain(services);
    t.add_chain(endpoints_check);
    t.add_chain(firewall_check);
    t.add_chain(cluster_ips_check);
    t
}

fn nodeport_rule(f: IpFamily) -> Rule {
    Rule::new()
        .eq(Expr::FibDaddrType, Expr::keyword(Keyword::Local))
        .ne(daddr(f), Expr::Value(loopback(f)))
}
