//! The ruleset data: tables, chains, sets/maps and their typed element keys and values.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::expr::{Rule, Verdict};
use crate::NftError;

/// Address family of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 and IPv6 in one table.
    Inet,
    /// IPv4 only.
    Ip,
    /// IPv6 only.
    Ip6,
    /// Frames a Linux bridge forwards, delivers or sends (`NFPROTO_BRIDGE`): the bridge's
    /// own hooks, not the IP ones. The encoder covers what needs no link-layer dependency
    /// (numgen, meta mark and interface names, verdicts, counters, logging).
    Bridge,
}

impl Family {
    /// The keyword nft uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Bridge => "bridge",
        }
    }
}

/// Kind of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// Netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// Default verdict of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    Accept,
    Drop,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Accept => "accept",
            Policy::Drop => "drop",
        }
    }
}

/// What makes a chain a base chain: attached to a hook.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    /// Numeric priority (dstnat = -100, filter = 0, srcnat = 100).
    pub priority: i32,
    pub policy: Policy,
}

/// A chain: a base chain (hooked) or a regular chain reached by jump/goto/vmap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

impl Chain {
    /// A regular chain with no rules yet.
    pub fn new(name: impl Into<String>) -> Self {
        Chain {
            name: name.into(),
            base: None,
            rules: Vec::new(),
        }
    }

    /// A base chain attached to `hook`.
    pub fn base(
        name: impl Into<String>,
        kind: ChainType,
        hook: Hook,
        priority: i32,
        policy: Policy,
    ) -> Self {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                kind,
                hook,
                priority,
                policy,
            }),
            rules: Vec::new(),
        }
    }

    /// Appends a rule (builder style).
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Appends a rule.
    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }
}

/// Type of one component of a set key (or of a map value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Ipv4Addr,
    Ipv6Addr,
    InetProto,
    InetService,
    Mark,
    Ifname,
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::Ipv6Addr => "ipv6_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Mark => "mark",
            DataType::Ifname => "ifname",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ipv4_addr" => DataType::Ipv4Addr,
            "ipv6_addr" => DataType::Ipv6Addr,
            "inet_proto" => DataType::InetProto,
            "inet_service" => DataType::InetService,
            "mark" => DataType::Mark,
            "ifname" => DataType::Ifname,
            _ => return None,
        })
    }

    /// Does `v` fit this type?
    pub(crate) fn accepts(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (DataType::Ipv4Addr, Value::Addr(IpAddr::V4(_)))
                | (DataType::Ipv6Addr, Value::Addr(IpAddr::V6(_)))
                | (DataType::Ipv4Addr, Value::Prefix(IpNet::V4(_)))
                | (DataType::Ipv6Addr, Value::Prefix(IpNet::V6(_)))
                | (DataType::InetProto, Value::Proto(_))
                | (DataType::InetService, Value::Port(_))
                | (DataType::Mark, Value::Mark(_))
                | (DataType::Ifname, Value::Ifname(_))
        )
    }
}

/// Layer-4 protocols sarasa matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4Proto {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
}

impl From<sarasa_model::Protocol> for L4Proto {
    fn from(p: sarasa_model::Protocol) -> Self {
        match p {
            sarasa_model::Protocol::Tcp => L4Proto::Tcp,
            sarasa_model::Protocol::Udp => L4Proto::Udp,
            sarasa_model::Protocol::Sctp => L4Proto::Sctp,
        }
    }
}

impl L4Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
            L4Proto::Sctp => "sctp",
            L4Proto::Icmp => "icmp",
            L4Proto::Icmpv6 => "ipv6-icmp",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tcp" | "6" => L4Proto::Tcp,
            "udp" | "17" => L4Proto::Udp,
            "sctp" | "132" => L4Proto::Sctp,
            "icmp" | "1" => L4Proto::Icmp,
            "ipv6-icmp" | "icmpv6" | "58" => L4Proto::Icmpv6,
            _ => return None,
        })
    }

    pub(crate) fn from_number(n: u64) -> Option<Self> {
        Some(match n {
            6 => L4Proto::Tcp,
            17 => L4Proto::Udp,
            132 => L4Proto::Sctp,
            1 => L4Proto::Icmp,
            58 => L4Proto::Icmpv6,
            _ => return None,
        })
    }
}

