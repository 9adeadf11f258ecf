//! The cluster DNS server: the Kubernetes DNS-Based Service Discovery specification (schema
//! 1.1.0) for the cluster domain, a caching forwarder for every other name.
//!
//! ```text
//! cluster view (sarasa-cluster watchers) ─► feed ─► incremental::ZoneState ─► ArcSwap<ZoneSnapshot>
//!                                                                          │ (one load per query)
//! UDP (udp: recvmmsg per worker) ─► fastpath ─► answer_cache (pre-encoded, per name) ─► sendmmsg
//!        └ anything else ─┐
//! TCP (hickory Server) ───┴► handler::DnsHandler ─► protocol checks ─► answer ─► cluster answer
//!                                                                   └► upstream (cache, forward)
//! ```
//! `records` (per-owner record sets), `incremental` (their merge, change by change, into the
//! shared `names` map), `snapshot` and `answer` are pure and hold the specification; `zone`
//! exposes the same snapshot as a hickory `ZoneHandler`.

pub mod answer;
pub mod answer_cache;
pub mod config;
pub mod fastpath;
pub mod feed;
pub mod handler;
pub mod incremental;
pub mod metrics;
pub mod names;
pub(crate) mod records;
pub mod server;
pub mod snapshot;
pub mod udp;
pub mod upstream;
pub mod zone;
