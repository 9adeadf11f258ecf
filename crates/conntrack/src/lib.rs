//! Conntrack entries over netlink (NETLINK_NETFILTER, subsystem ctnetlink): list a family's
//! entries and delete those a [`Filter`] matches — what `conntrack -D -p udp --orig-dst ...
//! --orig-port-dst ... --reply-src ...` does, without the tool, its process per deletion, or
//! its presence on the node.
//!
//! Why a crate of its own: the agent alone needs it (the CNI plugin, which links
//! `sarasa-netns`, must stay small), and it speaks another netlink protocol than
//! `sarasa-netns` (route netlink) with its own message set. [`wire`] is the encoding and
//! decoding, sans-IO and tested from bytes; [`Conntrack`] is the socket, opened in a given
//! network namespace from a short-lived thread so the caller never moves.

mod socket;
pub mod wire;

pub use socket::Conntrack;
pub use wire::{Entry, Filter, Tuple};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The socket, or the namespace it should live in.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a request (its errno), naming the request.
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A message from the kernel could not be understood.
    #[error("cannot understand a ctnetlink message: {0}")]
    Decode(String),
}
