//! The lab's cloud VPC (`lab up --ipam vpc`, issue 13, after the container-native load
//! balancing seed): the fabric plays the VPC. Each node (instance) holds VPC addresses it
//! takes through an allocation API, up to a per-node limit as an instance type sets one; its
//! pods get those addresses (no overlay, no NAT) and the VPC routes each to its node — here a
//! /32 route per address in the fabric namespace, as AWS's VPC CNI relies on the VPC's own
//! routing of secondary addresses.
//!
//! The API (wire types in `sarasa_model::vpc`) runs in the control plane, on the fabric's
//! underlay address; it knows a caller by its source address, as an instance metadata
//! service does. What it assigned is kept in `<lab>/vpc.json`, so a restarted control plane
//! routes the same addresses to the same nodes.

pub mod pool;
mod server;

pub use pool::{CloudError, Pool};
pub use server::{desired_routes, run, VPC_ROUTE_METRIC};

use serde::{Deserialize, Serialize};

/// The VPC settings of a lab (`lab up --ipam vpc`): the VPC's range for pod addresses is the
/// lab's cluster CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpcSpec {
    /// The most addresses one node may hold (`--vpc-address-limit`).
    pub address_limit: u32,
    /// Free addresses each node's agent keeps ready for pods (`--vpc-warm-addresses`).
    pub warm_addresses: u32,
}

/// The default per-node limit: an AWS t3.medium's 3 interfaces × 6 addresses, less the three
/// primary ones.
pub const DEFAULT_ADDRESS_LIMIT: u32 = 15;
/// The default warm pool (the VPC CNI's `WARM_IP_TARGET`-style setting).
pub const DEFAULT_WARM_ADDRESSES: u32 = 3;
/// Host-network pods a node takes besides its VPC addresses: the sarasa-agent DaemonSet's
/// (EKS's max-pods formula adds 2, for aws-node and kube-proxy; sarasa replaces both). With
/// it, the scheduler stops at the addresses: a node is full before its pods run out of them.
pub const HOST_NETWORK_PODS: u32 = 1;

impl VpcSpec {
    /// Validates the flags' values.
    pub fn new(address_limit: u32, warm_addresses: u32) -> Result<VpcSpec, crate::LabError> {
        if address_limit == 0 || address_limit > 250 {
            return Err(crate::LabError::Invalid(format!(
                "--vpc-address-limit must be between 1 and 250, got {address_limit}"
            )));
        }
        if warm_addresses == 0 || warm_addresses > address_limit {
            return Err(crate::LabError::Invalid(format!(
                "--vpc-warm-addresses must be between 1 and the limit ({address_limit}), got {warm_addresses}"
            )));
        }
        Ok(VpcSpec {
            address_limit,
            warm_addresses,
        })
    }

    /// The pods a node takes: its addresses plus host-network pods (what its kubelet reports
    /// as `capacity.pods`, as EKS computes `--max-pods` from the instance type).
    pub fn max_pods(&self) -> u32 {
        self.address_limit + HOST_NETWORK_PODS
    }
}
