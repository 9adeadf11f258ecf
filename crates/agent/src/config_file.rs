//! The agent's settings file: the `config.yaml` key of the `sarasa-config` ConfigMap that
//! deploy/sarasa.yaml mounts at /etc/sarasa/config.yaml (`--config`). Command-line flags win
//! over the file, so one node can be overridden without a second ConfigMap.
//!
//! Every key is checked here, before the agent touches the node: an unknown key (a typo would
//! otherwise silently keep a default), an unknown backend or CNI mode, a malformed CIDR, a pod
//! CIDR that overlaps a Service CIDR. Errors name the key as it is spelled in the file. The MTU
//! is checked against the uplink once it is known ([`check_mtu`]), still before anything is
//! programmed.

use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{AgentConfig, Backend, CniMode};
use crate::error::{Error, Result};

/// `config.yaml` as written in the ConfigMap (camelCase keys, as Kubernetes component configs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    /// `vxlan`, `host-gw` or `bgp`.
    pub backend: Option<String>,
    /// `bridge` or `routed`.
    pub cni_mode: Option<String>,
    /// The cluster's pod CIDRs (kube-controller-manager's `--cluster-cidr`).
    #[serde(rename = "clusterCIDRs")]
    pub cluster_cidrs: Option<Vec<String>>,
    /// The Service (ClusterIP) CIDRs (kube-apiserver's `--service-cluster-ip-range`).
    #[serde(rename = "serviceCIDRs")]
    pub service_cidrs: Option<Vec<String>>,
    /// Pod interface MTU; default: the uplink's minus the backend's encapsulation overhead.
    pub mtu: Option<u32>,
    /// Program Services (the kube-proxy replacement). `false` = run beside kube-proxy.
    pub service_proxy: Option<bool>,
    /// Enforce NetworkPolicy.
    pub network_policy: Option<bool>,
    /// Prefix length of the IPv4 podCIDR sarasa allocates a Node without `spec.podCIDRs`.
    #[serde(rename = "nodeCIDRMaskSizeIPv4")]
    pub node_cidr_mask_size_ipv4: Option<u8>,
    /// Prefix length of the IPv6 podCIDR sarasa allocates.
    #[serde(rename = "nodeCIDRMaskSizeIPv6")]
    pub node_cidr_mask_size_ipv6: Option<u8>,
    /// The cluster DNS domain (read by `sarasa dns`; checked here so one file serves both).
    pub cluster_domain: Option<String>,
    /// `backend: bgp`: the AS number of nodes and peers.
    #[serde(rename = "bgpASN")]
    pub bgp_asn: Option<u32>,
    /// `backend: bgp`: the peers' addresses (default: the uplink's gateway).
    pub bgp_peers: Option<Vec<String>>,
    /// `vpcCloudURL`: the cloud's allocation API (backend vpc).
    #[serde(rename = "vpcCloudURL")]
    pub vpc_cloud_url: Option<String>,
    /// `vpcWarmAddresses`: free VPC addresses kept ready for pods.
    pub vpc_warm_addresses: Option<u32>,
}

/// Which settings the command line gave explicitly (they win over the file). Keys are the
/// [`AgentConfig`] field names (clap's argument ids).
pub trait ExplicitFlags {
    fn explicit(&self, id: &str) -> bool;
}

impl<F: Fn(&str) -> bool> ExplicitFlags for F {
    fn explicit(&self, id: &str) -> bool {
        self(id)
    }
}

