//! CHECK: the attachment still looks as `prevResult` says — container interface, its MAC,
//! addresses and routes; the host veth (paired with it, on the bridge, or routed to); and the
//! IPAM reservation.

use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_netns::{sysctl, Netlink};

use crate::config::{Mode, Plugin};
use crate::env::Env;
use crate::error::{CniError, CHECK_FAILED};
use crate::naming;
use crate::result::CniResult;

fn failed(details: String) -> CniError {
    CniError::new(CHECK_FAILED, "attachment check failed", details)
}

/// Runs CHECK.
pub fn run(env: &Env, p: &Plugin) -> Result<(), CniError> {
    let prev = p
        .raw
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::config("CHECK needs prevResult (the result of the ADD)"))?;
    let prev = CniResult::from_prev(prev)?;
    let netns_path = env.netns.as_deref().unwrap_or_default();
    let (ci_index, ci) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == env.ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            failed(format!(
                "prevResult has no container interface named {}",
                env.ifname
            ))
        })?;
    let pod_ns = super::open_pod_netns(netns_path)?;
    let mut pod = Netlink::open_in(&pod_ns)?;
    let link = pod.link_by_name(&env.ifname)?.ok_or_else(|| {
        failed(format!(
            "interface {} is missing in {netns_path}",
            env.ifname
        ))
    })?;
    if link.kind.as_deref() != Some("veth") {
        return Err(failed(format!("{} is not a veth", env.ifname)));
    }
    if let Some(mac) = &ci.mac {
        let have = link.mac.map(|m| m.to_string()).unwrap_or_default();
        if !mac.eq_ignore_ascii_case(&have) {
            return Err(failed(format!(
                "{} has MAC {have}, prevResult says {mac}",
                env.ifname
            )));
        }
    }
    // A later plugin in the chain (e.g. tuning) may change the MTU; prevResult is the truth.
    if let Some(mtu) = ci.mtu {
        if link.mtu != mtu {
            return Err(failed(format!(
                "{} has MTU {}, prevResult says {mtu}",
                env.ifname, link.mtu
            )));
        }
    }
    if !link.up {
        return Err(failed(format!("{} is down", env.ifname)));
    }

    // Addresses of our interface.
    let ours: Vec<IpNet> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(ci_index))
        .map(|ip| ip.address)
        .collect();
    let have: Vec<IpNet> = pod
        .addrs(Some(link.index), None)?
        .into_iter()
        .map(|a| a.net)
        .collect();
    for a in &ours {
        if !have.contains(a) {
            return Err(failed(format!("address {a} is missing on {}", env.ifname)));
        }
    }

    // Routes of the result must exist in the pod (a later plugin may have added more).
    let routes = pod.routes(None)?;
    for r in &prev.routes {
        let found = routes
            .iter()
            .any(|k| k.dst == r.dst.trunc() && (r.gw.is_none() || k.gateway == r.gw));
        if !found {
            return Err(failed(format!(
                "route {} via {} is missing in the pod",
                r.dst,
                r.gw.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
            )));
        }
    }

    // Host side.
    let host_name = naming::host_veth(&p.name, &env.container_id, &env.ifname);
    let mut node = Netlink::current()?;
    let host = node
        .link_by_name(&host_name)?
        .ok_or_else(|| failed(format!("host veth {host_name} is missing")))?;
    if host.peer_index != Some(link.index) {
        return Err(failed(format!(
            "host veth {host_name} is not paired with {}",
            env.ifname
        )));
    }
    if !host.up {
        return Err(failed(format!("host veth {host_name} is down")));
    }
    match p.mode {
        Mode::Bridge => {
            let br = node
                .link_by_name(&p.bridge)?
                .ok_or_else(|| failed(format!("bridge {} is missing", p.bridge)))?;
            if host.master != Some(br.index) {
                return Err(failed(format!(
                    "host veth {host_name} is not a port of {}",
                    p.bridge
                )));
            }
        }
        Mode::Routed => {
            let node_routes = node.routes(None)?;
            for a in &ours {
                let dst = IpNet::new(a.addr(), a.max_prefix_len()).expect("host prefix");
                if !node_routes
                    .iter()
                    .any(|r| r.dst == dst && r.oif == Some(host.index))
                {
                    return Err(failed(format!(
                        "host route {dst} via {host_name} is missing"
                    )));
                }
                if a.addr().is_ipv4() {
                    let v = sysctl::read(&format!("net/ipv4/conf/{host_name}/proxy_arp"))?;
                    if v != "1" {
                        return Err(failed(format!("proxy_arp is off on {host_name}")));
                    }
                }
            }
        }
    }

    // IPAM reservation.
    let ipam = p.ipam()?;
    let alloc = ipam
        .lookup(&env.container_id, &env.ifname)?
        .ok_or_else(|| {
            failed(format!(
                "no address reservation for {}/{}",
                env.container_id, env.ifname
            ))
        })?;
    let reserved: Vec<IpAddr> = alloc.leases.iter().map(|l| l.address.addr()).collect();
    for a in &ours {
        if !reserved.contains(&a.addr()) {
            return Err(failed(format!(
                "address {a} is not reserved for this attachment"
            )));
        }
    }
    // Host ports: recorded as asked, and the node's table as the records say.
    if alloc.host_ports != p.host_ports {
        return Err(failed(format!(
            "host ports recorded for this attachment ({}) differ from runtimeConfig.portMappings ({})",
            list(&alloc.host_ports),
            list(&p.host_ports)
        )));
    }
    if !alloc.host_ports.is_empty() && !crate::plumbing::hostport::in_place(&ipam)? {
        return Err(failed(format!(
            "nftables table inet {} does not hold this node's host ports",
            crate::plumbing::hostport::TABLE
        )));
    }
    Ok(())
}

fn list(ports: &[sarasa_ipam::HostPort]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