/// One typed value: a component of a set key, or a literal in a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Addr(IpAddr),
    /// An address prefix (needs an `interval` set when used as an element).
    Prefix(IpNet),
    Proto(L4Proto),
    Port(u16),
    Mark(u32),
    Ifname(String),
    /// A plain number (e.g. compared with `numgen`); fits no set key type.
    Num(u32),
}

impl From<IpAddr> for Value {
    fn from(a: IpAddr) -> Self {
        Value::Addr(a)
    }
}

impl From<IpNet> for Value {
    fn from(n: IpNet) -> Self {
        Value::Prefix(n)
    }
}

impl From<L4Proto> for Value {
    fn from(p: L4Proto) -> Self {
        Value::Proto(p)
    }
}

/// A set key: one value, or several for a concatenation (`a . b . c`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub Vec<Value>);

impl Key {
    /// A key of one value.
    pub fn one(v: impl Into<Value>) -> Self {
        Key(vec![v.into()])
    }
}

/// What a map yields.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapType {
    /// A verdict map (`vmap`).
    Verdict,
    /// A data map yielding values of these types.
    Data(Vec<DataType>),
}

/// Value of a map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapValue {
    Verdict(Verdict),
    Data(Key),
}

/// One set or map element's extra data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Element {
    /// The map value (`None` for plain sets).
    pub value: Option<MapValue>,
    /// Per-element timeout in seconds (sets with the `timeout` flag).
    pub timeout: Option<u32>,
    pub comment: Option<String>,
}

impl Element {
    /// A map element yielding `verdict`.
    pub fn verdict(verdict: Verdict) -> Self {
        Element {
            value: Some(MapValue::Verdict(verdict)),
            ..Element::default()
        }
    }
}

/// Set flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SetFlags {
    /// Elements are prefixes/ranges.
    pub interval: bool,
    /// Elements may expire.
    pub timeout: bool,
    /// The datapath adds elements (`update @set`); the diff never touches such elements.
    pub dynamic: bool,
}

/// A named set (`map == None`) or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    /// Key type: several types form a concatenation.
    pub key: Vec<DataType>,
    pub map: Option<MapType>,
    pub flags: SetFlags,
    /// Default element timeout in seconds.
    pub timeout: Option<u32>,
    pub comment: Option<String>,
    pub elements: BTreeMap<Key, Element>,
}

impl Set {
    /// An empty set with key type `key`.
    pub fn new(name: impl Into<String>, key: Vec<DataType>) -> Self {
        Set {
            name: name.into(),
            key,
            map: None,
            flags: SetFlags::default(),
            timeout: None,
            comment: None,
            elements: BTreeMap::new(),
        }
    }

    /// An empty verdict map with key type `key`.
    pub fn verdict_map(name: impl Into<String>, key: Vec<DataType>) -> Self {
        Set {
            map: Some(MapType::Verdict),
            ..Set::new(name, key)
        }
    }

    /// True when the datapath owns the elements (dynamic sets).
    pub fn elements_managed(&self) -> bool {
        !self.flags.dynamic
    }

    /// Adds a set element.
    pub fn insert(&mut self, key: Key) {
        self.elements.insert(key, Element::default());
    }

    /// Adds a verdict-map element.
    pub fn insert_verdict(&mut self, key: Key, verdict: Verdict) {
        self.elements.insert(key, Element::verdict(verdict));
    }

    /// True when two sets have the same declaration (elements aside).
    pub fn same_declaration(&self, other: &Set) -> bool {
        self.name == other.name
            && self.key == other.key
            && self.map == other.map
            && self.flags == other.flags
            && self.timeout == other.timeout
            && self.comment == other.comment
    }
}

/// A table sarasa owns, with everything in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
}

