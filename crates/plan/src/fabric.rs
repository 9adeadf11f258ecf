//! The fabric part of the node plan: how this node reaches the other nodes' podCIDRs (VXLAN
//! device, FDB, neighbours, routes), the pod MTU, and egress masquerade's inputs. Pure: the
//! same peers and local facts always give the same plan; the agent diffs it against netlink.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_model::{Backend, MacAddr};

use crate::PlanError;

/// The VXLAN device name (flannel's `flannel.1`).
pub const VXLAN_DEVICE: &str = "sarasa.1";
pub const VXLAN_VNI: u32 = 1;
/// The Linux-default VXLAN port flannel uses.
pub const VXLAN_PORT: u16 = 8472;
/// The node bridge the CNI plugin creates in bridge mode.
pub const NODE_BRIDGE: &str = "sarasa0";

/// Facts about this node that do not come from the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    pub backend: Backend,
    pub underlay_ip: IpAddr,
    pub uplink: String,
    pub uplink_mtu: u32,
    /// The vtep MAC of this node's VXLAN device (vxlan backend).
    pub vtep_mac: Option<MacAddr>,
    pub cluster_cidrs: Vec<IpNet>,
}

/// A node as the fabric sees it (this one included), from its Node object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerNode {
    pub name: String,
    pub pod_cidrs: Vec<IpNet>,
    /// The address other nodes tunnel or route to (`sarasa.io/public-ip`, else InternalIP).
    pub underlay_ip: Option<IpAddr>,
    /// `sarasa.io/vtep-mac`.
    pub vtep_mac: Option<MacAddr>,
}

/// Encapsulation overhead of VXLAN: outer IP + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub fn encap_overhead(backend: Backend, underlay: IpAddr) -> u32 {
    match (backend, underlay) {
        (Backend::HostGw, _) => 0,
        (Backend::Vxlan, IpAddr::V4(_)) => 20 + 8 + 8 + 14,
        (Backend::Vxlan, IpAddr::V6(_)) => 40 + 8 + 8 + 14,
    }
}

/// Which device a route leaves through (resolved to an ifindex when applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteDev {
    Vxlan,
    Uplink,
    /// A device that is neither (only seen when reading the kernel).
    Other(u32),
}

/// A route to a remote node's podCIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: IpAddr,
    pub dev: RouteDev,
    pub onlink: bool,
}

/// A VXLAN forwarding entry: inner MAC → outer destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub dst: IpAddr,
}

/// A permanent neighbour entry on the VXLAN device: remote gateway address → remote vtep MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: MacAddr,
}

/// The cross-node entries; also what is read back from the kernel to diff against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fabric {
    pub routes: BTreeSet<Route>,
    pub fdb: BTreeSet<FdbEntry>,
    pub neighbours: BTreeSet<Neighbour>,
}

/// The VXLAN device as it must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    pub uplink: String,
    pub mtu: u32,
    /// The network address of each local podCIDR, as a host prefix (/32, /128).
    pub addresses: BTreeSet<IpNet>,
}

/// Egress masquerade: traffic from local pods to anything outside the cluster CIDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub pod_cidrs: Vec<IpNet>,
    pub cluster_cidrs: Vec<IpNet>,
}

/// The fabric part of a node's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricPlan {
    pub pod_cidrs: Vec<IpNet>,
    /// MTU for pod interfaces (CNI config) and the VXLAN device.
    pub mtu: u32,
    pub ipv6: bool,
    pub vxlan: Option<VxlanDevice>,
    pub fabric: Fabric,
    pub masquerade: Masquerade,
    /// Remote nodes that are programmed (have a podCIDR and what the backend needs).
    pub remote_nodes: usize,
}

