//! The nflog wire format, as bytes in and out (no sockets here): the request that binds a
//! `NETLINK_NETFILTER` socket to the log group drops go to, and the parser of the packets the
//! kernel then sends. The agent owns the socket; [`LoggedPacket::event`] names the policies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sarasa_nft::L4Proto;

use crate::event::{drop_event, DropEvent};
use crate::state::PolicyState;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
/// Bytes of each packet the kernel copies: enough for IPv6 + transport ports.
const COPY_RANGE: u32 = 96;

/// The netlink message that binds a `NETLINK_NETFILTER` socket to nflog `group` and asks for
/// the first bytes of each packet. Send it, then read packets with [`parse_messages`].
pub fn bind_request(group: u16, seq: u32) -> Vec<u8> {
    let mut body = Vec::new();
    // nfgenmsg: family AF_UNSPEC, version 0, resource id = group (big endian).
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&group.to_be_bytes());
    push_attr(&mut body, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    push_attr(&mut body, NFULA_CFG_MODE, &mode);
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    let len = (NLMSG_HDRLEN + body.len()) as u32;
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

fn push_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    pub prefix: String,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    /// `None` for protocols sarasa does not name.
    pub protocol: Option<L4Proto>,
    /// Destination port (TCP, UDP, SCTP), 0 otherwise.
    pub dport: u16,
}

impl LoggedPacket {
    /// The drop event (pods, port, isolating policies), when the prefix is a policy drop.
    pub fn event(&self, state: &PolicyState) -> Option<DropEvent> {
        drop_event(
            state,
            &self.prefix,
            self.saddr,
            self.daddr,
            self.protocol?,
            self.dport,
        )
    }
}

/// The logged packets in one datagram read from the socket (acks, errors and anything not
/// understood are skipped).
pub fn parse_messages(buf: &[u8]) -> Vec<LoggedPacket> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
            if let Some(p) = parse_packet(&rest[NLMSG_HDRLEN..len]) {
                out.push(p);
            }
        }
        rest = &rest[align4(len).min(rest.len())..];
    }
    out
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// nfgenmsg + attributes of one `NFULNL_MSG_PACKET`.
fn parse_packet(body: &[u8]) -> Option<LoggedPacket> {
    let mut attrs = body.get(4..)?;
    let mut prefix = None;
    let mut payload = None;
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match kind {
            NFULA_PREFIX => {
                let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                prefix = Some(String::from_utf8_lossy(&value[..end]).into_owned());
            }
            NFULA_PAYLOAD => payload = Some(value),
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    let (saddr, daddr, proto, l4) = ip_header(payload?)?;
    let protocol = match proto {
        6 => Some(L4Proto::Tcp),
        17 => Some(L4Proto::Udp),
        132 => Some(L4Proto::Sctp),
        1 => Some(L4Proto::Icmp),
        58 => Some(L4Proto::Icmpv6),
        _ => None,
    };
    let dport = match proto {
        6 | 17 | 132 => l4.get(2..4).map_or(0, |b| u16::from_be_bytes([b[0], b[1]])),
        _ => 0,
    };
    Some(LoggedPacket {
        prefix: prefix?,
        saddr,
        daddr,
        protocol,
        dport,
    })
}

/// Source, destination, transport protocol number and transport header of an IP packet.
fn ip_header(p: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let s: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            Some((
                Ipv4Addr::from(s).into(),
                Ipv4Addr::from(d).into(),
                *p.get(9)?,
                p.get(ihl..).unwrap_or_default(),
            ))
        }
        6 => {
            let s: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            Some((
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                *p.get(6)?,
                p.get(40..).unwrap_or_default(),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_message(prefix: &str, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 100];
        push_attr(&mut body, 1, &[0x08, 0x00, 3, 0]);
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        push_attr(&mut body, NFULA_PREFIX, &p);
        push_attr(&mut body, NFULA_PAYLOAD, payload);
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn parses_ipv4_tcp_and_ipv6_udp() {
        let mut v4 = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 3, 10, 0, 0, 1,
        ];
        v4.extend_from_slice(&[0x9c, 0x40, 0, 80]);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend_from_slice(&"fd00::3".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x9c, 0x40, 0, 53]);
        let mut buf = packet_message("np in x/a ", &v4);
        buf.extend(packet_message("np out y/b ", &v6));
        let got = parse_messages(&buf);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].prefix, "np in x/a ");
        assert_eq!(got[0].saddr, "10.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].daddr, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((got[0].protocol, got[0].dport), (Some(L4Proto::Tcp), 80));
        assert_eq!((got[1].protocol, got[1].dport), (Some(L4Proto::Udp), 53));
        assert_eq!(got[1].daddr, "fd00::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn truncated_input_is_skipped_not_a_panic() {
        let buf = packet_message("np in x/a ", &[0x45, 0, 0]);
        assert!(parse_messages(&buf).is_empty());
        for n in 0..buf.len() {
            let _ = parse_messages(&buf[..n]);
        }
        assert!(parse_messages(&[0xff; 7]).is_empty());
    }

    #[test]
    fn bind_request_layout() {
        let m = bind_request(100, 1);
        assert_eq!(m.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0401);
        assert_eq!(&m[18..20], &100u16.to_be_bytes());
    }
}
