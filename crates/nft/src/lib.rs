//! Typed nftables ruleset model, rendering and apply backends.
//!
//! sarasa owns whole tables (e.g. `inet sarasa`) and never touches others. A [`Table`] is plain
//! data: chains, sets and maps with typed keys, rules built from typed [`Expr`]essions and
//! [`Stmt`]atements. From it this crate produces:
//! - [`Table::render`]: the whole table as an `nft -f` script (golden tests, first program);
//! - [`diff`]: one minimal atomic transaction from one model to another (changed chains are
//!   flushed and refilled, map/set elements added and deleted one by one, the table is never
//!   flushed);
//! - [`diff_kernel`]: the same against what the kernel holds ([`NetlinkBackend::list_table`]
//!   reads it over netlink, [`KernelTable::parse`] from `nft -j list table`, to the same value;
//!   every chain carries a content hash in the comment of its last rule and every set a
//!   declaration hash in its comment, so unchanged chains are left alone on restart);
//! - a [`Backend`] to run transactions: [`NftCli`] pipes them to `nft -f -`;
//!   [`NetlinkBackend`] / [`NetlinkTableBackend`] send them as one nf_tables netlink batch
//!   (several tables' transactions in one atomic batch with [`NetlinkBackend::apply_batch`];
//!   no re-read of the table; what it does not encode goes to `nft`); [`Recording`] keeps
//!   them for tests;
//! - [`interp`]: what the kernel does with a packet at a hook, given the tables (every
//!   base chain in kernel order, NAT, numgen paths), for `sarasa trace` and the tests;
//! - [`nftrace`]: the kernel's own trace of a real packet (`meta nftrace`), decoded, for
//!   `sarasa trace --live` to set beside the interpreter's.
//! - [`wire`]: the nf_tables netlink encoding and decoding on their own, without a socket
//!   ([`wire::encode_batch`], [`wire::decode_table`]), tested from bytes captured from a kernel.

mod backend;
mod diff;
mod expr;
pub mod interp;
mod kernel;
mod list;
mod model;
mod netlink;
pub mod nftrace;
mod nl;
mod render;
mod route;
pub mod text;
pub mod wire;

pub use backend::{Backend, NftCli, Recording};
pub use diff::{diff, diff_kernel, Op, Transaction, MAX_TYPED_CHAINS};
pub use expr::{
    CmpOp, CtKey, Expr, Field, Keyword, MetaKey, RejectKind, Rule, Stmt, Verdict, TCP_ACK, TCP_CWR,
    TCP_ECN, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG,
};
pub use kernel::{KernelChain, KernelSet, KernelTable};
pub use model::{
    BaseChain, Chain, ChainType, DataType, Element, Family, Hook, Key, L4Proto, MapType, MapValue,
    Policy, Set, SetFlags, Table, Value,
};
pub use netlink::{NetlinkBackend, NetlinkTableBackend};
pub use wire::WireCapture;

/// Errors of this crate. Each names the object or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// A name (table, chain, set) nft would not accept.
    #[error("invalid nftables name {0:?}: must start with a letter or '_' and hold only letters, digits, '_', '-', '.' (at most 200 characters)")]
    InvalidName(String),
    /// A comment nft would not accept.
    #[error("invalid comment {0:?}: at most 100 characters, no '\"' or newline")]
    InvalidComment(String),
    /// A rule or element refers to something that does not exist or has the wrong shape.
    #[error("invalid ruleset: {0}")]
    Invalid(String),
    /// `nft -j list` output could not be understood.
    #[error("cannot parse nft JSON listing: {0}")]
    Parse(String),
    /// Running the `nft` tool failed.
    #[error("running {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// `nft` ran and reported an error.
    #[error("nft failed ({status}): {stderr}")]
    Nft { status: String, stderr: String },
    /// A netlink request failed: the socket, or the kernel's answer (an errno), naming the
    /// operation at fault.
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A transaction holds a construct the netlink encoder does not cover; nothing was sent.
    #[error("nftables batch for {tables} not sent: {what} is not encodable over netlink (the nft tool is not used on a node)")]
    Unencodable { what: &'static str, tables: String },
    /// A netlink listing could not be understood.
    #[error("cannot understand the kernel's netlink listing: {0}")]
    Listing(String),
}
