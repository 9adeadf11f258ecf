//! The node the datapath is compiled for.

use std::net::IpAddr;

use ipnet::IpNet;

/// The local node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NodeInfo {
    /// `metadata.name`: endpoints with this `nodeName` are local.
    pub name: String,
    /// The node's addresses (`status.addresses` InternalIP/ExternalIP).
    pub addresses: Vec<IpAddr>,
    /// `spec.podCIDRs`.
    pub pod_cidrs: Vec<IpNet>,
}
