//! What the kernel holds, read back from `nft -j list table`: enough to diff against a model.
//!
//! Rules are not parsed: each chain's content hash is read from the comment of its last rule
//! (written by the renderer), each set's declaration hash from its comment. Elements are
//! parsed into typed keys so they compare with the model's.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value as Json;

use crate::diff::{ChainCmp, Old};
use crate::expr::Verdict;
use crate::model::{
    BaseChain, Chain, ChainType, DataType, Element, Family, Hook, Key, L4Proto, MapValue, Policy,
    Set, Value,
};
use crate::render::{self, HASH_MARK};
use crate::NftError;

/// A chain as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelChain {
    pub base: Option<BaseChain>,
    /// Content hash from the last rule's comment; `None` when absent (always rewritten).
    pub hash: Option<u64>,
    pub rule_count: usize,
}

/// A set or map as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSet {
    /// Declaration hash from the set's comment; `None` when absent (always redeclared).
    pub decl_hash: Option<u64>,
    pub elements: BTreeMap<Key, Element>,
}

/// One table read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTable {
    pub family: Family,
    pub name: String,
    pub chains: BTreeMap<String, KernelChain>,
    pub sets: BTreeMap<String, KernelSet>,
}

impl KernelTable {
    /// Parses the output of `nft -j list table <family> <name>`.
    pub fn parse(json: &str, family: Family, name: &str) -> Result<KernelTable, NftError> {
        let doc: Json = serde_json::from_str(json).map_err(|e| NftError::Parse(e.to_string()))?;
        let items = doc
            .get("nftables")
            .and_then(Json::as_array)
            .ok_or_else(|| NftError::Parse("no \"nftables\" array".into()))?;
        let mut t = KernelTable {
            family,
            name: name.to_string(),
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
        };
        let mut last_comment: BTreeMap<String, Option<String>> = BTreeMap::new();
        for item in items {
            let Some((kind, obj)) = item.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let in_table = obj.get("table").and_then(Json::as_str) == Some(name)
                && obj.get("family").and_then(Json::as_str) == Some(family.as_str());
            if !in_table {
                continue;
            }
            match kind.as_str() {
                "chain" => {
                    let cname = str_field(obj, "name")?;
                    t.chains.insert(
                        cname.to_string(),
                        KernelChain {
                            base: parse_base(obj)?,
                            hash: None,
                            rule_count: 0,
                        },
                    );
                }
                "rule" => {
                    let cname = str_field(obj, "chain")?;
                    let c = t.chains.get_mut(cname).ok_or_else(|| {
                        NftError::Parse(format!("rule of unlisted chain {cname}"))
                    })?;
                    c.rule_count += 1;
                    last_comment.insert(
                        cname.to_string(),
                        obj.get("comment")
                            .and_then(Json::as_str)
                            .map(str::to_string),
                    );
                }
                "set" | "map" => {
                    let sname = str_field(obj, "name")?;
                    t.sets.insert(sname.to_string(), parse_set(obj, sname)?);
                }
                _ => {}
            }
        }
        for (cname, c) in t.chains.iter_mut() {
            let last = last_comment.get(cname).and_then(|c| c.as_deref());
            c.hash = chain_hash_of(c.rule_count, last);
        }
        Ok(t)
    }
}

/// A chain's content hash from its rule count and its last rule's comment (an empty chain
/// has the hash of an empty model chain).
pub(crate) fn chain_hash_of(rule_count: usize, last_comment: Option<&str>) -> Option<u64> {
    if rule_count == 0 {
        Some(render::chain_hash(&Chain::new("x")))
    } else {
        last_comment.and_then(hash_of_comment)
    }
}

pub(crate) fn hash_of_comment(c: &str) -> Option<u64> {
    let at = c.rfind(HASH_MARK)?;
    u64::from_str_radix(&c[at + HASH_MARK.len()..], 16).ok()
}

fn str_field<'a>(obj: &'a Json, key: &str) -> Result<&'a str, NftError> {
    obj.get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| NftError::Parse(format!("missing string field {key:?} in {obj}")))
}

fn parse_base(obj: &Json) -> Result<Option<BaseChain>, NftError> {
    let Some(hook) = obj.get("hook").and_then(Json::as_str) else {
        return Ok(None);
    };
    let hook = match hook {
        "prerouting" => Hook::Prerouting,
        "input" => Hook::Input,
        "forward" => Hook::Forward,
        "output" => Hook::Output,
        "postrouting" => Hook::Postrouting,
        other => return Err(NftError::Parse(format!("unknown hook {other}"))),
    };
    let kind = match obj.get("type").and_then(Json::as_str) {
        Some("filter") => ChainType::Filter,
        Some("nat") => ChainType::Nat,
        Some("route") => ChainType::Route,
        other => return Err(NftError::Parse(format!("unknown chain type {other:?}"))),
    };
    let priority = obj
        .get("prio")
        .and_then(Json::as_i64)
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| NftError::Parse(format!("chain priority in {obj}")))?;
    let policy = match obj.get("policy").and_then(Json::as_str) {
        Some("drop") => Policy::Drop,
        _ => Policy::Accept,
    };
    Ok(Some(BaseChain {
        kind,
        hook,
        priority,
        policy,
    }))
}

