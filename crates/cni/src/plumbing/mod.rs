//! Kernel plumbing of one attachment: the veth pair (both modes), the node bridge (bridge
//! mode) or per-pod host routes with proxy ARP/NDP (routed mode). Everything goes through
//! netlink sockets: one in the node namespace (where the plugin runs) and one opened inside
//! the pod namespace.

pub mod bridge;
pub mod hostport;
pub mod routed;
pub mod veth;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use sarasa_ipam::Lease;

use crate::config::{Mode, Plugin};
use crate::result::RouteEntry;

/// The routed-mode IPv4 gateway the pod sees (answered by proxy ARP).
pub const ROUTED_GW4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The routed-mode IPv6 gateway the pod sees (answered by proxy NDP).
pub const ROUTED_GW6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// What the pod side gets: addresses, gateways and routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    /// Addresses on the container interface, with their result gateway.
    pub addresses: Vec<(IpNet, IpAddr)>,
    /// Routes in the pod.
    pub routes: Vec<RouteEntry>,
}

/// The pod's gateway for a lease in `mode`.
pub fn pod_gateway(mode: Mode, lease: &Lease) -> IpAddr {
    match (mode, lease.address.addr()) {
        (Mode::Bridge, _) => lease.gateway,
        (Mode::Routed, IpAddr::V4(_)) => ROUTED_GW4.into(),
        (Mode::Routed, IpAddr::V6(_)) => ROUTED_GW6.into(),
    }
}

/// Plans the pod side: bridge mode keeps the subnet prefix and routes via the range gateway;
/// routed mode uses /32 and /128 (everything goes through the node) and routes via
/// 169.254.1.1 / fe80::1.
pub fn plan(plugin: &Plugin, leases: &[Lease]) -> PodPlan {
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    for lease in leases {
        let gw = pod_gateway(plugin.mode, lease);
        let addr = match plugin.mode {
            Mode::Bridge => lease.address,
            Mode::Routed => IpNet::new(lease.address.addr(), lease.address.max_prefix_len())
                .expect("host prefix is valid"),
        };
        addresses.push((addr, gw));
        let default: IpNet = if gw.is_ipv4() {
            "0.0.0.0/0".parse().expect("valid")
        } else {
            "::/0".parse().expect("valid")
        };
        routes.push(RouteEntry::new(default, Some(gw)));
    }
    // Extra routes after the defaults, skipping duplicates of a default.
    for (dst, via) in &plugin.routes {
        if dst.prefix_len() == 0 {
            continue;
        }
        if let Some((_, gw)) = addresses
            .iter()
            .find(|(a, _)| a.addr().is_ipv4() == dst.addr().is_ipv4())
        {
            routes.push(RouteEntry::new(*dst, Some(via.unwrap_or(*gw))));
        }
    }
    PodPlan { addresses, routes }
}
