//! The nf_tables netlink wire format, without I/O: model objects and transactions into the
//! bytes of one batch, dump messages back into a [`crate::KernelTable`]. No socket, no syscall, no
//! `nft` here — pure functions over byte buffers, so every encoding is tested from bytes alone
//! (`tests/wire.rs` against fixtures captured from a real kernel), the way
//! netlink-packet-route keeps its `Emitable`/`Parseable` apart from the socket.
//!
//! - `attrs`: protocol numbers and shared values (verdicts, user data);
//! - `expr`: a rule's statements as expressions (encode only: listings read rule comments);
//! - `log`: the `log` statement, both directions ([`decode_logs`] reads it back);
//! - `set`, `elem`, `chain`, `rule`: each object kind, both directions;
//! - `table`: a listing assembled from messages ([`decode_table`]);
//! - `batch`: a transaction as one batch ([`encode_batch`]).
//!
//! The socket is `crate::netlink` / `crate::list`; what to do with a batch this encoder does
//! not cover is `crate::route`'s refusal.
//!
//! Byte order: netlink headers and attribute headers are in host order, so captured bytes
//! (the fixtures) are those of a little-endian machine.

pub(crate) mod attrs;
pub(crate) mod batch;
pub(crate) mod chain;
pub(crate) mod elem;
pub(crate) mod expr;
pub(crate) mod log;
pub(crate) mod rule;
pub(crate) mod set;
pub(crate) mod table;

use crate::diff::Transaction;
use crate::model::Family;

pub use table::{decode_logs, decode_table};

/// Something the native encoder does not cover (the batch then goes to `nft`), and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported(pub &'static str);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not encodable as netlink: {}", self.0)
    }
}

impl std::error::Error for Unsupported {}

/// The netlink bytes a [`crate::NetlinkBackend`] sent and received while capturing
/// ([`crate::NetlinkBackend::capture`]): datagrams back to back, as the wire carried them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireCapture {
    pub sent: Vec<u8>,
    pub received: Vec<u8>,
}

pub(crate) type Enc<T> = Result<T, Unsupported>;

/// The tables' transactions, in order, as the bytes of ONE nfnetlink batch whose messages are
/// numbered from `first_seq` (the begin marker); `Ok(None)` when there is nothing to send.
pub fn encode_batch(
    parts: &[(Family, &str, &Transaction)],
    first_seq: u32,
) -> Result<Option<Vec<u8>>, Unsupported> {
    Ok(batch::encode(parts, first_seq)?.map(|b| b.buf))
}
