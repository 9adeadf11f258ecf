//! Small arithmetic the compiler needs: `ipBlock` CIDR minus `except` as disjoint prefixes,
//! port ranges as masked blocks (`th dport & mask == base`), and a rule's ports as matches.

use std::collections::BTreeSet;

use ipnet::IpNet;
use sarasa_nft::{Expr, Field, L4Proto, MetaKey, Stmt, Value};

use crate::Protocol;

/// `cidr` minus every prefix of `except`, as disjoint prefixes in address order.
pub fn subtract(cidr: IpNet, except: &[IpNet]) -> Vec<IpNet> {
    let mut out = Vec::new();
    walk(cidr.trunc(), except, &mut out);
    out
}

fn walk(net: IpNet, except: &[IpNet], out: &mut Vec<IpNet>) {
    if except.iter().any(|e| e.contains(&net)) {
        return;
    }
    if !except.iter().any(|e| net.contains(e)) {
        out.push(net);
        return;
    }
    // Some except lies strictly inside: split in halves.
    let Some(halves) = net.subnets(net.prefix_len() + 1).ok() else {
        return;
    };
    for h in halves {
        walk(h, except, out);
    }
}

/// The port range `start..=end` as aligned blocks `(base, mask)`: a port `p` is in the range
/// when `p & mask == base` for one block. At most 30 blocks.
pub fn port_blocks(start: u16, end: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    let (mut s, e) = (u32::from(start), u32::from(end));
    while s <= e {
        let mut k = 0u32;
        while k < 16 && s % (1 << (k + 1)) == 0 && s + (1 << (k + 1)) - 1 <= e {
            k += 1;
        }
        out.push((s as u16, (0xffff_u32 << k) as u16));
        s += 1 << k;
    }
    out
}

/// Port alternatives for `(protocol, Some((start, end)) | None)` entries: exact ports in one
/// anonymous concatenated set, protocol-only entries in one set of protocols, ranges as masked
/// blocks.
pub(crate) fn port_alternatives(ports: &[(Protocol, Option<(u16, u16)>)]) -> Vec<Vec<Stmt>> {
    let mut exact: BTreeSet<(Protocol, u16)> = BTreeSet::new();
    let mut any: BTreeSet<Protocol> = BTreeSet::new();
    let mut ranges: BTreeSet<(Protocol, u16, u16)> = BTreeSet::new();
    for (proto, range) in ports {
        match range {
            None => {
                any.insert(*proto);
            }
            Some((s, e)) if s == e => {
                exact.insert((*proto, *s));
            }
            Some((s, e)) => {
                ranges.insert((*proto, *s, *e));
            }
        }
    }
    exact.retain(|(p, _)| !any.contains(p));
    ranges.retain(|(p, _, _)| !any.contains(p));
    let l4 = || Expr::Meta(MetaKey::L4proto);
    let eq = |left, right| Stmt::Match {
        left,
        op: sarasa_nft::CmpOp::Eq,
        right,
    };
    let mut out = Vec::new();
    if !any.is_empty() {
        out.push(vec![if let (1, Some(p)) = (any.len(), any.first()) {
            eq(l4(), Expr::value(L4Proto::from(*p)))
        } else {
            eq(
                l4(),
                Expr::AnonSet(
                    any.iter()
                        .map(|p| vec![Value::Proto(L4Proto::from(*p))])
                        .collect(),
                ),
            )
        }]);
    }
    if let (1, Some((p, port))) = (exact.len(), exact.first().copied()) {
        out.push(vec![
            eq(l4(), Expr::value(L4Proto::from(p))),
            eq(
                Expr::Payload(Field::ThDport),
                Expr::Value(Value::Port(port)),
            ),
        ]);
    } else if !exact.is_empty() {
        out.push(vec![eq(
            Expr::Concat(vec![l4(), Expr::Payload(Field::ThDport)]),
            Expr::AnonSet(
                exact
                    .iter()
                    .map(|(p, port)| vec![Value::Proto(L4Proto::from(*p)), Value::Port(*port)])
                    .collect(),
            ),
        )]);
    }
    for (p, s, e) in ranges {
        for (base, mask) in port_blocks(s, e) {
            let dport = if mask == 0xffff {
                Expr::Payload(Field::ThDport)
            } else {
                Expr::And(Box::new(Expr::Payload(Field::ThDport)), u32::from(mask))
            };
            out.push(vec![
                eq(l4(), Expr::value(L4Proto::from(p))),
                eq(dport, Expr::Value(Value::Port(base))),
            ]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn subtract_except() {
        let got = subtract("10.0.0.0/24".parse().unwrap(), &nets(&["10.0.0.128/25"]));
        assert_eq!(got, nets(&["10.0.0.0/25"]));
        let got = subtract("10.0.0.0/30".parse().unwrap(), &nets(&["10.0.0.1/32"]));
        assert_eq!(got, nets(&["10.0.0.0/32", "10.0.0.2/31"]));
        let got = subtract("10.0.0.0/8".parse().unwrap(), &[]);
        assert_eq!(got, nets(&["10.0.0.0/8"]));
        let got = subtract("fd00::/64".parse().unwrap(), &nets(&["fd00::/64"]));
        assert!(got.is_empty());
    }

    #[test]
    fn blocks_cover_exactly_the_range() {
        for (s, e) in [
            (80, 90),
            (1, 65535),
            (0, 65535),
            (81, 81),
            (32000, 32768),
            (65535, 65535),
        ] {
            let blocks = port_blocks(s, e);
            assert!(blocks.len() <= 32, "{s}-{e}: {}", blocks.len());
            for p in 0..=65535u16 {
                let inside = blocks.iter().any(|(b, m)| p & m == *b);
                assert_eq!(inside, (s..=e).contains(&p), "{s}-{e} port {p}");
            }
        }
    }
}
