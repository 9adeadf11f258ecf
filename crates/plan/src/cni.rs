//! The node's CNI conflist, rendered from its podCIDR(s): the CNI part of the node plan. The
//! agent writes it atomically (`sarasa_agent::cni_config::write_atomic`).

use std::path::Path;

use ipnet::IpNet;
use sarasa_model::CniMode;
use serde_json::json;

use crate::fabric::{VpcPool, NODE_BRIDGE};

pub const CONFLIST_NAME: &str = "10-sarasa.conflist";
pub const NETWORK_NAME: &str = "sarasa";
pub const PLUGIN_TYPE: &str = "sarasa-cni";

/// The conflist JSON: one range set per address family.
pub fn render(pod_cidrs: &[IpNet], mode: CniMode, mtu: u32, ipam_data_dir: &Path) -> String {
    let mut ranges = Vec::new();
    for v4 in [true, false] {
        let set: Vec<_> = pod_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == v4)
            .map(|c| json!({ "subnet": c.trunc().to_string() }))
            .collect();
        if !set.is_empty() {
            ranges.push(serde_json::Value::Array(set));
        }
    }
    document(ranges, mode, mtu, ipam_data_dir, None)
}

/// The conflist of a vpc node: pods attach routed, and each address the cloud assigned the
/// node is a one-address range of the VPC's pod range (host-local's shape, so the plugin's
/// IPAM is the same); `vpc.addressLimit` lets the plugin say why it has none left.
pub fn render_vpc(addresses: &[IpNet], vpc: &VpcPool, mtu: u32, ipam_data_dir: &Path) -> String {
    let mut ranges = Vec::new();
    for v4 in [true, false] {
        let set: Vec<_> = addresses
            .iter()
            .filter(|a| a.addr().is_ipv4() == v4)
            .filter_map(|a| {
                let subnet = vpc.subnets.iter().find(|s| s.contains(&a.addr()))?;
                let ip = a.addr().to_string();
                Some(json!({"subnet": subnet.to_string(), "rangeStart": ip, "rangeEnd": ip}))
            })
            .collect();
        if !set.is_empty() {
            ranges.push(serde_json::Value::Array(set));
        }
    }
    let extra = json!({ "addressLimit": vpc.address_limit });
    document(ranges, CniMode::Routed, mtu, ipam_data_dir, Some(extra))
}

fn document(
    ranges: Vec<serde_json::Value>,
    mode: CniMode,
    mtu: u32,
    ipam_data_dir: &Path,
    vpc: Option<serde_json::Value>,
) -> String {
    let mut doc = json!({
        "cniVersion": "1.1.0",
        "name": NETWORK_NAME,
        "plugins": [{
            "type": PLUGIN_TYPE,
            "mode": mode.as_str(),
            "bridge": NODE_BRIDGE,
            "mtu": mtu,
            "capabilities": { "portMappings": true },
            "ipam": {
                "ranges": ranges,
                "dataDir": ipam_data_dir.to_string_lossy(),
            }
        }]
    });
    if let Some(vpc) = vpc {
        doc["plugins"][0]["vpc"] = vpc;
    }
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn renders_the_contract() {
        let s = render(
            &["10.244.1.0/24".parse().unwrap()],
            CniMode::Bridge,
            1450,
            Path::new("/var/lib/sarasa/ipam"),
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"1.1.0","name":"sarasa","plugins":[{"type":"sarasa-cni",
                "mode":"bridge","bridge":"sarasa0","mtu":1450,"capabilities":{"portMappings":true},
                "ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"dataDir":"/var/lib/sarasa/ipam"}}]})
        );
    }

    #[test]
    fn vpc_addresses_are_one_address_ranges_of_the_vpc_range() {
        let vpc = VpcPool {
            subnets: vec!["10.244.0.0/16".parse().unwrap()],
            address_limit: Some(8),
        };
        let s = render_vpc(
            &[
                "10.244.0.4/32".parse().unwrap(),
                "10.244.0.9/32".parse().unwrap(),
            ],
            &vpc,
            1500,
            Path::new("/d"),
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["plugins"][0]["mode"], "routed");
        assert_eq!(v["plugins"][0]["vpc"], json!({"addressLimit": 8}));
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"],
            json!([[{"subnet":"10.244.0.0/16","rangeStart":"10.244.0.4","rangeEnd":"10.244.0.4"},
                    {"subnet":"10.244.0.0/16","rangeStart":"10.244.0.9","rangeEnd":"10.244.0.9"}]])
        );
    }

    #[test]
    fn dual_stack_has_two_range_sets() {
        let s = render(
            &[
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:244:1::/64".parse().unwrap(),
            ],
            CniMode::Routed,
            1500,
            Path::new("/d"),
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["plugins"][0]["mode"], "routed");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"],
            json!([[{"subnet":"10.244.1.0/24"}],[{"subnet":"fd00:10:244:1::/64"}]])
        );
    }
}
