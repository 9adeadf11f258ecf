//! Node-wide settings of the service proxy.

use ipnet::IpNet;

use crate::ProxyError;

/// Default masquerade mark bit (kube-proxy's 0x4000).
pub const DEFAULT_MASQUERADE_MARK: u32 = 0x4000;

/// Settings that are the same for every Service on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// nftables table (family `inet`) the proxy owns.
    pub table: String,
    /// Service CIDRs: traffic to an unallocated address in them is dropped.
    pub service_cidrs: Vec<IpNet>,
    /// Cluster (pod) CIDRs: ClusterIP traffic from outside them is masqueraded; traffic from
    /// inside them is not. A family without one gets no such masquerade rule.
    pub cluster_cidrs: Vec<IpNet>,
    /// The mark bit that asks `nat-postrouting` to masquerade.
    pub masquerade_mark: u32,
}

impl Default for ProxyConfig {
    /// The lab defaults: service CIDR 10.96.0.0/12, cluster CIDR 10.244.0.0/16.
    fn default() -> Self {
        ProxyConfig {
            table: "sarasa".to_string(),
            service_cidrs: vec!["10.96.0.0/12".parse().expect("constant CIDR")],
            cluster_cidrs: vec!["10.244.0.0/16".parse().expect("constant CIDR")],
            masquerade_mark: DEFAULT_MASQUERADE_MARK,
        }
    }
}

impl ProxyConfig {
    pub(crate) fn validate(&self) -> Result<(), ProxyError> {
        if self.masquerade_mark.count_ones() != 1 {
            return Err(ProxyError::Config(format!(
                "masquerade_mark {:#x} must be a single bit",
                self.masquerade_mark
            )));
        }
        if self.table.is_empty()
            || !self.table.starts_with(|c: char| c.is_ascii_alphabetic())
            || !self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ProxyError::Config(format!(
                "table {:?}: letters, digits, '-' and '_' only, starting with a letter",
                self.table
            )));
        }
        Ok(())
    }
}
