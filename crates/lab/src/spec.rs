//! The lab's shape as plain data: which namespaces, links and addresses make up a lab of
//! N nodes. Pure: `LabSpec::new` decides every name and address; `topology` only realises it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
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
    /// Its IPv6 underlay address in a dual-stack lab (the node's second InternalIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// Interface name of the node's end of its link, on the fabric side.
    pub fabric_port: String,
}

impl NodeSpec {
    /// The node's underlay addresses, IPv4 first (its InternalIPs, a hostNetwork pod's IPs).
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut out = vec![IpAddr::V4(self.ip)];
        out.extend(self.ip6.map(IpAddr::V6));
        out
    }
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
    /// A container's log is rotated once it passes this many bytes (the kubelet's
    /// `containerLogMaxSize`; `lab up --container-log-max-size`).
    #[serde(default = "default_container_log_max_bytes")]
    pub container_log_max_bytes: u64,
    /// Log files kept per container, the one written included (the kubelet's
    /// `containerLogMaxFiles`; `lab up --container-log-max-files`).
    #[serde(default = "default_container_log_max_files")]
    pub container_log_max_files: usize,
    /// The cloud VPC (`lab up --ipam vpc`): pods take addresses the cloud assigns their node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<crate::vpc::VpcSpec>,
    /// Benchmark only (`lab up --insecure-api`): the API as it was before issue 11's security —
    /// plain HTTP, requests without credentials accepted, every request allowed — so `lab up`
    /// can be measured with and without TLS, tokens and RBAC in one tree.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_api: bool,
    /// The cluster's id in a cluster set (`lab up --cluster-id`; MCS's
    /// `cluster.clusterset.k8s.io`): a DNS label, the lab's name unless given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_id: String,
    /// The IPv6 side of a dual-stack lab (`lab up --dual-stack`): the underlay, pods and
    /// Services get IPv6 as well; IPv4 stays the primary family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Side>,
}

/// A dual-stack lab's IPv6 ranges (kind's defaults for pods and Services).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv6Side {
    pub underlay: Ipv6Net,
    /// The fabric's IPv6 address on the underlay: the nodes' IPv6 default route.
    pub fabric_ip: Ipv6Addr,
    pub cluster_cidr: Ipv6Net,
    pub service_cidr: Ipv6Net,
}

impl Default for Ipv6Side {
    fn default() -> Self {
        Ipv6Side {
            underlay: "fd00:33::/64".parse().expect("static CIDR"),
            fabric_ip: "fd00:33::1".parse().expect("static address"),
            cluster_cidr: "fd00:10:244::/56".parse().expect("static CIDR"),
            service_cidr: "fd00:10:96::/112".parse().expect("static CIDR"),
        }
    }
}

/// A node's IPv6 underlay address: the same host number as its IPv4 one.
fn node_ip6(underlay: Ipv6Net, index: usize) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(underlay.network()) + 10 + index as u128)
}

fn default_cni_gc_interval() -> u64 {
    crate::kubelet::CNI_GC_INTERVAL.as_secs()
}

fn default_container_log_max_bytes() -> u64 {
    crate::container_log::LOG_MAX_BYTES
}

fn default_container_log_max_files() -> usize {
    crate::container_log::LOG_KEEP_ROTATED + 1
}

/// Smallest container log size `lab up` takes (a few CRI records).
pub const MIN_CONTAINER_LOG_BYTES: u64 = 4 * 1024;
/// Most log files per container `lab up` takes.
pub const MAX_CONTAINER_LOG_FILES: usize = 100;