/// The fabric plan of `local` among `nodes` (which may include `local` itself).
pub fn compile(nodes: &[PeerNode], local: &LocalNode) -> Result<FabricPlan, PlanError> {
    let me = nodes
        .iter()
        .find(|n| n.name == local.name)
        .ok_or_else(|| PlanError::NoNode(local.name.clone()))?;
    if me.pod_cidrs.is_empty() {
        return Err(PlanError::NoPodCidr(local.name.clone()));
    }
    let pod_cidrs: Vec<IpNet> = me.pod_cidrs.iter().map(|c| c.trunc()).collect();
    let overhead = encap_overhead(local.backend, local.underlay_ip);
    let mtu = local
        .uplink_mtu
        .checked_sub(overhead)
        .filter(|m| *m >= 1280 || (*m >= 576 && pod_cidrs.iter().all(|c| c.addr().is_ipv4())))
        .ok_or(PlanError::MtuTooSmall {
            uplink_mtu: local.uplink_mtu,
            backend: local.backend.as_str(),
        })?;
    let ipv6 = pod_cidrs.iter().any(|c| c.addr().is_ipv6());

    let mut fabric = Fabric::default();
    let mut remote_nodes = 0;
    for node in nodes {
        if node.name == local.name || node.pod_cidrs.is_empty() {
            continue;
        }
        let Some(underlay) = node.underlay_ip else {
            continue;
        };
        match local.backend {
            Backend::Vxlan => {
                let Some(mac) = node.vtep_mac else {
                    continue;
                };
                if underlay.is_ipv4() != local.underlay_ip.is_ipv4() {
                    continue;
                }
                fabric.fdb.insert(FdbEntry { mac, dst: underlay });
                for cidr in &node.pod_cidrs {
                    let cidr = cidr.trunc();
                    let gateway = cidr.network();
                    fabric.neighbours.insert(Neighbour { ip: gateway, mac });
                    fabric.routes.insert(Route {
                        dst: cidr,
                        gateway,
                        dev: RouteDev::Vxlan,
                        onlink: true,
                    });
                }
            }
            Backend::HostGw => {
                for cidr in &node.pod_cidrs {
                    let cidr = cidr.trunc();
                    if cidr.addr().is_ipv4() != underlay.is_ipv4() {
                        continue;
                    }
                    fabric.routes.insert(Route {
                        dst: cidr,
                        gateway: underlay,
                        dev: RouteDev::Uplink,
                        onlink: false,
                    });
                }
            }
        }
        remote_nodes += 1;
    }

    let vxlan = match local.backend {
        Backend::HostGw => None,
        Backend::Vxlan => {
            if local.vtep_mac.is_none() {
                return Err(PlanError::NoVtepMac);
            }
            Some(VxlanDevice {
                name: VXLAN_DEVICE.into(),
                vni: VXLAN_VNI,
                port: VXLAN_PORT,
                local: local.underlay_ip,
                uplink: local.uplink.clone(),
                mtu,
                addresses: pod_cidrs.iter().map(|c| IpNet::from(c.network())).collect(),
            })
        }
    };

    Ok(FabricPlan {
        masquerade: Masquerade {
            pod_cidrs: pod_cidrs.clone(),
            cluster_cidrs: local.cluster_cidrs.iter().map(|c| c.trunc()).collect(),
        },
        pod_cidrs,
        mtu,
        ipv6,
        vxlan,
        fabric,
        remote_nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    fn peer(name: &str, cidr: Option<&str>, ip: &str, vtep: Option<MacAddr>) -> PeerNode {
        PeerNode {
            name: name.into(),
            pod_cidrs: cidr.map(|c| c.parse().unwrap()).into_iter().collect(),
            underlay_ip: Some(ip.parse().unwrap()),
            vtep_mac: vtep,
        }
    }

    fn local(backend: Backend) -> LocalNode {
        LocalNode {
            name: "n1".into(),
            backend,
            underlay_ip: "192.168.33.11".parse().unwrap(),
            uplink: "eth0".into(),
            uplink_mtu: 1500,
            vtep_mac: Some(mac(1)),
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        }
    }

    fn three() -> Vec<PeerNode> {
        vec![
            peer("n1", Some("10.244.1.0/24"), "192.168.33.11", Some(mac(1))),
            peer("n2", Some("10.244.2.0/24"), "192.168.33.12", Some(mac(2))),
            peer("n3", Some("10.244.3.0/24"), "192.168.33.13", Some(mac(3))),
        ]
    }

    #[test]
    fn vxlan_is_flannels_layout() {
        let plan = compile(&three(), &local(Backend::Vxlan)).unwrap();
        assert_eq!(plan.mtu, 1450);
        assert_eq!(plan.remote_nodes, 2);
        let route = plan.fabric.routes.iter().next().unwrap();
        assert_eq!(route.dst.to_string(), "10.244.2.0/24");
        assert_eq!(route.gateway.to_string(), "10.244.2.0");
        assert!(route.onlink && route.dev == RouteDev::Vxlan);
        assert!(plan.fabric.fdb.contains(&FdbEntry {
            mac: mac(3),
            dst: "192.168.33.13".parse().unwrap()
        }));
        assert_eq!(
            plan.vxlan
                .unwrap()
                .addresses
                .iter()
                .next()
                .unwrap()
                .to_string(),
            "10.244.1.0/32"
        );
    }

    #[test]
    fn host_gw_routes_via_underlay_and_errors_name_the_node() {
        let plan = compile(&three(), &local(Backend::HostGw)).unwrap();
        assert!(plan.vxlan.is_none() && plan.fabric.fdb.is_empty());
        let gws: Vec<String> = plan
            .fabric
            .routes
            .iter()
            .map(|r| r.gateway.to_string())
            .collect();
        assert_eq!(gws, ["192.168.33.12", "192.168.33.13"]);
        let no_cidr = [peer("n1", None, "192.168.33.11", None)];
        assert_eq!(
            compile(&no_cidr, &local(Backend::HostGw)),
            Err(PlanError::NoPodCidr("n1".into()))
        );
        assert_eq!(
            compile(&[], &local(Backend::HostGw)),
            Err(PlanError::NoNode("n1".into()))
        );
    }
}
