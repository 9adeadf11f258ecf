//! An interpreter of the nftables model for the subset this crate emits: what the compiled
//! table does with one packet. Tests check it against [`crate::eval`]; `sarasa trace` can use
//! it to name the chain and rule that decided.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sarasa_nft::{
    CmpOp, CtKey, Expr, Field, Key, Keyword, L4Proto, MapValue, MetaKey, Stmt, Table, Value,
    Verdict,
};

use crate::PolicyError;

/// A packet as the forward hook sees it (after service DNAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub protocol: L4Proto,
    pub dport: u16,
    /// Conntrack says established (a reply or later packet of an allowed connection).
    pub established: bool,
}

/// What the table did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub accepted: bool,
    /// Chains entered, in order (the base chain first).
    pub chains: Vec<String>,
    /// `chain#index` of the rule that gave the final verdict (`None`: the base policy).
    pub decided_by: Option<String>,
    /// Prefixes of `log` statements executed.
    pub logs: Vec<String>,
}

/// Runs `packet` through base chain `chain` of `table`. Dynamic sets start empty.
pub fn trace(table: &Table, chain: &str, packet: &Packet) -> Result<Trace, PolicyError> {
    let mut run = Run {
        table,
        packet,
        dynamic: BTreeMap::new(),
        trace: Trace {
            accepted: true,
            chains: Vec::new(),
            decided_by: None,
            logs: Vec::new(),
        },
    };
    let base_policy_accept = match table.chains.get(chain).and_then(|c| c.base.as_ref()) {
        Some(b) => b.policy == sarasa_nft::Policy::Accept,
        None => return Err(PolicyError::new("chain", format!("no base chain {chain}"))),
    };
    match run.chain(chain, 0)? {
        Flow::Final(accept, at) => {
            run.trace.accepted = accept;
            run.trace.decided_by = Some(at);
        }
        Flow::Next | Flow::Return => run.trace.accepted = base_policy_accept,
    }
    Ok(run.trace)
}

enum Flow {
    /// Accept (true) or drop, and where.
    Final(bool, String),
    /// Fell off the end of the chain (or `continue`).
    Next,
    Return,
}

struct Run<'a> {
    table: &'a Table,
    packet: &'a Packet,
    dynamic: BTreeMap<String, BTreeSet<Key>>,
    trace: Trace,
}

