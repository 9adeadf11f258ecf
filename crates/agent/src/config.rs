//! The agent's command-line configuration (embedded by the CLI as `sarasa agent ...`).

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

/// How pods on different nodes reach each other, and how pods attach (shared with the lab,
/// the Node annotation and the node plan).
pub use sarasa_model::{Backend, CniMode};

/// Configuration of one node agent.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentConfig {
    /// Settings file (the `sarasa-config` ConfigMap's `config.yaml`); flags given on the
    /// command line win over it. See [`crate::config_file`].
    #[arg(long = "config", env = "SARASA_CONFIG")]
    pub config: Option<PathBuf>,

    /// Name of this node's Node object (created if missing).
    #[arg(long = "node-name", env = "NODE_NAME")]
    pub node_name: String,

    /// Kubernetes API server URL, e.g. http://192.168.33.1:6443. When absent the in-cluster
    /// environment or the kubeconfig is used.
    #[arg(long = "apiserver")]
    pub apiserver: Option<String>,

    /// Kubeconfig file (used when --apiserver is absent; default: $KUBECONFIG, ~/.kube/config,
    /// then in-cluster).
    #[arg(long = "kubeconfig")]
    pub kubeconfig: Option<PathBuf>,

    /// Cross-node backend.
    #[arg(long, value_enum, default_value_t = Backend::Vxlan)]
    pub backend: Backend,

    /// Pod plumbing mode handed to sarasa-cni.
    #[arg(long = "cni-mode", value_enum, default_value_t = CniMode::Bridge)]
    pub cni_mode: CniMode,

    /// Directory the CNI conflist is written to.
    #[arg(long = "cni-conf-dir", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,

    /// IPAM state directory handed to sarasa-cni.
    #[arg(long = "ipam-data-dir", default_value = "/var/lib/sarasa/ipam")]
    pub ipam_data_dir: PathBuf,

    /// Underlay interface (default: the interface of the default route, else the only interface
    /// with a global IPv4 address).
    #[arg(long)]
    pub uplink: Option<String>,

    /// Cluster pod CIDRs: traffic from pods to anything outside them is masqueraded.
    #[arg(
        long = "cluster-cidr",
        value_delimiter = ',',
        default_value = "10.244.0.0/16"
    )]
    pub cluster_cidr: Vec<IpNet>,

    /// Service CIDRs (ClusterIP ranges): traffic to an unallocated address in them is dropped.
    #[arg(
        long = "service-cidr",
        value_delimiter = ',',
        default_value = "10.96.0.0/12"
    )]
    pub service_cidr: Vec<IpNet>,

    /// Prefix length of the IPv4 podCIDR sarasa allocates a node when its Node has no
    /// `spec.podCIDRs` (kube-controller-manager's flag of the same name).
    #[arg(long = "node-cidr-mask-size-ipv4", default_value_t = 24)]
    pub node_cidr_mask_v4: u8,

    /// Prefix length of the IPv6 podCIDR sarasa allocates a node (see the IPv4 one).
    #[arg(long = "node-cidr-mask-size-ipv6", default_value_t = 64)]
    pub node_cidr_mask_v6: u8,

    /// Pod interface MTU (default: the uplink's minus the backend's encapsulation overhead).
    #[arg(long)]
    pub mtu: Option<u32>,

    /// Program Services (the kube-proxy replacement); false: run beside kube-proxy, programming
    /// no Service table and removing sarasa's if present.
    #[arg(long = "service-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    pub service_proxy: bool,

    /// Enforce NetworkPolicies on this node's pods (table `inet sarasa-policy`); false removes
    /// that table if present.
    #[arg(long = "network-policy", default_value_t = true, action = clap::ArgAction::Set)]
    pub network_policy: bool,

    /// nflog group policy drops are logged to (read back by the agent for drop events).
    #[arg(long = "policy-log-group", default_value_t = 100)]
    pub policy_log_group: u16,

    /// Listen address of /healthz and /metrics (inside the node's network namespace).
    #[arg(long = "health-listen", default_value = "127.0.0.1:9099")]
    pub health_listen: SocketAddr,

    /// Allow running in the machine's root network namespace (a real node). Without it the agent
    /// refuses to program anything there.
    #[arg(long = "host-netns")]
    pub host_netns: bool,

    /// `--backend bgp`: the AS number of the nodes and their peers (iBGP to route reflectors).
    #[arg(long = "bgp-asn", default_value_t = 64512)]
    pub bgp_asn: u32,

    /// `--backend bgp`: the peers (top-of-rack routers / route reflectors); default: the
    /// uplink's default gateway.
    #[arg(long = "bgp-peer", value_delimiter = ',')]
    pub bgp_peers: Vec<std::net::IpAddr>,

    /// `--backend bgp`: where BIRD's configuration, control socket and log live (a hostPath,
    /// so a restarted agent finds the running BIRD).
    #[arg(long = "bgp-dir", default_value = "/var/lib/sarasa/bird")]
    pub bgp_dir: PathBuf,

    /// `--backend vpc`: the cloud's allocation API (`http://HOST:PORT`) the node takes its
    /// pod addresses from.
    #[arg(long = "vpc-cloud-url")]
    pub vpc_cloud_url: Option<String>,

    /// `--backend vpc`: free addresses kept ready for pods (the warm pool).
    #[arg(long = "vpc-warm-addresses", default_value_t = 3)]
    pub vpc_warm_addresses: u32,
}

