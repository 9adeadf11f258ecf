//! Just enough of the DNS wire format to time a change: a one-question query and the parts of a
//! reply the timing needs (id, rcode, the A addresses of the answer section). Sans-IO; the
//! caller owns the socket.

use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("reply truncated at byte {0}")]
    Truncated(usize),
    #[error("name compression loop")]
    Loop,
}

/// What the timing reads from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: u16,
    pub rcode: u8,
    pub addresses: Vec<Ipv4Addr>,
}

pub const TYPE_A: u16 = 1;

/// A recursion-desired query for `name`/`qtype`, class IN.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Offset just past the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, WireError> {
    for _ in 0..128 {
        let len = *msg.get(at).ok_or(WireError::Truncated(at))?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l => at += 1 + l as usize,
        }
    }
    Err(WireError::Loop)
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, WireError> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(WireError::Truncated(at))
}

/// Reads id, rcode and every A record of the answer section.
pub fn parse_reply(msg: &[u8]) -> Result<Reply, WireError> {
    if msg.len() < 12 {
        return Err(WireError::Truncated(msg.len()));
    }
    let id = u16_at(msg, 0)?;
    let rcode = msg[3] & 0x0f;
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..an {
        at = skip_name(msg, at)?;
        let rtype = u16_at(msg, at)?;
        let rdlen = u16_at(msg, at + 8)? as usize;
        let data = msg
            .get(at + 10..at + 10 + rdlen)
            .ok_or(WireError::Truncated(at + 10))?;
        if rtype == TYPE_A && rdlen == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + rdlen;
    }
    Ok(Reply {
        id,
        rcode,
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_compressed_answer() {
        let mut r = query(9, "a.b", TYPE_A);
        r[2] = 0x85; // QR, AA, RD
        r[3] = 0x80;
        r[7] = 1; // one answer
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 96, 0, 7]);
        let reply = parse_reply(&r).unwrap();
        assert_eq!(reply.id, 9);
        assert_eq!(reply.rcode, 0);
        assert_eq!(reply.addresses, [Ipv4Addr::new(10, 96, 0, 7)]);
    }

    #[test]
    fn short_or_looping_replies_are_errors_not_panics() {
        assert_eq!(parse_reply(&[0; 5]), Err(WireError::Truncated(5)));
        let mut r = query(1, "x", TYPE_A);
        r[7] = 1;
        r.extend_from_slice(&[0xc0]);
        assert!(parse_reply(&r).is_err());
        let nx = {
            let mut r = query(2, "x", TYPE_A);
            r[3] = 3;
            r
        };
        assert_eq!(parse_reply(&nx).unwrap().rcode, 3);
    }
}
