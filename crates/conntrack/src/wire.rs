//! ctnetlink messages as bytes, both ways, with no I/O: the dump request for one family's
//! entries, the delete request for one entry (its original tuple, zone and id, as
//! conntrack-tools sends it), and the entries back out of dump replies. Unknown attributes are
//! skipped; a truncated or garbled buffer is an error, never a panic.
//!
//! Netlink and attribute headers are in host byte order; addresses, ports, ids and zones in
//! network byte order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ConntrackError;

const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// An address family of the conntrack table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        }
    }

    fn code(self) -> u8 {
        match self {
            Family::V4 => AF_INET,
            Family::V6 => AF_INET6,
        }
    }
}

/// One direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (17: UDP).
    pub proto: u8,
    /// Ports, for protocols that have them.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

/// A conntrack entry: what the client sent (`orig`) and what the answer looks like (`reply`;
/// after DNAT its source is the endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    /// The kernel's id of the entry: a delete naming it never hits a newer entry with the
    /// same tuple.
    pub id: Option<u32>,
    /// Conntrack zone, when not the default one.
    pub zone: Option<u16>,
}

/// Which entries to delete, as conntrack-tools' options say it: `-f FAMILY -p PROTO
/// [--orig-dst A] [--orig-port-dst P] [--reply-src B]`; an unset field matches anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Filter {
    pub family: Family,
    pub proto: u8,
    pub orig_dst: Option<IpAddr>,
    pub orig_dst_port: Option<u16>,
    pub reply_src: Option<IpAddr>,
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        Family::of(e.orig.src) == self.family
            && e.orig.proto == self.proto
            && self.orig_dst.is_none_or(|a| e.orig.dst == a)
            && self
                .orig_dst_port
                .is_none_or(|p| e.orig.dst_port == Some(p))
            && self.reply_src.is_none_or(|a| e.reply.src == a)
    }
}

fn decode(msg: impl Into<String>) -> ConntrackError {
    ConntrackError::Decode(msg.into())
}

/// Attribute builder.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        // Every attribute here is a few bytes: far below the 16-bit length.
        let len = (4 + data.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
    fn nest(&mut self, ty: u16, inner: Attrs) -> &mut Self {
        self.put(ty | NLA_F_NESTED, &inner.0)
    }
}

fn message(ty: u16, flags: u16, seq: u32, family: Family, attrs: &Attrs) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGEN_HDRLEN + attrs.0.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_ne_bytes());
    b.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | ty).to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    b.push(family.code());
    b.push(0); // NFNETLINK_V0
    b.extend_from_slice(&0u16.to_be_bytes()); // res_id
    b.extend_from_slice(&attrs.0);
    b
}

fn tuple_attrs(t: &Tuple) -> Attrs {
    let mut ip = Attrs::default();
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip.put(CTA_IP_V4_SRC, &s.octets())
                .put(CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            ip.put(CTA_IP_V6_SRC, &v6(s).octets())
                .put(CTA_IP_V6_DST, &v6(d).octets());
        }
    }
    let mut proto = Attrs::default();
    proto.put(CTA_PROTO_NUM, &[t.proto]);
    if let Some(p) = t.src_port {
        proto.put(CTA_PROTO_SRC_PORT, &p.to_be_bytes());
    }
    if let Some(p) = t.dst_port {
        proto.put(CTA_PROTO_DST_PORT, &p.to_be_bytes());
    }
    let mut a = Attrs::default();
    a.nest(CTA_TUPLE_IP, ip).nest(CTA_TUPLE_PROTO, proto);
    a
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Asks for every entry of `family` (a dump).
pub fn dump_request(family: Family, seq: u32) -> Vec<u8> {
    message(
        IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family,
        &Attrs::default(),
    )
}

