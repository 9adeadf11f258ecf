//! Sans-IO decoding of the kernel's nf_tables trace messages (`NFT_MSG_TRACE`, multicast on
//! group `NFNLGRP_NFTRACE` of NETLINK_NETFILTER): one [`TraceEvent`] per chain verdict,
//! rule match or base-chain policy the kernel evaluated for a packet with `meta nftrace` set.
//! Attribute numbers are the kernel's `enum nft_trace_attributes` (uapi `nf_tables.h`);
//! unknown attributes are skipped, not rejected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::nl::{attr_table, be32, be64, cstr, AttrIter, Msgs, NFNL_SUBSYS_NFTABLES};
use crate::NftError;

/// `NFT_MSG_TRACE`.
pub(crate) const NFT_MSG_TRACE: u16 = 17;
/// `NFNLGRP_NFTRACE`: the multicast group trace messages go to.
pub const NFNLGRP_NFTRACE: u32 = 9;

const TRACE_TABLE: usize = 1;
const TRACE_CHAIN: usize = 2;
const TRACE_RULE_HANDLE: usize = 3;
const TRACE_TYPE: usize = 4;
const TRACE_VERDICT: usize = 5;
const TRACE_ID: usize = 6;
const TRACE_NETWORK_HEADER: usize = 8;
const TRACE_TRANSPORT_HEADER: usize = 9;
const TRACE_IIF: usize = 10;
const TRACE_OIF: usize = 12;
const TRACE_MARK: usize = 14;
const TRACE_NFPROTO: usize = 15;
const TRACE_POLICY: usize = 16;
const TRACE_MAX: usize = 18;

/// `NFTA_VERDICT_CODE`, `NFTA_VERDICT_CHAIN`.
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;

/// What a trace event reports (`enum nft_trace_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceKind {
    /// A base chain's policy applied (the packet fell off its end).
    Policy,
    /// The end of a regular chain: back to the caller.
    Return,
    /// A rule matched and gave a verdict (or continued).
    Rule,
    Other(u32),
}

/// A verdict in a trace event (`NFTA_VERDICT_CODE` and chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TraceVerdict {
    Accept,
    Drop,
    /// `NFT_CONTINUE`: the rule matched and evaluation goes on.
    Continue,
    /// `NFT_BREAK`.
    Break,
    Jump(String),
    Goto(String),
    Return,
    Other(i32),
}

/// One event of one traced packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Same for every event of one packet (`NFTA_TRACE_ID`).
    pub id: u32,
    /// nfgenmsg family of the message (NFPROTO_*: 1 inet, 2 ipv4, 10 ipv6).
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub kind: TraceKind,
    /// The kernel handle of the rule (Rule events); `None` on the rule event the kernel sends
    /// when a chain runs out of rules (verdict continue, followed by a return or policy event).
    pub rule_handle: Option<u64>,
    pub verdict: Option<TraceVerdict>,
    /// The base chain policy (Policy events): true for accept.
    pub policy_accept: Option<bool>,
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    pub mark: Option<u32>,
    /// NFPROTO_* of the packet (`NFTA_TRACE_NFPROTO`).
    pub nfproto: Option<u32>,
    /// The packet's network header, as the kernel copied it.
    pub network_header: Vec<u8>,
    pub transport_header: Vec<u8>,
}

impl TraceEvent {
    /// Source and destination addresses read from the network header.
    pub fn addresses(&self) -> Option<(IpAddr, IpAddr)> {
        let h = &self.network_header;
        match h.first().map(|b| b >> 4) {
            Some(4) if h.len() >= 20 => {
                let a = |i: usize| Ipv4Addr::new(h[i], h[i + 1], h[i + 2], h[i + 3]);
                Some((IpAddr::V4(a(12)), IpAddr::V4(a(16))))
            }
            Some(6) if h.len() >= 40 => {
                let a = |i: usize| {
                    let b: [u8; 16] = h[i..i + 16].try_into().ok()?;
                    Some(IpAddr::V6(Ipv6Addr::from(b)))
                };
                Some((a(8)?, a(24)?))
            }
            _ => None,
        }
    }

    /// Source and destination ports from the transport header (TCP, UDP, SCTP).
    pub fn ports(&self) -> Option<(u16, u16)> {
        let t = &self.transport_header;
        (t.len() >= 4).then(|| {
            (
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
            )
        })
    }
}

/// The trace events in one datagram from the `NFNLGRP_NFTRACE` group; other messages are
/// skipped.
pub fn parse_trace_messages(buf: &[u8]) -> Result<Vec<TraceEvent>, NftError> {
    let mut out = Vec::new();
    for msg in Msgs(buf) {
        let msg = msg?;
        if msg.ty != (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE) {
            continue;
        }
        let (family, attrs) = msg.nft()?;
        out.push(parse_event(family, attrs)?);
    }
    Ok(out)
}

fn parse_event(family: u8, attrs: &[u8]) -> Result<TraceEvent, NftError> {
    let a = attr_table::<TRACE_MAX>(attrs)?;
    let text = |i: usize| -> Result<String, NftError> {
        Ok(a[i].map(cstr).transpose()?.unwrap_or_default().to_string())
    };
    let u32_at = |i: usize| a[i].map(be32).transpose();
    let kind = match u32_at(TRACE_TYPE)? {
        Some(1) => TraceKind::Policy,
        Some(2) => TraceKind::Return,
        Some(3) => TraceKind::Rule,
        Some(n) => TraceKind::Other(n),
        None => TraceKind::Other(0),
    };
    Ok(TraceEvent {
        id: u32_at(TRACE_ID)?.unwrap_or(0),
        family,
        table: text(TRACE_TABLE)?,
        chain: text(TRACE_CHAIN)?,
        kind,
        rule_handle: a[TRACE_RULE_HANDLE].map(be64).transpose()?,
        verdict: a[TRACE_VERDICT].map(verdict).transpose()?,
        policy_accept: u32_at(TRACE_POLICY)?.map(|p| p == 1),
        iif: u32_at(TRACE_IIF)?,
        oif: u32_at(TRACE_OIF)?,
        mark: u32_at(TRACE_MARK)?,
        nfproto: u32_at(TRACE_NFPROTO)?,
        network_header: a[TRACE_NETWORK_HEADER].unwrap_or_default().to_vec(),
        transport_header: a[TRACE_TRANSPORT_HEADER].unwrap_or_default().to_vec(),
    })
}

fn verdict(nested: &[u8]) -> Result<TraceVerdict, NftError> {
    let mut code = None;
    let mut chain = String::new();
    for attr in AttrIter(nested) {
        match attr? {
            (VERDICT_CODE, b) => code = Some(be32(b)? as i32),
            (VERDICT_CHAIN, b) => chain = cstr(b)?.to_string(),
            _ => {}
        }
    }
    let code = code.ok_or_else(|| NftError::Listing("trace verdict without a code".into()))?;
    Ok(match code {
        1 => TraceVerdict::Accept,
        0 => TraceVerdict::Drop,
        -1 => TraceVerdict::Continue,
        -2 => TraceVerdict::Break,
        -3 => TraceVerdict::Jump(chain),
        -4 => TraceVerdict::Goto(chain),
        -5 => TraceVerdict::Return,
        n => TraceVerdict::Other(n),
    })
}
