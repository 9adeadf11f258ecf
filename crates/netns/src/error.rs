//! The crate's error type: an OS error with the operation that failed, or a netlink protocol
//! problem. Callers branch on [`Error::errno`] (e.g. `EEXIST`, `ENODEV`) rather than on text.

use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from a namespace or netlink operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or a kernel netlink answer failed with an errno.
    #[error("{op}: {source}")]
    Os {
        /// What was being done, e.g. `add veth veth1234 <-> eth0`.
        op: String,
        /// The OS error (errno) as the kernel reported it.
        #[source]
        source: io::Error,
    },
    /// The kernel answered something this crate could not decode or did not expect.
    #[error("netlink protocol: {0}")]
    Protocol(String),
    /// The path exists but is not a network namespace.
    #[error("{0} is not a network namespace")]
    NotNetNs(std::path::PathBuf),
    /// A closure run in another namespace panicked.
    #[error("closure run in network namespace {0} panicked")]
    Panicked(String),
}

impl Error {
    pub(crate) fn os(op: impl Into<String>, source: io::Error) -> Self {
        Error::Os {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn last_os(op: impl Into<String>) -> Self {
        Self::os(op, io::Error::last_os_error())
    }

    /// The errno of an OS or kernel error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True when the object to create already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// True when the object does not exist (`ENODEV`, `ENOENT`, `ESRCH`, `EADDRNOTAVAIL`):
    /// the usual answers to a delete of something already gone.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }
}
