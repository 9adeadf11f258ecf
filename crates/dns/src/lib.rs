//! The cluster DNS server: the Kubernetes DNS-Based Service Discovery specification (schema
//! 1.1.0) for the cluster domain, a caching forwarder for every other name.
//!
//! ```text
//! cluster view (sarasa-cluster watchers) ─► feed ─► incremental::ZoneState ─► ArcSwap<ZoneSnapshot>
//!                                                                          │ (one load per query)
//! UDP/TCP (hickory Server) ─► server::DnsHandler ─► protocol checks ─► answer ─► cluster answer
//!                                                                   └► upstream (cache, forward)
//! ```
//! `records` (per-owner record sets), `incremental` (their merge, change by change, into the
//! shared `names` map), `snapshot` and `answer` are pure and hold the specification; `zone`
//! exposes the same snapshot as a hickory `ZoneHandler`.

pub mod answer;
pub mod config;
pub mod feed;
pub mod handler;
pub mod incremental;
pub mod metrics;
pub mod names;
pub(crate) mod records;
pub mod server;
pub mod snapshot;
pub mod upstream;
pub mod zone;
