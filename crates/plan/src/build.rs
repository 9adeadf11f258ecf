//! A whole node plan from cluster objects, through the same compilers the agent runs. The
//! agent keeps those compilers alive and applies their deltas; trace and tests call [`build`]
//! for the whole value.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use sarasa_model::{CniMode, EndpointSlice, NodeInfo, Service};
use sarasa_policy::{CompileOptions, PolicyCompiler, PolicyState};
use sarasa_proxy::ProxyConfig;

use crate::{fabric, masquerade, CniPlan, LocalNode, NodePlan, PeerNode, PlanError, TableId};

/// NetworkPolicy's inputs (absent when the node does not enforce policy).
#[derive(Debug, Clone, Copy)]
pub struct PolicyInputs<'a> {
    pub state: &'a PolicyState,
    /// nflog group of drop events.
    pub log_group: u16,
}

/// What one node's plan is compiled from.
#[derive(Debug, Clone)]
pub struct NodeInputs<'a> {
    pub local: &'a LocalNode,
    /// Every node (this one included).
    pub nodes: &'a [PeerNode],
    /// Where this node answers NodePorts: its underlay address and InternalIP.
    pub node_addresses: Vec<IpAddr>,
    pub services: &'a [Service],
    pub endpoint_slices: &'a [EndpointSlice],
    /// `None`: the node runs no service proxy (kube-proxy does that job).
    pub proxy: Option<ProxyConfig>,
    pub policy: Option<PolicyInputs<'a>>,
    pub cni_mode: CniMode,
    pub ipam_data_dir: &'a Path,
}

/// Compiles the whole plan of `inputs.local`.
pub fn build(inputs: &NodeInputs<'_>) -> Result<NodePlan, PlanError> {
    let local = inputs.local;
    let fabric = fabric::compile(inputs.nodes, local)?;
    let mut tables = BTreeMap::new();
    let mut add = |t: sarasa_nft::Table| {
        tables.insert(TableId::of(&t), t);
    };
    add(masquerade::table(&fabric.masquerade));
    if let Some(config) = &inputs.proxy {
        let node = NodeInfo {
            name: local.name.clone(),
            addresses: inputs.node_addresses.clone(),
            pod_cidrs: fabric.pod_cidrs.clone(),
        };
        let shards = config.shards;
        let proxy = sarasa_proxy::compile(
            config.clone(),
            node,
            inputs.services,
            inputs.endpoint_slices,
        )
        .map_err(|e| PlanError::Proxy(e.to_string()))?;
        add(proxy.main_table());
        for i in 0..shards {
            add(proxy.shard_table(i));
        }
    }
    if let Some(policy) = inputs.policy {
        let ipv6 = policy
            .state
            .pods()
            .any(|p| p.ips.iter().any(IpAddr::is_ipv6));
        let opts = CompileOptions {
            node: Some(local.name.clone()),
            ipv6,
            log_group: policy.log_group,
            ..CompileOptions::default()
        };
        add(PolicyCompiler::new(policy.state.clone(), opts).into_table());
    }
    let conflist = fabric.conflist(inputs.cni_mode, inputs.ipam_data_dir);
    Ok(NodePlan {
        node: local.name.clone(),
        fabric,
        tables,
        cni: CniPlan {
            mode: inputs.cni_mode,
            conflist,
        },
    })
}
