//! The other clusters of this cluster's set, as the cluster-set sync writes them into the
//! ConfigMap `sarasa-system/sarasa-clusterset` (key `clusters.json`, a JSON list): each
//! cluster's id, ranges and active gateway (with its WireGuard public key), and under key
//! `cable` the set's cable kind. The agents route to and through the gateways
//! from it and never masquerade towards those ranges; trace and `lab check` read the same.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const CONFIGMAP_NAMESPACE: &str = "sarasa-system";
pub const CONFIGMAP_NAME: &str = "sarasa-clusterset";
pub const CONFIGMAP_KEY: &str = "clusters.json";
/// The set's cable kind (`wireguard` or `vxlan`); absent means `wireguard`, the default.
pub const CONFIGMAP_CABLE_KEY: &str = "cable";

/// How the clusters' active gateways are connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CableKind {
    /// Encrypted: WireGuard between the gateways.
    #[default]
    Wireguard,
    /// Unencrypted VXLAN, for trusted links.
    Vxlan,
}

impl CableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CableKind::Wireguard => "wireguard",
            CableKind::Vxlan => "vxlan",
        }
    }
}

impl std::fmt::Display for CableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CableKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wireguard" => Ok(CableKind::Wireguard),
            "vxlan" => Ok(CableKind::Vxlan),
            other => Err(format!("cable {other:?}: one of wireguard, vxlan")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteCluster {
    pub cluster_id: String,
    pub pod_cidr: IpNet,
    pub service_cidr: IpNet,
    /// The active gateway's address on the WAN (the cable's far end), once elected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ip: Option<std::net::IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_node: Option<String>,
    /// The active gateway's WireGuard public key (base64, as `wg` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_public_key: Option<String>,
}

impl RemoteCluster {
    /// The ranges reached through the gateway.
    pub fn cidrs(&self) -> [IpNet; 2] {
        [self.pod_cidr, self.service_cidr]
    }
}
