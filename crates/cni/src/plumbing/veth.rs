//! The veth pair: host end in the node namespace, container end created directly inside the
//! pod namespace under `CNI_IFNAME`, then addressed and routed there.

use std::net::IpAddr;

use sarasa_model::MacAddr;
use sarasa_netns::{Link, NetNs, Netlink, Route, Veth};

use super::{PodPlan, ROUTED_GW4};
use crate::error::CniError;

/// Creates the pair. A host end left over by a crashed ADD of this same attachment (the name
/// is derived from it) is removed first.
pub fn create(
    node: &mut Netlink,
    host: &str,
    ifname: &str,
    pod_ns: &NetNs,
    mtu: u32,
) -> Result<Link, CniError> {
    if node.delete_link_by_name(host)? {
        crate::log::info(&format!("removed stale host veth {host}"));
    }
    node.add_veth(&Veth {
        name: host.to_string(),
        peer_name: ifname.to_string(),
        peer_netns: Some(pod_ns.fd()),
        mtu: Some(mtu),
        ..Default::default()
    })?;
    Ok(node.link(host)?)
}

/// Addresses, brings up and routes the container interface; returns it as configured.
/// `host_mac` is the host end's MAC, pinned as the routed-mode IPv4 gateway's neighbour entry.
pub fn configure_pod(
    pod: &mut Netlink,
    pod_ns: &NetNs,
    ifname: &str,
    mac: Option<MacAddr>,
    plan: &PodPlan,
    routed_host_mac: Option<MacAddr>,
) -> Result<Link, CniError> {
    let link = pod.link(ifname)?;
    if let Some(mac) = mac {
        pod.set_mac(link.index, mac)?;
    }
    if plan.addresses.iter().any(|(a, _)| a.addr().is_ipv6()) {
        // No duplicate address detection on the link-local address either: while it is
        // tentative the pod cannot resolve its gateway, and the first packets are lost.
        let key = format!("net/ipv6/conf/{ifname}/accept_dad");
        pod_ns.run(|| sarasa_netns::sysctl::write(&key, "0"))??;
    }
    for (addr, _) in &plan.addresses {
        pod.addr_add(link.index, *addr)?;
    }
    pod.set_up(link.index)?;
    if let Some(hmac) = routed_host_mac {
        if plan.addresses.iter().any(|(a, _)| a.addr().is_ipv4()) {
            // The host end answers 169.254.1.1 by proxy ARP; pinning the entry as well keeps
            // the pod independent of whether the node has a route covering 169.254.1.1
            // (proxy ARP only answers for targets the node can route).
            pod.neigh_add(link.index, IpAddr::V4(ROUTED_GW4), hmac)?;
        }
    }
    for r in &plan.routes {
        let mut route = Route::new(r.dst).dev(link.index);
        if let Some(gw) = r.gw {
            route = route.via(gw);
            if gw == IpAddr::V4(ROUTED_GW4) {
                route = route.onlink();
            }
        }
        match pod.route_add(&route) {
            Ok(()) => {}
            // Another network may own the default route already; the spec lets us skip it.
            Err(e) if e.is_exists() && r.dst.prefix_len() == 0 => {
                crate::log::info(&format!("default route {} exists in pod; skipped", r.dst));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pod.link(ifname)?)
}
