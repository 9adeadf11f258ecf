//! The packet the interpreter follows, and what it needs to know about the node beyond its
//! tables ([`Env`]). Conntrack is an input: the caller says whether this is a connection's
//! first packet ([`CtState::New`]), which decides whether NAT chains run at all.

use std::net::IpAddr;

use crate::expr::TCP_SYN;
use crate::model::L4Proto;

/// Conntrack state of the packet's connection (`ct state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    /// First packet of a connection: NAT chains run.
    New,
    /// A later packet of a connection conntrack has seen both ways (or a reply).
    Established,
    /// A packet related to a known connection (ICMP error, expectation).
    Related,
    /// A `notrack` statement kept conntrack off the packet: no entry, no NAT.
    Untracked,
}

/// A packet at one hook, with the metadata the rules read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Packet {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub proto: L4Proto,
    /// Transport ports; 0 for ICMP (and `th sport`/`th dport` then match nothing).
    pub sport: u16,
    pub dport: u16,
    /// `tcp flags` of a TCP packet: SYN for a connection's first packet (ignored for other
    /// protocols).
    pub tcp_flags: u8,
    /// `meta iifname`: `None` where the packet has no input device (output, postrouting of a
    /// local packet): the kernel then reads an empty name.
    pub iifname: Option<String>,
    /// `meta oifname`: known only once routed (forward, output, postrouting).
    pub oifname: Option<String>,
    pub mark: u32,
    pub ct: CtState,
    /// `ct status dnat`: the connection has a DNAT binding. The interpreter sets it when a
    /// DNAT binds; for a later packet of a DNATed connection the caller sets it (and gives the
    /// translated addresses: the NAT core rewrites those without running NAT chains).
    pub ct_dnat: bool,
}

impl Packet {
    /// A new connection's first packet: `ct state new`, a SYN if TCP, mark 0, no interfaces.
    pub fn new(saddr: IpAddr, daddr: IpAddr, proto: L4Proto, sport: u16, dport: u16) -> Self {
        Packet {
            saddr,
            daddr,
            proto,
            sport,
            dport,
            tcp_flags: TCP_SYN as u8,
            iifname: None,
            oifname: None,
            mark: 0,
            ct: CtState::New,
            ct_dnat: false,
        }
    }

    /// IPv6 packet? (The family of the source address; both addresses share it.)
    pub fn is_ipv6(&self) -> bool {
        self.saddr.is_ipv6()
    }

    /// Does the transport header carry ports (`th sport`/`th dport` readable)?
    pub(crate) fn has_ports(&self) -> bool {
        matches!(self.proto, L4Proto::Tcp | L4Proto::Udp | L4Proto::Sctp)
    }
}

/// What the interpreter needs from the node beyond its tables.
pub trait Env {
    /// `fib daddr type local` / `fib saddr type local`: is `addr` one of this node's addresses?
    fn is_local(&self, addr: IpAddr) -> bool;
    /// The source address `masquerade` picks for a packet to `daddr` leaving through
    /// `oifname`. `None`: the interface has no usable address, and the kernel drops the packet
    /// (`nf_nat_masquerade_ipv4`: no address → `NF_DROP`).
    fn masquerade_source(&self, oifname: Option<&str>, daddr: IpAddr) -> Option<IpAddr>;
}