/// Deletes `e`, found by its original tuple (and zone, and id when known); asks for an ACK.
pub fn delete_request(e: &Entry, seq: u32) -> Vec<u8> {
    let mut a = Attrs::default();
    a.nest(CTA_TUPLE_ORIG, tuple_attrs(&e.orig));
    if let Some(z) = e.zone {
        a.put(CTA_ZONE, &z.to_be_bytes());
    }
    if let Some(id) = e.id {
        a.put(CTA_ID, &id.to_be_bytes());
    }
    message(
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        Family::of(e.orig.src),
        &a,
    )
}

/// `e` as the kernel describes an entry in a dump (`IPCTNL_MSG_CT_NEW` with both tuples, id
/// and zone): for tests and fixtures.
pub fn entry_message(e: &Entry, seq: u32) -> Vec<u8> {
    let mut a = Attrs::default();
    a.nest(CTA_TUPLE_ORIG, tuple_attrs(&e.orig))
        .nest(CTA_TUPLE_REPLY, tuple_attrs(&e.reply));
    if let Some(id) = e.id {
        a.put(CTA_ID, &id.to_be_bytes());
    }
    if let Some(z) = e.zone {
        a.put(CTA_ZONE, &z.to_be_bytes());
    }
    message(
        IPCTNL_MSG_CT_NEW,
        0x2, /* NLM_F_MULTI */
        seq,
        Family::of(e.orig.src),
        &a,
    )
}

/// One message of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Entry(Entry),
    /// The end of a dump.
    Done,
    /// An ACK (errno 0) or an error (a positive errno).
    Status(i32),
    /// A message of another kind (skipped).
    Other,
}

/// The messages of one datagram as (sequence number, reply).
pub fn replies(buf: &[u8]) -> Result<Vec<(u32, Reply)>, ConntrackError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let hdr = rest
            .get(..NLMSG_HDRLEN)
            .ok_or_else(|| decode("truncated netlink header"))?;
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(decode("bad netlink message length"));
        }
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let seq = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        let body = &rest[NLMSG_HDRLEN..len];
        let reply = match ty {
            NLMSG_DONE => Reply::Done,
            NLMSG_ERROR => {
                let b = body.get(..4).ok_or_else(|| decode("short error message"))?;
                Reply::Status(-i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            }
            t if t == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                let attrs = body
                    .get(NFGEN_HDRLEN..)
                    .ok_or_else(|| decode("short nfnetlink message"))?;
                Reply::Entry(parse_entry(attrs)?)
            }
            _ => Reply::Other,
        };
        out.push((seq, reply));
        rest = rest.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    Ok(out)
}

/// The attributes in `buf` indexed by type; types from `N` on are skipped.
fn attr_table<const N: usize>(buf: &[u8]) -> Result<[Option<&[u8]>; N], ConntrackError> {
    let mut t = [None; N];
    let mut rest = buf;
    while !rest.is_empty() {
        let h = rest
            .get(..4)
            .ok_or_else(|| decode("truncated attribute header"))?;
        let len = u16::from_ne_bytes([h[0], h[1]]) as usize;
        let ty = u16::from_ne_bytes([h[2], h[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return Err(decode("bad attribute length"));
        }
        if let Some(slot) = t.get_mut(usize::from(ty)) {
            *slot = Some(&rest[4..len]);
        }
        rest = rest.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    Ok(t)
}

fn need<'a>(a: Option<&'a [u8]>, what: &str) -> Result<&'a [u8], ConntrackError> {
    a.ok_or_else(|| decode(format!("entry without {what}")))
}

fn be16(b: &[u8], what: &str) -> Result<u16, ConntrackError> {
    let a: [u8; 2] = b
        .try_into()
        .map_err(|_| decode(format!("{what}: not 16 bits")))?;
    Ok(u16::from_be_bytes(a))
}

fn be32(b: &[u8], what: &str) -> Result<u32, ConntrackError> {
    let a: [u8; 4] = b
        .try_into()
        .map_err(|_| decode(format!("{what}: not 32 bits")))?;
    Ok(u32::from_be_bytes(a))
}

fn addr(b: &[u8]) -> Result<IpAddr, ConntrackError> {
    match b.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Ok(IpAddr::V6(Ipv6Addr::from(a)))
        }
        n => Err(decode(format!("address of {n} bytes"))),
    }
}

