//! The cluster view every consumer shares: the node agent, `sarasa policy matrix`, `sarasa
//! trace` and the cluster DNS server.
//!
//! Watchers ([`watch`]) fold each watch event into small per-kind projections ([`state`],
//! [`objects`]): only the fields the datapath compilers use, converted once into their domain
//! types when the event arrives. Services and EndpointSlices are kept apart and journaled
//! ([`service_objects`]): a reconcile takes only what changed.

pub mod objects;
pub mod service_objects;
pub mod state;
pub mod watch;

pub use state::{ClusterState, NodeInfo, PodInfo};
