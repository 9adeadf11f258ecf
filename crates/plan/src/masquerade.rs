//! Egress masquerade in sarasa's own nftables table (`inet sarasa-node`; the service proxy owns
//! `inet sarasa` and its shards): pod → outside-cluster traffic leaves with the node's address.

use ipnet::IpNet;
use sarasa_nft::{Chain, ChainType, Expr, Family, Field, Hook, Policy, Rule, Stmt, Table, Value};

use crate::fabric::Masquerade;

pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "sarasa-node";
/// `srcnat`.
const PRIORITY: i32 = 100;

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

/// The table: one rule per family with pod CIDRs on this node.
pub fn table(m: &Masquerade) -> Table {
    let mut chain = Chain::base(
        "postrouting",
        ChainType::Nat,
        Hook::Postrouting,
        PRIORITY,
        Policy::Accept,
    );
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
        };
        let text = table(&m).render();
        assert!(
            text.contains("ip6 saddr { fd00:10:244:1::/64 } ip6 daddr != { fd00:10:244:1::/64 } ip6 daddr != ff00::/8"),
            "{text}"
        );
    }
}
