//! Rules: typed match expressions and statements.

use std::net::IpAddr;

use crate::model::Value;

/// Packet header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    IpSaddr,
    IpDaddr,
    Ip6Saddr,
    Ip6Daddr,
    /// Transport header source port of any protocol with ports (`th sport`).
    ThSport,
    /// Transport header destination port (`th dport`).
    ThDport,
    TcpDport,
    UdpDport,
    /// The TCP header's flags byte (`tcp flags`), usually masked: `tcp flags & (syn | rst) ==
    /// syn` is `Expr::And(tcp flags, TCP_SYN | TCP_RST) == Value::Num(TCP_SYN)`.
    TcpFlags,
}

/// `tcp flags` bits, by the names nft gives them.
pub const TCP_FIN: u32 = 0x01;
pub const TCP_SYN: u32 = 0x02;
pub const TCP_RST: u32 = 0x04;
pub const TCP_PSH: u32 = 0x08;
pub const TCP_ACK: u32 = 0x10;
pub const TCP_URG: u32 = 0x20;
pub const TCP_ECN: u32 = 0x40;
pub const TCP_CWR: u32 = 0x80;

/// Each `tcp flags` bit and its name, lowest bit first.
pub(crate) const TCP_FLAG_NAMES: [(u32, &str); 8] = [
    (TCP_FIN, "fin"),
    (TCP_SYN, "syn"),
    (TCP_RST, "rst"),
    (TCP_PSH, "psh"),
    (TCP_ACK, "ack"),
    (TCP_URG, "urg"),
    (TCP_ECN, "ecn"),
    (TCP_CWR, "cwr"),
];

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::IpSaddr => "ip saddr",
            Field::IpDaddr => "ip daddr",
            Field::Ip6Saddr => "ip6 saddr",
            Field::Ip6Daddr => "ip6 daddr",
            Field::ThSport => "th sport",
            Field::ThDport => "th dport",
            Field::TcpDport => "tcp dport",
            Field::UdpDport => "udp dport",
            Field::TcpFlags => "tcp flags",
        }
    }
}

/// Packet metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    L4proto,
    Nfproto,
    Mark,
    Iifname,
    Oifname,
}

impl MetaKey {
    pub fn as_str(self) -> &'static str {
        match self {
            MetaKey::L4proto => "meta l4proto",
            MetaKey::Nfproto => "meta nfproto",
            MetaKey::Mark => "meta mark",
            MetaKey::Iifname => "meta iifname",
            MetaKey::Oifname => "meta oifname",
        }
    }
}

/// Connection tracking keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtKey {
    State,
    Status,
    Mark,
}

impl CtKey {
    pub fn as_str(self) -> &'static str {
        match self {
            CtKey::State => "ct state",
            CtKey::Status => "ct status",
            CtKey::Mark => "ct mark",
        }
    }
}

/// Symbolic constants used on the right of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keyword {
    /// `fib daddr type local`.
    Local,
    Ipv4,
    Ipv6,
    New,
    Established,
    Related,
    Invalid,
    Untracked,
    /// `ct status dnat`.
    Dnat,
}

impl Keyword {
    /// Every keyword (for parsers of nft's text).
    pub const ALL: [Keyword; 9] = [
        Keyword::Local,
        Keyword::Ipv4,
        Keyword::Ipv6,
        Keyword::New,
        Keyword::Established,
        Keyword::Related,
        Keyword::Invalid,
        Keyword::Untracked,
        Keyword::Dnat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Local => "local",
            Keyword::Ipv4 => "ipv4",
            Keyword::Ipv6 => "ipv6",
            Keyword::New => "new",
            Keyword::Established => "established",
            Keyword::Related => "related",
            Keyword::Invalid => "invalid",
            Keyword::Untracked => "untracked",
            Keyword::Dnat => "dnat",
        }
    }
}

/// An expression: the left or right side of a match, a map key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    Payload(Field),
    Meta(MetaKey),
    Ct(CtKey),
    /// `fib daddr type`.
    FibDaddrType,
    /// `fib saddr type`.
    FibSaddrType,
    /// `numgen random mod N`: a fresh random number below N at each evaluation.
    NumgenRandom(u32),
    /// `expr & mask` (e.g. `meta mark & 0x4000`).
    And(Box<Expr>, u32),
    /// `a . b . c`.
    Concat(Vec<Expr>),
    /// A literal.
    Value(Value),
    /// Several symbolic constants (`established,related`).
    Keywords(Vec<Keyword>),
    /// A named set `@name`.
    Set(String),
    /// An anonymous set `{ a, b }` of keys (each key a concatenation if several values).
    AnonSet(Vec<Vec<Value>>),
}

impl Expr {
    /// A literal value.
    pub fn value(v: impl Into<Value>) -> Self {
        Expr::Value(v.into())
    }

    /// One keyword.
    pub fn keyword(k: Keyword) -> Self {
        Expr::Keywords(vec![k])
    }
}

/// Comparison of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// Equality, or membership for sets (rendered as juxtaposition: `ip daddr @s`).
    Eq,
    /// `!=`.
    Ne,
    /// `<`, of a single value only (`numgen random mod 10000 < 50`, `th dport < 1024`): the
    /// kernel compares in network byte order, so a host-order value is converted first, as
    /// nft does.
    Lt,
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

