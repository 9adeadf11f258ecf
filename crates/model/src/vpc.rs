//! The lab cloud's allocation API on the wire (vpc backend): what a node's agent sends and
//! gets back. The cloud knows the caller by its source address, as an instance metadata
//! service does, so a node can only ask for its own addresses.
//!
//! - `GET  /v1/instance/addresses` → [`InstanceAddresses`]
//! - `POST /v1/instance/addresses` with [`AssignRequest`] → [`InstanceAddresses`]
//! - `POST /v1/instance/addresses/unassign` with [`UnassignRequest`] → [`InstanceAddresses`]
//! - any refusal: a 4xx status with [`CloudErrorBody`] (EC2's error codes).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The port the lab's cloud serves on, at the fabric's underlay address.
pub const CLOUD_PORT: u16 = 8775;
/// The path of the caller's addresses.
pub const ADDRESSES_PATH: &str = "/v1/instance/addresses";
/// The path that gives addresses back.
pub const UNASSIGN_PATH: &str = "/v1/instance/addresses/unassign";

/// The addresses an instance holds and the most it may hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceAddresses {
    pub node: String,
    pub addresses: Vec<Ipv4Addr>,
    pub limit: u32,
}

/// Assign `count` more addresses (all or none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignRequest {
    pub count: u32,
}

/// Give `addresses` back (all or none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnassignRequest {
    pub addresses: Vec<Ipv4Addr>,
}

/// A refusal: `code` is EC2's (`AddressLimitExceeded`, `InsufficientFreeAddressesInSubnet`,
/// `InvalidParameterValue`, `UnauthorizedOperation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudErrorBody {
    pub code: String,
    pub message: String,
}
