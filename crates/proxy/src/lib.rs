//! Service proxy compiler: Services + EndpointSlices → the nftables ruleset of one node
//! (pure: no I/O).
//!
//! Layout (table `inet sarasa`, both families), after kube-proxy's nftables mode:
//! `nat-prerouting`/`nat-output` → `services`: `daddr . l4proto . dport vmap @service-ips-v4|6`
//! and (on local addresses) `l4proto . dport vmap @service-nodeports-v4|6` → per-Service-port
//! chain (`svc4-…` for Cluster policy, `local4-…` for Local, `ext4-…` for NodePort/external/LB
//! entry) → `numgen random mod N vmap` → per-endpoint chain (`ep4-…`) with `dnat`.
//! Services without usable endpoints are rejected (TCP reset / ICMP port unreachable) from the
//! filter chains through `@no-endpoint-services-*`; LoadBalancer source ranges are enforced by
//! `firewall-check` before DNAT; masquerading is requested with a mark and done in
//! `nat-postrouting`.
//!
//! Endpoint choice: below 9 endpoints a short run of `numgen random mod (N-i) 0 goto ep_i`
//! rules (uniform); from 9 on one `numgen random mod N vmap { … }`. Each anonymous vmap is a
//! kernel set whose name the kernel allocates in time linear in the table's sets, so a vmap per
//! Service made programming quadratic (10k Services: 23 s instead of ~2-4 s).
//!
//! Use [`ProxyState`]:
//! ```no_run
//! # use sarasa_nft::{Backend, NftCli};
//! # fn run(services: Vec<sarasa_model::Service>, slices: Vec<sarasa_model::EndpointSlice>,
//! #        node: sarasa_model::NodeInfo, slice: sarasa_model::EndpointSlice)
//! #        -> Result<(), Box<dyn std::error::Error>> {
//! let mut proxy = sarasa_proxy::compile(sarasa_proxy::ProxyConfig::default(), node, &services, &slices)?;
//! let mut nft = NftCli::new(); // in the node's network namespace
//! nft.reconcile(&proxy.table())?; // at start: diff against the kernel, never a flush
//! // then, per watch event (netlink: no re-read of the table by `nft`):
//! let mut fast = sarasa_nft::NetlinkBackend::new()?;
//! let update = proxy.upsert_endpoint_slice(slice);
//! fast.apply_to(sarasa_nft::Family::Inet, &proxy.config().table, &update.transaction)?;
//! // on error: nft.reconcile(&proxy.table()) to resync
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

pub use config::{ProxyConfig, DEFAULT_MASQUERADE_MARK};
pub use service::{HealthCheck, UdpDest};
pub use state::{compile, ProxyState, StaleUdp, Update};

/// Errors of the proxy compiler.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The node-wide configuration is unusable.
    #[error("invalid proxy configuration: {0}")]
    Config(String),
}
