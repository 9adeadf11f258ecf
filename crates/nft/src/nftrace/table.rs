//! The helper table that marks one flow for kernel tracing: `inet sarasa-trace`, base chains
//! at prerouting and output, priority -350 (before conntrack at -200 and every sarasa chain),
//! one rule each setting `meta nftrace set 1` for packets of the flow. The flag stays on the
//! packet through every later hook of the node, so each chain it crosses reports.
//!
//! It is an nft script, not a typed [`crate::Table`]: the table lives for one `trace --live`
//! run, is created and deleted whole, and never needs a diff; `meta nftrace set` has no place
//! in the datapath model.

use std::fmt::Write;
use std::net::IpAddr;

use crate::model::L4Proto;

/// Name of the helper table (family inet).
pub const TRACE_TABLE: &str = "sarasa-trace";
/// Priority of its base chains.
pub const TRACE_PRIORITY: i32 = -350;

/// The flow to trace, in the direction the first packet goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceMatch {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub proto: L4Proto,
    /// Destination port (TCP, UDP, SCTP); `None` matches any.
    pub dport: Option<u16>,
}

impl TraceMatch {
    fn rule(&self) -> String {
        let fam = if self.saddr.is_ipv6() { "ip6" } else { "ip" };
        let mut r = format!(
            "{fam} saddr {} {fam} daddr {} meta l4proto {}",
            self.saddr,
            self.daddr,
            self.proto.as_str()
        );
        if let (Some(p), true) = (
            self.dport,
            matches!(self.proto, L4Proto::Tcp | L4Proto::Udp | L4Proto::Sctp),
        ) {
            let _ = write!(r, " th dport {p}");
        }
        r.push_str(" meta nftrace set 1");
        r
    }
}

/// An `nft -f` script that (re)creates the helper table tracing `flows`.
pub fn trace_table_script(flows: &[TraceMatch]) -> String {
    let mut s = format!("table inet {TRACE_TABLE}\ndelete table inet {TRACE_TABLE}\n");
    let _ = writeln!(s, "table inet {TRACE_TABLE} {{");
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        let _ = writeln!(
            s,
            "\tchain {chain} {{\n\t\ttype filter hook {hook} priority {TRACE_PRIORITY}; policy accept;"
        );
        for f in flows {
            let _ = writeln!(s, "\t\t{}", f.rule());
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// An `nft -f` script that removes the helper table (whether or not it exists).
pub fn delete_trace_table_script() -> String {
    format!("table inet {TRACE_TABLE}\ndelete table inet {TRACE_TABLE}\n")
}
