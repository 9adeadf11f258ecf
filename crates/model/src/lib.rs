//! Domain types for cluster objects (no Kubernetes client dependency, no I/O).
//!
//! Services, EndpointSlices and the local node as the datapath compilers need them: addresses
//! parsed, defaults applied, nothing the datapath ignores. The `k8s` feature adds conversions
//! from k8s-openapi objects ([`k8s`] module); pure consumers need not compile k8s-openapi.
//!
//! One type per concept, shared by every crate: [`Protocol`], the label selector
//! ([`selector`], for the API server and the policy compiler alike), NetworkPolicy's domain
//! types ([`policy`]), the stable hash behind kernel object names ([`hash`]) and the name and
//! label syntax of the API ([`names`]).

mod address;
mod age;
mod backend;
#[cfg(feature = "serde")]
pub mod clusterset;
mod endpoints;
pub mod hash;
mod mac;
#[cfg(feature = "mcs")]
pub mod mcs;
pub mod names;
mod node;
pub mod policy;
pub mod selector;
mod service;
#[cfg(feature = "serde")]
pub mod vpc;

#[cfg(feature = "k8s")]
pub mod k8s;

/// With GlobalNet: an exported Service's global ingress addresses (one per family of the
/// Service and the set's GlobalNet, comma-separated, IPv4 first), which the other clusters of
/// its set reach it at. The cluster-set sync allocates them from the cluster's global CIDRs;
/// the Service model carries them as [`Service::global_ips`].
pub const ANNOTATION_GLOBAL_IP: &str = "multicluster.sarasa.io/global-ip";

pub use address::special_address;
pub use age::human_duration;
pub use backend::{Backend, CniMode, ParseBackendError, ParseCniModeError};
pub use endpoints::{AddressType, Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
pub use mac::{MacAddr, ParseMacError};
pub use node::NodeInfo;
pub use service::{
    IpFamily, Protocol, Service, ServicePort, ServiceRef, ServiceType, SessionAffinity, TargetPort,
    TrafficPolicy,
};

/// A field of an API object that could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: field {field}: {message}")]
pub struct ModelError {
    /// `kind namespace/name` of the object.
    pub object: String,
    /// JSON path of the field, e.g. `spec.clusterIPs[1]`.
    pub field: String,
    pub message: String,
}
