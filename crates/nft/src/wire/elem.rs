//! Set and map elements: keys and values as bytes (concatenations padded per part, interval
//! sets as start/end markers) in `NFTA_SET_ELEM_LIST` nests, and back — markers paired into
//! prefixes and single values the way `nft` presents them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{DataType, Element, Key, L4Proto, MapValue, Value};
use crate::nl::{attr_table, be32, be64, cstr, listing, udata, Attrs};
use crate::NftError;

use super::attrs::*;
use super::set::{size_of, SetDecl};
use super::{Enc, Unsupported};

/// Key bytes: each part of a concatenation padded to 4 bytes (nft's register layout).
pub(crate) fn key_bytes(k: &Key) -> Enc<Vec<u8>> {
    let mut out = Vec::new();
    for v in &k.0 {
        let b = match v {
            Value::Addr(IpAddr::V4(a)) => a.octets().to_vec(),
            Value::Addr(IpAddr::V6(a)) => a.octets().to_vec(),
            Value::Proto(p) => vec![proto_number(*p)],
            Value::Port(p) => p.to_be_bytes().to_vec(),
            Value::Mark(m) | Value::Num(m) => m.to_ne_bytes().to_vec(),
            Value::Prefix(_) => return Err(Unsupported("prefix outside an interval set")),
            Value::Ifname(n) => {
                // IFNAMSIZ, NUL-padded.
                if n.len() >= 16 {
                    return Err(Unsupported("interface name too long"));
                }
                let mut b = n.as_bytes().to_vec();
                b.resize(16, 0);
                b
            }
        };
        out.extend_from_slice(&b);
        // A single value keeps its size (the set's key length); only parts are padded.
        if k.0.len() > 1 {
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
    }
    Ok(out)
}
/// A value of an interval set as a range: its first value, the first value past it (`None`
/// when it reaches the maximum) and its width in bytes.
fn bounds(v: &Value) -> Enc<(u128, Option<u128>, usize)> {
    let (lo, hi, len) = match v {
        Value::Addr(IpAddr::V4(a)) => {
            let n = u128::from(u32::from(*a));
            (n, n, 4)
        }
        Value::Addr(IpAddr::V6(a)) => {
            let n = u128::from(*a);
            (n, n, 16)
        }
        Value::Prefix(ipnet::IpNet::V4(n)) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
            4,
        ),
        Value::Prefix(ipnet::IpNet::V6(n)) => {
            (u128::from(n.network()), u128::from(n.broadcast()), 16)
        }
        Value::Port(p) => (u128::from(*p), u128::from(*p), 2),
        Value::Proto(p) => {
            let n = u128::from(proto_number(*p));
            (n, n, 1)
        }
        _ => return Err(Unsupported("interval element of this type")),
    };
    let max = if len == 16 {
        u128::MAX
    } else {
        (1u128 << (8 * len)) - 1
    };
    Ok((lo, (hi < max).then(|| hi + 1), len))
}

fn be_bytes(n: u128, len: usize) -> Vec<u8> {
    n.to_be_bytes()[16 - len..].to_vec()
}

/// The element attributes for `items`: one per key; in an interval set a start marker
/// (carrying value, timeout and comment) and an end marker just past the range (none when it
/// reaches the maximum), in key order. `zero_end` leads with an end marker at zero, as nft
/// does for sets it fills at creation.
pub(crate) fn element_list<'a>(
    items: impl Iterator<Item = (&'a Key, Option<&'a Element>)>,
    interval: bool,
    zero_end: bool,
) -> Enc<Vec<Attrs>> {
    if !interval {
        return items
            .map(|(k, e)| element_attrs(&key_bytes(k)?, e, false))
            .collect();
    }
    let mut ranges = Vec::new();
    for (k, e) in items {
        let [v] = &k.0[..] else {
            return Err(Unsupported("interval set of concatenations"));
        };
        let (lo, end, len) = bounds(v)?;
        ranges.push((lo, end, len, e));
    }
    ranges.sort_by_key(|r| r.0);
    let mut out = Vec::with_capacity(ranges.len() * 2 + 1);
    if let Some(&(lo, _, len, _)) = ranges.first() {
        if zero_end && lo != 0 {
            out.push(element_attrs(&vec![0; len], None, true)?);
        }
    }
    for (lo, end, len, e) in ranges {
        out.push(element_attrs(&be_bytes(lo, len), e, false)?);
        if let Some(end) = end {
            out.push(element_attrs(&be_bytes(end, len), None, true)?);
        }
    }
    Ok(out)
}