impl ConfigFile {
    /// Parses `text` (YAML); the error names the offending key and its line.
    pub fn parse(text: &str) -> Result<ConfigFile> {
        if text.trim().is_empty() {
            return Ok(ConfigFile::default());
        }
        serde_norway::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("--config {}: {e}", path.display())))?;
        ConfigFile::parse(&text)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), strip(&e))))
    }

    /// Sets every key the file has onto `config`, except those `flags` gave explicitly.
    pub fn apply(&self, config: &mut AgentConfig, flags: &dyn ExplicitFlags) -> Result<()> {
        let take = |id: &str| !flags.explicit(id);
        if let (Some(v), true) = (&self.backend, take("backend")) {
            config.backend = parse_backend(v)?;
        }
        if let (Some(v), true) = (&self.cni_mode, take("cni_mode")) {
            config.cni_mode = parse_cni_mode(v)?;
        }
        if let (Some(v), true) = (&self.cluster_cidrs, take("cluster_cidr")) {
            config.cluster_cidr = parse_cidrs("clusterCIDRs", v)?;
        }
        if let (Some(v), true) = (&self.service_cidrs, take("service_cidr")) {
            config.service_cidr = parse_cidrs("serviceCIDRs", v)?;
        }
        if let (Some(v), true) = (self.mtu, take("mtu")) {
            config.mtu = Some(v);
        }
        if let (Some(v), true) = (self.service_proxy, take("service_proxy")) {
            config.service_proxy = v;
        }
        if let (Some(v), true) = (self.network_policy, take("network_policy")) {
            config.network_policy = v;
        }
        if let (Some(v), true) = (self.node_cidr_mask_size_ipv4, take("node_cidr_mask_v4")) {
            config.node_cidr_mask_v4 = v;
        }
        if let (Some(v), true) = (self.node_cidr_mask_size_ipv6, take("node_cidr_mask_v6")) {
            config.node_cidr_mask_v6 = v;
        }
        if let Some(d) = &self.cluster_domain {
            check_domain(d)?;
        }
        if let (Some(v), true) = (self.bgp_asn, take("bgp_asn")) {
            if v == 0 || v == 23456 || v == u32::MAX {
                return Err(Error::Config(format!(
                    "bgpASN: {v} is reserved (0, 23456 and 4294967295 cannot be an AS number)"
                )));
            }
            config.bgp_asn = v;
        }
        if let (Some(v), true) = (&self.vpc_cloud_url, take("vpc_cloud_url")) {
            config.vpc_cloud_url = Some(v.clone());
        }
        if let (Some(v), true) = (self.vpc_warm_addresses, take("vpc_warm_addresses")) {
            config.vpc_warm_addresses = v;
        }
        if let (Some(v), true) = (&self.bgp_peers, take("bgp_peers")) {
            config.bgp_peers = v
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    p.parse().map_err(|_| {
                        Error::Config(format!("bgpPeers[{i}]: {p:?} is not an IP address"))
                    })
                })
                .collect::<Result<_>>()?;
        }
        Ok(())
    }
}

fn strip(e: &Error) -> String {
    match e {
        Error::Config(m) => m.clone(),
        other => other.to_string(),
    }
}

fn parse_backend(v: &str) -> Result<Backend> {
    match v {
        "vxlan" => Ok(Backend::Vxlan),
        "host-gw" => Ok(Backend::HostGw),
        "bgp" => Ok(Backend::Bgp),
        "vpc" => Ok(Backend::Vpc),
        _ => Err(Error::Config(format!(
            "backend: unknown backend {v:?} (expected \"vxlan\", \"host-gw\", \"bgp\" or \"vpc\")"
        ))),
    }
}

fn parse_cni_mode(v: &str) -> Result<CniMode> {
    match v {
        "bridge" => Ok(CniMode::Bridge),
        "routed" => Ok(CniMode::Routed),
        _ => Err(Error::Config(format!(
            "cniMode: unknown CNI mode {v:?} (expected \"bridge\" or \"routed\")"
        ))),
    }
}

fn parse_cidrs(key: &str, values: &[String]) -> Result<Vec<IpNet>> {
    if values.is_empty() {
        return Err(Error::Config(format!("{key}: needs at least one CIDR")));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let net: IpNet = v.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "{key}[{i}]: {v:?} is not a CIDR (address/prefix-length)"
                ))
            })?;
            if net.trunc() != net {
                return Err(Error::Config(format!(
                    "{key}[{i}]: {v:?} has host bits set (the network is {})",
                    net.trunc()
                )));
            }
            Ok(net)
        })
        .collect()
}

/// RFC 1123 subdomain, as kubelet's `--cluster-domain`.
fn check_domain(d: &str) -> Result<()> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let d = d.strip_suffix('.').unwrap_or(d);
    if d.len() > 253 || !d.split('.').all(label_ok) {
        return Err(Error::Config(format!(
            "clusterDomain: {d:?} is not a DNS subdomain (lowercase labels of a-z, 0-9, '-')"
        )));
    }
    Ok(())
}

