//! The WAN between a cluster set's sites: the namespace `sarasa-wan-<SET>` with one bridge,
//! where the broker listens, and one veth per member lab from its fabric namespace (the site's
//! router, `wan0`) to a port of the bridge. Only namespaces this module or the lab made are
//! touched.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use sarasa_model::MacAddr;
use sarasa_netns::{NetNs, Netlink, Veth};

use super::state::{wan_netns, Member, BROKER_IP};
use crate::spec::LabSpec;
use crate::LabError;

const BRIDGE: &str = "wan";
/// The site router's end of its WAN link, in the lab's fabric namespace.
pub const SITE_LINK: &str = "wan0";
const PREFIX: u8 = 24;
/// The WAN bridge's own address (locally administered): the broker's MAC, fixed.
const BRIDGE_MAC: MacAddr = MacAddr([0x02, 0x5a, 0x57, 0x41, 0x4e, 0x01]);

fn net(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::new(ip, PREFIX).expect("constant prefix"))
}

/// Creates the WAN namespace and its bridge (holding the broker's address), unless it exists.
pub fn ensure(set: &str) -> Result<(), LabError> {
    let name = wan_netns(set);
    if NetNs::exists(&name) {
        return Ok(());
    }
    let ns = NetNs::create(&name).map_err(LabError::netns)?;
    let build = || -> Result<(), LabError> {
        let mut nl = Netlink::open_in(&ns).map_err(LabError::netns)?;
        crate::topology::lo_up(&mut nl)?;
        nl.add_bridge(BRIDGE, None).map_err(LabError::netns)?;
        let br = nl.link(BRIDGE).map_err(LabError::netns)?;
        // A bridge without an address of its own takes its lowest port's, so the broker's MAC
        // would change as labs join and leave, and the sites' ARP caches would point at a MAC
        // nobody answers to (seen: a sync that could not reach the broker for 40 s after
        // another lab left).
        nl.set_mac(br.index, BRIDGE_MAC).map_err(LabError::netns)?;
        nl.addr_add(br.index, net(BROKER_IP))
            .map_err(LabError::netns)?;
        nl.set_up(br.index).map_err(LabError::netns)
    };
    build().inspect_err(|_| {
        let _ = NetNs::delete(&name);
    })
}

/// Connects a lab's fabric namespace to the WAN at the member's address.
pub fn attach(set: &str, spec: &LabSpec, m: &Member) -> Result<(), LabError> {
    plug(set, &spec.fabric_netns, &m.wan_port, m.wan_ip).map_err(|e| match e {
        LabError::Netns(_) if !NetNs::exists(&spec.fabric_netns) => {
            LabError::NotUp(format!("lab {:?} is not up", spec.name))
        }
        e => e,
    })
}

/// Gives a namespace (a site router, a gateway node) a link `wan0` on the WAN at `ip`,
/// through port `port` of the WAN bridge.
pub fn plug(set: &str, netns: &str, port: &str, ip: Ipv4Addr) -> Result<(), LabError> {
    let wan = NetNs::open(wan_netns(set)).map_err(LabError::netns)?;
    let host = NetNs::open(netns).map_err(LabError::netns)?;
    let mut w = Netlink::open_in(&wan).map_err(LabError::netns)?;
    w.add_veth(&Veth {
        name: port.to_string(),
        peer_name: SITE_LINK.into(),
        peer_netns: Some(host.fd()),
        mtu: None,
        mac: None,
        peer_mac: None,
    })
    .map_err(LabError::netns)?;
    let done = (|| -> Result<(), LabError> {
        let p = w.link(port).map_err(LabError::netns)?;
        let br = w.link(BRIDGE).map_err(LabError::netns)?;
        w.set_master(p.index, br.index).map_err(LabError::netns)?;
        w.set_up(p.index).map_err(LabError::netns)?;
        let mut h = Netlink::open_in(&host).map_err(LabError::netns)?;
        let link = h.link(SITE_LINK).map_err(LabError::netns)?;
        h.addr_add(link.index, net(ip)).map_err(LabError::netns)?;
        h.set_up(link.index).map_err(LabError::netns)
    })();
    if done.is_err() {
        let _ = w.delete_link_by_name(port);
    }
    done
}

/// Removes WAN port `port` (its far end goes with the veth); nothing to do when the WAN is
/// gone.
pub fn unplug(set: &str, port: &str) -> Result<(), LabError> {
    let Ok(wan) = NetNs::open(wan_netns(set)) else {
        return Ok(());
    };
    let mut w = Netlink::open_in(&wan).map_err(LabError::netns)?;
    w.delete_link_by_name(port)
        .map(|_| ())
        .map_err(LabError::netns)
}

/// Disconnects a lab's site router and gateways.
pub fn detach(set: &str, m: &Member) -> Result<(), LabError> {
    unplug(set, &m.wan_port)?;
    for g in &m.gateways {
        unplug(set, &g.wan_port)?;
    }
    Ok(())
}

/// Removes the WAN namespace (and every link in it).
pub fn destroy(set: &str) -> Result<(), LabError> {
    let name = wan_netns(set);
    if !NetNs::exists(&name) {
        return Ok(());
    }
    NetNs::delete(&name).map_err(LabError::netns)
}