fn parse_tuple(b: &[u8]) -> Result<Tuple, ConntrackError> {
    let t = attr_table::<4>(b)?;
    let ip = attr_table::<5>(need(t[CTA_TUPLE_IP as usize], "tuple addresses")?)?;
    let (src, dst) = match (ip[1], ip[2], ip[3], ip[4]) {
        (Some(s), Some(d), _, _) | (_, _, Some(s), Some(d)) => (addr(s)?, addr(d)?),
        _ => return Err(decode("tuple without source and destination")),
    };
    let proto = attr_table::<4>(need(t[CTA_TUPLE_PROTO as usize], "tuple protocol")?)?;
    let num = need(proto[CTA_PROTO_NUM as usize], "protocol number")?;
    let [num] = num else {
        return Err(decode("protocol number: not 8 bits"));
    };
    Ok(Tuple {
        src,
        dst,
        proto: *num,
        src_port: proto[CTA_PROTO_SRC_PORT as usize]
            .map(|p| be16(p, "source port"))
            .transpose()?,
        dst_port: proto[CTA_PROTO_DST_PORT as usize]
            .map(|p| be16(p, "destination port"))
            .transpose()?,
    })
}

/// An entry from the attributes of an `IPCTNL_MSG_CT_NEW` message.
pub fn parse_entry(attrs: &[u8]) -> Result<Entry, ConntrackError> {
    let t = attr_table::<19>(attrs)?;
    Ok(Entry {
        orig: parse_tuple(need(t[CTA_TUPLE_ORIG as usize], "original tuple")?)?,
        reply: parse_tuple(need(t[CTA_TUPLE_REPLY as usize], "reply tuple")?)?,
        id: t[CTA_ID as usize].map(|b| be32(b, "id")).transpose()?,
        zone: t[CTA_ZONE as usize].map(|b| be16(b, "zone")).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_entry() -> Entry {
        Entry {
            orig: Tuple {
                src: "10.244.2.7".parse().unwrap(),
                dst: "10.96.0.10".parse().unwrap(),
                proto: IPPROTO_UDP,
                src_port: Some(40000),
                dst_port: Some(53),
            },
            reply: Tuple {
                src: "10.244.1.5".parse().unwrap(),
                dst: "10.244.2.7".parse().unwrap(),
                proto: IPPROTO_UDP,
                src_port: Some(5353),
                dst_port: Some(40000),
            },
            id: Some(0x1234_5678),
            zone: None,
        }
    }

    #[test]
    fn delete_request_bytes_are_ctnetlink_delete_of_the_original_tuple() {
        let b = delete_request(&dns_entry(), 7);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &80u32.to_ne_bytes()[..],                 // nlmsg_len: 16 + 4 + 52 + 8
            &((1u16 << 8) | 2).to_ne_bytes(),         // CTNETLINK | DELETE
            &(1u16 | 4).to_ne_bytes(),                // REQUEST | ACK
            &7u32.to_ne_bytes(), &0u32.to_ne_bytes(), // seq, port
            &[2, 0, 0, 0],                            // AF_INET, v0, res_id
            &52u16.to_ne_bytes(), &(1u16 | 0x8000).to_ne_bytes(), // CTA_TUPLE_ORIG
            &20u16.to_ne_bytes(), &(1u16 | 0x8000).to_ne_bytes(), //   CTA_TUPLE_IP
            &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[10, 244, 2, 7],
            &8u16.to_ne_bytes(), &2u16.to_ne_bytes(), &[10, 96, 0, 10],
            &28u16.to_ne_bytes(), &(2u16 | 0x8000).to_ne_bytes(), //   CTA_TUPLE_PROTO
            &5u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[17, 0, 0, 0],
            &6u16.to_ne_bytes(), &2u16.to_ne_bytes(), &40000u16.to_be_bytes(), &[0, 0],
            &6u16.to_ne_bytes(), &3u16.to_ne_bytes(), &53u16.to_be_bytes(), &[0, 0],
            &8u16.to_ne_bytes(), &12u16.to_ne_bytes(), &0x1234_5678u32.to_be_bytes(), // CTA_ID
        ]
        .concat();
        assert_eq!(b, want);
    }

    #[test]
    fn entries_round_trip_and_unknown_attributes_are_skipped() {
        let mut e = dns_entry();
        e.zone = Some(3);
        let mut m = entry_message(&e, 9);
        assert_eq!(replies(&m).unwrap(), [(9, Reply::Entry(e))]);
        // CTA_STATUS, CTA_TIMEOUT and an attribute no kernel sends yet.
        for (ty, v) in [(3u16, 0x18u32), (7, 30), (0x3ff0, 1)] {
            m.extend_from_slice(&8u16.to_ne_bytes());
            m.extend_from_slice(&ty.to_ne_bytes());
            m.extend_from_slice(&v.to_be_bytes());
        }
        let len = (m.len() as u32).to_ne_bytes();
        m[..4].copy_from_slice(&len);
        assert_eq!(replies(&m).unwrap(), [(9, Reply::Entry(e))]);
        // IPv6.
        let mut v6 = dns_entry();
        v6.orig.src = "fd00::7".parse().unwrap();
        v6.orig.dst = "fd00:96::a".parse().unwrap();
        v6.reply.src = "fd00::1:5".parse().unwrap();
        v6.reply.dst = "fd00::7".parse().unwrap();
        assert_eq!(
            replies(&entry_message(&v6, 1)).unwrap(),
            [(1, Reply::Entry(v6))]
        );
    }

    #[test]
    fn truncated_or_garbled_buffers_are_errors_not_panics() {
        let m = entry_message(&dns_entry(), 1);
        for n in 1..m.len() {
            assert!(replies(&m[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut g = m.clone();
        for i in 0..g.len() {
            for x in [0xff, 0x01, 0x80] {
                g[i] ^= x;
                let _ = replies(&g);
                g[i] ^= x;
            }
        }
    }

    #[test]
    fn acks_errors_and_dump_ends_are_told_apart() {
        let mut b = Vec::new();
        for (ty, errno) in [(2u16, 0i32), (2, -2), (3, 0)] {
            b.extend_from_slice(&20u32.to_ne_bytes());
            b.extend_from_slice(&ty.to_ne_bytes());
            b.extend_from_slice(&0u16.to_ne_bytes());
            b.extend_from_slice(&5u32.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&errno.to_ne_bytes());
        }
        assert_eq!(
            replies(&b).unwrap(),
            [
                (5, Reply::Status(0)),
                (5, Reply::Status(2)),
                (5, Reply::Done)
            ]
        );
    }

    #[test]
    fn filters_match_like_conntrack_tools_options() {
        let e = dns_entry();
        let f = Filter {
            family: Family::V4,
            proto: IPPROTO_UDP,
            orig_dst: Some("10.96.0.10".parse().unwrap()),
            orig_dst_port: Some(53),
            reply_src: Some("10.244.1.5".parse().unwrap()),
        };
        assert!(f.matches(&e));
        // NodePort style: any destination address, that port.
        assert!(Filter {
            orig_dst: None,
            ..f
        }
        .matches(&e));
        assert!(!Filter {
            orig_dst_port: Some(54),
            ..f
        }
        .matches(&e));
        assert!(!Filter {
            reply_src: Some("10.244.1.6".parse().unwrap()),
            ..f
        }
        .matches(&e));
        assert!(!Filter { proto: 6, ..f }.matches(&e));
        assert!(!Filter {
            family: Family::V6,
            orig_dst: None,
            reply_src: None,
            ..f
        }
        .matches(&e));
    }
}
