//! Routed mode (Calico's shape): no bridge; the node routes each pod address (/32, /128) to
//! the pod's host veth, and the host veth answers the pod's gateway 169.254.1.1 by proxy ARP
//! and fe80::1 by proxy NDP. All sysctls are per-interface or forwarding switches of the
//! namespace the plugin runs in (the node's).

use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_netns::{sysctl, Link, Netlink, Route, Scope};

use super::ROUTED_GW6;
use crate::error::CniError;

/// Proxy ARP/NDP on the host end, then up.
pub fn prepare_host(node: &mut Netlink, host: &Link, v4: bool, v6: bool) -> Result<(), CniError> {
    let n = &host.name;
    let set = |k: String, v: &str| sysctl::write(&k, v).map_err(CniError::from);
    if v4 {
        set(format!("net/ipv4/conf/{n}/proxy_arp"), "1")?;
        set(format!("net/ipv4/neigh/{n}/proxy_delay"), "0")?;
        set(format!("net/ipv4/conf/{n}/forwarding"), "1")?;
    }
    if v6 {
        set(format!("net/ipv6/conf/{n}/accept_dad"), "0")?;
        set(format!("net/ipv6/conf/{n}/proxy_ndp"), "1")?;
        set(format!("net/ipv6/neigh/{n}/proxy_delay"), "0")?;
        set(format!("net/ipv6/conf/{n}/forwarding"), "1")?;
        node.neigh_add_proxy(host.index, IpAddr::V6(ROUTED_GW6))?;
    }
    node.set_up(host.index)?;
    Ok(())
}

/// One host route per pod address, to the host veth.
pub fn add_host_routes(node: &mut Netlink, host: &Link, addrs: &[IpNet]) -> Result<(), CniError> {
    for a in addrs {
        let dst = IpNet::new(a.addr(), a.max_prefix_len()).expect("host prefix");
        node.route_add(&Route::new(dst).dev(host.index).scope(Scope::Link))?;
    }
    Ok(())
}