fn parse_types(v: Option<&Json>, what: &str) -> Result<Vec<DataType>, NftError> {
    let names: Vec<&str> = match v {
        // nft writes a concatenated map value type as one string ("ipv4_addr . inet_service").
        Some(Json::String(s)) => s.split(" . ").collect(),
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_str).collect(),
        _ => return Err(NftError::Parse(format!("{what}: missing type"))),
    };
    names
        .into_iter()
        .map(|n| DataType::parse(n).ok_or_else(|| NftError::Parse(format!("{what}: type {n}"))))
        .collect()
}

fn parse_set(obj: &Json, name: &str) -> Result<KernelSet, NftError> {
    let decl_hash = obj
        .get("comment")
        .and_then(Json::as_str)
        .and_then(hash_of_comment);
    let key_types = parse_types(obj.get("type"), name)?;
    let map = obj.get("map");
    let verdict_map = map.and_then(Json::as_str) == Some("verdict");
    let data_types = match map {
        Some(m) if !verdict_map => Some(parse_types(Some(m), name)?),
        _ => None,
    };
    let mut elements = BTreeMap::new();
    for e in obj
        .get("elem")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let (k, v) = match (map, e) {
            (Some(_), Json::Array(pair)) if pair.len() == 2 => (&pair[0], Some(&pair[1])),
            (Some(_), _) => return Err(NftError::Parse(format!("map {name}: element {e}"))),
            (None, _) => (e, None),
        };
        let (kval, timeout, comment) = unwrap_elem(k);
        let key = parse_key(kval, &key_types, name)?;
        let value = match v {
            None => None,
            Some(v) if verdict_map => Some(MapValue::Verdict(parse_verdict(v, name)?)),
            Some(v) => Some(MapValue::Data(parse_key(
                v,
                data_types.as_deref().unwrap_or(&[]),
                name,
            )?)),
        };
        elements.insert(
            key,
            Element {
                value,
                timeout,
                comment,
            },
        );
    }
    Ok(KernelSet {
        decl_hash,
        elements,
    })
}

/// `{"elem": {"val": X, "timeout": n, "comment": c}}` → (X, timeout, comment).
fn unwrap_elem(v: &Json) -> (&Json, Option<u32>, Option<String>) {
    match v.get("elem") {
        Some(inner) => (
            inner.get("val").unwrap_or(inner),
            inner
                .get("timeout")
                .and_then(Json::as_u64)
                .and_then(|t| u32::try_from(t).ok()),
            inner
                .get("comment")
                .and_then(Json::as_str)
                .map(str::to_string),
        ),
        None => (v, None, None),
    }
}

fn parse_key(v: &Json, types: &[DataType], set: &str) -> Result<Key, NftError> {
    let parts: Vec<&Json> = match v.get("concat").and_then(Json::as_array) {
        Some(a) => a.iter().collect(),
        None => vec![v],
    };
    if parts.len() != types.len() {
        return Err(NftError::Parse(format!(
            "set {set}: element {v} does not match {types:?}"
        )));
    }
    parts
        .into_iter()
        .zip(types)
        .map(|(p, t)| parse_value(p, *t, set))
        .collect::<Result<Vec<_>, _>>()
        .map(Key)
}

fn parse_value(v: &Json, t: DataType, set: &str) -> Result<Value, NftError> {
    let bad = || NftError::Parse(format!("set {set}: value {v} of type {}", t.as_str()));
    Ok(match t {
        DataType::Ipv4Addr | DataType::Ipv6Addr => {
            if let Some(p) = v.get("prefix") {
                let addr: IpAddr = p
                    .get("addr")
                    .and_then(Json::as_str)
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(bad)?;
                let len = p
                    .get("len")
                    .and_then(Json::as_u64)
                    .and_then(|l| u8::try_from(l).ok())
                    .ok_or_else(bad)?;
                Value::Prefix(ipnet::IpNet::new(addr, len).map_err(|_| bad())?)
            } else {
                Value::Addr(v.as_str().and_then(|a| a.parse().ok()).ok_or_else(bad)?)
            }
        }
        DataType::InetProto => Value::Proto(match v {
            Json::String(s) => L4Proto::parse(s).ok_or_else(bad)?,
            Json::Number(n) => n.as_u64().and_then(L4Proto::from_number).ok_or_else(bad)?,
            _ => return Err(bad()),
        }),
        DataType::InetService => Value::Port(
            match v {
                Json::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
                Json::String(s) => s.parse().ok(),
                _ => None,
            }
            .ok_or_else(bad)?,
        ),
        DataType::Mark => Value::Mark(
            v.as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(bad)?,
        ),
        DataType::Ifname => Value::Ifname(v.as_str().ok_or_else(bad)?.to_string()),
    })
}

