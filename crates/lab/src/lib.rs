//! The lab: a multi-node cluster network on one machine. A fabric namespace is the underlay
//! switch and router, each node is a namespace running the real agent and CNI plugin, an
//! `external` namespace stands outside the cluster, and the control plane (the API server of
//! `sarasa-apiserver` plus the pod runner of this crate) lives in the fabric namespace.

pub mod agents;
pub mod api_limits;
pub mod client;
pub mod cloud_lb;
pub mod clusterset;
pub mod cni_runtime;
pub mod container_env;
pub mod container_log;
pub mod control_plane;
pub mod daemon_log;
pub mod events;
pub mod exec;
mod fabric_routes;
pub mod image_fs;
pub mod kubeconfig;
pub mod kubelet;
pub mod lab;
pub mod manifest;
pub mod mount_points;
pub mod nsd;
pub mod paths;
pub mod pki;
pub mod pod_env;
pub mod pod_runtime;
pub mod prestop;
pub mod process;
mod pty;
pub mod rbac;
pub mod readiness;
pub mod resolv;
pub mod service_routes;
pub mod spec;
pub mod spec_networks;
pub mod state;
pub mod topology;
pub mod tor;
pub mod volumes;
pub mod vpc;
pub mod wait;

use std::net::Ipv4Addr;
use std::path::Path;

pub use lab::{Lab, NodeStatus};
pub use paths::LabPaths;
pub use spec::{Backend, CniMode, LabSpec};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotUp(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("network namespace: {0}")]
    Netns(String),
    #[error("CNI: {0}")]
    Cni(String),
    #[error("API: {0}")]
    Api(String),
    #[error("{0}")]
    Process(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl LabError {
    pub fn io(path: &Path, source: std::io::Error) -> LabError {
        LabError::Io {
            path: path.display().to_string(),
            source,
        }
    }
    pub fn netns(e: impl std::fmt::Display) -> LabError {
        LabError::Netns(e.to_string())
    }
}

/// The cluster DNS address: the tenth address of the service CIDR (10.96.0.10 by default).
pub fn dns_ip(spec: &LabSpec) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(spec.service_cidr.network()) + 10)
}

/// The lab's cluster domain (the kubelet's `--cluster-domain`, the DNS server's zone).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