/// A size as the kubelet's `containerLogMaxSize` takes it: bytes, or a number with a binary
/// (`Ki`, `Mi`, `Gi`) or decimal (`K`/`k`, `M`, `G`) suffix. `flag` names the setting in errors.
pub fn parse_size(text: &str, flag: &str) -> Result<u64, LabError> {
    let bad = |why: &str| {
        LabError::Invalid(format!(
            "{flag} {text:?}: {why} (a size in bytes, or with Ki, Mi, Gi, K, M or G: 64Ki, 10Mi)"
        ))
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    if digits.is_empty() {
        return Err(bad("no number"));
    }
    let n: u64 = digits.parse().map_err(|_| bad("too large"))?;
    let unit: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return Err(bad("unknown unit")),
    };
    n.checked_mul(unit).ok_or_else(|| bad("too large"))
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
                ip6: None,
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
            container_log_max_bytes: default_container_log_max_bytes(),
            container_log_max_files: default_container_log_max_files(),
            vpc: None,
            insecure_api: false,
            cluster_id: String::new(),
            ipv6: None,
        })
    }

    /// The same spec made dual-stack (`lab up --dual-stack`): the underlay, every node, the
    /// pods and the Services get IPv6 too, from the defaults of [`Ipv6Side`] (`--pod-cidr` and
    /// `--service-cidr` may then name an IPv6 range after the IPv4 one). The pods' IPv6
    /// crosses nodes inside the VXLAN backend's tunnel; the other backends route a podCIDR to
    /// one underlay address per node, an IPv4 one, so they are refused naming `--backend`.
    pub fn with_dual_stack(mut self) -> Result<LabSpec, LabError> {
        if self.backend != Backend::Vxlan {
            return Err(LabError::Invalid(format!(
                "--dual-stack: IPv6 pods cross nodes through the vxlan backend; --backend {} \
                 routes each node's podCIDRs to its one (IPv4) underlay address",
                self.backend
            )));
        }
        let side = Ipv6Side::default();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            node.ip6 = Some(node_ip6(side.underlay, i + 1));
        }
        self.ipv6 = Some(side);
        Ok(self)
    }

    /// The pod ranges, IPv4 first (the cluster's `--cluster-cidr`).
    pub fn cluster_cidrs(&self) -> Vec<IpNet> {
        let mut out = vec![IpNet::V4(self.cluster_cidr)];
        out.extend(self.ipv6.as_ref().map(|s| IpNet::V6(s.cluster_cidr)));
        out
    }

    /// The Service ranges, IPv4 first (the API server's `--service-cluster-ip-range`).
    pub fn service_cidrs(&self) -> Vec<IpNet> {
        let mut out = vec![IpNet::V4(self.service_cidr)];
        out.extend(self.ipv6.as_ref().map(|s| IpNet::V6(s.service_cidr)));
        out
    }

    /// The same spec with the pod and Service ranges and the cluster id `lab up` was given
    /// (`--pod-cidr`, `--service-cidr`, `--cluster-id`; `None` keeps the default). A
    /// dual-stack spec ([`LabSpec::with_dual_stack`] first) takes `IPV4,IPV6` in either range
    /// flag. Refused, naming the flag: a first range that is not IPv4, a second that is not
    /// IPv6 or comes without dual-stack, a range that is not a network address, a pod range too
    /// small for a /24 per node, a Service range outside /12../28 (kube-apiserver takes none
    /// larger than /12; the DNS Service is its tenth address), ranges that overlap each other
    /// or the lab's own (underlay, external net, load-balancer pool, externalIPs), special
    /// ranges, and an id that is not a DNS label.
    pub fn with_networks(
        mut self,
        pod_cidr: Option<&str>,
        service_cidr: Option<&str>,
        cluster_id: Option<&str>,
    ) -> Result<LabSpec, LabError> {
        if let Some(text) = pod_cidr {
            let (v4, v6) = crate::spec_networks::parse_ranges("--pod-cidr", text, &self)?;
            crate::spec_networks::check_pod_range(v4, self.nodes.len())?;
            self.cluster_cidr = v4;
            if let (Some(v6), Some(side)) = (v6, self.ipv6.as_mut()) {
                crate::spec_networks::check_pod_range_v6(v6)?;
                side.cluster_cidr = v6;
            }
        }
        if let Some(text) = service_cidr {
            let (v4, v6) = crate::spec_networks::parse_ranges("--service-cidr", text, &self)?;
            crate::spec_networks::check_service_range(v4)?;
            self.service_cidr = v4;
            if let (Some(v6), Some(side)) = (v6, self.ipv6.as_mut()) {
                crate::spec_networks::check_service_range_v6(v6)?;
                side.service_cidr = v6;
            }
        }
        crate::spec_networks::check_disjoint(&self)?;
        if let Some(id) = cluster_id {
            crate::spec_networks::check_cluster_id(id)?;
            self.cluster_id = id.to_string();
        }
        Ok(self)
    }

    /// The cluster's id in a cluster set: `--cluster-id`, else the lab's name.
    pub fn cluster_id(&self) -> &str {
        if self.cluster_id.is_empty() {
            &self.name
        } else {
            &self.cluster_id
        }
    }

    /// The same spec with container logs rotated past `max_bytes`, `max_files` kept per
    /// container (the one written included); out-of-range values are refused naming the
    /// `lab up` flag.
    pub fn with_container_logs(
        mut self,
        max_bytes: u64,
        max_files: usize,
    ) -> Result<LabSpec, LabError> {
        if max_bytes < MIN_CONTAINER_LOG_BYTES {
            return Err(LabError::Invalid(format!(
                "--container-log-max-size must be at least {MIN_CONTAINER_LOG_BYTES} bytes \
                 (4Ki), got {max_bytes}"
            )));
        }
        if !(2..=MAX_CONTAINER_LOG_FILES).contains(&max_files) {
            return Err(LabError::Invalid(format!(
                "--container-log-max-files must be between 2 and {MAX_CONTAINER_LOG_FILES} \
                 (the file written and at least one rotated), got {max_files}"
            )));
        }
        self.container_log_max_bytes = max_bytes;
        self.container_log_max_files = max_files;
        Ok(self)
    }

    /// Pods take VPC addresses from the lab's cloud (`--ipam vpc`): the backend is `vpc` and
    /// pods attach routed; any other backend or mode asked for is refused naming the flag.
    pub fn with_vpc(mut self, vpc: crate::vpc::VpcSpec) -> Result<LabSpec, LabError> {
        if self.backend != Backend::Vpc {
            return Err(LabError::Invalid(format!(
                "--ipam vpc: the VPC routes pod addresses, so the backend is vpc, not --backend {}",
                self.backend
            )));
        }
        if self.mode != CniMode::Routed {
            return Err(LabError::Invalid(format!(
                "--ipam vpc: pods attach routed (/32 routes on the node), not --mode {}",
                self.mode
            )));
        }
        self.vpc = Some(vpc);
        Ok(self)
    }

    /// Where Service addresses nodes may announce over BGP come from: the LoadBalancer pool
    /// and the externalIPs range.
    pub fn announced_service_ranges(&self) -> Vec<ipnet::IpNet> {
        let mut out = vec![ipnet::IpNet::V4(self.lb_pool)];
        out.extend(
            crate::control_plane::EXTERNAL_IPS
                .parse::<ipnet::IpNet>()
                .ok(),
        );
        out
    }

    /// Pods a node takes (its kubelet's `capacity.pods`).
    pub fn max_pods(&self) -> u32 {
        self.vpc.as_ref().map_or(
            crate::kubelet::node_status::MAX_PODS,
            crate::vpc::VpcSpec::max_pods,
        )
    }

    /// Rotated files kept per container besides the one written.
    pub fn container_log_keep_rotated(&self) -> usize {
        self.container_log_max_files.saturating_sub(1).max(1)
    }

    /// The URL agents use to reach the API server over the underlay.
    pub fn api_url(&self) -> String {
        let scheme = if self.insecure_api { "http" } else { "https" };
        format!("{scheme}://{}:{}", self.fabric_ip, self.api_port)
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
    if !ok {
        return Err(LabError::Invalid(format!(
            "--lab {name:?}: a lab name is 1-{MAX_LAB_NAME} lowercase letters, digits or '-', \
             not starting or ending with '-'"
        )));
    }
    // A lab's namespaces are `sarasa-<lab>-*`; cluster sets' WANs are `sarasa-wan-<set>`.
    if name == "wan" || name.starts_with("wan-") {
        return Err(LabError::Invalid(format!(
            "--lab {name:?}: \"wan\" and names starting \"wan-\" are kept for cluster sets' WAN namespaces"
        )));
    }
    Ok(())
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
    fn container_log_limits_default_to_the_kubelets_and_are_validated() {
        let spec = LabSpec::new("a", 1, Backend::Vxlan, CniMode::Bridge).unwrap();
        assert_eq!(spec.container_log_max_bytes, 10 << 20);
        assert_eq!(spec.container_log_max_files, 5);
        assert_eq!(spec.container_log_keep_rotated(), 4);
        let small = spec.clone().with_container_logs(64 << 10, 3).unwrap();
        assert_eq!(
            (
                small.container_log_max_bytes,
                small.container_log_keep_rotated()
            ),
            (64 << 10, 2)
        );
        let err = spec.clone().with_container_logs(100, 3).unwrap_err();
        assert!(
            err.to_string().contains("--container-log-max-size"),
            "{err}"
        );
        for files in [0, 1, 101] {
            let err = spec
                .clone()
                .with_container_logs(1 << 20, files)
                .unwrap_err();
            assert!(
                err.to_string().contains("--container-log-max-files"),
                "{err}"
            );
        }
        // A lab.json written before these settings reads with the defaults.
        let mut json = serde_json::to_value(&spec).unwrap();
        let obj = json.as_object_mut().unwrap();
        obj.remove("container_log_max_bytes");
        obj.remove("container_log_max_files");
        let back: LabSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn sizes_parse_as_the_kubelet_writes_them() {
        let f = "--container-log-max-size";
        assert_eq!(parse_size("65536", f).unwrap(), 65536);
        assert_eq!(parse_size("64Ki", f).unwrap(), 64 << 10);
        assert_eq!(parse_size("10Mi", f).unwrap(), 10 << 20);
        assert_eq!(parse_size("1Gi", f).unwrap(), 1 << 30);
        assert_eq!(parse_size("5M", f).unwrap(), 5_000_000);
        assert_eq!(parse_size("2k", f).unwrap(), 2_000);
        for bad in [
            "",
            "Mi",
            "10MB",
            "1.5Mi",
            "-1",
            "99999999999999999999",
            "20000000000Gi",
        ] {
            let err = parse_size(bad, f).unwrap_err();
            assert!(err.to_string().contains(f), "{bad}: {err}");
        }
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
