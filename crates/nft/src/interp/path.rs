//! What the interpreter reports: one [`Path`] per way a packet can go through a hook, each a
//! verdict, the rewritten packet and the ordered [`Step`]s that cite the kernel objects
//! (table, chain, rule index and comment) behind every decision.

use std::net::IpAddr;

use crate::expr::{RejectKind, Verdict};
use crate::model::{BaseChain, Key, Policy};

use super::packet::Packet;

/// The fate of a packet at one hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookVerdict {
    Accept,
    Drop,
    Reject(RejectKind),
}

/// One way the packet can go through the hook (several when `numgen` picks among endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub verdict: HookVerdict,
    /// The packet after DNAT/SNAT/masquerade and mark changes.
    pub packet: Packet,
    /// In order.
    pub steps: Vec<Step>,
}

impl Path {
    /// The DNAT this path made, if any.
    pub fn dnat(&self) -> Option<(IpAddr, Option<u16>)> {
        self.steps.iter().find_map(|s| match s.event {
            Event::Dnat { addr, port } => Some((addr, port)),
            _ => None,
        })
    }

    /// The step that decided the verdict: the last verdict, reject, policy or NAT step.
    pub fn deciding_step(&self) -> Option<&Step> {
        self.steps.iter().rev().find(|s| {
            matches!(
                s.event,
                Event::Verdict(Verdict::Accept | Verdict::Drop)
                    | Event::Reject(_)
                    | Event::ChainPolicy(_)
                    | Event::Dnat { .. }
                    | Event::Snat { .. }
                    | Event::Masquerade { .. }
            )
        })
    }
}

/// One thing that happened, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Table name (without family).
    pub table: String,
    pub chain: String,
    /// Index of the rule in the chain; `None` for chain entry, base policy and skipped NAT.
    pub rule: Option<usize>,
    /// The rule's comment.
    pub comment: Option<String>,
    pub event: Event,
}

/// What happened at a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Entered a chain; `Some` for base chains (hook, priority, type).
    EnterChain {
        base: Option<BaseChain>,
    },
    /// A vmap lookup that yielded its value.
    MapHit {
        map: String,
        key: Key,
    },
    /// A named set membership that matched.
    SetMatch {
        set: String,
        key: Key,
    },
    /// This path took slot `picked` of `numgen random mod modulus`. For `numgen random mod k
    /// == v`: `picked` is `v` on the matching path and the smallest other value on the other.
    Numgen {
        modulus: u32,
        picked: u32,
    },
    Dnat {
        addr: IpAddr,
        port: Option<u16>,
    },
    Snat {
        addr: IpAddr,
    },
    /// `None`: no address to masquerade to, the packet is dropped.
    Masquerade {
        addr: Option<IpAddr>,
    },
    /// The packet's mark after a `meta mark set`.
    MarkSet {
        mark: u32,
    },
    Log {
        prefix: Option<String>,
        group: Option<u16>,
    },
    UpdateSet {
        set: String,
        key: Key,
    },
    /// `tcp option maxseg size set rt mtu`: the segment's MSS option lowered (never raised)
    /// to what the route through `packet.oifname` carries.
    MssClamped,
    /// `notrack` before conntrack: the packet goes on untracked (no connection, no NAT).
    Untracked,
    /// accept, drop, jump, goto, return, continue.
    Verdict(Verdict),
    Reject(RejectKind),
    /// A base chain fell off its end.
    ChainPolicy(Policy),
    /// NAT chain not run: not the first packet of its connection, or a binding of this hook's
    /// kind was already made.
    NatSkipped,
}
