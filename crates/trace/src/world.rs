//! What trace knows of the cluster: every node with its plan (the same value the agent
//! programs), the pods, the Services, and the lab's fabric (underlay router, external host,
//! the routes of LoadBalancer and external IPs). Plain data, built by the CLI from the API and
//! the lab spec; tests build it directly.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use sarasa_model::Service;
use sarasa_plan::NodePlan;
use sarasa_policy::PolicyState;

/// A node and its plan.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    /// The underlay address (uplink), what other nodes tunnel and route to.
    pub underlay_ip: IpAddr,
    /// The uplink's interface name (`eth0` in the lab).
    pub uplink: String,
    pub plan: NodePlan,
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
}

impl PodView {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The host outside the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalView {
    pub name: String,
    pub ip: IpAddr,
    /// Its subnet, which the fabric reaches directly.
    pub subnet: IpNet,
}

/// The lab's underlay router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricView {
    pub name: String,
    /// The underlay subnet nodes share.
    pub underlay: IpNet,
    /// The fabric's own address on it (nodes' default gateway).
    pub address: IpAddr,
    pub external: Option<ExternalView>,
    /// LoadBalancer and external IPs the fabric routes to a node (address → node underlay IP),
    /// as the lab's cloud load balancer programs them.
    pub service_routes: BTreeMap<IpAddr, IpAddr>,
}

/// The cluster set the cluster is in, as far as a packet to another cluster needs it: the
/// nodes route the other clusters' ranges to the active gateway, which puts them into the
/// cable.
#[derive(Debug, Clone, Default)]
pub struct ClusterSetView {
    pub cluster_id: String,
    /// The cable kind: `wireguard` or `vxlan`.
    pub cable: String,
    /// This cluster's active gateway (a node name), if one holds the Lease.
    pub active_gateway: Option<String>,
    pub remotes: Vec<RemoteClusterView>,
}

/// Another cluster of the set.
#[derive(Debug, Clone)]
pub struct RemoteClusterView {
    pub cluster_id: String,
    /// What this cluster routes to it (its global CIDR under GlobalNet).
    pub cidrs: Vec<IpNet>,
    /// Its active gateway's WAN address, the cable's far end.
    pub gateway_wan: Option<IpAddr>,
    /// Its active gateway (a node name) and its world, when the caller could read them: the
    /// walk then goes on in that cluster.
    pub active_gateway: Option<String>,
    pub world: Option<Box<World>>,
}

/// Everything trace evaluates a packet against.
#[derive(Debug, Clone)]
pub struct World {
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    pub services: Vec<Arc<Service>>,
    pub fabric: FabricView,
    /// The policy objects, to name the policies that isolate a pod when a packet is dropped.
    pub policy: PolicyState,
    /// The cluster set, when the cluster is in one.
    pub cluster_set: Option<ClusterSetView>,
}

impl World {
    /// The other cluster whose range holds `ip`.
    pub fn remote_cluster(&self, ip: IpAddr) -> Option<&RemoteClusterView> {
        self.cluster_set
            .as_ref()?
            .remotes
            .iter()
            .find(|r| r.cidrs.iter().any(|c| c.contains(&ip)))
    }

    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node whose underlay address is `ip`.
    pub fn node_by_underlay(&self, ip: IpAddr) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.underlay_ip == ip)
    }

    /// The pod (not host-network) holding `ip`.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&PodView> {
        self.pods
            .iter()
            .find(|p| !p.host_network && p.ips.contains(&ip))
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodView> {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<Service>> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// What holds `ip`, when something known does: `pod ns/name`, `node node-1`, `fabric`,
    /// `external`.
    pub fn name_of(&self, ip: IpAddr) -> Option<String> {
        if let Some(p) = self.pod_by_ip(ip) {
            return Some(format!("pod {}", p.key()));
        }
        if let Some(n) = self.nodes.iter().find(|n| local_addresses(n).contains(&ip)) {
            return Some(format!("node {}", n.name));
        }
        if ip == self.fabric.address {
            return Some(self.fabric.name.clone());
        }
        self.fabric
            .external
            .as_ref()
            .filter(|e| e.ip == ip)
            .map(|e| e.name.clone())
    }

    /// A name for an address: `pod ns/name`, `node node-1`, `fabric`, `external`, or the
    /// address itself.
    pub fn describe(&self, ip: IpAddr) -> String {
        match self.name_of(ip) {
            Some(n) => format!("{n} ({ip})"),
            None => ip.to_string(),
        }
    }
}

/// Every address a node answers on: its underlay address, the node-bridge gateway of each
/// podCIDR (bridge mode), the VXLAN device's address, loopback.
pub fn local_addresses(node: &NodeView) -> Vec<IpAddr> {
    let mut out = vec![node.underlay_ip];
    let fabric = &node.plan.fabric;
    if node.plan.cni.mode == sarasa_model::CniMode::Bridge {
        out.extend(fabric.pod_cidrs.iter().filter_map(|c| gateway(*c)));
    }
    if let Some(v) = &fabric.vxlan {
        out.extend(v.addresses.iter().map(|a| a.addr()));
    }
    out.push(IpAddr::from([127, 0, 0, 1]));
    out
}

/// The first host address of a podCIDR: the node bridge's address (`.1`).
pub fn gateway(cidr: IpNet) -> Option<IpAddr> {
    cidr.hosts().next()
}