impl AgentConfig {
    /// A configuration with the documented defaults, for library callers and tests.
    pub fn new(node_name: impl Into<String>) -> Self {
        AgentConfig {
            config: None,
            mtu: None,
            service_proxy: true,
            node_name: node_name.into(),
            apiserver: None,
            kubeconfig: None,
            backend: Backend::Vxlan,
            cni_mode: CniMode::Bridge,
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            ipam_data_dir: PathBuf::from("/var/lib/sarasa/ipam"),
            uplink: None,
            cluster_cidr: vec![IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            )],
            service_cidr: vec![IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 96, 0, 0), 12).unwrap_or_default(),
            )],
            network_policy: true,
            bgp_asn: 64512,
            bgp_peers: Vec::new(),
            bgp_dir: PathBuf::from("/var/lib/sarasa/bird"),
            vpc_cloud_url: None,
            vpc_warm_addresses: 3,
            node_cidr_mask_v4: 24,
            node_cidr_mask_v6: 64,
            policy_log_group: 100,
            health_listen: SocketAddr::from(([127, 0, 0, 1], 9099)),
            host_netns: false,
        }
    }

    /// Checks what clap cannot: a usable node name and CIDRs (no pod CIDR may overlap a
    /// Service CIDR: a ClusterIP would shadow a pod, or the reverse).
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.backend == Backend::Vpc {
            crate::vpc::CloudClient::new(self.vpc_cloud_url.as_deref())?;
            if self.vpc_warm_addresses == 0 {
                return Err(crate::Error::Config(
                    "vpcWarmAddresses: must be at least 1".into(),
                ));
            }
            if self.cni_mode != CniMode::Routed {
                return Err(crate::Error::Config(format!(
                    "backend vpc: pods attach routed, not cniMode {}",
                    self.cni_mode
                )));
            }
        }
        for pod in &self.cluster_cidr {
            for svc in &self.service_cidr {
                if pod.contains(&svc.network()) || svc.contains(&pod.network()) {
                    return Err(crate::Error::Config(format!(
                        "clusterCIDRs (--cluster-cidr) {pod} overlaps serviceCIDRs \
                         (--service-cidr) {svc}"
                    )));
                }
            }
        }
        for cidr in &self.cluster_cidr {
            let (mask, key, flag) = match cidr {
                IpNet::V4(_) => (self.node_cidr_mask_v4, "nodeCIDRMaskSizeIPv4", "ipv4"),
                IpNet::V6(_) => (self.node_cidr_mask_v6, "nodeCIDRMaskSizeIPv6", "ipv6"),
            };
            if mask < cidr.prefix_len() || mask > cidr.max_prefix_len() {
                return Err(crate::Error::Config(format!(
                    "{key} (--node-cidr-mask-size-{flag}) /{mask} does not fit clusterCIDRs \
                     {cidr} (needs /{}../{})",
                    cidr.prefix_len(),
                    cidr.max_prefix_len()
                )));
            }
        }
        if self.node_name.is_empty() {
            return Err(crate::Error::Config("--node-name must not be empty".into()));
        }
        if self.cluster_cidr.is_empty() {
            return Err(crate::Error::Config(
                "--cluster-cidr needs at least one CIDR".into(),
            ));
        }
        if let Some(url) = &self.apiserver {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(crate::Error::Config(format!(
                    "--apiserver {url:?} must start with http:// or https://"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentConfig,
    }

    #[test]
    fn defaults_and_flags_parse() {
        let cli = Cli::try_parse_from(["x", "--node-name", "node-1"]).expect("parse");
        let defaults = AgentConfig::new("node-1");
        assert_eq!(cli.agent.backend, Backend::Vxlan);
        assert_eq!(cli.agent.cni_mode, CniMode::Bridge);
        assert_eq!(cli.agent.cluster_cidr, defaults.cluster_cidr);
        assert_eq!(cli.agent.health_listen, defaults.health_listen);
        assert_eq!(cli.agent.service_cidr, defaults.service_cidr);
        assert_eq!(cli.agent.service_cidr[0].to_string(), "10.96.0.0/12");
        assert!(cli.agent.network_policy);
        assert_eq!(cli.agent.policy_log_group, 100);
        assert!(!cli.agent.host_netns);

        let cli = Cli::try_parse_from([
            "x",
            "--node-name",
            "n",
            "--backend",
            "host-gw",
            "--cni-mode",
            "routed",
            "--cluster-cidr",
            "10.244.0.0/16,fd00:10:244::/56",
            "--apiserver",
            "http://192.168.33.1:6443",
            "--host-netns",
        ])
        .expect("parse");
        assert_eq!(cli.agent.backend, Backend::HostGw);
        assert_eq!(cli.agent.cni_mode, CniMode::Routed);
        assert_eq!(cli.agent.cluster_cidr.len(), 2);
        assert!(cli.agent.host_netns);
        assert!(cli.agent.validate().is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let err = Cli::try_parse_from(["x", "--node-name", "n", "--backend", "udp"])
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("--backend"), "{err}");
        let mut c = AgentConfig::new("n");
        c.apiserver = Some("192.168.33.1:6443".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--apiserver"));
        let mut c = AgentConfig::new("n");
        c.node_cidr_mask_v4 = 8;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("nodeCIDRMaskSizeIPv4") && e.contains("10.244.0.0/16"),
            "{e}"
        );
        // Beside kube-proxy is a valid configuration.
        let mut c = AgentConfig::new("n");
        c.service_proxy = false;
        assert!(c.validate().is_ok());
    }
}