impl Table {
    /// An empty table.
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Table {
            family,
            name: name.into(),
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a chain.
    pub fn add_chain(&mut self, chain: Chain) {
        self.chains.insert(chain.name.clone(), chain);
    }

    /// Adds (or replaces) a set or map.
    pub fn add_set(&mut self, set: Set) {
        self.sets.insert(set.name.clone(), set);
    }

    /// Checks names, comments, element types and references (jump targets, `@set`s).
    pub fn validate(&self) -> Result<(), NftError> {
        check_name(&self.name)?;
        for set in self.sets.values() {
            check_name(&set.name)?;
            if let Some(c) = &set.comment {
                check_comment(c)?;
            }
            if set.key.is_empty() {
                return Err(NftError::Invalid(format!(
                    "set {}: empty key type",
                    set.name
                )));
            }
            for (key, elem) in &set.elements {
                check_key(&set.name, &set.key, key)?;
                if let Some(c) = &elem.comment {
                    check_comment(c)?;
                }
                match (&set.map, &elem.value) {
                    (None, None) => {}
                    (Some(MapType::Verdict), Some(MapValue::Verdict(v))) => {
                        self.check_verdict(&format!("map {}", set.name), v)?
                    }
                    (Some(MapType::Data(types)), Some(MapValue::Data(k))) => {
                        check_key(&set.name, types, k)?
                    }
                    _ => {
                        return Err(NftError::Invalid(format!(
                            "set {}: element value does not match the map type",
                            set.name
                        )))
                    }
                }
            }
        }
        for chain in self.chains.values() {
            check_name(&chain.name)?;
            for rule in &chain.rules {
                if let Some(c) = &rule.comment {
                    check_comment(c)?;
                }
                let mut err = None;
                rule.visit_refs(&mut |r| {
                    if err.is_some() {
                        return;
                    }
                    match r {
                        crate::expr::Ref::Chain(c) if !self.chains.contains_key(c) => {
                            err = Some(format!("chain {}: jump to unknown chain {c}", chain.name))
                        }
                        crate::expr::Ref::Set(s) if !self.sets.contains_key(s) => {
                            err = Some(format!("chain {}: unknown set @{s}", chain.name))
                        }
                        _ => {}
                    }
                });
                if let Some(e) = err {
                    return Err(NftError::Invalid(e));
                }
            }
        }
        Ok(())
    }

    fn check_verdict(&self, what: &str, v: &Verdict) -> Result<(), NftError> {
        match v {
            Verdict::Jump(c) | Verdict::Goto(c) if !self.chains.contains_key(c) => Err(
                NftError::Invalid(format!("{what}: verdict refers to unknown chain {c}")),
            ),
            _ => Ok(()),
        }
    }
}

fn check_key(set: &str, types: &[DataType], key: &Key) -> Result<(), NftError> {
    if key.0.len() != types.len() || !types.iter().zip(&key.0).all(|(t, v)| t.accepts(v)) {
        return Err(NftError::Invalid(format!(
            "set {set}: element {key:?} does not match type {types:?}"
        )));
    }
    Ok(())
}

/// Checks that nft accepts `name` unquoted as a table, chain or set name.
pub(crate) fn check_name(name: &str) -> Result<(), NftError> {
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        }
        _ => false,
    } && name.len() <= 200
        && !is_keyword(name);
    if ok {
        Ok(())
    } else {
        Err(NftError::InvalidName(name.to_string()))
    }
}

/// Words nft's parser would read as keywords where a name is expected.
fn is_keyword(name: &str) -> bool {
    matches!(
        name,
        "table"
            | "chain"
            | "set"
            | "map"
            | "element"
            | "rule"
            | "ip"
            | "ip6"
            | "inet"
            | "bridge"
            | "tcp"
            | "udp"
            | "accept"
            | "drop"
            | "jump"
            | "goto"
            | "return"
            | "counter"
            | "meta"
    )
}

pub(crate) fn check_comment(c: &str) -> Result<(), NftError> {
    if c.len() > 100 || c.contains('"') || c.contains('\n') || c.contains('\\') {
        Err(NftError::InvalidComment(c.to_string()))
    } else {
        Ok(())
    }
}
