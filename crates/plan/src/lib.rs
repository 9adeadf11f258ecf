//! The node plan: one value holding everything sarasa wants on one node — the fabric (VXLAN
//! device, routes, FDB, neighbours, MTU), every nftables table sarasa owns there (egress
//! masquerade `inet sarasa-node`, the service proxy's `inet sarasa` and its shards
//! `inet sarasa-svcNN`, NetworkPolicy's `inet sarasa-policy`) and the CNI configuration.
//!
//! Pure: no I/O. Three consumers read the same value (ARCHITECTURE.md, "one model, three
//! consumers"):
//! - the agent applies it: compilers produce parts and incremental deltas ([`PlanDelta`]),
//!   one [`Applier`] commits a reconcile's delta (the nftables part as one atomic batch);
//! - `sarasa trace` evaluates packets against it (`sarasa-trace`), so what it explains is what
//!   the agent programs;
//! - tests assert on it without root.
//!
//! [`build`] compiles a whole plan from cluster objects with the very compilers the agent runs
//! ([`sarasa_proxy`], [`sarasa_policy`], [`fabric::compile`], [`masquerade::table`],
//! [`cni::render`]).

pub mod apply;
mod build;
pub mod cni;
pub mod fabric;
pub mod masquerade;

use std::collections::BTreeMap;

use sarasa_model::CniMode;
use sarasa_nft::{Family, Table};

pub use apply::{Applied, Applier, PlanDelta, Recording, TableChange};
pub use build::{build, NodeInputs, PolicyInputs};
pub use fabric::{
    ConflictReason, Fabric, FabricPlan, FdbEntry, GlobalSnat, LocalNode, Masquerade, Neighbour,
    NodeConflict, PeerNode, Route, RouteDev, UntrackedTunnel, VxlanDevice, CABLE_DEVICES,
    CABLE_PORT, NODE_BRIDGE, ROUTE_AGENT_PORT, VXLAN_DEVICE, VXLAN_PORT, VXLAN_VNI, WAN_LINK,
    WIREGUARD_PORT,
};

/// An nftables table by family and name (`inet sarasa-svc07`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId {
    pub family: Family,
    pub name: String,
}

impl TableId {
    pub fn of(table: &Table) -> Self {
        TableId {
            family: table.family,
            name: table.name.clone(),
        }
    }
}

impl std::fmt::Display for TableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family.as_str(), self.name)
    }
}

/// The CNI part of the plan: what the node's conflist says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniPlan {
    pub mode: CniMode,
    /// The conflist file's content ([`cni::CONFLIST_NAME`]).
    pub conflist: String,
}

/// Everything sarasa wants on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub node: String,
    pub fabric: FabricPlan,
    /// Every nftables table sarasa owns on the node.
    pub tables: BTreeMap<TableId, Table>,
    pub cni: CniPlan,
}

impl NodePlan {
    /// The tables in a stable order, as the nftables interpreter takes them.
    pub fn table_refs(&self) -> Vec<&Table> {
        self.tables.values().collect()
    }

    /// One table by name (any family).
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.values().find(|t| t.name == name)
    }
}

/// Why a plan cannot be made (yet).
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
    #[error("service proxy: {0}")]
    Proxy(String),
}
