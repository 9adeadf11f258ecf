//! Expression evaluation: what a match's left side reads from the packet (payload, meta, ct,
//! fib, numgen, masks, concatenations), and how it compares with the right side (literals,
//! prefixes, keywords, anonymous and named sets, interval sets, dynamic sets).
//!
//! A left side that does not apply to the packet (an IPv4 field of an IPv6 packet, `tcp
//! dport` of a UDP packet, a port of an ICMP packet) makes the rule not match, whatever the
//! operator: nft gives such fields an implicit `meta nfproto`/`meta l4proto` dependency, and
//! the kernel's payload expression breaks the rule when the header is missing.

use crate::expr::{CmpOp, CtKey, Expr, Field, Keyword, MetaKey, Rule};
use crate::model::{Key, L4Proto, MapValue, Table, Value};
use crate::NftError;

use super::packet::CtState;
use super::path::Event;
use super::walk::{Here, Run};

/// What a left side evaluates to.
enum Operand {
    /// Values (several for a concatenation).
    Values(Vec<Value>),
    /// Flags a keyword comparison tests (ct state, ct status, fib type, nfproto).
    Keywords(Vec<Keyword>),
}

impl Run<'_> {
    /// Does `left op right` hold? May fork the path (numgen). The result of the comparison
    /// (without `op`) comes from `compare`.
    pub(crate) fn matches(
        &mut self,
        here: &Here<'_>,
        at: Option<(usize, &Rule)>,
        left: &Expr,
        op: CmpOp,
        right: &Expr,
    ) -> Result<bool, NftError> {
        // `!=` against symbols is a compare of the whole value in the kernel (see the encoder's
        // `ct` bit tests), which "none of these" models only for one symbol of a one-valued
        // field: not for a list, nor for ct status, whose other bits are not modelled.
        if let (CmpOp::Ne, Expr::Keywords(ks)) = (op, right) {
            if ks.len() != 1 || matches!(left, Expr::Ct(CtKey::Status)) {
                return Err(NftError::Invalid(format!(
                    "table {} chain {}: {left:?} != {ks:?} compares the whole value in the \
                     kernel, which is not modelled",
                    here.table.name, here.chain
                )));
            }
        }
        if op == CmpOp::Lt {
            return self.less_than(here, at, left, right);
        }
        let hit = match (left, right) {
            // `numgen random mod k == v`: two ways, matched or not (one when only one can be).
            (Expr::NumgenRandom(k), Expr::Value(v)) => {
                let k = *k;
                let v = numeric(v).ok_or_else(|| {
                    NftError::Invalid(format!("numgen compared with non-number {v:?}"))
                })?;
                if k == 0 {
                    return Err(NftError::Invalid("numgen random mod 0".into()));
                }
                let hit = if v >= u64::from(k) {
                    false
                } else if k == 1 {
                    true
                } else {
                    self.choices.choose(2) == 0
                };
                if v < u64::from(k) {
                    let v = v as u32;
                    let picked = if hit { v } else { u32::from(v == 0) };
                    self.step(here, at, Event::Numgen { modulus: k, picked });
                }
                hit
            }
            _ => {
                let Some(l) = self.eval(here, at, left)? else {
                    return Ok(false);
                };
                self.compare(here, at, l, op, right)?
            }
        };
        Ok(if op == CmpOp::Ne { !hit } else { hit })
    }

    /// `left < right`: `numgen random mod k < v` holds for v of the k values (two ways, or
    /// one when only one can be); otherwise one numeric value against a number.
    fn less_than(
        &mut self,
        here: &Here<'_>,
        at: Option<(usize, &Rule)>,
        left: &Expr,
        right: &Expr,
    ) -> Result<bool, NftError> {
        let invalid = || {
            NftError::Invalid(format!(
                "table {} chain {}: {left:?} < {right:?} is not modelled",
                here.table.name, here.chain
            ))
        };
        let Expr::Value(lit) = right else {
            return Err(invalid());
        };
        let v = numeric(lit).ok_or_else(invalid)?;
        if let Expr::NumgenRandom(k) = left {
            let k = *k;
            if k == 0 {
                return Err(NftError::Invalid("numgen random mod 0".into()));
            }
            if v == 0 {
                return Ok(false);
            }
            if v >= u64::from(k) {
                return Ok(true);
            }
            // Below v (0 stands for those) or not (v stands for the rest).
            let hit = self.choices.choose(2) == 0;
            let picked = if hit { 0 } else { v as u32 };
            self.step(here, at, Event::Numgen { modulus: k, picked });
            return Ok(hit);
        }
        match self.eval(here, at, left)? {
            None => Ok(false),
            Some(Operand::Values(vs)) if vs.len() == 1 => {
                let have = numeric(&vs[0]).ok_or_else(invalid)?;
                Ok(have < v)
            }
            Some(_) => Err(invalid()),
        }
    }

    /// A map or set key (`update`, `vmap`): values only; `None` when it does not apply.
    pub(crate) fn key(
        &mut self,
        here: &Here<'_>,
        at: Option<(usize, &Rule)>,
        e: &Expr,
    ) -> Result<Option<Key>, NftError> {
        match self.eval(here, at, e)? {
            None => Ok(None),
            Some(Operand::Values(v)) => Ok(Some(Key(v))),
            Some(Operand::Keywords(_)) => Err(NftError::Invalid(format!(
                "table {} chain {}: {e:?} as a set key is not modelled",
                here.table.name, here.chain
            ))),
        }
    }

    fn compare(
        &mut self,
        here: &Here<'_>,
        at: Option<(usize, &Rule)>,
        left: Operand,
        op: CmpOp,
        right: &Expr,
    ) -> Result<bool, NftError> {
        let invalid = || {
            NftError::Invalid(format!(
                "table {} chain {}: comparison with {right:?} is not modelled",
                here.table.name, here.chain
            ))
        };
        match (left, right) {
            (Operand::Keywords(have), Expr::Keywords(want)) => {
                Ok(have.iter().any(|k| want.contains(k)))
            }
            (Operand::Values(vs), Expr::Value(lit)) => {
                Ok(vs.len() == 1 && component_matches(lit, &vs[0]))
            }
            (Operand::Values(vs), Expr::Concat(parts)) => {
                let lits: Option<Vec<&Value>> = parts
                    .iter()
                    .map(|p| match p {
                        Expr::Value(v) => Some(v),
                        _ => None,
                    })
                    .collect();
                let lits = lits.ok_or_else(invalid)?;
                Ok(lits.len() == vs.len()
                    && lits.iter().zip(&vs).all(|(l, v)| component_matches(l, v)))
            }
            (Operand::Values(vs), Expr::AnonSet(keys)) => {
                Ok(keys.iter().any(|k| key_matches(k, &vs)))
            }
            (Operand::Values(vs), Expr::Set(name)) => {
                let key = Key(vs);
                let hit = self.in_set(here.table, name, &key)?;
                // A step only where membership made the rule go on (not `!= @set`).
                if hit && op == CmpOp::Eq {
                    self.step(
                        here,
                        at,
                        Event::SetMatch {
                            set: name.clone(),
                            key,
                        },
                    );
                }
                Ok(hit)
            }
            _ => Err(invalid()),
        }
    }

    /// The value(s) of an expression for this packet; `None` when it does not apply. Numgen
    /// forks the path and records what it took at `at`.
    fn eval(
        &mut self,
        here: &Here<'_>,
        at: Option<(usize, &Rule)>,
        e: &Expr,
    ) -> Result<Option<Operand>, NftError> {
        let one = |v: Value| Ok(Some(Operand::Values(vec![v])));
        match e {
            Expr::NumgenRandom(n) => {
                if *n == 0 {
                    return Err(NftError::Invalid("numgen random mod 0".into()));
                }
                let picked = self.choices.choose(*n);
                self.step(
                    here,
                    at,
                    Event::Numgen {
                        modulus: *n,
                        picked,
                    },
                );
                one(Value::Num(picked))
            }
            Expr::And(inner, mask) => {
                let v = match self.eval(here, at, inner)? {
                    None => return Ok(None),
                    Some(Operand::Values(v)) if v.len() == 1 => v.into_iter().next(),
                    _ => None,
                };
                match v {
                    Some(Value::Port(x)) => one(Value::Port(x & (*mask as u16))),
                    Some(Value::Mark(x)) => one(Value::Mark(x & mask)),
                    Some(Value::Num(x)) => one(Value::Num(x & mask)),
                    _ => Err(NftError::Invalid(format!(
                        "mask of {inner:?} is not modelled"
                    ))),
                }
            }
            Expr::Concat(parts) => {
                let mut out = Vec::new();
                for part in parts {
                    match self.eval(here, at, part)? {
                        None => return Ok(None),
                        Some(Operand::Values(v)) => out.extend(v),
                        Some(Operand::Keywords(_)) => {
                            return Err(NftError::Invalid(format!(
                                "{part:?} in a concatenation is not modelled"
                            )))
                        }
                    }
                }
                Ok(Some(Operand::Values(out)))
            }
            _ => self.read(e),
        }
    }

    /// An expression that reads the packet, its metadata or the node, without side effects.
    fn read(&self, e: &Expr) -> Result<Option<Operand>, NftError> {
        let p = &self.packet;
        let one = |v: Value| Ok(Some(Operand::Values(vec![v])));
        let kw = |k: Option<Keyword>| Ok(Some(Operand::Keywords(k.into_iter().collect())));
        match e {
            Expr::Payload(f) => match f {
                Field::IpSaddr if !p.is_ipv6() => one(Value::Addr(p.saddr)),
                Field::IpDaddr if !p.is_ipv6() => one(Value::Addr(p.daddr)),
                Field::Ip6Saddr if p.is_ipv6() => one(Value::Addr(p.saddr)),
                Field::Ip6Daddr if p.is_ipv6() => one(Value::Addr(p.daddr)),
                Field::ThSport if p.has_ports() => one(Value::Port(p.sport)),
                Field::ThDport if p.has_ports() => one(Value::Port(p.dport)),
                Field::TcpDport if p.proto == L4Proto::Tcp => one(Value::Port(p.dport)),
                Field::UdpDport if p.proto == L4Proto::Udp => one(Value::Port(p.dport)),
                Field::TcpFlags if p.proto == L4Proto::Tcp => {
                    one(Value::Num(u32::from(p.tcp_flags)))
                }
                _ => Ok(None),
            },
            Expr::Meta(m) => match m {
                MetaKey::L4proto => one(Value::Proto(p.proto)),
                MetaKey::Nfproto => kw(Some(if p.is_ipv6() {
                    Keyword::Ipv6
                } else {
                    Keyword::Ipv4
                })),
                MetaKey::Mark => one(Value::Mark(p.mark)),
                MetaKey::Iifname => one(Value::Ifname(p.iifname.clone().unwrap_or_default())),
                MetaKey::Oifname => one(Value::Ifname(p.oifname.clone().unwrap_or_default())),
            },
            Expr::Ct(c) => match c {
                CtKey::State => kw(Some(match p.ct {
                    CtState::New => Keyword::New,
                    CtState::Established => Keyword::Established,
                    CtState::Related => Keyword::Related,
                    CtState::Untracked => Keyword::Untracked,
                })),
                CtKey::Status => kw(p.ct_dnat.then_some(Keyword::Dnat)),
                // No statement of the model sets a ct mark: every connection's is 0.
                CtKey::Mark => one(Value::Mark(0)),
            },
            Expr::FibDaddrType => kw(self.env.is_local(p.daddr).then_some(Keyword::Local)),
            Expr::FibSaddrType => kw(self.env.is_local(p.saddr).then_some(Keyword::Local)),
            Expr::Value(v) => one(v.clone()),
            Expr::Keywords(ks) => Ok(Some(Operand::Keywords(ks.clone()))),
            Expr::NumgenRandom(_)
            | Expr::And(..)
            | Expr::Concat(_)
            | Expr::Set(_)
            | Expr::AnonSet(_) => Err(NftError::Invalid(format!(
                "{e:?} on the left of a match is not modelled"
            ))),
        }
    }

    /// Is `key` in set `name` of `table`? Dynamic sets hold only what this run added.
    fn in_set(&self, table: &Table, name: &str, key: &Key) -> Result<bool, NftError> {
        let set = table.sets.get(name).ok_or_else(|| {
            NftError::Invalid(format!("table {}: unknown set @{name}", table.name))
        })?;
        if self
            .dynamic
            .get(&(table.name.clone(), name.to_string()))
            .is_some_and(|s| s.contains(key))
        {
            return Ok(true);
        }
        if set.flags.dynamic {
            return Ok(false);
        }
        Ok(set.elements.contains_key(key)
            || (set.flags.interval && set.elements.keys().any(|k| key_matches(&k.0, &key.0))))
    }

    /// The value map `name` of `table` yields for `key`.
    pub(crate) fn lookup(
        &self,
        table: &Table,
        name: &str,
        key: &Key,
    ) -> Result<Option<MapValue>, NftError> {
        let set = table.sets.get(name).ok_or_else(|| {
            NftError::Invalid(format!("table {}: unknown map @{name}", table.name))
        })?;
        if set.map.is_none() {
            return Err(NftError::Invalid(format!(
                "table {}: @{name} is a set, not a map",
                table.name
            )));
        }
        if let Some(e) = set.elements.get(key) {
            return Ok(e.value.clone());
        }
        if !set.flags.interval {
            return Ok(None);
        }
        Ok(set
            .elements
            .iter()
            .find(|(k, _)| key_matches(&k.0, &key.0))
            .and_then(|(_, e)| e.value.clone()))
    }
}

/// Does a set element (or anonymous set key) match the packet's key, component by component?
fn key_matches(element: &[Value], packet: &[Value]) -> bool {
    element.len() == packet.len()
        && element
            .iter()
            .zip(packet)
            .all(|(e, p)| component_matches(e, p))
}

/// Does a literal or element component match a packet value? Prefixes contain addresses, an
/// interface name ending in `*` matches by prefix (nft's wildcard), numbers compare by value.
fn component_matches(lit: &Value, v: &Value) -> bool {
    match (lit, v) {
        (Value::Prefix(n), Value::Addr(a)) => n.contains(a),
        (Value::Ifname(pat), Value::Ifname(name)) => match pat.strip_suffix('*') {
            Some(stem) => name.starts_with(stem),
            None => pat == name,
        },
        (a, b) if a == b => true,
        (a, b) => matches!((numeric(a), numeric(b)), (Some(x), Some(y)) if x == y),
    }
}

fn numeric(v: &Value) -> Option<u64> {
    match v {
        Value::Port(p) => Some(u64::from(*p)),
        Value::Mark(m) | Value::Num(m) => Some(u64::from(*m)),
        _ => None,
    }
}
