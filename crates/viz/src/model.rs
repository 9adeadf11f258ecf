//! The topology as plain data: what a picture of the lab shows, already resolved (addresses
//! parsed, pods placed on their nodes, endpoints matched to pods). Whoever builds it (the CLI
//! from the lab spec and API objects, trace from a node plan) decides the facts; the renderers
//! only lay them out.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

/// A whole lab: its fabric, the external host, the nodes with their pods, the tunnels between
/// nodes and the Services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub lab: String,
    pub fabric: Fabric,
    pub external: Option<Host>,
    pub nodes: Vec<NodeBox>,
    pub tunnels: Vec<Tunnel>,
    pub services: Vec<ServiceBox>,
}

/// The underlay router every node's uplink is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fabric {
    pub name: String,
    /// The underlay network (192.168.33.0/24).
    pub underlay: IpNet,
    /// The fabric's own address on it, with prefix (192.168.33.1/24).
    pub address: IpNet,
}

/// A host outside the cluster (the lab's stand-in for the internet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub name: String,
    pub address: IpAddr,
}

/// One node: its underlay address, podCIDRs, cross-node backend and the pods it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeBox {
    pub name: String,
    pub underlay_ip: IpAddr,
    /// Name of the uplink on the underlay (`eth0`).
    pub uplink: String,
    pub pod_cidrs: Vec<IpNet>,
    /// `vxlan` or `host-gw`.
    pub backend: String,
    pub vtep: Option<VtepBox>,
    /// The node bridge pods attach to (bridge mode).
    pub bridge: Option<String>,
    /// `bridge` or `routed`.
    pub cni_mode: String,
    pub pods: Vec<PodBox>,
}

/// The node's VXLAN tunnel endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VtepBox {
    pub device: String,
    /// The MAC the node published (`sarasa.io/vtep-mac`); None until it has.
    pub mac: Option<String>,
    pub vni: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodBox {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    /// The pod's interface (`eth0`), when known.
    pub interface: Option<String>,
}

impl PodBox {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// How two nodes reach each other's pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    /// Node names.
    pub from: String,
    pub to: String,
    /// `vxlan vni 1` or `host-gw route`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceBox {
    pub namespace: String,
    pub name: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`.
    pub service_type: String,
    pub cluster_ips: Vec<IpAddr>,
    /// `80/TCP` (with the target port when it differs: `80→8080/TCP`).
    pub ports: Vec<String>,
    pub node_ports: Vec<u16>,
    pub lb_ips: Vec<IpAddr>,
    pub endpoints: Vec<EndpointRef>,
}

impl ServiceBox {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One endpoint address and port of a Service (from its EndpointSlices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointRef {
    pub ip: IpAddr,
    pub port: u16,
    /// `namespace/name` of the pod behind it, when it is one.
    pub pod: Option<String>,
    pub ready: bool,
}

/// Something on the picture a traced path can start or end at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum ElementId {
    Fabric,
    External,
    Node(String),
    /// `namespace/name`.
    Pod(String),
    /// `namespace/name`.
    Service(String),
}

/// One leg of a traced path to draw over the topology (trace's `-o svg`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathLeg {
    pub from: ElementId,
    pub to: ElementId,
    pub label: String,
    pub outcome: LegOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum LegOutcome {
    Forwarded,
    Dropped,
    Rejected,
}

impl LegOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            LegOutcome::Forwarded => "forwarded",
            LegOutcome::Dropped => "dropped",
            LegOutcome::Rejected => "rejected",
        }
    }
}

impl Topology {
    /// The node running pod `namespace/name`, and the pod.
    pub fn find_pod(&self, key: &str) -> Option<(&NodeBox, &PodBox)> {
        self.nodes
            .iter()
            .find_map(|n| n.pods.iter().find(|p| p.key() == key).map(|p| (n, p)))
    }

    pub fn find_service(&self, key: &str) -> Option<&ServiceBox> {
        self.services.iter().find(|s| s.key() == key)
    }

    /// True when `id` names something on the picture.
    pub fn contains(&self, id: &ElementId) -> bool {
        match id {
            ElementId::Fabric => true,
            ElementId::External => self.external.is_some(),
            ElementId::Node(n) => self.nodes.iter().any(|b| &b.name == n),
            ElementId::Pod(k) => self.find_pod(k).is_some(),
            ElementId::Service(k) => self.find_service(k).is_some(),
        }
    }
}

/// Addresses as text, comma-separated.
pub(crate) fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
