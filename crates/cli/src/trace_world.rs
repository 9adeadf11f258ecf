//! The [`World`] `sarasa trace` walks, for a lab: each node's plan compiled by
//! [`sarasa_plan::build`] from the cluster's objects with the settings the lab gives its agents
//! (backend, CNI mode, cluster and service CIDRs, policy on), the pods, the Services, and the
//! fabric — with the LoadBalancer/external-IP routes read from the fabric namespace's kernel
//! routing table, where the lab's cloud load balancer installs them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use ipnet::IpNet;
use sarasa_lab::{LabPaths, LabSpec};
use sarasa_model::{EndpointSlice, MacAddr, Service};
use sarasa_netns::{Family, NetNs, Netlink};
use sarasa_plan::{build, LocalNode, NodeInputs, PeerNode, PolicyInputs};
use sarasa_policy::PolicyState;
use sarasa_proxy::ProxyConfig;
use sarasa_trace::{ExternalView, FabricView, NodeView, PodView, World};

/// The uplink MTU the lab gives every node.
const LAB_UPLINK_MTU: u32 = 1500;
/// The nflog group lab agents log policy drops to.
const POLICY_LOG_GROUP: u16 = 100;

/// A node as its Node object describes it.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub pod_cidrs: Vec<IpNet>,
    pub underlay_ip: Option<IpAddr>,
    pub internal_ip: Option<IpAddr>,
    pub vtep_mac: Option<MacAddr>,
    pub vpc_address_limit: Option<u32>,
}

/// The cluster's objects trace needs.
pub struct Objects {
    pub nodes: Vec<NodeFacts>,
    pub pods: Vec<PodView>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub policy: PolicyState,
    /// The other clusters' ranges of the lab's cluster set (never masqueraded).
    pub remote_cluster_cidrs: Vec<ipnet::IpNet>,
    /// Under GlobalNet, the cluster's egress address of each family.
    pub global_egress: Vec<IpAddr>,
}

/// Compiles every node's plan and assembles the world. Nodes without a podCIDR or underlay
/// address yet are left out, with a warning.
pub fn world(
    spec: &LabSpec,
    objects: Objects,
    service_routes: BTreeMap<IpAddr, IpAddr>,
    warnings: &mut Vec<String>,
) -> Result<World> {
    let paths = LabPaths::new(&spec.name);
    let peers: Vec<PeerNode> = objects
        .nodes
        .iter()
        .map(|n| PeerNode {
            name: n.name.clone(),
            pod_cidrs: n.pod_cidrs.clone(),
            underlay_ip: n.underlay_ip.or(n.internal_ip),
            vtep_mac: n.vtep_mac,
            vpc_address_limit: n.vpc_address_limit,
        })
        .collect();
    let proxy = ProxyConfig {
        service_cidrs: spec.service_cidrs(),
        cluster_cidrs: spec.cluster_cidrs(),
        ..ProxyConfig::default()
    };
    let (backend, cni_mode) = (spec.backend, spec.mode);
    let mut nodes = Vec::new();
    for n in &objects.nodes {
        let Some(underlay) = n.underlay_ip.or(n.internal_ip) else {
            warnings.push(format!("node {} has no address yet; left out", n.name));
            continue;
        };
        let local = LocalNode {
            name: n.name.clone(),
            backend,
            underlay_ip: underlay,
            uplink: sarasa_lab::spec::UPLINK.into(),
            uplink_mtu: LAB_UPLINK_MTU,
            vtep_mac: n.vtep_mac,
            cluster_cidrs: spec.cluster_cidrs(),
            remote_cluster_cidrs: objects.remote_cluster_cidrs.clone(),
            global_egress: objects.global_egress.clone(),
        };
        let mut node_addresses = vec![underlay];
        node_addresses.extend(n.internal_ip.filter(|ip| *ip != underlay));
        let ipam = paths.ipam_dir(&n.name);
        let plan = build(&NodeInputs {
            local: &local,
            nodes: &peers,
            node_addresses,
            services: &objects.services,
            endpoint_slices: &objects.endpoint_slices,
            proxy: Some(proxy.clone()),
            policy: Some(PolicyInputs {
                state: &objects.policy,
                log_group: POLICY_LOG_GROUP,
            }),
            cni_mode,
            ipam_data_dir: &ipam,
        });
        match plan {
            Ok(plan) => nodes.push(NodeView {
                name: n.name.clone(),
                underlay_ip: underlay,
                uplink: sarasa_lab::spec::UPLINK.into(),
                plan,
            }),
            Err(e) => warnings.push(format!("node {}: {e}; left out", n.name)),
        }
    }
    Ok(World {
        nodes,
        pods: objects.pods,
        services: objects.services.into_iter().map(Arc::new).collect(),
        fabric: FabricView {
            name: "fabric".into(),
            underlay: spec.underlay.into(),
            address: spec.fabric_ip.into(),
            external: Some(ExternalView {
                name: "external".into(),
                ip: spec.external_ip.into(),
                subnet: spec.external_net.into(),
            }),
            service_routes,
        },
        policy: objects.policy,
        cluster_set: None,
    })
}

/// The fabric's routes for LoadBalancer and external IPs (address → node underlay address), as
/// the kernel holds them in the fabric namespace.
pub fn service_routes(spec: &LabSpec) -> Result<BTreeMap<IpAddr, IpAddr>> {
    let ns = NetNs::open(&spec.fabric_netns).with_context(|| {
        format!(
            "lab {} is not up (no namespace {})",
            spec.name, spec.fabric_netns
        )
    })?;
    let mut nl = Netlink::open_in(&ns).context("netlink in the fabric namespace")?;
    let routes = nl
        .routes(Some(Family::V4))
        .context("listing the fabric's routes")?;
    Ok(routes
        .into_iter()
        .filter(|r| r.metric == Some(sarasa_lab::service_routes::SERVICE_ROUTE_METRIC))
        .filter(|r| r.dst.prefix_len() == r.dst.max_prefix_len())
        .filter_map(|r| Some((r.dst.addr(), r.gateway?)))
        .collect())
}
