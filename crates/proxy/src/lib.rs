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
//! Use [`ProxyState`]: build it with [`compile`] (or [`ProxyState::new`]), program
//! [`ProxyState::table`] once (diffing against the kernel with `sarasa_nft`), then feed object
//! changes to `upsert_*`/`delete_*` and apply each returned [`Update`].

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