impl Run<'_> {
    fn chain(&mut self, name: &str, depth: usize) -> Result<Flow, PolicyError> {
        if depth > 16 {
            return Err(PolicyError::new("chain", format!("jump loop at {name}")));
        }
        let chain = self
            .table
            .chains
            .get(name)
            .ok_or_else(|| PolicyError::new("chain", format!("unknown chain {name}")))?;
        self.trace.chains.push(name.to_string());
        'rules: for (i, rule) in chain.rules.iter().enumerate() {
            let at = format!("{name}#{i}");
            for s in &rule.stmts {
                let verdict = match s {
                    Stmt::Match { left, op, right } => {
                        let hit = self.matches(left, right)?;
                        let hit = if *op == CmpOp::Ne { !hit } else { hit };
                        if !hit {
                            continue 'rules;
                        }
                        continue;
                    }
                    Stmt::Counter => continue,
                    Stmt::Log { prefix, .. } => {
                        self.trace.logs.push(prefix.clone().unwrap_or_default());
                        continue;
                    }
                    Stmt::UpdateSet { set, key, .. } => {
                        let Some(k) = self.eval(key)? else {
                            continue 'rules;
                        };
                        self.dynamic.entry(set.clone()).or_default().insert(Key(k));
                        continue;
                    }
                    Stmt::Vmap { key, map } => {
                        let Some(k) = self.eval(key)? else {
                            continue 'rules;
                        };
                        match self.lookup_value(map, &Key(k))? {
                            Some(MapValue::Verdict(v)) => v,
                            _ => continue 'rules,
                        }
                    }
                    Stmt::Verdict(v) => v.clone(),
                    other => {
                        return Err(PolicyError::new(
                            "rule",
                            format!("{at}: statement {other:?} is not modelled"),
                        ))
                    }
                };
                match verdict {
                    Verdict::Accept => return Ok(Flow::Final(true, at)),
                    Verdict::Drop => return Ok(Flow::Final(false, at)),
                    Verdict::Continue => continue 'rules,
                    Verdict::Return => return Ok(Flow::Return),
                    Verdict::Jump(c) => match self.chain(&c, depth + 1)? {
                        f @ Flow::Final(..) => return Ok(f),
                        Flow::Next | Flow::Return => continue 'rules,
                    },
                    Verdict::Goto(c) => return self.chain(&c, depth + 1),
                }
            }
        }
        Ok(Flow::Next)
    }

    /// The value(s) of an expression for this packet; `None` when it does not apply (an IPv4
    /// field of an IPv6 packet: the rule does not match).
    fn eval(&self, e: &Expr) -> Result<Option<Vec<Value>>, PolicyError> {
        let p = self.packet;
        let one = |v: Value| Ok(Some(vec![v]));
        match e {
            Expr::Payload(f) => match f {
                Field::IpSaddr | Field::IpDaddr | Field::Ip6Saddr | Field::Ip6Daddr => {
                    let v6 = matches!(f, Field::Ip6Saddr | Field::Ip6Daddr);
                    if p.saddr.is_ipv6() != v6 {
                        return Ok(None);
                    }
                    one(Value::Addr(
                        if matches!(f, Field::IpSaddr | Field::Ip6Saddr) {
                            p.saddr
                        } else {
                            p.daddr
                        },
                    ))
                }
                Field::ThDport => one(Value::Port(p.dport)),
                Field::TcpDport if p.protocol == L4Proto::Tcp => one(Value::Port(p.dport)),
                Field::UdpDport if p.protocol == L4Proto::Udp => one(Value::Port(p.dport)),
                _ => Ok(None),
            },
            Expr::Meta(MetaKey::L4proto) => one(Value::Proto(p.protocol)),
            Expr::Concat(parts) => {
                let mut out = Vec::new();
                for part in parts {
                    match self.eval(part)? {
                        Some(v) => out.extend(v),
                        None => return Ok(None),
                    }
                }
                Ok(Some(out))
            }
            Expr::And(inner, mask) => match self.eval(inner)?.as_deref() {
                Some([Value::Port(port)]) => one(Value::Port(port & (*mask as u16))),
                _ => Err(PolicyError::new("rule", format!("mask of {inner:?}"))),
            },
            other => Err(PolicyError::new(
                "rule",
                format!("expression {other:?} is not modelled"),
            )),
        }
    }

    fn matches(&self, left: &Expr, right: &Expr) -> Result<bool, PolicyError> {
        let p = self.packet;
        match left {
            Expr::Meta(MetaKey::Nfproto) => {
                let k = if p.saddr.is_ipv6() {
                    Keyword::Ipv6
                } else {
                    Keyword::Ipv4
                };
                return Ok(matches!(right, Expr::Keywords(ks) if ks.contains(&k)));
            }
            Expr::Ct(CtKey::State) => {
                let k = if p.established {
                    Keyword::Established
                } else {
                    Keyword::New
                };
                return Ok(matches!(right, Expr::Keywords(ks) if ks.contains(&k)));
            }
            _ => {}
        }
        let Some(v) = self.eval(left)? else {
            return Ok(false);
        };
        match right {
            Expr::Value(r) => Ok(v.len() == 1 && &v[0] == r),
            Expr::AnonSet(keys) => Ok(keys.contains(&v)),
            Expr::Set(name) => Ok(self.in_set(name, &Key(v))?),
            other => Err(PolicyError::new(
                "rule",
                format!("right side {other:?} is not modelled"),
            )),
        }
    }

    fn in_set(&self, name: &str, key: &Key) -> Result<bool, PolicyError> {
        let set = self
            .table
            .sets
            .get(name)
            .ok_or_else(|| PolicyError::new("rule", format!("unknown set @{name}")))?;
        if set.flags.dynamic {
            return Ok(self.dynamic.get(name).is_some_and(|s| s.contains(key)));
        }
        if set.elements.contains_key(key) {
            return Ok(true);
        }
        Ok(set.flags.interval
            && set.elements.keys().any(|k| match (&k.0[..], &key.0[..]) {
                ([Value::Prefix(n)], [Value::Addr(a)]) => n.contains(a),
                _ => false,
            }))
    }

    fn lookup_value(&self, name: &str, key: &Key) -> Result<Option<MapValue>, PolicyError> {
        let set = self
            .table
            .sets
            .get(name)
            .ok_or_else(|| PolicyError::new("rule", format!("unknown map @{name}")))?;
        Ok(set.elements.get(key).and_then(|e| e.value.clone()))
    }
}
