//! Benchmark data for cluster DNS, one source for both servers under test: a cluster of
//! Services and EndpointSlices ([`cluster`]) is written into a real API server, and from the
//! objects as stored (their allocated ClusterIPs) come the same records as an NSD zone file
//! ([`zone`]) and the dnsperf query mix ([`queries`]). [`wire`] is a minimal DNS client for
//! the change-to-answer timing.

pub mod cluster;
pub mod queries;
pub mod wire;
pub mod zone;

/// The cluster domain of the benchmark (the servers' default).
pub const ZONE: &str = "cluster.local";
/// The namespace every benchmark Service lives in.
pub const NAMESPACE: &str = "bench";
