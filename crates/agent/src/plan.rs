//! The agent's side of the node plan ([`sarasa_plan`]): its cluster state turned into the
//! plan's inputs. The plan's types and compilers live in the pure `sarasa-plan` crate.

pub use sarasa_plan::fabric::encap_overhead;
pub use sarasa_plan::{
    Fabric, FabricPlan as NodePlan, FdbEntry, LocalNode, Masquerade, Neighbour, PeerNode,
    PlanError, Route, RouteDev, VxlanDevice, NODE_BRIDGE, VXLAN_DEVICE, VXLAN_PORT, VXLAN_VNI,
};

use sarasa_cluster::ClusterState;

/// Every node of `state` as the fabric sees it.
pub fn peers(state: &ClusterState) -> Vec<PeerNode> {
    state
        .nodes
        .items()
        .values()
        .map(|n| PeerNode {
            name: n.name.clone(),
            pod_cidrs: n.pod_cidrs.clone(),
            underlay_ip: n.underlay_ip(),
            vtep_mac: n.vtep_mac,
        })
        .collect()
}

/// compile: the fabric plan for `local` given the cluster state.
pub fn compile(state: &ClusterState, local: &LocalNode) -> Result<NodePlan, PlanError> {
    sarasa_plan::fabric::compile(&peers(state), local)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kube::runtime::watcher;
    use sarasa_cluster::state::NodeInfo;
    use sarasa_model::{Backend, MacAddr};

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
                sarasa_cluster::state::ANNOTATION_PUBLIC_IP.to_string(),
                ip.to_string(),
            );
            if let Some(m) = vtep {
                ann.insert(
                    sarasa_cluster::state::ANNOTATION_VTEP_MAC.to_string(),
                    m.to_string(),
                );
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
