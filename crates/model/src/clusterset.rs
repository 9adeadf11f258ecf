//! The other clusters of this cluster's set, as the cluster-set sync writes them into the
//! ConfigMap `sarasa-system/sarasa-clusterset` (key `clusters.json`, a JSON list): each
//! cluster's id, ranges and active gateway. The agents route to and through the gateways
//! from it and never masquerade towards those ranges; trace and `lab check` read the same.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const CONFIGMAP_NAMESPACE: &str = "sarasa-system";
pub const CONFIGMAP_NAME: &str = "sarasa-clusterset";
pub const CONFIGMAP_KEY: &str = "clusters.json";

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
}

impl RemoteCluster {
    /// The ranges reached through the gateway.
    pub fn cidrs(&self) -> [IpNet; 2] {
        [self.pod_cidr, self.service_cidr]
    }
}
