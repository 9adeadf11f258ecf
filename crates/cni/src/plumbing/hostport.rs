//! The node's host ports in nftables: table `inet sarasa-hostport`, rebuilt from the IPAM
//! store's record of every attachment's `hostPort`s whenever one changes, as one atomic
//! netlink batch (read back, diffed, only the difference written).
//!
//! ```text
//! prerouting (nat, -101) / output (nat, -101): fib daddr type local → jump hostports
//! hostports: ip saddr POD-SUBNET → meta mark |= 0x2000     (a pod of this node: hairpin)
//!            [ip daddr HOSTIP | meta nfproto ipv4] meta l4proto P th dport H → dnat to POD:C
//! postrouting (nat, 100): meta mark & 0x2000 → clear it, masquerade
//! ```
//! A pod reaching a hostPort of its own node is masqueraded (as portmap's `snat`): otherwise
//! the answer of a pod on the same bridge would go straight back, never un-DNATed. The mark is
//! set only on packets addressed to the node itself, so only DNATed ones reach postrouting.
//! Priority -101 puts a hostPort before the service proxy's NodePort dispatch (-100/-99), as
//! the portmap plugin's chain comes first. DNAT only: the pod sees the client's own address
//! (the reply leaves through this node, where conntrack reverses the DNAT).

use std::net::IpAddr;

use sarasa_ipam::{Allocation, Ipam};
use sarasa_nft::{
    Backend, Chain, ChainType, Expr, Family, Field, Hook, Keyword, L4Proto, MetaKey,
    NetlinkBackend, NetlinkTableBackend, Policy, Rule, Stmt, Table, Transaction, Value, Verdict,
};

use crate::error::CniError;

/// The table this plugin owns.
pub const TABLE: &str = "sarasa-hostport";
const CHAIN: &str = "hostports";
/// One before the service proxy's dstnat chains.
const PRIORITY: i32 = -101;
/// Marks a hostPort connection from a pod of this node for masquerade.
pub const HAIRPIN_MARK: u32 = 0x2000;

/// The table for `allocations`: one DNAT rule per mapping and address family of the pod.
pub fn table(allocations: &[Allocation]) -> Table {
    let mut t = Table::new(Family::Inet, TABLE);
    for (name, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
        t.add_chain(
            Chain::base(name, ChainType::Nat, hook, PRIORITY, Policy::Accept).rule(
                Rule::new()
                    .eq(Expr::FibDaddrType, Expr::keyword(Keyword::Local))
                    .verdict(Verdict::Jump(CHAIN.into())),
            ),
        );
    }
    let mut chain = Chain::new(CHAIN);
    // The node's pod subnets, from the leases' prefixes.
    let subnets: std::collections::BTreeSet<ipnet::IpNet> = allocations
        .iter()
        .flat_map(|a| a.leases.iter().map(|l| l.address.trunc()))
        .collect();
    for net in &subnets {
        let saddr = if net.addr().is_ipv4() {
            Field::IpSaddr
        } else {
            Field::Ip6Saddr
        };
        chain = chain.rule(
            Rule::new()
                .eq(Expr::Payload(saddr), Expr::value(*net))
                .then(Stmt::MarkOr(HAIRPIN_MARK)),
        );
    }
    t.add_chain(
        Chain::base(
            "postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            100,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::And(Box::new(Expr::Meta(MetaKey::Mark)), HAIRPIN_MARK),
                    Expr::Value(Value::Mark(0)),
                )
                .verdict(Verdict::Return),
        )
        .rule(Rule::new().then(Stmt::MarkAnd(!HAIRPIN_MARK)))
        .rule(Rule::new().then(Stmt::Masquerade {
            fully_random: false,
        })),
    );
    for a in allocations {
        for hp in &a.host_ports {
            let proto = match hp.protocol.as_str() {
                "udp" => L4Proto::Udp,
                "sctp" => L4Proto::Sctp,
                _ => L4Proto::Tcp,
            };
            for lease in &a.leases {
                let pod = lease.address.addr();
                if !hp.covers_family(pod.is_ipv4()) {
                    continue;
                }
                let node = match hp.host_ip.filter(|ip| !ip.is_unspecified()) {
                    Some(ip) => Expr::Payload(daddr(ip)),
                    None => Expr::Meta(MetaKey::Nfproto),
                };
                let node_value = match hp.host_ip.filter(|ip| !ip.is_unspecified()) {
                    Some(ip) => Expr::value(ip),
                    None => Expr::keyword(if pod.is_ipv4() {
                        Keyword::Ipv4
                    } else {
                        Keyword::Ipv6
                    }),
                };
                chain = chain.rule(
                    Rule::new()
                        .eq(node, node_value)
                        .eq(Expr::Meta(MetaKey::L4proto), Expr::value(proto))
                        .eq(
                            Expr::Payload(Field::ThDport),
                            Expr::Value(Value::Port(hp.host_port)),
                        )
                        .then(Stmt::Dnat {
                            addr: pod,
                            port: Some(hp.container_port),
                        })
                        .comment(comment(a, hp.host_port)),
                );
            }
        }
    }
    t.add_chain(chain);
    t
}