/// How to reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// TCP reset (only valid after a TCP match).
    TcpReset,
    /// ICMP/ICMPv6 port unreachable, whichever the packet's family is.
    IcmpxPortUnreachable,
    /// ICMP/ICMPv6 administratively prohibited.
    IcmpxAdminProhibited,
}

/// A statement: a match, an action, or a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stmt {
    /// `left [op] right`.
    Match {
        left: Expr,
        op: CmpOp,
        right: Expr,
    },
    Counter,
    Verdict(Verdict),
    /// `key vmap @map`.
    Vmap {
        key: Expr,
        map: String,
    },
    /// `numgen random mod N vmap { 0 : v0, 1 : v1, ... }` with N = `targets.len()`.
    NumgenVmap {
        targets: Vec<Verdict>,
    },
    /// `dnat ip to addr[:port]` (or `ip6 to [addr]:port`); a port needs an l4proto match before.
    Dnat {
        addr: IpAddr,
        port: Option<u16>,
    },
    /// `snat ip to addr`.
    Snat {
        addr: IpAddr,
    },
    Masquerade {
        fully_random: bool,
    },
    /// `meta mark set meta mark | bits`.
    MarkOr(u32),
    /// `meta mark set meta mark & bits` (clear the other bits).
    MarkAnd(u32),
    /// `meta mark set value`.
    MarkSet(u32),
    Reject(RejectKind),
    /// `log [prefix "p"] [group N]` (with a group: nflog).
    Log {
        prefix: Option<String>,
        group: Option<u16>,
    },
    /// `update @set { key [timeout Ns] }`.
    UpdateSet {
        set: String,
        key: Expr,
        timeout: Option<u32>,
    },
    /// `tcp option maxseg size set rt mtu`: lowers (never raises) a TCP segment's MSS option
    /// to what the route the packet takes allows (its MTU less the IP and TCP headers: the
    /// kernel's `NFT_RT_TCPMSS`). Made for SYNs (`tcp flags & (syn | rst) == syn` before it);
    /// valid in forward, output and postrouting chains only; a packet that is not TCP ends
    /// the rule.
    ClampMssToPmtu,
    /// `notrack`: conntrack skips the packet (ct state `untracked`; no NAT). It acts only
    /// before conntrack sees the packet: in a prerouting or output chain of priority `raw`
    /// (-300); later, conntrack has already attached an entry and it does nothing.
    Notrack,
}

/// One rule: statements in order, optional comment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Rule {
    pub stmts: Vec<Stmt>,
    pub comment: Option<String>,
}

impl Rule {
    /// An empty rule; add statements with the builder methods.
    pub fn new() -> Self {
        Rule::default()
    }

    /// Adds `left == right` (or set membership).
    pub fn eq(mut self, left: Expr, right: Expr) -> Self {
        self.stmts.push(Stmt::Match {
            left,
            op: CmpOp::Eq,
            right,
        });
        self
    }

    /// Adds `left != right`.
    pub fn ne(mut self, left: Expr, right: Expr) -> Self {
        self.stmts.push(Stmt::Match {
            left,
            op: CmpOp::Ne,
            right,
        });
        self
    }

    /// Adds `left < right`.
    pub fn lt(mut self, left: Expr, right: Expr) -> Self {
        self.stmts.push(Stmt::Match {
            left,
            op: CmpOp::Lt,
            right,
        });
        self
    }

    /// Adds any statement.
    pub fn then(mut self, stmt: Stmt) -> Self {
        self.stmts.push(stmt);
        self
    }

    /// Adds `counter`.
    pub fn counter(self) -> Self {
        self.then(Stmt::Counter)
    }

    /// Ends with a verdict.
    pub fn verdict(self, v: Verdict) -> Self {
        self.then(Stmt::Verdict(v))
    }

    /// Sets the comment.
    pub fn comment(mut self, c: impl Into<String>) -> Self {
        self.comment = Some(c.into());
        self
    }

    pub(crate) fn visit_refs(&self, f: &mut dyn FnMut(Ref<'_>)) {
        fn expr_refs<'a>(e: &'a Expr, f: &mut dyn FnMut(Ref<'a>)) {
            match e {
                Expr::Set(s) => f(Ref::Set(s)),
                Expr::And(inner, _) => expr_refs(inner, f),
                Expr::Concat(es) => es.iter().for_each(|e| expr_refs(e, f)),
                _ => {}
            }
        }
        fn verdict_refs<'a>(v: &'a Verdict, f: &mut dyn FnMut(Ref<'a>)) {
            if let Verdict::Jump(c) | Verdict::Goto(c) = v {
                f(Ref::Chain(c))
            }
        }
        for s in &self.stmts {
            match s {
                Stmt::Match { left, right, .. } => {
                    expr_refs(left, f);
                    expr_refs(right, f);
                }
                Stmt::Verdict(v) => verdict_refs(v, f),
                Stmt::Vmap { key, map } => {
                    expr_refs(key, f);
                    f(Ref::Set(map));
                }
                Stmt::NumgenVmap { targets } => targets.iter().for_each(|v| verdict_refs(v, f)),
                Stmt::UpdateSet { set, key, .. } => {
                    f(Ref::Set(set));
                    expr_refs(key, f);
                }
                _ => {}
            }
        }
    }
}

/// Something a rule refers to by name.
pub(crate) enum Ref<'a> {
    Chain(&'a str),
    Set(&'a str),
}
