//! The balancer's nftables table (pure): `inet sarasa-cloud-lb` in the edge namespace.
//!
//! ```text
//! prerouting (nat, -100): ip daddr VIP meta l4proto P th dport X counter goto lst-<hash>
//! lst-<hash>:             numgen random mod N vmap { 0 : goto lst-<hash>-0, ... }
//! lst-<hash>-<i>:         counter dnat ip to TARGET:PORT
//! forward (filter, 0):    ip daddr CLUSTER ct status dnat accept; ip daddr CLUSTER drop
//! ```
//! The per-target counters show where each connection went (the benchmark's hop count).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use sarasa_nft::{
    Chain, ChainType, CtKey, Expr, Family, Field, Hook, Keyword, L4Proto, MetaKey, Policy, Rule,
    Stmt, Table, Value, Verdict,
};

use super::targets::{Listener, Target};

/// The table's name.
pub const TABLE: &str = "sarasa-cloud-lb";

/// The chain of a listener.
pub fn listener_chain(l: &Listener) -> String {
    let key = format!("{}/{}/{}/{}", l.vip, l.protocol, l.port, l.service);
    format!(
        "lst-{:012x}",
        sarasa_model::hash::fnv1a64(key.as_bytes()) & 0xffff_ffff_ffff
    )
}

/// The table for `listeners`, each sending new connections to its targets that `healthy`
/// accepts (all of them when none is healthy: fail open); `cluster` is not reachable from
/// outside except through a listener.
pub fn table(listeners: &[Listener], healthy: impl Fn(&Target) -> bool, cluster: Ipv4Net) -> Table {
    let mut t = Table::new(Family::Inet, TABLE);
    let mut pre = Chain::base(
        "prerouting",
        ChainType::Nat,
        Hook::Prerouting,
        -100,
        Policy::Accept,
    );
    for l in listeners {
        if l.targets.is_empty() {
            continue;
        }
        let proto = match l.protocol.as_str() {
            "udp" => L4Proto::Udp,
            "sctp" => L4Proto::Sctp,
            _ => L4Proto::Tcp,
        };
        let name = listener_chain(l);
        let rule = |from: Option<Ipv4Net>| {
            let mut r = Rule::new();
            if let Some(from) = from {
                r = r.eq(Expr::Payload(Field::IpSaddr), Expr::value(IpNet::V4(from)));
            }
            r.eq(
                Expr::Payload(Field::IpDaddr),
                Expr::value(IpAddr::V4(l.vip)),
            )
            .eq(Expr::Meta(MetaKey::L4proto), Expr::value(proto))
            .eq(
                Expr::Payload(Field::ThDport),
                Expr::Value(Value::Port(l.port)),
            )
            .counter()
            .verdict(Verdict::Goto(name.clone()))
            .comment(format!("{} {}/{}", l.service, l.port, l.protocol))
        };
        if l.source_ranges.is_empty() {
            pre = pre.rule(rule(None));
        }
        for from in &l.source_ranges {
            pre = pre.rule(rule(Some(*from)));
        }
        let up: Vec<&Target> = l.targets.iter().filter(|t| healthy(t)).collect();
        let chosen: Vec<&Target> = if up.is_empty() {
            l.targets.iter().collect()
        } else {
            up
        };
        let mut targets = Vec::new();
        for (i, target) in chosen.iter().enumerate() {
            let chain = format!("{name}-{i}");
            t.add_chain(
                Chain::new(&chain).rule(
                    Rule::new()
                        .eq(Expr::Meta(MetaKey::L4proto), Expr::value(proto))
                        .counter()
                        .then(Stmt::Dnat {
                            addr: IpAddr::V4(target.addr),
                            port: Some(target.port),
                        })
                        .comment(format!("{}:{}", target.addr, target.port)),
                ),
            );
            targets.push(Verdict::Goto(chain));
        }
        t.add_chain(Chain::new(&name).rule(Rule::new().then(Stmt::NumgenVmap { targets })));
    }
    t.add_chain(pre);
    let cluster = Expr::value(IpNet::V4(cluster));
    t.add_chain(
        Chain::base(
            "forward",
            ChainType::Filter,
            Hook::Forward,
            0,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .eq(Expr::Payload(Field::IpDaddr), cluster.clone())
                .eq(Expr::Ct(CtKey::Status), Expr::keyword(Keyword::Dnat))
                .verdict(Verdict::Accept),
        )
        .rule(
            Rule::new()
                .eq(Expr::Payload(Field::IpDaddr), cluster)
                .verdict(Verdict::Drop)
                .comment("the cluster is reached only through a listener"),
        ),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud_lb::targets::{Check, Mode};
    use std::net::Ipv4Addr;

    fn listener(targets: &[(&str, u16)]) -> Listener {
        Listener {
            service: "default/web".into(),
            vip: Ipv4Addr::new(198, 51, 100, 7),
            protocol: "tcp".into(),
            port: 80,
            mode: Mode::Ip,
            source_ranges: Vec::new(),
            targets: targets
                .iter()
                .map(|(a, p)| Target {
                    addr: a.parse().unwrap(),
                    port: *p,
                    check: Check::Tcp,
                    pod: None,
                })
                .collect(),
        }
    }

    #[test]
    fn healthy_targets_only_and_fail_open_when_none() {
        let l = listener(&[("10.244.1.5", 8080), ("10.244.2.7", 8080)]);
        let cluster: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let script = table(
            std::slice::from_ref(&l),
            |t| t.addr != Ipv4Addr::new(10, 244, 2, 7),
            cluster,
        )
        .render();
        assert!(
            script.contains("ip daddr 198.51.100.7 meta l4proto tcp th dport 80 counter"),
            "{script}"
        );
        assert!(script.contains("dnat ip to 10.244.1.5:8080"), "{script}");
        assert!(
            !script.contains("10.244.2.7:8080"),
            "unhealthy target left out: {script}"
        );
        let script = table(&[l], |_| false, cluster).render();
        assert!(
            script.contains("10.244.1.5:8080") && script.contains("10.244.2.7:8080"),
            "{script}"
        );
        assert!(script.contains("ct status dnat accept"), "{script}");
    }

    #[test]
    fn source_ranges_restrict_the_listener() {
        let mut l = listener(&[("10.244.1.5", 8080)]);
        l.source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
        let script = table(&[l], |_| true, "10.244.0.0/16".parse().unwrap()).render();
        assert!(
            script.contains("ip saddr 203.0.113.0/24 ip daddr 198.51.100.7"),
            "{script}"
        );
        assert_eq!(
            script.matches("ip daddr 198.51.100.7").count(),
            1,
            "{script}"
        );
    }

    #[test]
    fn a_listener_without_targets_has_no_rule() {
        let script = table(&[listener(&[])], |_| true, "10.244.0.0/16".parse().unwrap()).render();
        assert!(!script.contains("198.51.100.7"), "{script}");
    }
}
