//! The wire side of the fast UDP path: reads only the header and the question of a query (and
//! a plain EDNS OPT record), and turns a pre-encoded answer (see [`crate::answer_cache`]) into
//! the response to this query by patching the bytes that depend on the asker — ID, the RD and
//! CD bits, the question name's case as asked (0x20), the OPT record and, when the answer does
//! not fit the client's UDP size, truncation (TC, empty sections, RFC 2181 §9).
//!
//! Anything this reader does not accept (other opcodes, several questions, classes other than
//! IN, compression in the question, unusual label bytes, EDNS versions other than 0, extra
//! records, trailing bytes, meta types) is not an error here: the caller hands the packet to
//! the hickory path, which owns every error response. Pure: no I/O.

use std::sync::Arc;

use crate::handler::{CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD};

/// The DNS header's size.
pub const HEADER: usize = 12;
/// The EDNS OPT record this server appends: root name, type OPT, class = payload size,
/// extended rcode 0, version 0, no flags, no options (RFC 6891 §6.1.2).
const OPT_LEN: usize = 11;
const TYPE_OPT: u16 = 41;

/// Query types the fast path answers (anything else goes to the hickory path).
const CACHED_TYPES: [u16; 9] = [1, 2, 5, 6, 12, 15, 16, 28, 33];

/// The parts of a query the fast path needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question<'q> {
    pub id: [u8; 2],
    /// The RD and CD bits as asked (copied into the response, as hickory does).
    pub rd: bool,
    pub cd: bool,
    /// The question name in wire form, as asked (its case is echoed).
    pub qname: &'q [u8],
    /// The cache key: the question name in wire form, ASCII lower-cased, then the type.
    pub key: Vec<u8>,
    pub qtype: u16,
    /// The client's UDP size limit: `None` without EDNS (512 then).
    pub edns_payload: Option<u16>,
}

