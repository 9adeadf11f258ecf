//! Service proxy compiler: Services + EndpointSlices → the nftables rulesets of one node
//! (pure: no I/O).
//!
//! Per Service port, after kube-proxy's nftables mode: `daddr . l4proto . dport vmap
//! @service-ips-v4|6` and (on local addresses) `l4proto . dport vmap @service-nodeports-v4|6` →
//! per-Service-port chain (`svc4-…` for Cluster policy, `local4-…` for Local, `ext4-…` for
//! NodePort/external/LB entry) → endpoint choice → per-endpoint chain (`ep4-…`) with `dnat`.
//! Services without usable endpoints are rejected (TCP reset / ICMP port unreachable) from the
//! filter chains through `@no-endpoint-services-*`; LoadBalancer source ranges are enforced by
//! `firewall-check` before DNAT; masquerading is requested with a mark and done in
//! `nat-postrouting`.
//!
//! # Tables
//!
//! The kernel re-validates every chain reachable from a table's base chains whenever a
//! transaction adds a jump/goto/dnat to that table (~46 ms per change at 10k Services in one
//! table). So the per-Service objects are spread over `shards` tables (default 32), and one
//! change validates one small table:
//! - main table `inet {table}`: what runs per packet or is global — filter base chains
//!   (`filter-prerouting` → `firewall-check`, only while some Service has
//!   loadBalancerSourceRanges; `filter-input/forward/output` →
//!   `endpoints-check`; `filter-forward`, `filter-output-post-dnat` → `cluster-ips-check`),
//!   `reject-chain`, `nat-postrouting` → `masquerading`, the sets `cluster-ips-*`,
//!   `service-cidrs-*`, `cluster-cidrs-*` (no main-table rule names it; kept as the node's
//!   record), the maps `no-endpoint-services-*`, `no-endpoint-nodeports-*`, `firewall-ips-*`,
//!   and per Service its ClusterIP, no-endpoint and firewall elements and its `fw…` chains;
//! - shard tables `inet {table}-svcNN` ([`ProxyState::shard_of`]: FNV-1a of
//!   `namespace/name`; EndpointSlices follow their Service): base chains `nat-prerouting` /
//!   `nat-output` (nat, -100) → `services` (`vmap @service-ips-*`), and
//!   `nat-prerouting-nodeports` / `nat-output-nodeports` (nat, -99; `fib daddr type local`,
//!   not loopback, `vmap @service-nodeports-*`), only while one of their Services has an
//!   EndpointSlice; their own `mark-for-masquerade` and
//!   `cluster-cidrs-*` (rules name only sets of their own table), and all svc/local/ext/ep
//!   chains and affinity sets of their Services.
//!
//! Order across tables keeps the single-table semantics:
//! - a NAT hook runs its chains by priority and stops at the first that binds a DNAT, so every
//!   shard's IP dispatch (-100) runs before any shard's NodePort dispatch (-99): an IP match
//!   wins over a NodePort match. An IP match that does not DNAT (`externalTrafficPolicy:
//!   Local` without local endpoints, caller neither a pod nor the node) is dropped at the end
//!   of its `ext…` chain — in one table it ended the lookup and was dropped by
//!   `endpoints-check` — so a later NodePort chain cannot take it;
//! - `firewall-check` (filter prerouting -110) runs before any DNAT; `endpoints-check` (-110)
//!   sees the address the client used: in output before any DNAT, in input/forward only what
//!   no shard DNATed; `filter-output-post-dnat` (-90) runs after every shard's nat-output
//!   (-100, -99) — all as in one table;
//! - the masquerade mark is set in a shard's nat chains and acted on in the main table's
//!   `nat-postrouting` (+100), after all of them;
//! - two Services claiming the same IP and port in different shards: the shard whose hook the
//!   kernel runs first wins (in one table, the later one in key order did). Invalid input
//!   either way.
//!
//! Cost per packet: NAT chains see only a connection's first packet; a new connection that is
//! no Service's passes every shard's IP map lookup and `fib daddr type local` check (and, to
//! a local address, NodePort map lookup): `shards` of each instead of one.
//!
//! Endpoint choice: below 9 endpoints a short run of `numgen random mod (N-i) 0 goto ep_i`
//! rules (uniform); from 9 on one `numgen random mod N vmap { … }`. Each anonymous vmap is a
//! kernel set whose name the kernel allocates in time linear in the table's sets, so a vmap per
//! Service made programming quadratic (10k Services: 23 s instead of ~2-4 s).
//!
//! Use [`ProxyState`]:
//! ```no_run
//! # use std::sync::Arc;
//! # use sarasa_nft::{Backend, NftCli};
//! # fn run(services: Vec<sarasa_model::Service>, slices: Vec<sarasa_model::EndpointSlice>,
//! #        node: sarasa_model::NodeInfo, slice: Arc<sarasa_model::EndpointSlice>)
//! #        -> Result<(), Box<dyn std::error::Error>> {
//! let mut proxy = sarasa_proxy::compile(sarasa_proxy::ProxyConfig::default(), node, &services, &slices)?;
//! let mut nft = NftCli::new(); // in the node's network namespace
//! // At start: diff against the kernel, never a flush; one table at a time bounds memory.
//! nft.reconcile(&proxy.main_table())?;
//! for i in 0..proxy.config().shards {
//!     nft.reconcile(&proxy.shard_table(i))?;
//! }
//! // Then, per watch event (netlink: no re-read of the tables by `nft`):
//! let mut fast = sarasa_nft::NetlinkBackend::new()?;
//! let update = proxy.upsert_endpoint_slice(slice);
//! let parts: Vec<_> = update
//!     .transactions
//!     .iter()
//!     .map(|(table, tx)| (sarasa_nft::Family::Inet, table.as_str(), tx))
//!     .collect();
//! fast.apply_batch(&parts)?; // all tables' parts in one kernel commit
//! // on error: reconcile every table to resync
//! for stale in &update.stale_udp {
//!     let _args = stale.conntrack_args(); // run `conntrack <args>`; exit 1 = nothing matched
//! }
//! # Ok(()) }
//! ```

mod base;
mod config;
mod names;
mod service;
mod state;

pub use config::{ProxyConfig, DEFAULT_MASQUERADE_MARK, DEFAULT_SHARDS, MAX_SHARDS};
pub use service::{HealthCheck, UdpDest};
pub use state::{compile, ProxyState, StaleUdp, Update};

/// Errors of the proxy compiler.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The node-wide configuration is unusable.
    #[error("invalid proxy configuration: {0}")]
    Config(String),
}