fn daddr(ip: IpAddr) -> Field {
    if ip.is_ipv4() {
        Field::IpDaddr
    } else {
        Field::Ip6Daddr
    }
}

/// `hostPort 8080 of <container id, 12 chars>/<ifname>` (comments are at most 100 bytes).
fn comment(a: &Allocation, port: u16) -> String {
    let id: String = a.container_id.chars().take(12).collect();
    format!("hostPort {port} of {id}/{}", a.ifname)
}

/// Makes the node's table hold every mapping the store records. Runs under the store's lock,
/// so concurrent plugin processes never leave an older picture in the kernel. With no mapping
/// anywhere the table is removed.
pub fn sync(ipam: &Ipam) -> Result<(), CniError> {
    let result = ipam.with_allocations(|allocations| -> Result<(), CniError> {
        let mut nft = NetlinkTableBackend {
            inner: NetlinkBackend::new().map_err(nft_error)?,
            family: Family::Inet,
            table: TABLE.into(),
        };
        let any = allocations.iter().any(|a| !a.host_ports.is_empty());
        if !any {
            if nft
                .list_table(Family::Inet, TABLE)
                .map_err(nft_error)?
                .is_some()
            {
                nft.apply(&Transaction::delete_table(Family::Inet, TABLE))
                    .map_err(nft_error)?;
            }
            return Ok(());
        }
        nft.reconcile(&table(allocations)).map_err(nft_error)?;
        Ok(())
    })?;
    result
}

/// Whether the kernel holds exactly the table the store describes (CHECK).
pub fn in_place(ipam: &Ipam) -> Result<bool, CniError> {
    let result = ipam.with_allocations(|allocations| -> Result<bool, CniError> {
        let mut nft = NetlinkBackend::new().map_err(nft_error)?;
        let current = nft.list_table(Family::Inet, TABLE).map_err(nft_error)?;
        Ok(sarasa_nft::diff_kernel(current.as_ref(), &table(allocations)).is_empty())
    })?;
    result
}

fn nft_error(e: sarasa_nft::NftError) -> CniError {
    CniError::plumbing(format!("nftables table inet {TABLE}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_ipam::{HostPort, Lease};

    fn alloc(id: &str, addrs: &[&str], ports: Vec<HostPort>) -> Allocation {
        Allocation {
            container_id: id.into(),
            ifname: "eth0".into(),
            leases: addrs
                .iter()
                .map(|a| Lease {
                    address: a.parse().unwrap(),
                    gateway: "10.244.1.1".parse().unwrap(),
                })
                .collect(),
            host_ports: ports,
        }
    }

    #[test]
    fn one_dnat_per_mapping_and_family() {
        let web = HostPort {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: None,
        };
        let dns = HostPort {
            host_port: 5353,
            container_port: 53,
            protocol: "udp".into(),
            host_ip: Some("192.0.2.11".parse().unwrap()),
        };
        let t = table(&[
            alloc("c1", &["10.244.1.5/24", "fd00::5/64"], vec![web, dns]),
            alloc("c2", &["10.244.1.6/24"], vec![]),
        ]);
        let script = t.render();
        assert!(
            script.contains(
                "meta nfproto ipv4 meta l4proto tcp th dport 8080 dnat ip to 10.244.1.5:80"
            ),
            "{script}"
        );
        assert!(
            script.contains(
                "meta nfproto ipv6 meta l4proto tcp th dport 8080 dnat ip6 to [fd00::5]:80"
            ),
            "{script}"
        );
        assert!(
            script.contains(
                "ip daddr 192.0.2.11 meta l4proto udp th dport 5353 dnat ip to 10.244.1.5:53"
            ),
            "{script}"
        );
        // The v4-only hostIP has no v6 rule; c2 has none.
        assert_eq!(script.matches("dnat").count(), 3, "{script}");
        assert!(
            script.contains("fib daddr type local jump hostports"),
            "{script}"
        );
    }
}
