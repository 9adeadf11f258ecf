//! IPAM errors. Each variant names the thing that is wrong (field, range, container) so the
//! CNI plugin can map it to a CNI error code and a message a user can act on.

use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An IPAM failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The range configuration is invalid (bad subnet, start/end outside the subnet, overlap).
    #[error("invalid ipam config: {0}")]
    InvalidConfig(String),
    /// Every address of a range set is taken.
    #[error("no free address left in range set {ranges}")]
    Exhausted {
        /// The range set, e.g. `10.244.1.0/24 (10.244.1.2-10.244.1.254)`.
        ranges: String,
    },
    /// (container id, ifname) already holds addresses; one allocation per attachment.
    #[error("container {container_id} interface {ifname} already has addresses allocated: {ips}")]
    AlreadyAllocated {
        /// Container id.
        container_id: String,
        /// Interface name.
        ifname: String,
        /// The addresses it holds.
        ips: String,
    },
    /// A specifically requested address is outside every range or already taken.
    #[error("requested address {ip} is unavailable: {reason}")]
    Unavailable {
        /// The address.
        ip: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing the on-disk store failed.
    #[error("ipam store {op}: {source}")]
    Io {
        /// What was being done, with the path.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The store was unreadable and has been set aside; nothing is allocated until the
    /// allocations are rebuilt from the attachments on the node.
    #[error("ipam store was unreadable and is set aside as {kept}; its allocations must be rebuilt from the node's attachments before addresses are handed out")]
    NeedsRebuild {
        /// The kept copy, with the reason it was unreadable.
        kept: String,
    },
    /// A host port is already mapped on this node.
    #[error("hostPort {port} is already in use on this node by {holder}")]
    HostPortInUse {
        /// The requested mapping.
        port: String,
        /// Who holds it.
        holder: String,
    },
    /// The on-disk store could not be parsed.
    #[error("ipam store {path} is corrupt: {reason}")]
    Corrupt {
        /// File.
        path: String,
        /// Parse error.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            op: op.into(),
            source,
        }
    }
}
