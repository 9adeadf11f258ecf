//! The edge namespace and its links: `fabric` ↔ the fabric's `edge` (a /30), the external host
//! behind it (wired by the topology), a default route to the fabric, and the fabric's route to
//! the external net through the edge.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use sarasa_netns::{NetNs, Netlink, Route, Veth};

use crate::spec::LabSpec;
use crate::LabError;

/// The fabric's end of the edge link.
pub const EDGE_FABRIC_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 34, 1);
/// The edge's end.
pub const EDGE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 34, 2);
const PREFIX: u8 = 30;

/// The edge namespace's name.
pub fn netns(spec: &LabSpec) -> String {
    format!("{}edge", spec.netns_prefix())
}

/// Creates the edge and links it to the fabric (`fab`: a netlink socket in the fabric).
pub fn create_edge(spec: &LabSpec, fab: &mut Netlink) -> Result<NetNs, LabError> {
    let name = netns(spec);
    let edge = NetNs::create(&name).map_err(LabError::netns)?;
    fab.add_veth(&Veth {
        name: "edge".into(),
        peer_name: "fabric".into(),
        peer_netns: Some(edge.fd()),
        mtu: None,
        mac: None,
        peer_mac: None,
    })
    .map_err(LabError::netns)?;
    let port = fab.link("edge").map_err(LabError::netns)?;
    fab.addr_add(port.index, net(EDGE_FABRIC_IP))
        .map_err(LabError::netns)?;
    fab.set_up(port.index).map_err(LabError::netns)?;
    fab.route_add(&Route::new(IpNet::V4(spec.external_net)).via(IpAddr::V4(EDGE_IP)))
        .map_err(LabError::netns)?;

    let mut nl = Netlink::open_in(&edge).map_err(LabError::netns)?;
    crate::topology::lo_up(&mut nl)?;
    let up = nl.link("fabric").map_err(LabError::netns)?;
    nl.addr_add(up.index, net(EDGE_IP))
        .map_err(LabError::netns)?;
    nl.set_up(up.index).map_err(LabError::netns)?;
    nl.route_add(&Route::default_via(IpAddr::V4(EDGE_FABRIC_IP)).dev(up.index))
        .map_err(LabError::netns)?;
    edge.sysctl_write("net.ipv4.ip_forward", "1")
        .map_err(LabError::netns)?;
    Ok(edge)
}

fn net(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::new(ip, PREFIX).expect("static prefix"))
}
