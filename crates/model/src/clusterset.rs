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
/// With GlobalNet: this cluster's own global CIDRs, IPv4 first, comma-separated (its pods
/// leave for the other clusters with the first address of the one of their family,
/// [`global_egress_ip`]).
pub const CONFIGMAP_GLOBAL_KEY: &str = "globalCIDR";
pub use crate::ANNOTATION_GLOBAL_IP;

/// The usable addresses of a global CIDR: its hosts, without IPv6's Subnet-Router anycast
/// address (the network address, which `hosts()` includes for IPv6).
fn global_hosts(global: IpNet) -> impl Iterator<Item = std::net::IpAddr> {
    let skip = usize::from(global.addr().is_ipv6());
    global.hosts().skip(skip)
}

/// The address a cluster's pods leave for the other clusters with, under GlobalNet: the first
/// of its global CIDR.
pub fn global_egress_ip(global: IpNet) -> Option<std::net::IpAddr> {
    global_hosts(global).next()
}

/// The addresses a cluster gives its exported Services under GlobalNet: the rest of its global
/// CIDR after the egress address.
pub fn global_ingress_ips(global: IpNet) -> impl Iterator<Item = std::net::IpAddr> {
    global_hosts(global).skip(1)
}

/// The derived Service of ServiceImport `ns/name` (its ClusterSetIP is that Service's
/// ClusterIP): `derived-<hash>`, the hash of namespace and name only, so every cluster names it
/// alike.
pub fn derived_service_name(ns: &str, name: &str) -> String {
    let h = crate::hash::fnv1a64_parts([ns.as_bytes(), b"/", name.as_bytes()]);
    format!("derived-{h:016x}")
}

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
    /// A dual-stack cluster's IPv6 pod range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr_v6: Option<IpNet>,
    /// A dual-stack cluster's IPv6 Service range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cidr_v6: Option<IpNet>,
    /// The active gateway's address on the WAN (the cable's far end), once elected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ip: Option<std::net::IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_node: Option<String>,
    /// The active gateway's WireGuard public key (base64, as `wg` prints it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_public_key: Option<String>,
    /// With GlobalNet: its global CIDR, the only range of it the other clusters reach (its
    /// pod and Service ranges may overlap theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_cidr: Option<IpNet>,
    /// With GlobalNet over IPv6 too: a dual-stack cluster's IPv6 global CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_cidr_v6: Option<IpNet>,
}

impl RemoteCluster {
    /// The ranges reached through the gateway: its global CIDR under GlobalNet, else its pod
    /// and Service ranges (IPv6 ones too, when it is dual-stack).
    pub fn cidrs(&self) -> Vec<IpNet> {
        match self.global_cidr {
            Some(g) => [g].into_iter().chain(self.global_cidr_v6).collect(),
            None => [self.pod_cidr, self.service_cidr]
                .into_iter()
                .chain(self.pod_cidr_v6)
                .chain(self.service_cidr_v6)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globalnet_addresses_come_from_the_global_cidr() {
        let g: IpNet = "242.1.0.0/16".parse().unwrap();
        assert_eq!(global_egress_ip(g), Some("242.1.0.1".parse().unwrap()));
        // IPv6: the network address is the Subnet-Router anycast address, never a host's.
        let g6: IpNet = "fd00:242::1:0/112".parse().unwrap();
        assert_eq!(global_egress_ip(g6), Some("fd00:242::1:1".parse().unwrap()));
        assert_eq!(
            global_ingress_ips(g6).next(),
            Some("fd00:242::1:2".parse().unwrap())
        );
        let ingress: Vec<_> = global_ingress_ips(g).take(2).collect();
        assert_eq!(
            ingress,
            ["242.1.0.2", "242.1.0.3"].map(|a| a.parse::<std::net::IpAddr>().unwrap())
        );
        let r = RemoteCluster {
            cluster_id: "east".into(),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            pod_cidr_v6: None,
            service_cidr_v6: None,
            gateway_ip: None,
            gateway_node: None,
            gateway_public_key: None,
            global_cidr: Some(g),
            global_cidr_v6: None,
        };
        assert_eq!(r.cidrs(), [g], "its overlapping ranges are not routed");
    }
}
