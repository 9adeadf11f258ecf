//! Realises a [`LabSpec`] in the kernel: the fabric namespace (underlay bridge, router, API
//! server's home), the node namespaces on the underlay, the cloud's edge with its load
//! balancer ([`crate::cloud_lb`]) and the external host behind it. Everything is
//! made inside namespaces this module creates; the root namespace is never touched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sarasa_netns::{NetNs, Netlink, Route, Veth};

use crate::spec::{Ipv6Side, LabSpec, UNDERLAY_BRIDGE, UPLINK};
use crate::LabError;

/// Builds the whole topology; on any failure removes what it made and returns the error.
pub fn create(spec: &LabSpec) -> Result<(), LabError> {
    build(spec).inspect_err(|_| {
        let _ = destroy(spec);
    })
}

fn build(spec: &LabSpec) -> Result<(), LabError> {
    let fabric = new_ns(&spec.fabric_netns)?;
    let mut fab = Netlink::open_in(&fabric).map_err(LabError::netns)?;
    lo_up(&mut fab)?;
    fab.add_bridge(UNDERLAY_BRIDGE, None)
        .map_err(LabError::netns)?;
    let br = fab.link(UNDERLAY_BRIDGE).map_err(LabError::netns)?;
    fab.addr_add(br.index, net(spec.fabric_ip, spec.underlay.prefix_len()))
        .map_err(LabError::netns)?;
    fab.set_up(br.index).map_err(LabError::netns)?;
    fabric
        .sysctl_write("net.ipv4.ip_forward", "1")
        .map_err(LabError::netns)?;
    if let Some(side) = &spec.ipv6 {
        let prefix = side.underlay.prefix_len();
        fab.addr_add(br.index, net6(side.fabric_ip, prefix))
            .map_err(LabError::netns)?;
        fabric
            .sysctl_write("net.ipv6.conf.all.forwarding", "1")
            .map_err(LabError::netns)?;
    }

    for node in &spec.nodes {
        let ns = new_ns(&node.netns)?;
        fab.add_veth(&Veth {
            name: node.fabric_port.clone(),
            peer_name: UPLINK.into(),
            peer_netns: Some(ns.fd()),
            mtu: None,
            mac: None,
            peer_mac: None,
        })
        .map_err(LabError::netns)?;
        let port = fab.link(&node.fabric_port).map_err(LabError::netns)?;
        fab.set_master(port.index, br.index)
            .map_err(LabError::netns)?;
        fab.set_up(port.index).map_err(LabError::netns)?;
        host_side(&ns, node.ip, spec.underlay, spec.fabric_ip)?;
        if let (Some(side), Some(ip6)) = (&spec.ipv6, node.ip6) {
            host_side_v6(&ns, ip6, side)?;
        }
    }

    // The external host sits behind the cloud's edge, which holds its load balancer.
    let edge = crate::cloud_lb::create_edge(spec, &mut fab)?;
    let mut edge_nl = Netlink::open_in(&edge).map_err(LabError::netns)?;
    let ext = new_ns(&spec.external_netns)?;
    edge_nl
        .add_veth(&Veth {
            name: "ext".into(),
            peer_name: UPLINK.into(),
            peer_netns: Some(ext.fd()),
            mtu: None,
            mac: None,
            peer_mac: None,
        })
        .map_err(LabError::netns)?;
    let ext_port = edge_nl.link("ext").map_err(LabError::netns)?;
    edge_nl
        .addr_add(
            ext_port.index,
            net(spec.external_gateway, spec.external_net.prefix_len()),
        )
        .map_err(LabError::netns)?;
    edge_nl.set_up(ext_port.index).map_err(LabError::netns)?;
    host_side(
        &ext,
        spec.external_ip,
        spec.external_net,
        spec.external_gateway,
    )?;
    Ok(())
}

/// A host on a subnet: uplink address, loopback up, default route via the fabric.
fn host_side(ns: &NetNs, ip: Ipv4Addr, subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<(), LabError> {
    let mut nl = Netlink::open_in(ns).map_err(LabError::netns)?;
    lo_up(&mut nl)?;
    let up = nl.link(UPLINK).map_err(LabError::netns)?;
    nl.addr_add(up.index, net(ip, subnet.prefix_len()))
        .map_err(LabError::netns)?;
    nl.set_up(up.index).map_err(LabError::netns)?;
    nl.route_add(&Route::default_via(IpAddr::V4(gateway)).dev(up.index))
        .map_err(LabError::netns)?;
    Ok(())
}

/// A dual-stack node's IPv6 on its uplink, with the IPv6 default route via the fabric.
fn host_side_v6(ns: &NetNs, ip: Ipv6Addr, side: &Ipv6Side) -> Result<(), LabError> {
    let mut nl = Netlink::open_in(ns).map_err(LabError::netns)?;
    let up = nl.link(UPLINK).map_err(LabError::netns)?;
    nl.addr_add(up.index, net6(ip, side.underlay.prefix_len()))
        .map_err(LabError::netns)?;
    nl.route_add(&Route::default_via(IpAddr::V6(side.fabric_ip)).dev(up.index))
        .map_err(LabError::netns)?;
    Ok(())
}

fn new_ns(name: &str) -> Result<NetNs, LabError> {
    NetNs::create(name).map_err(|e| {
        if e.is_exists() {
            LabError::Invalid(format!(
                "network namespace {name} already exists: a lab of this name is up or left \
                 over (run `sarasa lab down`)"
            ))
        } else {
            LabError::netns(e)
        }
    })
}

pub fn lo_up(nl: &mut Netlink) -> Result<(), LabError> {
    let lo = nl.link("lo").map_err(LabError::netns)?;
    nl.set_up(lo.index).map_err(LabError::netns)
}

/// Brings a namespace's loopback up (runtimes do this before calling CNI).
pub fn ns_lo_up(ns: &NetNs) -> Result<(), LabError> {
    let mut nl = Netlink::open_in(ns).map_err(LabError::netns)?;
    lo_up(&mut nl)
}

fn net(ip: Ipv4Addr, prefix: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(ip, prefix).expect("prefix from a parsed CIDR"))
}

fn net6(ip: Ipv6Addr, prefix: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(ip, prefix).expect("prefix from a parsed CIDR"))
}

/// Removes every namespace of the lab (fabric, nodes, external, pods). Links inside go with
/// them. Keeps going after an error and reports all of them.
pub fn destroy(spec: &LabSpec) -> Result<(), LabError> {
    let prefix = spec.netns_prefix();
    let names = NetNs::list().map_err(LabError::netns)?;
    let mut errors = Vec::new();
    for name in names.iter().filter(|n| n.starts_with(&prefix)) {
        if let Err(e) = NetNs::delete(name) {
            errors.push(format!("{name}: {e}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LabError::Process(format!(
            "removing namespaces: {}",
            errors.join("; ")
        )))
    }
}