fn element_attrs(key: &[u8], e: Option<&Element>, end: bool) -> Enc<Attrs> {
    let mut k = Attrs::default();
    k.put(1, key);
    let mut a = Attrs::default();
    a.nest(1, k);
    if end {
        a.u32(3, SET_ELEM_INTERVAL_END);
    }
    if let Some(e) = e {
        match &e.value {
            None => {}
            Some(MapValue::Verdict(v)) => {
                a.nest(2, verdict_data(v));
            }
            Some(MapValue::Data(d)) => {
                let mut data = Attrs::default();
                data.put(1, &key_bytes(d)?);
                a.nest(2, data);
            }
        }
        if let Some(t) = e.timeout {
            a.u64(4, u64::from(t) * 1000);
        }
        if let Some(c) = &e.comment {
            let c = crate::text::sanitize(c, crate::text::MAX_COMMENT);
            a.put(6, &udata_str(UDATA_SET_ELEM_COMMENT, &c)?);
        }
    }
    Ok(a)
}

/// One element as the kernel holds it.
pub(crate) struct RawElem {
    pub(crate) key: Vec<u8>,
    /// Inclusive end of a range element (concatenated interval sets).
    pub(crate) key_end: Option<Vec<u8>>,
    /// An interval end marker (rbtree interval sets).
    pub(crate) end: bool,
    pub(crate) element: Element,
}

pub(crate) fn parse_elem(d: &SetDecl, b: &[u8]) -> Result<RawElem, NftError> {
    let t = attr_table::<12>(b)?;
    let set = &d.name;
    let flags = t[3].map(be32).transpose()?.unwrap_or(0);
    if flags & SET_ELEM_CATCHALL != 0 {
        return Err(listing(format!("set {set}: catch-all element")));
    }
    let end = flags & SET_ELEM_INTERVAL_END != 0;
    let key = data_value(t[1].ok_or_else(|| listing(format!("set {set}: element key")))?)?;
    let key_end = t[10].map(data_value).transpose()?.map(<[u8]>::to_vec);
    // End markers of interval maps carry no value.
    let value = match (&d.data, t[2]) {
        _ if end => None,
        (None, _) => None,
        (Some(_), None) => {
            return Err(listing(format!("map {set}: element without a value")));
        }
        (Some(None), Some(v)) => Some(MapValue::Verdict(parse_verdict(set, v)?)),
        (Some(Some(types)), Some(v)) => {
            Some(MapValue::Data(decode_key(set, types, data_value(v)?)?))
        }
    };
    // Like `nft`, which prints the timeout in seconds when the kernel reports one.
    let timeout = match t[4].map(be64).transpose()? {
        Some(ms) if ms != 0 => Some(
            u32::try_from(ms / 1000)
                .map_err(|_| listing(format!("set {set}: element timeout {ms} ms")))?,
        ),
        _ => None,
    };
    let comment = match t[6] {
        Some(u) => udata(u, UDATA_SET_ELEM_COMMENT)?
            .map(cstr)
            .transpose()?
            .map(str::to_string),
        None => None,
    };
    Ok(RawElem {
        key: key.to_vec(),
        key_end,
        end,
        element: Element {
            value,
            timeout,
            comment,
        },
    })
}

/// The byte ranges of each part of a key of `types` (concatenations pad parts to 4 bytes).
fn parts(set: &str, types: &[DataType], len: usize) -> Result<Vec<(usize, usize)>, NftError> {
    let mut out = Vec::with_capacity(types.len());
    let mut off = 0;
    for t in types {
        let n = size_of(*t);
        out.push((off, n));
        off += if types.len() > 1 {
            n.div_ceil(4) * 4
        } else {
            n
        };
    }
    if off != len {
        return Err(listing(format!(
            "set {set}: key of {len} bytes does not match {types:?}"
        )));
    }
    Ok(out)
}

pub(crate) fn decode_key(set: &str, types: &[DataType], b: &[u8]) -> Result<Key, NftError> {
    parts(set, types, b.len())?
        .into_iter()
        .zip(types)
        .map(|((off, n), t)| decode_value(set, *t, &b[off..off + n]))
        .collect::<Result<Vec<_>, _>>()
        .map(Key)
}

