//! The agent's side of the node plan ([`sarasa_plan`]): its cluster state turned into the
//! plan's inputs. The plan's types and compilers live in the pure `sarasa-plan` crate.

pub use sarasa_plan::fabric::encap_overhead;
pub use sarasa_plan::{
    ConflictReason, Fabric, FabricPlan as NodePlan, FdbEntry, LocalNode, Masquerade, Neighbour,
    NodeConflict, PeerNode, PlanError, Route, RouteDev, VxlanDevice, NODE_BRIDGE, VXLAN_DEVICE,
    VXLAN_PORT, VXLAN_VNI,
};

use std::collections::{BTreeMap, BTreeSet};

use sarasa_cluster::ClusterState;

/// Every node of `state` as the fabric sees it, oldest first (by creationTimestamp, then
/// name): of two Nodes claiming the same podCIDR, address or MAC, the older is programmed.
pub fn peers(state: &ClusterState) -> Vec<PeerNode> {
    let mut nodes: Vec<&sarasa_cluster::NodeInfo> = state.nodes.items().values().collect();
    nodes.sort_by_key(|n| (n.created.unwrap_or(i64::MAX), n.name.clone()));
    nodes
        .into_iter()
        .map(|n| PeerNode {
            name: n.name.clone(),
            pod_cidrs: n.pod_cidrs.clone(),
            underlay_ip: n.underlay_ip(),
            vtep_mac: n.vtep_mac,
            vpc_address_limit: n.vpc_address_limit,
        })
        .collect()
}

/// compile: the fabric plan for `local` given the cluster state, trusting no Node (see
/// [`sarasa_plan::fabric::compile_trusted`]) but with no memory of earlier plans.
pub fn compile(state: &ClusterState, local: &LocalNode) -> Result<NodePlan, PlanError> {
    sarasa_plan::fabric::compile(&peers(state), local)
}

/// The agent's memory between plans: the remote Nodes it programmed (a Node that turns
/// conflicting keeps those entries) and the conflicts already reported (each is logged and
/// posted as an Event once, again only after it cleared and came back).
#[derive(Debug, Default)]
pub struct NodeTrust {
    last_good: BTreeMap<String, PeerNode>,
    reported: BTreeSet<NodeConflict>,
}

impl NodeTrust {
    /// The fabric plan for `local`, refusing conflicting Nodes; remembers what it accepted.
    pub fn compile(
        &mut self,
        state: &ClusterState,
        local: &LocalNode,
    ) -> Result<NodePlan, PlanError> {
        let plan = sarasa_plan::fabric::compile_trusted(&peers(state), local, &self.last_good)?;
        self.last_good = plan.accepted.clone();
        Ok(plan)
    }

    /// The conflicts of `plan` not reported yet.
    pub fn unreported(&mut self, plan: &NodePlan) -> Vec<NodeConflict> {
        let now: BTreeSet<NodeConflict> = plan.refused.iter().cloned().collect();
        let new = now.difference(&self.reported).cloned().collect();
        self.reported = now;
        new
    }
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
        for (i, (name, cidr, ip, vtep)) in nodes.iter().enumerate() {
            let mut n = k8s_openapi::api::core::v1::Node::default();
            n.metadata.name = Some(name.to_string());
            // Created in the order listed.
            n.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + i as i64).unwrap(),
                ));
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
            remote_cluster_cidrs: Vec::new(),
            global_egress: Vec::new(),
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

    #[test]
    fn forged_node_cannot_take_another_nodes_pod_cidr() {
        let good = compile(&three_nodes(), &local(Backend::Vxlan)).unwrap();
        // Younger than n2 and sorting before it by name, present from this agent's very first
        // plan (an agent restarting into a cluster that has it): refused.
        let forged = state_with(&[
            ("n1", Some("10.244.1.0/24"), "192.168.33.11", Some(mac(1))),
            ("n2", Some("10.244.2.0/24"), "192.168.33.12", Some(mac(2))),
            ("n3", Some("10.244.3.0/24"), "192.168.33.13", Some(mac(3))),
            (
                "a-forged",
                Some("10.244.2.0/24"),
                "192.168.33.66",
                Some(mac(66)),
            ),
        ]);
        let mut trust = NodeTrust::default();
        let plan = trust.compile(&forged, &local(Backend::Vxlan)).unwrap();
        assert_eq!(plan.fabric, good.fabric);
        let conflicts = trust.unreported(&plan);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].node, "a-forged");
        assert_eq!(conflicts[0].reason.as_str(), "PodCIDRConflict");
        // Reported once, not at every reconcile.
        let plan = trust.compile(&forged, &local(Backend::Vxlan)).unwrap();
        assert!(trust.unreported(&plan).is_empty());
        // Duplicates no longer collapse silently: exactly one route per podCIDR, n2's.
        let r: Vec<_> = plan
            .fabric
            .routes
            .iter()
            .filter(|r| r.dst.to_string() == "10.244.2.0/24")
            .collect();
        assert_eq!(r.len(), 1);
        assert!(plan.fabric.fdb.iter().all(|f| f.mac != mac(66)));
    }

    #[test]
    fn all_zero_vtep_mac_is_refused() {
        let state = state_with(&[
            ("n1", Some("10.244.1.0/24"), "192.168.33.11", Some(mac(1))),
            (
                "n2",
                Some("10.244.2.0/24"),
                "192.168.33.12",
                Some(MacAddr([0; 6])),
            ),
        ]);
        let mut trust = NodeTrust::default();
        let plan = trust.compile(&state, &local(Backend::Vxlan)).unwrap();
        assert_eq!(plan.fabric, Fabric::default());
        let c = trust.unreported(&plan);
        assert_eq!(
            (c[0].node.as_str(), c[0].reason.as_str()),
            ("n2", "VTEPConflict")
        );
    }
}