fn parse_verdict(v: &Json, set: &str) -> Result<Verdict, NftError> {
    let target = |k: &str| {
        v.get(k)
            .and_then(|t| t.get("target"))
            .and_then(Json::as_str)
            .map(str::to_string)
    };
    if let Some(t) = target("goto") {
        return Ok(Verdict::Goto(t));
    }
    if let Some(t) = target("jump") {
        return Ok(Verdict::Jump(t));
    }
    let o = v.as_object();
    let has = |k: &str| o.is_some_and(|o| o.contains_key(k));
    Ok(if has("accept") {
        Verdict::Accept
    } else if has("drop") {
        Verdict::Drop
    } else if has("continue") {
        Verdict::Continue
    } else if has("return") {
        Verdict::Return
    } else {
        return Err(NftError::Parse(format!("map {set}: verdict {v}")));
    })
}

impl Old for KernelTable {
    fn exists(&self) -> bool {
        true
    }
    fn chain_names(&self) -> Vec<&str> {
        self.chains.keys().map(String::as_str).collect()
    }
    fn compare_chain(&self, new: &Chain) -> ChainCmp {
        match self.chains.get(&new.name) {
            None => ChainCmp::Absent,
            Some(old) if old.base != new.base => ChainCmp::Redefined,
            Some(old) if old.hash == Some(render::chain_hash(new)) => ChainCmp::Same,
            Some(_) => ChainCmp::Changed,
        }
    }
    fn set_names(&self) -> Vec<&str> {
        self.sets.keys().map(String::as_str).collect()
    }
    fn compare_set(&self, new: &Set) -> Option<bool> {
        self.sets
            .get(&new.name)
            .map(|s| s.decl_hash == Some(render::set_decl(new).1))
    }
    fn elements(&self, set: &str) -> Option<&BTreeMap<Key, Element>> {
        self.sets.get(set).map(|s| &s.elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "sarasa", "handle": 1}},
 {"set": {"family": "inet", "name": "aff", "table": "sarasa", "type": "ipv4_addr", "handle": 5, "flags": ["timeout"], "timeout": 10800,
   "elem": [{"elem": {"val": "1.2.3.4", "timeout": 10, "expires": 9}}]}},
 {"set": {"family": "inet", "name": "nets", "table": "sarasa", "type": "ipv4_addr", "flags": ["interval"], "comment": "sarasa:00000000000000ff",
   "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}]}},
 {"map": {"family": "inet", "name": "m1", "table": "sarasa", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 6, "map": "verdict",
   "elem": [[{"concat": ["10.0.0.2", "udp", 53]}, {"jump": {"target": "b"}}], [{"concat": ["10.0.0.1", "tcp", 80]}, {"goto": {"target": "a"}}]]}},
 {"chain": {"family": "inet", "table": "sarasa", "name": "a", "handle": 1}},
 {"chain": {"family": "inet", "table": "sarasa", "name": "pre", "handle": 3, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "sarasa", "chain": "a", "handle": 12, "comment": "x sarasa:00000000000000ab", "expr": []}}
]}"#;

    #[test]
    fn parses_chains_sets_and_elements() {
        let t = KernelTable::parse(LISTING, Family::Inet, "sarasa").unwrap();
        assert_eq!(t.chains["a"].hash, Some(0xab));
        assert_eq!(t.chains["a"].rule_count, 1);
        let pre = t.chains["pre"].base.as_ref().unwrap();
        assert_eq!((pre.hook, pre.priority), (Hook::Prerouting, -100));
        assert_eq!(
            t.chains["pre"].hash,
            Some(render::chain_hash(&Chain::new("e")))
        );
        assert_eq!(t.sets["nets"].decl_hash, Some(0xff));
        assert_eq!(t.sets["aff"].decl_hash, None);
        let k = Key(vec![
            Value::Addr("10.0.0.1".parse().unwrap()),
            Value::Proto(L4Proto::Tcp),
            Value::Port(80),
        ]);
        assert_eq!(
            t.sets["m1"].elements[&k].value,
            Some(MapValue::Verdict(Verdict::Goto("a".into())))
        );
        assert_eq!(t.sets["aff"].elements.len(), 1);
        assert_eq!(
            t.sets["nets"].elements.keys().next().unwrap().0[0],
            Value::Prefix("10.0.0.0/8".parse().unwrap())
        );
    }

    #[test]
    fn bad_listing_is_an_error() {
        assert!(KernelTable::parse("{}", Family::Inet, "sarasa").is_err());
        let bad = r#"{"nftables": [{"map": {"family": "inet", "name": "m", "table": "sarasa", "type": "ipv4_addr", "map": "verdict", "elem": [[ "nope", {"accept": null}]]}}]}"#;
        assert!(KernelTable::parse(bad, Family::Inet, "sarasa").is_err());
    }
}
