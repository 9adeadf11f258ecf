//! Node-wide settings of the service proxy.

use ipnet::IpNet;

use crate::ProxyError;

/// Default masquerade mark bit (kube-proxy's 0x4000).
pub const DEFAULT_MASQUERADE_MARK: u32 = 0x4000;

/// Default number of shard tables. The kernel re-validates a whole table on each commit that adds
/// a jump or DNAT, so a change costs in proportion to its shard (100k Services: ~3k per shard);
/// a new connection no Service claims passes every shard's dispatch chains (O(shards), not
/// O(Services)); and at start each table is built and programmed alone, so the agent's peak
/// memory grows with the largest shard.
pub const DEFAULT_SHARDS: usize = 32;

/// Most shard tables allowed (each adds hook entries every new connection passes).
pub const MAX_SHARDS: usize = 64;

/// Longest main table name: its shard names (`-svcNN` appended) must pass nft name checks
/// (200 characters in sarasa-nft, below the kernel's 256).
const MAX_TABLE_NAME: usize = 200 - "-svc00".len();

/// Settings that are the same for every Service on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Main nftables table (family `inet`) the proxy owns; shard tables are named after it
    /// (see [`ProxyConfig::shard_table`]).
    pub table: String,
    /// Number of shard tables the Services' DNAT paths are spread over (1..=64).
    pub shards: usize,
    /// Service CIDRs: traffic to an unallocated address in them is dropped.
    pub service_cidrs: Vec<IpNet>,
    /// Cluster (pod) CIDRs: ClusterIP traffic from outside them is masqueraded; traffic from
    /// inside them is not. A family without one gets no such masquerade rule.
    pub cluster_cidrs: Vec<IpNet>,
    /// The mark bit that asks `nat-postrouting` to masquerade.
    pub masquerade_mark: u32,
}

impl Default for ProxyConfig {
    /// The lab defaults: table `sarasa`, 32 shards, service CIDR 10.96.0.0/12, cluster CIDR
    /// 10.244.0.0/16.
    fn default() -> Self {
        ProxyConfig {
            table: "sarasa".to_string(),
            shards: DEFAULT_SHARDS,
            service_cidrs: vec!["10.96.0.0/12".parse().expect("constant CIDR")],
            cluster_cidrs: vec!["10.244.0.0/16".parse().expect("constant CIDR")],
            masquerade_mark: DEFAULT_MASQUERADE_MARK,
        }
    }
}

impl ProxyConfig {
    /// Name of shard table `i`: `{table}-svc{i:02}` (`sarasa-svc00` …).
    pub fn shard_table(&self, i: usize) -> String {
        format!("{}-svc{:02}", self.table, i)
    }

    /// All tables the proxy owns: the main table first, then the shards in order.
    pub fn table_names(&self) -> Vec<String> {
        std::iter::once(self.table.clone())
            .chain((0..self.shards).map(|i| self.shard_table(i)))
            .collect()
    }

    pub(crate) fn validate(&self) -> Result<(), ProxyError> {
        if self.masquerade_mark.count_ones() != 1 {
            return Err(ProxyError::Config(format!(
                "masquerade_mark {:#x} must be a single bit",
                self.masquerade_mark
            )));
        }
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return Err(ProxyError::Config(format!(
                "shards {}: must be 1..={MAX_SHARDS}",
                self.shards
            )));
        }
        if self.table.is_empty()
            || self.table.len() > MAX_TABLE_NAME
            || !self.table.starts_with(|c: char| c.is_ascii_alphabetic())
            || !self
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ProxyError::Config(format!(
                "table {:?}: letters, digits, '-' and '_' only, starting with a letter, at most \
                 {MAX_TABLE_NAME} characters",
                self.table
            )));
        }
        Ok(())
    }
}
