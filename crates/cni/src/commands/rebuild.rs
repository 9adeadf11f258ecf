//! Rebuilding the IPAM store from the node after it was found unreadable and set aside.
//!
//! ADD records each attachment on its host veth's alias (`sarasa-ipam <container id> <ifname>
//! <address>...`), so what the node really runs can be read back without the store: the
//! alias lives and dies with the interface. Every command that touches the store first
//! rebuilds a store that waits for it, so no address in use is handed out again.

use ipnet::IpNet;
use sarasa_ipam::{Allocation, Ipam, Lease};
use sarasa_netns::Netlink;

use crate::config::Plugin;
use crate::error::CniError;
use crate::{log, naming};

const PREFIX: &str = "sarasa-ipam";

/// The alias ADD puts on the host veth of (container id, ifname) holding `leases`.
pub fn alias(container_id: &str, ifname: &str, leases: &[Lease]) -> String {
    let mut s = format!("{PREFIX} {container_id} {ifname}");
    for l in leases {
        s.push(' ');
        s.push_str(&l.address.to_string());
    }
    s
}

/// (container id, ifname, addresses) of an alias written by [`alias`].
pub fn parse_alias(s: &str) -> Option<(String, String, Vec<IpNet>)> {
    let mut it = s.split(' ');
    if it.next()? != PREFIX {
        return None;
    }
    let container_id = it.next()?.to_string();
    let ifname = it.next()?.to_string();
    let addrs = it.map(|a| a.parse().ok()).collect::<Option<Vec<IpNet>>>()?;
    Some((container_id, ifname, addrs))
}

/// The attachments of network `p` on this node, as their host veths record them.
pub fn from_node(p: &Plugin, ipam: &Ipam, node: &mut Netlink) -> Result<Vec<Allocation>, CniError> {
    let prefix = naming::network_prefix(&p.name);
    let mut out = Vec::new();
    for link in node.links()? {
        if !link.name.starts_with(&prefix) || link.kind.as_deref() != Some("veth") {
            continue;
        }
        let Some((container_id, ifname, addrs)) = link.alias.as_deref().and_then(parse_alias)
        else {
            continue;
        };
        if naming::host_veth(&p.name, &container_id, &ifname) != link.name {
            continue;
        }
        let leases = addrs
            .iter()
            .filter_map(|a| {
                let range = ipam.sets().iter().find_map(|s| s.range_of(a.addr()))?;
                Some(Lease {
                    address: range.with_prefix(a.addr()),
                    gateway: range.gateway,
                })
            })
            .collect();
        out.push(Allocation {
            container_id,
            ifname,
            leases,
            host_ports: Vec::new(),
        });
    }
    Ok(out)
}

/// Rebuilds the store of `ipam` from the node if it waits for that (it was unreadable) or
/// has no file at all: a deleted store must not read as "nothing allocated" while pods hold
/// addresses (on a fresh node the rebuild finds nothing and writes an empty store).
pub fn ensure(p: &Plugin, ipam: &Ipam) -> Result<(), CniError> {
    let kept = match ipam.needs_rebuild()? {
        Some(kept) => kept,
        None if !ipam.store_file_exists() => "no store file: new or deleted".to_string(),
        None => return Ok(()),
    };
    let mut node = Netlink::current()?;
    let found = from_node(p, ipam, &mut node)?;
    ipam.rebuild(&found)?;
    log::info(&format!(
        "rebuilt the ipam store of {} from {} attachments on the node (the unreadable store is kept as {kept})",
        p.name,
        found.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_round_trips_and_fits() {
        let leases = vec![
            Lease {
                address: "10.244.1.7/24".parse().unwrap(),
                gateway: "10.244.1.1".parse().unwrap(),
            },
            Lease {
                address: "fd00:abcd:1234:5678:9abc:def0:1234:5678/64"
                    .parse()
                    .unwrap(),
                gateway: "fd00:abcd:1234:5678::1".parse().unwrap(),
            },
        ];
        let id = "f".repeat(64);
        let a = alias(&id, "eth0", &leases);
        assert!(a.len() < 256, "IFALIASZ");
        let (c, i, addrs) = parse_alias(&a).unwrap();
        assert_eq!((c.as_str(), i.as_str()), (id.as_str(), "eth0"));
        assert_eq!(addrs, vec![leases[0].address, leases[1].address]);
        assert!(parse_alias("something else").is_none());
        assert!(parse_alias("sarasa-ipam c eth0 not-an-address").is_none());
    }
}
