//! The lab's shape as plain data: which namespaces, links and addresses make up a lab of
//! N nodes. Pure: `LabSpec::new` decides every name and address; `topology` only realises it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::LabError;

/// Cross-node backend the agents use (the agent's `--backend`, `"vxlan"`/`"host-gw"` in JSON).
pub use sarasa_model::Backend;

/// How the CNI plugin attaches pods (the one type, shared with the agent and the node plan).
pub use sarasa_model::CniMode;

/// One node of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Kubernetes node name (`node-1`, ...).
    pub name: String,
    /// Network namespace name (`sarasa-<lab>-node-1`).
    pub netns: String,
    /// Underlay address (the node's InternalIP).
    pub ip: Ipv4Addr,
    /// Interface name of the node's end of its link, on the fabric side.
    pub fabric_port: String,
}

/// Everything `lab up` builds, decided up front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabSpec {
    pub name: String,
    pub backend: Backend,
    pub mode: CniMode,
    pub underlay: Ipv4Net,
    /// The fabric's address on the underlay: router for the nodes, home of the API server.
    pub fabric_ip: Ipv4Addr,
    pub external_net: Ipv4Net,
    pub external_gateway: Ipv4Addr,
    pub external_ip: Ipv4Addr,
    pub fabric_netns: String,
    pub external_netns: String,
    pub cluster_cidr: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub lb_pool: Ipv4Net,
    pub api_port: u16,
    pub nodes: Vec<NodeSpec>,
    /// How often the runtime runs CNI GC on every node, in seconds (a spec written before
    /// this setting gets the default).
    #[serde(default = "default_cni_gc_interval")]
    pub cni_gc_interval_secs: u64,
}

fn default_cni_gc_interval() -> u64 {
    crate::kubelet::CNI_GC_INTERVAL.as_secs()
}

/// Longest lab name: keeps `sarasa-<lab>-node-NN` and pod netns names readable.
pub const MAX_LAB_NAME: usize = 20;
pub const MAX_NODES: usize = 50;
/// Name of the underlay bridge inside the fabric namespace.
pub const UNDERLAY_BRIDGE: &str = "underlay";
/// Name of every node's (and the external host's) uplink.
pub const UPLINK: &str = "eth0";

impl LabSpec {
    pub fn new(
        name: &str,
        nodes: usize,
        backend: Backend,
        mode: CniMode,
    ) -> Result<LabSpec, LabError> {
        validate_lab_name(name)?;
        if nodes == 0 || nodes > MAX_NODES {
            return Err(LabError::Invalid(format!(
                "--nodes must be between 1 and {MAX_NODES}, got {nodes}"
            )));
        }
        let underlay: Ipv4Net = "192.168.33.0/24".parse().expect("static CIDR");
        let base = u32::from(underlay.network());
        let nodes = (1..=nodes)
            .map(|i| NodeSpec {
                name: format!("node-{i}"),
                netns: format!("sarasa-{name}-node-{i}"),
                ip: Ipv4Addr::from(base + 10 + i as u32),
                fabric_port: format!("n{i}"),
            })
            .collect();
        Ok(LabSpec {
            name: name.to_string(),
            backend,
            mode,
            underlay,
            fabric_ip: Ipv4Addr::from(base + 1),
            external_net: "203.0.113.0/24".parse().expect("static CIDR"),
            external_gateway: Ipv4Addr::new(203, 0, 113, 1),
            external_ip: Ipv4Addr::new(203, 0, 113, 10),
            fabric_netns: format!("sarasa-{name}-fabric"),
            external_netns: format!("sarasa-{name}-ext"),
            cluster_cidr: "10.244.0.0/16".parse().expect("static CIDR"),
            service_cidr: "10.96.0.0/12".parse().expect("static CIDR"),
            lb_pool: "198.51.100.0/24".parse().expect("static CIDR"),
            api_port: 6443,
            nodes,
            cni_gc_interval_secs: default_cni_gc_interval(),
        })
    }

    /// The URL agents use to reach the API server over the underlay.
    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.fabric_ip, self.api_port)
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Name of the network namespace of a pod, from its uid.
    pub fn pod_netns(&self, pod_uid: &str) -> String {
        let short: String = pod_uid.chars().filter(|c| *c != '-').take(12).collect();
        format!("sarasa-{}-p-{short}", self.name)
    }

    /// Every namespace name prefix this lab owns (used by `lab down` to find leftovers).
    pub fn netns_prefix(&self) -> String {
        format!("sarasa-{}-", self.name)
    }
}

pub fn validate_lab_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LAB_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "--lab {name:?}: a lab name is 1-{MAX_LAB_NAME} lowercase letters, digits or '-', \
             not starting or ending with '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_node_lab_follows_the_seeds_addressing() {
        let spec = LabSpec::new("default", 3, Backend::Vxlan, CniMode::Bridge).unwrap();
        assert_eq!(spec.fabric_ip, Ipv4Addr::new(192, 168, 33, 1));
        let ips: Vec<_> = spec.nodes.iter().map(|n| n.ip.to_string()).collect();
        assert_eq!(ips, ["192.168.33.11", "192.168.33.12", "192.168.33.13"]);
        assert_eq!(spec.nodes[1].netns, "sarasa-default-node-2");
        assert_eq!(spec.api_url(), "https://192.168.33.1:6443");
        assert!(spec
            .pod_netns("0b1c-22")
            .starts_with("sarasa-default-p-0b1c22"));
    }

    #[test]
    fn bad_names_and_counts_are_rejected_with_the_flag_named() {
        for bad in ["", "UPPER", "-x", "x-", "a_b", "way-too-long-lab-name-here"] {
            let err = LabSpec::new(bad, 1, Backend::Vxlan, CniMode::Bridge).unwrap_err();
            assert!(err.to_string().contains("--lab"), "{err}");
        }
        let err = LabSpec::new("a", 0, Backend::Vxlan, CniMode::Bridge).unwrap_err();
        assert!(err.to_string().contains("--nodes"));
    }

    #[test]
    fn lab_json_spells_the_backend_as_the_agent_flag() {
        let spec = LabSpec::new("a", 1, Backend::HostGw, CniMode::Routed).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["backend"], "host-gw");
        assert_eq!(json["backend"], Backend::HostGw.as_str());
        let back: LabSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back.backend, Backend::HostGw);
    }
}