fn decode_value(set: &str, t: DataType, b: &[u8]) -> Result<Value, NftError> {
    let bad = || listing(format!("set {set}: value {b:02x?} of type {}", t.as_str()));
    Ok(match t {
        DataType::Ipv4Addr => Value::Addr(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(b).map_err(|_| bad())?,
        ))),
        DataType::Ipv6Addr => Value::Addr(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(b).map_err(|_| bad())?,
        ))),
        DataType::InetProto => Value::Proto(L4Proto::from_number(u64::from(b[0])).ok_or_else(bad)?),
        DataType::InetService => Value::Port(u16::from_be_bytes(b.try_into().map_err(|_| bad())?)),
        // The mark type is in host byte order.
        DataType::Mark => Value::Mark(u32::from_ne_bytes(b.try_into().map_err(|_| bad())?)),
        DataType::Ifname => Value::Ifname(cstr(b).map_err(|_| bad())?.to_string()),
    })
}

/// A big-endian key part as a number (at most 16 bytes: IPv6).
fn number(b: &[u8]) -> u128 {
    b.iter().fold(0u128, |n, x| (n << 8) | u128::from(*x))
}

fn from_number(n: u128, len: usize) -> Vec<u8> {
    n.to_be_bytes()[16 - len..].to_vec()
}

/// One part of an interval element, `lo..=hi`, as `nft` shows it: a single value, or a prefix
/// for addresses; anything else (a range) has no value in the model.
fn range_value(set: &str, t: DataType, lo: &[u8], hi: &[u8]) -> Result<Value, NftError> {
    if lo == hi {
        return decode_value(set, t, lo);
    }
    let bits = (lo.len() * 8) as u32;
    let (a, b) = (number(lo), number(hi));
    let span = b.wrapping_sub(a);
    let is_prefix = b > a && (span & span.wrapping_add(1)) == 0 && a & span == 0;
    match (t, is_prefix) {
        (DataType::Ipv4Addr | DataType::Ipv6Addr, true) => {
            let host_bits = 128 - span.leading_zeros();
            let len = (bits - host_bits) as u8;
            let Value::Addr(addr) = decode_value(set, t, lo)? else {
                return Err(listing(format!("set {set}: prefix of {}", t.as_str())));
            };
            Ok(Value::Prefix(ipnet::IpNet::new(addr, len).map_err(
                |_| listing(format!("set {set}: prefix {addr}/{len}")),
            )?))
        }
        _ => Err(listing(format!(
            "set {set}: range {lo:02x?}-{hi:02x?} of type {} (not a prefix or single value)",
            t.as_str()
        ))),
    }
}