/// Checks the configured pod MTU against what the uplink can carry under the backend's
/// encapsulation; returns the pod MTU to use (the configured one or the largest possible).
pub fn check_mtu(
    configured: Option<u32>,
    backend: Backend,
    uplink: &crate::datapath::Uplink,
) -> Result<u32> {
    let overhead = crate::plan::encap_overhead(backend, uplink.address);
    let max = uplink.mtu.saturating_sub(overhead);
    let Some(mtu) = configured else {
        return Ok(max);
    };
    // The smallest MTU IPv4 must support (RFC 791); IPv6 needs 1280 (RFC 8200).
    let floor = if uplink.address.is_ipv4() { 576 } else { 1280 };
    if mtu > max {
        return Err(Error::Config(format!(
            "mtu {mtu}: the uplink {} carries {} bytes; minus {overhead} bytes of {backend} \
             encapsulation that leaves at most {max}",
            uplink.name, uplink.mtu
        )));
    }
    if mtu < floor {
        return Err(Error::Config(format!(
            "mtu {mtu}: below the minimum of {floor} an IP network must carry"
        )));
    }
    Ok(mtu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> bool {
        false
    }

    fn applied(text: &str) -> Result<AgentConfig> {
        let mut c = AgentConfig::new("n1");
        ConfigFile::parse(text)?.apply(&mut c, &none)?;
        c.validate()?;
        Ok(c)
    }

    fn err(text: &str) -> String {
        applied(text).expect_err(text).to_string()
    }

    #[test]
    fn every_key_reaches_the_config() {
        let c = applied(
            "backend: host-gw\ncniMode: routed\nclusterCIDRs: [10.200.0.0/16, fd00:10:200::/56]\n\
             serviceCIDRs: [10.100.0.0/16]\nmtu: 1400\nserviceProxy: false\nnetworkPolicy: false\n\
             clusterDomain: cluster.local\nnodeCIDRMaskSizeIPv4: 25\nnodeCIDRMaskSizeIPv6: 80\n",
        )
        .expect("valid");
        assert_eq!(c.backend, Backend::HostGw);
        assert_eq!(c.cni_mode, CniMode::Routed);
        assert_eq!(c.cluster_cidr.len(), 2);
        assert_eq!(c.cluster_cidr[1].to_string(), "fd00:10:200::/56");
        assert_eq!(c.service_cidr[0].to_string(), "10.100.0.0/16");
        assert_eq!(c.mtu, Some(1400));
        assert!(!c.network_policy);
        assert!(!c.service_proxy);
        assert_eq!((c.node_cidr_mask_v4, c.node_cidr_mask_v6), (25, 80));
        // An empty file (an empty ConfigMap key) keeps the defaults.
        assert_eq!(applied("").expect("empty").backend, Backend::Vxlan);
    }

    #[test]
    fn flags_given_on_the_command_line_win() {
        let mut c = AgentConfig::new("n1");
        c.backend = Backend::HostGw;
        let file = ConfigFile::parse("backend: vxlan\nmtu: 1400\n").expect("parse");
        file.apply(&mut c, &|id: &str| id == "backend")
            .expect("apply");
        assert_eq!(c.backend, Backend::HostGw);
        assert_eq!(c.mtu, Some(1400));
    }

    #[test]
    fn bad_input_names_the_key() {
        assert!(err("backend: udp\n").starts_with("invalid configuration: backend:"));
        assert!(err("cniMode: macvlan\n").contains("cniMode: unknown CNI mode \"macvlan\""));
        assert!(err("clusterCIDRs: [10.244.0.0/33]\n").contains("clusterCIDRs[0]"));
        assert!(err("serviceCIDRs: [10.96.0.0/12, bogus]\n").contains("serviceCIDRs[1]"));
        assert!(err("clusterCIDRs: [10.244.1.0/16]\n").contains("host bits"));
        assert!(err("clusterCIDRs: []\n").contains("clusterCIDRs: needs at least one"));
        let e = err("backend: vxlan\nbakend: host-gw\n");
        assert!(e.contains("unknown field `bakend`"), "{e}");
        assert!(err("mtu: lots\n").contains("mtu"));
        assert!(err("clusterDomain: Cluster_Local\n").contains("clusterDomain"));
        let e = err("clusterCIDRs: [10.96.0.0/16]\nserviceCIDRs: [10.96.0.0/12]\n");
        assert!(
            e.contains("clusterCIDRs") && e.contains("serviceCIDRs") && e.contains("overlap"),
            "{e}"
        );
    }

    #[test]
    fn mtu_must_fit_the_uplink_under_encapsulation() {
        let uplink = crate::datapath::Uplink {
            name: "eth0".into(),
            index: 2,
            mtu: 1500,
            address: "192.168.33.11".parse().unwrap(),
        };
        assert_eq!(check_mtu(None, Backend::Vxlan, &uplink).unwrap(), 1450);
        assert_eq!(
            check_mtu(Some(1450), Backend::Vxlan, &uplink).unwrap(),
            1450
        );
        assert_eq!(
            check_mtu(Some(1500), Backend::HostGw, &uplink).unwrap(),
            1500
        );
        let e = check_mtu(Some(1500), Backend::Vxlan, &uplink)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mtu 1500") && e.contains("eth0") && e.contains("at most 1450"),
            "{e}"
        );
        assert!(check_mtu(Some(500), Backend::HostGw, &uplink)
            .unwrap_err()
            .to_string()
            .contains("minimum"));
    }
}
