//! Live tracing for `sarasa trace --live`: the kernel's own account of a real packet, to set
//! beside the interpreter's ([`crate::interp`]).
//!
//! A helper table ([`trace_table_script`], `inet sarasa-trace`) sets `meta nftrace set 1` on
//! the flow's packets before any other chain; from then on nf_tables multicasts one
//! `NFT_MSG_TRACE` message per rule that matched, chain that returned and base-chain policy
//! that applied (`net/netfilter/nf_tables_trace.c`). [`parse_trace_messages`] decodes them
//! (sans-IO, like the rest of the encoding code); [`TraceSubscriber`] joins the multicast
//! group in a node's network namespace and collects them for a bounded time.

mod decode;
mod subscribe;
mod table;

#[cfg(test)]
mod tests;

pub use decode::{parse_trace_messages, TraceEvent, TraceKind, TraceVerdict, NFNLGRP_NFTRACE};
pub use subscribe::TraceSubscriber;
pub use table::{
    delete_trace_table_script, trace_table_script, TraceMatch, TRACE_PRIORITY, TRACE_TABLE,
};