impl Question<'_> {
    /// The largest response this client takes over UDP (512 without EDNS, else its payload
    /// clamped to 512..=4096, as [`crate::handler::udp_limit`] decides).
    pub fn udp_limit(&self) -> usize {
        usize::from(match self.edns_payload {
            None => CLASSIC_UDP_PAYLOAD,
            Some(p) => p.clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// A label byte the fast path takes: letters, digits, `-` and `_` (SRV labels).
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Reads a standard query the fast path can answer; `None` for everything else.
pub fn parse(packet: &[u8]) -> Option<Question<'_>> {
    if packet.len() < HEADER + 5 {
        return None;
    }
    let (flags_hi, flags_lo) = (packet[2], packet[3]);
    // QR = 0 (a query), opcode QUERY; TC set in a query is odd: leave it to hickory.
    if flags_hi & 0xFA != 0 {
        return None;
    }
    // Z and the rcode bits are zero in a well-formed query; AD may be set (dig sets it).
    if flags_lo & 0x4F != 0 {
        return None;
    }
    let qd = u16_at(packet, 4)?;
    let an = u16_at(packet, 6)?;
    let ns = u16_at(packet, 8)?;
    let ar = u16_at(packet, 10)?;
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut at = HEADER;
    let mut key = Vec::with_capacity(64);
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            key.push(0);
            at += 1;
            break;
        }
        // 0xC0: a compression pointer, 0x40/0x80: extended label types.
        if len > 63 {
            return None;
        }
        let label = packet.get(at + 1..at + 1 + len)?;
        if !label.iter().copied().all(plain) {
            return None;
        }
        key.push(len as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
        at += 1 + len;
        if key.len() > 255 {
            return None;
        }
    }
    let qname = &packet[HEADER..at];
    let qtype = u16_at(packet, at)?;
    let qclass = u16_at(packet, at + 2)?;
    at += 4;
    if qclass != 1 || !CACHED_TYPES.contains(&qtype) {
        return None;
    }
    key.extend_from_slice(&qtype.to_be_bytes());
    let mut edns_payload = None;
    if ar == 1 {
        // The OPT record: root owner, type 41, class = payload, TTL = ext-rcode, version,
        // flags; options are skipped (this server answers none, as the hickory path).
        if *packet.get(at)? != 0 || u16_at(packet, at + 1)? != TYPE_OPT {
            return None;
        }
        let payload = u16_at(packet, at + 3)?;
        let (ext_rcode, version) = (*packet.get(at + 5)?, *packet.get(at + 6)?);
        if ext_rcode != 0 || version != 0 {
            return None;
        }
        let rdlen = usize::from(u16_at(packet, at + 9)?);
        at += OPT_LEN;
        let end = at.checked_add(rdlen)?;
        if end != packet.len() {
            return None;
        }
        while at < end {
            let olen = usize::from(u16_at(packet, at + 2)?);
            at += 4 + olen;
        }
        if at != end {
            return None;
        }
        edns_payload = Some(payload);
    }
    if at != packet.len() {
        return None;
    }
    Some(Question {
        id: [packet[0], packet[1]],
        rd: flags_hi & 0x01 != 0,
        cd: flags_lo & 0x10 != 0,
        qname,
        key,
        qtype,
        edns_payload,
    })
}

/// A pre-encoded answer for one (name, type): a complete response to a query with ID 0, RD
/// and CD clear, the lower-cased name and no EDNS, kept with its cache key in one shared
/// allocation — the key's length (1 byte), the key (the question's name and type, which the
/// message's question repeats, so the message is kept without it), the SOA serial's offset (2
/// bytes, 0 for none), the rcode (1 byte), the header (12 bytes), then everything after the
/// question. Hashes and compares as its key, so a cache shard is a set of these.
#[derive(Debug, Clone)]
pub struct Encoded(Arc<[u8]>);

impl Encoded {
    /// `key`: the question's lower-cased wire name and type, as [`Question::key`]; `message`
    /// must ask exactly that (`None` otherwise). `serial_at`: where the SOA serial of a
    /// negative answer sits (it follows the zone generation, so it is written per response
    /// rather than invalidating every negative answer per change).
    pub fn new(key: &[u8], message: &[u8], serial_at: Option<u16>, rcode: u8) -> Option<Self> {
        let key_len = u8::try_from(key.len()).ok()?;
        let question_end = HEADER + key.len() + 2;
        // The question: the key's name and type, class IN.
        if message.get(HEADER..question_end - 2)? != key
            || message[question_end - 2..question_end] != [0, 1]
        {
            return None;
        }
        let mut v = Vec::with_capacity(1 + key.len() + 3 + message.len() - key.len() - 2);
        v.push(key_len);
        v.extend_from_slice(key);
        v.extend_from_slice(&serial_at.unwrap_or(0).to_be_bytes());
        v.push(rcode);
        v.extend_from_slice(&message[..HEADER]);
        v.extend_from_slice(&message[question_end..]);
        Some(Encoded(v.into()))
    }

    /// The cache key (lower-cased wire name, then the type).
    pub fn key(&self) -> &[u8] {
        &self.0[1..1 + usize::from(self.0[0])]
    }

    fn meta(&self) -> usize {
        1 + usize::from(self.0[0])
    }

    pub fn serial_at(&self) -> Option<u16> {
        let at = self.meta();
        Some(u16::from_be_bytes([self.0[at], self.0[at + 1]])).filter(|at| *at != 0)
    }

    /// The response code (for the per-type, per-rcode query counters).
    pub fn rcode(&self) -> u8 {
        self.0[self.meta() + 2]
    }

    /// The header, then the sections after the question.
    fn parts(&self) -> (&[u8], &[u8]) {
        let at = self.meta() + 3;
        (&self.0[at..at + HEADER], &self.0[at + HEADER..])
    }

    /// Bytes this answer holds (its allocation, with the reference counts).
    pub fn heap_bytes(&self) -> usize {
        self.0.len() + 2 * std::mem::size_of::<usize>()
    }
}

impl PartialEq for Encoded {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Encoded {}

impl std::hash::Hash for Encoded {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for Encoded {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// Writes into `out` the response to `q` from `answer` (the answer to `q`'s key), with
/// `serial` as the SOA serial of a negative answer.
pub fn respond(q: &Question<'_>, answer: &Encoded, serial: u32, out: &mut Vec<u8>) {
    let (header, rest) = answer.parts();
    out.clear();
    out.extend_from_slice(header);
    // The question as asked (its case echoed), then its type and class IN.
    out.extend_from_slice(q.qname);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(rest);
    out[0..2].copy_from_slice(&q.id);
    if q.rd {
        out[2] |= 0x01;
    }
    if q.cd {
        out[3] |= 0x10;
    }
    if let Some(at) = answer.serial_at() {
        let at = usize::from(at);
        out[at..at + 4].copy_from_slice(&serial.to_be_bytes());
    }
    let limit = q.udp_limit();
    let opt = if q.edns_payload.is_some() { OPT_LEN } else { 0 };
    if out.len() + opt > limit {
        // Header and question only, TC set: the client retries over TCP.
        out.truncate(HEADER + q.qname.len() + 4);
        out[2] |= 0x02;
        out[6..12].fill(0);
    }
    if opt > 0 {
        let ar = u16::from_be_bytes([out[10], out[11]]).saturating_add(1);
        out[10..12].copy_from_slice(&ar.to_be_bytes());
        let payload = limit as u16;
        out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
        out.extend_from_slice(&payload.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[&str], qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut p = vec![0xAB, 0xCD, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&[0, 1]);
        if let Some(size) = edns {
            p[11] = 1;
            p.extend_from_slice(&[0, 0, 41]);
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0x80, 0, 0, 0]);
        }
        p
    }

    #[test]
    fn a_standard_query_is_read_and_its_name_lowercased() {
        let p = query(&["Web", "default"], 1, Some(1232));
        let q = parse(&p).expect("fast");
        assert_eq!(q.id, [0xAB, 0xCD]);
        assert!(q.rd && !q.cd);
        assert_eq!(q.key, b"\x03web\x07default\x00\x00\x01");
        assert_eq!(q.qname, b"\x03Web\x07default\x00");
        assert_eq!(
            (q.qtype, q.edns_payload, q.udp_limit()),
            (1, Some(1232), 1232)
        );
        assert_eq!(parse(&query(&["a"], 1, None)).unwrap().udp_limit(), 512);
        assert_eq!(
            parse(&query(&["a"], 1, Some(100))).unwrap().udp_limit(),
            512
        );
        assert_eq!(
            parse(&query(&["a"], 1, Some(65000))).unwrap().udp_limit(),
            4096
        );
    }

    #[test]
    fn anything_unusual_is_left_to_the_hickory_path() {
        let ok = query(&["a", "b"], 1, None);
        assert!(parse(&ok).is_some());
        let mut response = ok.clone();
        response[2] |= 0x80;
        let mut notify = ok.clone();
        notify[2] |= 4 << 3;
        let mut two = ok.clone();
        two[5] = 2;
        let mut chaos = ok.clone();
        let n = chaos.len();
        chaos[n - 1] = 3;
        let mut trailing = ok.clone();
        trailing.push(0);
        let mut edns1 = query(&["a"], 1, Some(1232));
        let n = edns1.len();
        edns1[n - 5] = 1; // version 1: BADVERS from hickory
        for (what, p) in [
            ("response", response),
            ("NOTIFY", notify),
            ("two questions", two),
            ("class CH", chaos),
            ("trailing bytes", trailing),
            ("EDNS version 1", edns1),
            ("ANY", query(&["a"], 255, None)),
            ("AXFR", query(&["a"], 252, None)),
            ("odd label byte", query(&["a.b"], 1, None)),
            ("short", vec![0; 11]),
        ] {
            assert!(parse(&p).is_none(), "{what}");
        }
        let mut pointer = query(&["a"], 1, None);
        pointer[12] = 0xC0;
        assert!(parse(&pointer).is_none());
    }

    #[test]
    fn the_response_is_patched_per_asker_and_truncated_to_its_size() {
        let p = query(&["Web"], 1, Some(600));
        let q = parse(&p).unwrap();
        // A canonical answer: header (AA, 1 answer), question `web A IN`, 500 bytes of records.
        let mut canon = vec![0, 0, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        canon.extend_from_slice(b"\x03web\x00\x00\x01\x00\x01");
        canon.extend(std::iter::repeat_n(7u8, 500));
        let e = Encoded::new(b"\x03web\x00\x00\x01", &canon, Some(30), 0).unwrap();
        assert_eq!((e.serial_at(), e.rcode()), (Some(30), 0));
        assert_eq!(e.key(), b"\x03web\x00\x00\x01");
        assert!(
            Encoded::new(b"\x03www\x00\x00\x01", &canon, None, 0).is_none(),
            "a message for another question"
        );
        let mut out = Vec::new();
        respond(&q, &e, 0x01020304, &mut out);
        assert_eq!(&out[0..4], &[0xAB, 0xCD, 0x85, 0]);
        assert_eq!(&out[12..17], b"\x03Web\x00");
        assert_eq!(&out[30..34], &[1, 2, 3, 4]);
        assert_eq!(&out[10..12], &[0, 1], "OPT counted");
        assert_eq!(out.len(), canon.len() + 11);
        assert_eq!(
            &out[out.len() - 11..],
            &[0, 0, 41, 2, 0x58, 0, 0, 0, 0, 0, 0]
        );

        // 512 without EDNS: TC, sections emptied, question kept.
        let p = query(&["web"], 1, None);
        let q = parse(&p).unwrap();
        respond(&q, &e, 1, &mut out);
        assert_eq!(out.len(), 12 + 9);
        assert_eq!(out[2], 0x87);
        assert_eq!(&out[6..12], &[0; 6]);
    }
}
