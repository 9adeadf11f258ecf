//! Policy fails closed when the kernel refuses the policy table (issue 14): while the policy
//! part cannot be committed, the pods of this node that some NetworkPolicy isolates are
//! isolated by a small table of its own, `inet sarasa-failsafe`, committed in a delta apart
//! (so whatever the kernel refused in the policy table cannot take it down too). It drops new
//! forwarded connections to every ingress-isolated pod address and from every egress-isolated
//! one, nothing else: replies of connections already accepted go on (`ct state
//! established,related`, as in the policy table), pods no policy selects stay open, and the
//! node's own traffic to its pods (probes) does not pass `forward`. It sits before the policy
//! table (lower priority number): a drop there is final whatever the old policy table says.
//!
//! The table is removed in the same delta as the next policy table the kernel takes
//! ([`crate::policy::PolicyEnforcer`]), so the pods are never open in between.

use std::net::IpAddr;

use sarasa_nft::{
    Chain, ChainType, CtKey, Expr, Family, Field, Hook, Keyword, Policy, Rule, Stmt, Table, Value,
    Verdict,
};
use sarasa_plan::TableId;
use sarasa_policy::{Direction, PolicyState};

/// The table's name (a `sarasa-*` table: `sarasa agent uninstall` removes it too).
pub const TABLE: &str = "sarasa-failsafe";
/// Before the policy table's `forward` chain.
pub const PRIORITY: i32 = sarasa_policy::FORWARD_PRIORITY - 10;

pub fn id() -> TableId {
    TableId {
        family: Family::Inet,
        name: TABLE.to_string(),
    }
}

/// The addresses of `node`'s pods that some policy isolates, per direction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Isolated {
    pub ingress: Vec<IpAddr>,
    pub egress: Vec<IpAddr>,
}

impl Isolated {
    /// The pods of `node` (every pod when `None`) selected by an isolating policy.
    pub fn of(state: &PolicyState, node: Option<&str>) -> Self {
        let mut out = Isolated::default();
        for pod in state.pods() {
            if node.is_some_and(|n| pod.node.as_deref() != Some(n)) {
                continue;
            }
            for (dir, list) in [
                (Direction::Ingress, &mut out.ingress),
                (Direction::Egress, &mut out.egress),
            ] {
                if !state.isolating_policies(pod, dir).is_empty() {
                    list.extend(pod.ips.iter().copied());
                }
            }
        }
        for l in [&mut out.ingress, &mut out.egress] {
            l.sort();
            l.dedup();
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.ingress.is_empty() && self.egress.is_empty()
    }
}

fn drop_rule(field: Field, addrs: &[IpAddr]) -> Rule {
    Rule::new()
        .eq(
            Expr::Payload(field),
            Expr::AnonSet(addrs.iter().map(|a| vec![Value::Addr(*a)]).collect()),
        )
        .then(Stmt::Counter)
        .verdict(Verdict::Drop)
}

/// The failsafe table for `isolated`.
pub fn table(isolated: &Isolated) -> Table {
    let mut chain = Chain::base(
        "forward",
        ChainType::Filter,
        Hook::Forward,
        PRIORITY,
        Policy::Accept,
    );
    chain.push(
        Rule::new()
            .eq(
                Expr::Ct(CtKey::State),
                Expr::Keywords(vec![Keyword::Established, Keyword::Related]),
            )
            .verdict(Verdict::Accept),
    );
    for (v6, daddr, saddr) in [
        (false, Field::IpDaddr, Field::IpSaddr),
        (true, Field::Ip6Daddr, Field::Ip6Saddr),
    ] {
        let of = |l: &[IpAddr]| -> Vec<IpAddr> {
            l.iter().copied().filter(|a| a.is_ipv6() == v6).collect()
        };
        let ingress = of(&isolated.ingress);
        if !ingress.is_empty() {
            chain.push(drop_rule(daddr, &ingress));
        }
        let egress = of(&isolated.egress);
        if !egress.is_empty() {
            chain.push(drop_rule(saddr, &egress));
        }
    }
    let mut t = Table::new(Family::Inet, TABLE);
    t.add_chain(chain);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_new_connections_to_ingress_and_from_egress_isolated_pods() {
        let iso = Isolated {
            ingress: vec!["10.244.1.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            egress: vec!["10.244.1.6".parse().unwrap()],
        };
        let t = table(&iso);
        t.validate().unwrap();
        let text = t.render();
        assert!(
            text.contains("type filter hook forward priority -10; policy accept;"),
            "{text}"
        );
        assert!(
            text.contains("ct state { established, related } accept")
                || text.contains("ct state established,related accept"),
            "{text}"
        );
        assert!(
            text.contains("ip daddr { 10.244.1.5 } counter drop"),
            "{text}"
        );
        assert!(
            text.contains("ip6 daddr { fd00::5 } counter drop"),
            "{text}"
        );
        assert!(
            text.contains("ip saddr { 10.244.1.6 } counter drop"),
            "{text}"
        );
        assert!(!text.contains("ip6 saddr"), "{text}");
    }
}
