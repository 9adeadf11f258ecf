//! The agent's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the node agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("refusing to program the root network namespace of this machine (/proc/self/ns/net is /proc/1/ns/net); run the agent inside a node namespace or pass --host-netns on a real node")]
    RootNetns,
    #[error("network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("BGP speaker: {0}")]
    Bgp(String),
    #[error("uplink: {0}")]
    Uplink(String),
    #[error("netlink {op}: {source}")]
    Netlink {
        op: String,
        source: sarasa_netns::Error,
    },
    #[error("sysctl {key}: {source}")]
    Sysctl { key: String, source: std::io::Error },
    #[error("nft: {0}")]
    Nft(String),
    /// A plan delta the applier could not commit (nothing of its nftables part applied).
    #[error("apply: {0}")]
    Apply(String),
    #[error("CNI config {path}: {source}")]
    CniConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubernetes client configuration: {0}")]
    KubeConfig(String),
    #[error("kubernetes API {op}: {source}")]
    Kube {
        op: String,
        source: Box<kube::Error>,
    },
    #[error("node {node}: {reason}")]
    Node { node: String, reason: String },
    #[error("health server on {addr}: {source}")]
    Health {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// Some of sarasa's pieces could not be removed from the node (every failure listed).
    #[error("uninstall incomplete: {0}")]
    Uninstall(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn netlink(op: impl Into<String>, source: sarasa_netns::Error) -> Self {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn kube(op: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            op: op.into(),
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