/// Turns an interval set's elements back into keys: ranges with an inclusive end
/// (concatenations), or start / end markers (one type) paired in key order as `nft` does: an
/// end closes the open start, a start while one is open closes it just below, an end with no
/// open start (the leading zero one nft adds) is dropped, an open start at the end reaches
/// the maximum.
pub(crate) fn intervals(
    d: &SetDecl,
    raw: Vec<RawElem>,
    out: &mut BTreeMap<Key, Element>,
) -> Result<(), NftError> {
    let set = d.name.as_str();
    let mut markers = Vec::new();
    for r in raw {
        match &r.key_end {
            Some(hi) => {
                let lo = parts(set, &d.key, r.key.len())?;
                let hi_parts = parts(set, &d.key, hi.len())?;
                let key = lo
                    .iter()
                    .zip(&hi_parts)
                    .zip(&d.key)
                    .map(|(((lo_off, n), (hi_off, _)), t)| {
                        range_value(
                            set,
                            *t,
                            &r.key[*lo_off..lo_off + n],
                            &hi[*hi_off..hi_off + n],
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(Key(key), r.element);
            }
            None => markers.push(r),
        }
    }
    if markers.is_empty() {
        return Ok(());
    }
    let [t] = d.key[..] else {
        return Err(listing(format!(
            "set {set}: interval markers in a concatenated set"
        )));
    };
    if matches!(t, DataType::Mark | DataType::Ifname) {
        return Err(listing(format!(
            "set {set}: intervals of type {} are not supported",
            t.as_str()
        )));
    }
    let len = size_of(t);
    if let Some(r) = markers.iter().find(|r| r.key.len() != len) {
        return Err(listing(format!(
            "set {set}: key of {} bytes for type {}",
            r.key.len(),
            t.as_str()
        )));
    }
    // Ends before starts at the same key: one range ends where the next begins.
    markers.sort_by(|a, b| number(&a.key).cmp(&number(&b.key)).then(b.end.cmp(&a.end)));
    let max = if len == 16 {
        u128::MAX
    } else {
        (1u128 << (len * 8)) - 1
    };
    let mut open: Option<(u128, Element)> = None;
    let mut emit = |lo: u128, hi: u128, e: Element| -> Result<(), NftError> {
        let v = range_value(set, t, &from_number(lo, len), &from_number(hi, len))?;
        out.insert(Key(vec![v]), e);
        Ok(())
    };
    for r in markers {
        let k = number(&r.key);
        if let Some((lo, e)) = open.take() {
            // Both an end marker and a new start close the open range just below.
            if k <= lo {
                return Err(listing(format!("set {set}: empty interval")));
            }
            emit(lo, k - 1, e)?;
        }
        if !r.end {
            open = Some((k, r.element));
        }
    }
    if let Some((lo, e)) = open {
        emit(lo, max, e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_keys_are_padded_per_part() {
        let k = Key(vec![
            Value::Addr("10.96.0.10".parse().unwrap()),
            Value::Proto(crate::model::L4Proto::Tcp),
            Value::Port(80),
        ]);
        assert_eq!(
            key_bytes(&k).unwrap(),
            [10, 96, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        // A single value has the set's key length.
        assert_eq!(key_bytes(&Key::one(Value::Port(80))).unwrap(), [0, 80]);
    }

    #[test]
    fn interval_elements_are_start_and_end_markers() {
        let k = |s: &str| Key::one(s.parse::<ipnet::IpNet>().unwrap());
        let keys = [k("10.0.1.0/24"), k("10.0.0.0/24"), k("255.255.255.0/24")];
        let elems = element_list(keys.iter().map(|k| (k, None)), true, true).unwrap();
        // zero end, 10.0.0.0, 10.0.1.0 (end), 10.0.1.0, 10.0.2.0 (end), 255.255.255.0 (open)
        assert_eq!(elems.len(), 6);
        let key_of = |a: &Attrs| a.buf[8..12].to_vec();
        assert_eq!(key_of(&elems[1]), [10, 0, 0, 0]);
        assert_eq!(key_of(&elems[2]), [10, 0, 1, 0]);
        assert_eq!(key_of(&elems[5]), [255, 255, 255, 0]);
    }

    #[test]
    fn ranges_become_prefixes_or_single_values() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap().octets();
        assert_eq!(
            range_value(
                "s",
                DataType::Ipv4Addr,
                &v4("10.0.0.0"),
                &v4("10.0.255.255")
            )
            .unwrap(),
            Value::Prefix("10.0.0.0/16".parse().unwrap())
        );
        assert_eq!(
            range_value(
                "s",
                DataType::Ipv4Addr,
                &v4("0.0.0.0"),
                &v4("255.255.255.255")
            )
            .unwrap(),
            Value::Prefix("0.0.0.0/0".parse().unwrap())
        );
        assert_eq!(
            range_value("s", DataType::Ipv4Addr, &v4("10.0.0.1"), &v4("10.0.0.1")).unwrap(),
            Value::Addr("10.0.0.1".parse().unwrap())
        );
        assert!(range_value("s", DataType::Ipv4Addr, &v4("10.0.0.1"), &v4("10.0.0.2")).is_err());
        assert!(range_value("s", DataType::InetService, &[0, 0], &[0, 255]).is_err());
    }

    fn marker(key: [u8; 4], end: bool) -> RawElem {
        RawElem {
            key: key.to_vec(),
            key_end: None,
            end,
            element: Element::default(),
        }
    }

    #[test]
    fn interval_markers_pair_like_nft() {
        let d = SetDecl {
            name: "s".into(),
            interval: true,
            key: vec![DataType::Ipv4Addr],
            data: None,
            decl_hash: None,
        };
        // As the kernel dumps them (descending), with nft's leading zero end marker, two
        // adjacent /24s, a single address and an open range up to the maximum.
        let raw = vec![
            marker([255, 0, 0, 0], false),
            marker([10, 9, 0, 2], true),
            marker([10, 9, 0, 1], false),
            marker([10, 0, 2, 0], true),
            marker([10, 0, 1, 0], false),
            marker([10, 0, 1, 0], true),
            marker([10, 0, 0, 0], false),
            marker([0, 0, 0, 0], true),
        ];
        let mut out = BTreeMap::new();
        intervals(&d, raw, &mut out).unwrap();
        let keys: Vec<Value> = out.into_keys().map(|k| k.0[0].clone()).collect();
        assert_eq!(
            keys,
            [
                Value::Addr("10.9.0.1".parse().unwrap()),
                Value::Prefix("10.0.0.0/24".parse().unwrap()),
                Value::Prefix("10.0.1.0/24".parse().unwrap()),
                Value::Prefix("255.0.0.0/8".parse().unwrap()),
            ]
        );
    }
}
