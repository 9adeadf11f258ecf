//! compile: cluster state + local facts → the node's datapath plan. Pure, no I/O.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::Backend;
use crate::state::ClusterState;
use sarasa_model::MacAddr;

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

/// The cross-node part of the plan; also what is read back from the kernel to diff against.
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

/// Everything the agent programs on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("node {0} has no podCIDR yet (spec.podCIDR(s) is assigned by the control plane)")]
    NoPodCidr(String),
    #[error("node {0} is not in the watched state yet")]
    NoNode(String),
    #[error("vxlan backend needs this node's vtep MAC")]
    NoVtepMac,
    #[error("uplink MTU {uplink_mtu} is too small for {backend} encapsulation")]
    MtuTooSmall {
        uplink_mtu: u32,
        backend: &'static str,
    },
}

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// compile: the plan for `local` given the cluster state.
pub fn compile(state: &ClusterState, local: &LocalNode) -> Result<NodePlan, PlanError> {
    let me = state
        .node(&local.name)
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
    for node in state.nodes.items().values() {
        if node.name == local.name || node.pod_cidrs.is_empty() {
            continue;
        }
        let Some(underlay) = node.underlay_ip() else {
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
                addresses: pod_cidrs.iter().map(|c| host_prefix(c.network())).collect(),
            })
        }
    };

    Ok(NodePlan {
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
pub(crate) mod tests {
    use super::*;
    use crate::state::NodeInfo;
    use kube::runtime::watcher;

    pub(crate) fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    pub(crate) fn state_with(
        nodes: &[(&str, Option<&str>, &str, Option<MacAddr>)],
    ) -> ClusterState {
        let mut state = ClusterState::default();
        for (name, cidr, ip, vtep) in nodes {
            let mut n = k8s_openapi::api::core::v1::Node::default();
            n.metadata.name = Some(name.to_string());
            let mut ann = std::collections::BTreeMap::new();
            ann.insert(
                crate::state::ANNOTATION_PUBLIC_IP.to_string(),
                ip.to_string(),
            );
            if let Some(m) = vtep {
                ann.insert(crate::state::ANNOTATION_VTEP_MAC.to_string(), m.to_string());
            }
            n.metadata.annotations = Some(ann);
            n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            });
            state.apply_node_event(watcher::Event::Apply(n));
        }
        state
    }

    pub(crate) fn local(backend: Backend) -> LocalNode {
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

    fn three_nodes() -> ClusterState {
        state_with(&[
            ("n1", Some("10.244.1.0/24"), "192.168.33.11", Some(mac(1))),
            ("n2", Some("10.244.2.0/24"), "192.168.33.12", Some(mac(2))),
            ("n3", Some("10.244.3.0/24"), "192.168.33.13", Some(mac(3))),
        ])
    }

    #[test]
    fn vxlan_plan_is_flannels_layout() {
        let plan = compile(&three_nodes(), &local(Backend::Vxlan)).unwrap();
        assert_eq!(plan.mtu, 1450);
        assert_eq!(plan.remote_nodes, 2);
        let dev = plan.vxlan.as_ref().unwrap();
        assert_eq!(dev.name, "sarasa.1");
        assert_eq!(dev.mtu, 1450);
        assert_eq!(
            dev.addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>(),
            vec!["10.244.1.0/32"]
        );
        let route = plan.fabric.routes.iter().next().unwrap();
        assert_eq!(route.dst.to_string(), "10.244.2.0/24");
        assert_eq!(route.gateway.to_string(), "10.244.2.0");
        assert!(route.onlink);
        assert_eq!(route.dev, RouteDev::Vxlan);
        assert!(plan.fabric.fdb.contains(&FdbEntry {
            mac: mac(3),
            dst: "192.168.33.13".parse().unwrap()
        }));
        assert!(plan.fabric.neighbours.contains(&Neighbour {
            ip: "10.244.3.0".parse().unwrap(),
            mac: mac(3)
        }));
        assert_eq!(plan.fabric.fdb.len(), 2);
    }

    #[test]
    fn host_gw_plan_routes_via_underlay() {
        let plan = compile(&three_nodes(), &local(Backend::HostGw)).unwrap();
        assert_eq!(plan.mtu, 1500);
        assert!(plan.vxlan.is_none());
        assert!(plan.fabric.fdb.is_empty() && plan.fabric.neighbours.is_empty());
        let gws: Vec<String> = plan
            .fabric
            .routes
            .iter()
            .map(|r| r.gateway.to_string())
            .collect();
        assert_eq!(gws, vec!["192.168.33.12", "192.168.33.13"]);
        assert!(plan
            .fabric
            .routes
            .iter()
            .all(|r| r.dev == RouteDev::Uplink && !r.onlink));
    }

    #[test]
    fn waits_for_pod_cidr_and_skips_incomplete_remotes() {
        let state = state_with(&[("n1", None, "192.168.33.11", Some(mac(1)))]);
        assert_eq!(
            compile(&state, &local(Backend::Vxlan)),
            Err(PlanError::NoPodCidr("n1".into()))
        );
        let state = state_with(&[
            ("n1", Some("10.244.1.0/24"), "192.168.33.11", Some(mac(1))),
            ("n2", Some("10.244.2.0/24"), "192.168.33.12", None),
            ("n3", None, "192.168.33.13", Some(mac(3))),
        ]);
        let plan = compile(&state, &local(Backend::Vxlan)).unwrap();
        assert_eq!(plan.remote_nodes, 0);
        assert_eq!(plan.fabric, Fabric::default());
    }

    #[test]
    fn mtu_is_computed_from_uplink() {
        let mut l = local(Backend::Vxlan);
        l.uplink_mtu = 9000;
        assert_eq!(compile(&three_nodes(), &l).unwrap().mtu, 8950);
        l.uplink_mtu = 60;
        assert!(matches!(
            compile(&three_nodes(), &l),
            Err(PlanError::MtuTooSmall { .. })
        ));
        let _ = NodeInfo::default();
    }
}
