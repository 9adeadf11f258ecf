//! ADD: allocate, plumb, answer; undo everything on any failure.

use ipnet::IpNet;
use sarasa_ipam::{Ipam, Lease};
use sarasa_netns::{sysctl, Netlink};

use crate::config::{Mode, Plugin};
use crate::env::Env;
use crate::error::{CniError, INTERFACE_EXISTS};
use crate::plumbing::{self, bridge, hostport, routed, veth};
use crate::result::{CniResult, Interface, IpConfig};
use crate::{log, naming};

/// Runs ADD; returns the result JSON.
pub fn run(env: &Env, p: &Plugin) -> Result<String, CniError> {
    let netns_path = env.netns.as_deref().unwrap_or_default();
    let pod_ns = super::open_pod_netns(netns_path)?;
    let prev = p
        .raw
        .prev_result
        .as_ref()
        .map(CniResult::from_prev)
        .transpose()?;
    let ipam = p.ipam()?;
    let mut pod = Netlink::open_in(&pod_ns)?;
    // Checked before anything changes, so a second ADD leaves the first intact.
    if pod.link_by_name(&env.ifname)?.is_some() {
        return Err(CniError::new(
            INTERFACE_EXISTS,
            "interface already exists",
            format!(
                "interface {} already exists in {netns_path}; nothing was changed",
                env.ifname
            ),
        ));
    }
    let mut node = Netlink::current()?;
    super::rebuild::ensure(p, &ipam)?;
    // A hostPort another pod holds refuses the ADD before anything is set up.
    if let Some(e) = ipam.host_port_in_use(&env.container_id, &env.ifname, &p.host_ports)? {
        return Err(e.into());
    }
    let leases = ipam
        .allocate(&env.container_id, &env.ifname, &p.requested_ips)
        .map_err(|e| crate::vpc::explain(p, e))?;
    let host = naming::host_veth(&p.name, &env.container_id, &env.ifname);
    let mut created_veth = false;
    let outcome = setup(
        env,
        p,
        &leases,
        &host,
        &pod_ns,
        &mut node,
        &mut pod,
        &mut created_veth,
    );
    let outcome = outcome.and_then(|ours| {
        if !p.host_ports.is_empty() {
            ipam.set_host_ports(&env.container_id, &env.ifname, &p.host_ports)?;
            hostport::sync(&ipam)?;
        }
        Ok(ours)
    });
    match outcome {
        Ok(ours) => {
            let full = match prev {
                Some(prev) => prev.merge(ours),
                None => ours,
            };
            Ok(full.to_json(&p.cni_version).to_string())
        }
        Err(e) => {
            rollback(&ipam, env, &host, created_veth, &mut node, &mut pod);
            if !p.host_ports.is_empty() {
                // The mappings went with the allocation; the kernel follows the store.
                if let Err(e) = hostport::sync(&ipam) {
                    log::error(&format!("ADD rollback: host ports: {}", e.details));
                }
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn setup(
    env: &Env,
    p: &Plugin,
    leases: &[Lease],
    host: &str,
    pod_ns: &sarasa_netns::NetNs,
    node: &mut Netlink,
    pod: &mut Netlink,
    created_veth: &mut bool,
) -> Result<CniResult, CniError> {
    let has_v4 = leases.iter().any(|l| l.address.addr().is_ipv4());
    let has_v6 = leases.iter().any(|l| l.address.addr().is_ipv6());
    // The node forwards pod traffic (in the namespace the plugin runs in: the node's). The
    // agent normally has set this already, so only a read happens; a read-only /proc/sys is
    // logged, not fatal.
    for (fam, key) in [
        (has_v4, "net/ipv4/ip_forward"),
        (has_v6, "net/ipv6/conf/all/forwarding"),
    ] {
        if fam {
            if let Err(e) = sysctl::ensure(key, "1") {
                log::error(&format!("cannot enable forwarding ({key}): {e}"));
            }
        }
    }
    let bridge_index = match p.mode {
        Mode::Bridge => {
            let gateways: Vec<IpNet> = leases
                .iter()
                .map(|l| IpNet::new(l.gateway, l.address.prefix_len()).expect("prefix of a lease"))
                .collect();
            Some(bridge::ensure(node, &p.bridge, p.mtu, &gateways)?)
        }
        Mode::Routed => None,
    };

    let host_link = veth::create(node, host, &env.ifname, pod_ns, p.mtu)?;
    *created_veth = true;
    // The node's own record of the attachment (rebuilds an unreadable IPAM store).
    node.set_alias(
        host_link.index,
        &super::rebuild::alias(&env.container_id, &env.ifname, leases),
    )?;
    let plan = plumbing::plan(p, leases);
    match bridge_index {
        Some(br) => bridge::attach(node, &host_link, br)?,
        None => routed::prepare_host(node, &host_link, has_v4, has_v6)?,
    }
    let routed_mac = host_link.mac.filter(|_| p.mode == Mode::Routed);
    let pod_link = veth::configure_pod(pod, pod_ns, &env.ifname, p.mac, &plan, routed_mac)?;
    if p.mode == Mode::Routed {
        let addrs: Vec<IpNet> = plan.addresses.iter().map(|(a, _)| *a).collect();
        routed::add_host_routes(node, &host_link, &addrs)?;
    }

    Ok(CniResult {
        interfaces: vec![
            Interface {
                name: host_link.name.clone(),
                mac: host_link.mac.map(|m| m.to_string()),
                mtu: Some(host_link.mtu),
                ..Default::default()
            },
            Interface {
                name: pod_link.name.clone(),
                mac: pod_link.mac.map(|m| m.to_string()),
                sandbox: env.netns.clone(),
                mtu: Some(pod_link.mtu),
                ..Default::default()
            },
        ],
        ips: plan
            .addresses
            .iter()
            .map(|(addr, gw)| IpConfig {
                address: *addr,
                gateway: Some(*gw),
                interface: Some(1),
            })
            .collect(),
        routes: plan.routes.clone(),
        dns: p.dns.clone(),
    })
}

/// Undoes a failed ADD: deleting the host end removes the pair with every route, neighbour
/// and proxy entry on it; then the addresses go back to the pool.
fn rollback(
    ipam: &Ipam,
    env: &Env,
    host: &str,
    created_veth: bool,
    node: &mut Netlink,
    pod: &mut Netlink,
) {
    if created_veth {
        if let Err(e) = node.delete_link_by_name(host) {
            log::error(&format!("rollback: delete {host}: {e}"));
        }
        // If the host end was already gone, the container end may remain.
        if let Ok(Some(l)) = pod.link_by_name(&env.ifname) {
            if l.kind.as_deref() == Some("veth") {
                let _ = pod.delete_link(l.index);
            }
        }
    }
    if let Err(e) = ipam.release(&env.container_id, &env.ifname) {
        log::error(&format!("rollback: release addresses: {e}"));
    }
}
