//! Reads a table back from the block syntax [`Table::render`] writes (what the proxy bench's
//! `--write` produces), so the bench can program "the same table" natively. Only that output
//! is understood; the caller checks `render(parse(text)) == text`.

use std::net::IpAddr;

use sarasa_nft::*;

type R<T> = Result<T, String>;

const HASH_MARK: &str = "sarasa:";

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    W(String),
    Q(String),
    Comma,
}

/// Words, quoted strings and list commas (a comma ending a word).
fn tokens(s: &str) -> R<Vec<Tok>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut q = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => q.push(c),
                    None => return Err(format!("unterminated string in {s:?}")),
                }
            }
            out.push(Tok::Q(q));
            if chars.peek() == Some(&',') {
                chars.next();
                out.push(Tok::Comma);
            }
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            if let Some(stripped) = w.strip_suffix(',') {
                out.push(Tok::W(stripped.to_string()));
                out.push(Tok::Comma);
            } else {
                out.push(Tok::W(w));
            }
        }
    }
    Ok(out)
}

/// A user comment and the hash the renderer appended (`"c sarasa:h"` or `"sarasa:h"`).
fn split_hash(c: &str) -> Option<String> {
    let at = c.rfind(HASH_MARK)?;
    let user = c[..at].trim_end();
    (!user.is_empty()).then(|| user.to_string())
}

fn data_type(s: &str) -> R<DataType> {
    use DataType::*;
    [Ipv4Addr, Ipv6Addr, InetProto, InetService, Mark, Ifname]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| format!("unknown type {s}"))
}

fn proto(s: &str) -> R<L4Proto> {
    use L4Proto::*;
    [Tcp, Udp, Sctp, Icmp, Icmpv6]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("unknown protocol {s}"))
}

fn hex(s: &str) -> R<u32> {
    let h = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("not hex: {s}"))?;
    u32::from_str_radix(h, 16).map_err(|e| format!("{s}: {e}"))
}

fn num<T: std::str::FromStr>(s: &str) -> R<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| format!("{s}: {e}"))
}

/// One `tcp flags` bit by name.
fn tcp_flag(s: &str) -> R<u32> {
    [
        (TCP_FIN, "fin"),
        (TCP_SYN, "syn"),
        (TCP_RST, "rst"),
        (TCP_PSH, "psh"),
        (TCP_ACK, "ack"),
        (TCP_URG, "urg"),
        (TCP_ECN, "ecn"),
        (TCP_CWR, "cwr"),
    ]
    .into_iter()
    .find(|(_, n)| *n == s)
    .map(|(b, _)| b)
    .ok_or_else(|| format!("unknown tcp flag {s}"))
}

fn seconds(s: &str) -> R<u32> {
    num(s
        .strip_suffix('s')
        .ok_or_else(|| format!("not seconds: {s}"))?)
}

/// What the values compared with an expression look like.
#[derive(Clone, Copy, Debug)]
enum VKind {
    Type(DataType),
    Num,
    Keywords,
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn new(s: &str) -> R<P> {
        Ok(P {
            t: tokens(s)?,
            i: 0,
        })
    }
    fn peek(&self) -> Option<&str> {
        self.peek_at(0)
    }
    fn peek_at(&self, n: usize) -> Option<&str> {
        match self.t.get(self.i + n) {
            Some(Tok::W(w)) => Some(w),
            _ => None,
        }
    }
    fn tok(&mut self) -> R<Tok> {
        let t = self
            .t
            .get(self.i)
            .cloned()
            .ok_or_else(|| "unexpected end".to_string())?;
        self.i += 1;
        Ok(t)
    }
    fn word(&mut self) -> R<String> {
        match self.tok()? {
            Tok::W(w) => Ok(w),
            t => Err(format!("expected a word, got {t:?}")),
        }
    }
    fn quoted(&mut self) -> R<String> {
        match self.tok()? {
            Tok::Q(q) => Ok(q),
            t => Err(format!("expected a string, got {t:?}")),
        }
    }
    fn expect(&mut self, w: &str) -> R<()> {
        let got = self.word()?;
        if got == w {
            Ok(())
        } else {
            Err(format!("expected {w}, got {got}"))
        }
    }
    fn eat(&mut self, w: &str) -> bool {
        if self.peek() == Some(w) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_comma(&mut self) -> bool {
        if self.t.get(self.i) == Some(&Tok::Comma) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    /// `tcp flags` bits: `syn`, `(syn | rst)` or a number.
    fn tcp_flags(&mut self) -> R<u32> {
        let w = self.word()?;
        let Some(first) = w.strip_prefix('(') else {
            return num(&w).or_else(|_| tcp_flag(&w));
        };
        let mut bits = tcp_flag(first)?;
        loop {
            self.expect("|")?;
            let w = self.word()?;
            match w.strip_suffix(')') {
                Some(last) => return Ok(bits | tcp_flag(last)?),
                None => bits |= tcp_flag(&w)?,
            }
        }
    }

    fn done(&self) -> bool {
        self.i >= self.t.len()
    }

    fn value(&mut self, k: VKind) -> R<Value> {
        Ok(match k {
            VKind::Num => Value::Num(num(&self.word()?)?),
            VKind::Keywords => return Err("keywords where a value is expected".into()),
            VKind::Type(t) => match t {
                DataType::Ipv4Addr | DataType::Ipv6Addr => {
                    let w = self.word()?;
                    if w.contains('/') {
                        Value::Prefix(num(&w)?)
                    } else {
                        Value::Addr(num(&w)?)
                    }
                }
                DataType::InetProto => Value::Proto(proto(&self.word()?)?),
                DataType::InetService => Value::Port(num(&self.word()?)?),
                DataType::Mark => Value::Mark(hex(&self.word()?)?),
                DataType::Ifname => Value::Ifname(self.quoted()?),
            },
        })
    }

    /// `v [. v]*` for `kinds`.
    fn key(&mut self, kinds: &[VKind]) -> R<Vec<Value>> {
        let mut out = Vec::with_capacity(kinds.len());
        for (i, k) in kinds.iter().enumerate() {
            if i > 0 {
                self.expect(".")?;
            }
            out.push(self.value(*k)?);
        }
        Ok(out)
    }

    fn verdict(&mut self) -> R<Verdict> {
        let w = self.word()?;
        Ok(match w.as_str() {
            "accept" => Verdict::Accept,
            "drop" => Verdict::Drop,
            "continue" => Verdict::Continue,
            "return" => Verdict::Return,
            "jump" => Verdict::Jump(self.word()?),
            "goto" => Verdict::Goto(self.word()?),
            _ => return Err(format!("not a verdict: {w}")),
        })
    }

    fn primary(&mut self) -> R<Expr> {
        let a = self.word()?;
        let b = self.word()?;
        Ok(match (a.as_str(), b.as_str()) {
            ("ip", "saddr") => Expr::Payload(Field::IpSaddr),
            ("ip", "daddr") => Expr::Payload(Field::IpDaddr),
            ("ip6", "saddr") => Expr::Payload(Field::Ip6Saddr),
            ("ip6", "daddr") => Expr::Payload(Field::Ip6Daddr),
            ("th", "sport") => Expr::Payload(Field::ThSport),
            ("th", "dport") => Expr::Payload(Field::ThDport),
            ("tcp", "dport") => Expr::Payload(Field::TcpDport),
            ("udp", "dport") => Expr::Payload(Field::UdpDport),
            ("meta", "l4proto") => Expr::Meta(MetaKey::L4proto),
            ("meta", "nfproto") => Expr::Meta(MetaKey::Nfproto),
            ("meta", "mark") => Expr::Meta(MetaKey::Mark),
            ("meta", "iifname") => Expr::Meta(MetaKey::Iifname),
            ("meta", "oifname") => Expr::Meta(MetaKey::Oifname),
            ("ct", "state") => Expr::Ct(CtKey::State),
            ("ct", "status") => Expr::Ct(CtKey::Status),
            ("ct", "mark") => Expr::Ct(CtKey::Mark),
            ("fib", "daddr") => {
                self.expect("type")?;
                Expr::FibDaddrType
            }
            ("fib", "saddr") => {
                self.expect("type")?;
                Expr::FibSaddrType
            }
            ("numgen", "random") => {
                self.expect("mod")?;
                Expr::NumgenRandom(num(&self.word()?)?)
            }
            _ => return Err(format!("unknown expression {a} {b}")),
        })
    }

    fn expr(&mut self) -> R<Expr> {
        let mut parts = vec![self.primary()?];
        while self.eat(".") {
            parts.push(self.primary()?);
        }
        let e = if parts.len() == 1 {
            parts.pop().ok_or("empty expression")?
        } else {
            Expr::Concat(parts)
        };
        if self.eat("&") {
            return Ok(Expr::And(Box::new(e), hex(&self.word()?)?));
        }
        Ok(e)
    }

    fn stmt(&mut self) -> R<Stmt> {
        let w = self.peek().ok_or("expected a statement")?.to_string();
        let next = |n| self.peek_at(n).map(str::to_string);
        match w.as_str() {
            "counter" => {
                self.i += 1;
                Ok(Stmt::Counter)
            }
            "accept" | "drop" | "continue" | "return" | "jump" | "goto" => {
                Ok(Stmt::Verdict(self.verdict()?))
            }
            "dnat" | "snat" => {
                self.i += 1;
                let fam = self.word()?;
                self.expect("to")?;
                let target = self.word()?;
                let (addr, port): (IpAddr, Option<u16>) = match (fam.as_str(), &target) {
                    ("ip6", t) if t.starts_with('[') => {
                        let (a, p) = t[1..]
                            .split_once("]:")
                            .ok_or_else(|| format!("bad target {t}"))?;
                        (num(a)?, Some(num(p)?))
                    }
                    ("ip", t) if t.contains(':') => {
                        let (a, p) = t.split_once(':').ok_or("bad target")?;
                        (num(a)?, Some(num(p)?))
                    }
                    (_, t) => (num(t)?, None),
                };
                if w == "dnat" {
                    Ok(Stmt::Dnat { addr, port })
                } else {
                    Ok(Stmt::Snat { addr })
                }
            }
            "masquerade" => {
                self.i += 1;
                Ok(Stmt::Masquerade {
                    fully_random: self.eat("fully-random"),
                })
            }
            "meta" if next(1).as_deref() == Some("mark") && next(2).as_deref() == Some("set") => {
                self.i += 3;
                if self.eat("meta") {
                    self.expect("mark")?;
                    let op = self.word()?;
                    let bits = hex(&self.word()?)?;
                    match op.as_str() {
                        "|" => Ok(Stmt::MarkOr(bits)),
                        "&" => Ok(Stmt::MarkAnd(bits)),
                        _ => Err(format!("mark operator {op}")),
                    }
                } else {
                    Ok(Stmt::MarkSet(hex(&self.word()?)?))
                }
            }
            "reject" => {
                self.i += 1;
                self.expect("with")?;
                let a = self.word()?;
                let b = self.word()?;
                Ok(Stmt::Reject(match (a.as_str(), b.as_str()) {
                    ("tcp", "reset") => RejectKind::TcpReset,
                    ("icmpx", "port-unreachable") => RejectKind::IcmpxPortUnreachable,
                    ("icmpx", "admin-prohibited") => RejectKind::IcmpxAdminProhibited,
                    _ => return Err(format!("reject with {a} {b}")),
                }))
            }
            "tcp" if next(1).as_deref() == Some("option") => {
                for w in ["tcp", "option", "maxseg", "size", "set", "rt", "mtu"] {
                    self.expect(w)?;
                }
                Ok(Stmt::ClampMssToPmtu)
            }
            "notrack" => {
                self.i += 1;
                Ok(Stmt::Notrack)
            }
            "tcp" if next(1).as_deref() == Some("flags") => {
                self.i += 2;
                let mut left = Expr::Payload(Field::TcpFlags);
                if self.eat("&") {
                    left = Expr::And(Box::new(left), self.tcp_flags()?);
                }
                let op = if self.eat("!=") {
                    CmpOp::Ne
                } else {
                    self.expect("==")?;
                    CmpOp::Eq
                };
                let right = Expr::Value(Value::Num(self.tcp_flags()?));
                Ok(Stmt::Match { left, op, right })
            }
            "log" => {
                self.i += 1;
                let mut prefix = None;
                let mut group = None;
                if self.eat("prefix") {
                    prefix = Some(self.quoted()?);
                }
                if self.eat("group") {
                    group = Some(num(&self.word()?)?);
                }
                Ok(Stmt::Log { prefix, group })
            }
            "update" => {
                self.i += 1;
                let set = self
                    .word()?
                    .strip_prefix('@')
                    .ok_or("update needs @set")?
                    .to_string();
                self.expect("{")?;
                let key = self.expr()?;
                let timeout = if self.eat("timeout") {
                    Some(seconds(&self.word()?)?)
                } else {
                    None
                };
                self.expect("}")?;
                Ok(Stmt::UpdateSet { set, key, timeout })
            }
            "numgen" if next(4).as_deref() == Some("vmap") => {
                self.i += 3;
                let n: usize = num(&self.word()?)?;
                self.expect("vmap")?;
                self.expect("{")?;
                let mut targets = Vec::with_capacity(n);
                for i in 0..n {
                    if i > 0 && !self.eat_comma() {
                        return Err("numgen vmap: missing comma".into());
                    }
                    self.expect(&i.to_string())?;
                    self.expect(":")?;
                    targets.push(self.verdict()?);
                }
                self.expect("}")?;
                Ok(Stmt::NumgenVmap { targets })
            }
            _ => {
                let left = self.expr()?;
                if self.eat("vmap") {
                    let map = self
                        .word()?
                        .strip_prefix('@')
                        .ok_or("vmap needs @map")?
                        .to_string();
                    return Ok(Stmt::Vmap { key: left, map });
                }
                let op = if self.eat("!=") {
                    CmpOp::Ne
                } else if self.eat("<") {
                    CmpOp::Lt
                } else {
                    self.eat("==");
                    CmpOp::Eq
                };
                let right = self.rhs(&left)?;
                Ok(Stmt::Match { left, op, right })
            }
        }
    }

    fn rhs(&mut self, left: &Expr) -> R<Expr> {
        let kinds = kinds_of(left)?;
        if let Some(set) = self.peek().and_then(|w| w.strip_prefix('@')) {
            let set = set.to_string();
            self.i += 1;
            return Ok(Expr::Set(set));
        }
        if self.eat("{") {
            let mut keys = Vec::new();
            loop {
                keys.push(self.key(&kinds)?);
                if !self.eat_comma() {
                    break;
                }
            }
            self.expect("}")?;
            return Ok(Expr::AnonSet(keys));
        }
        if let [VKind::Keywords] = kinds[..] {
            let w = self.word()?;
            let ks = w
                .split(',')
                .map(|k| {
                    Keyword::ALL
                        .into_iter()
                        .find(|x| x.as_str() == k)
                        .ok_or_else(|| format!("unknown keyword {k}"))
                })
                .collect::<R<Vec<_>>>()?;
            return Ok(Expr::Keywords(ks));
        }
        if let [VKind::Type(DataType::Mark)] = kinds[..] {
            // A mark is written in hex, a plain number (`numgen`) in decimal.
            let w = self.word()?;
            return Ok(Expr::Value(if w.starts_with("0x") {
                Value::Mark(hex(&w)?)
            } else {
                Value::Num(num(&w)?)
            }));
        }
        let mut v = self.key(&kinds)?;
        if v.len() != 1 {
            return Err("a concatenated literal".into());
        }
        Ok(Expr::Value(v.remove(0)))
    }
}

fn kinds_of(e: &Expr) -> R<Vec<VKind>> {
    Ok(match e {
        Expr::Payload(f) => vec![VKind::Type(match f {
            Field::IpSaddr | Field::IpDaddr => DataType::Ipv4Addr,
            Field::Ip6Saddr | Field::Ip6Daddr => DataType::Ipv6Addr,
            _ => DataType::InetService,
        })],
        Expr::Meta(MetaKey::L4proto) => vec![VKind::Type(DataType::InetProto)],
        Expr::Meta(MetaKey::Mark) | Expr::Ct(CtKey::Mark) | Expr::And(..) => {
            vec![VKind::Type(DataType::Mark)]
        }
        Expr::Meta(MetaKey::Iifname | MetaKey::Oifname) => vec![VKind::Type(DataType::Ifname)],
        Expr::Meta(MetaKey::Nfproto) | Expr::Ct(_) | Expr::FibDaddrType | Expr::FibSaddrType => {
            vec![VKind::Keywords]
        }
        Expr::NumgenRandom(_) => vec![VKind::Num],
        Expr::Concat(parts) => parts
            .iter()
            .map(|p| kinds_of(p).map(|k| k[0]))
            .collect::<R<Vec<_>>>()?,
        _ => return Err(format!("no values for {e:?}")),
    })
}

fn types(s: &str) -> R<Vec<DataType>> {
    s.split(" . ").map(|t| data_type(t.trim())).collect()
}

fn parse_rule(line: &str) -> R<Rule> {
    let mut p = P::new(line)?;
    let mut rule = Rule::new();
    while !p.done() {
        if p.eat("comment") {
            rule.comment = Some(p.quoted()?);
            continue;
        }
        rule.stmts.push(p.stmt()?);
    }
    Ok(rule)
}

fn parse_elements(set: &mut Set, text: &str) -> R<()> {
    let kinds: Vec<VKind> = set.key.iter().map(|t| VKind::Type(*t)).collect();
    let data_kinds: Option<Vec<VKind>> = match &set.map {
        Some(MapType::Data(ts)) => Some(ts.iter().map(|t| VKind::Type(*t)).collect()),
        _ => None,
    };
    let mut p = P::new(text)?;
    loop {
        let key = Key(p.key(&kinds)?);
        let mut e = Element::default();
        if p.eat("timeout") {
            e.timeout = Some(seconds(&p.word()?)?);
        }
        if p.eat("comment") {
            e.comment = Some(p.quoted()?);
        }
        if p.eat(":") {
            e.value = Some(match (&set.map, &data_kinds) {
                (Some(MapType::Verdict), _) => MapValue::Verdict(p.verdict()?),
                (_, Some(k)) => MapValue::Data(Key(p.key(k)?)),
                _ => return Err(format!("set {}: value in a plain set", set.name)),
            });
        }
        set.elements.insert(key, e);
        if !p.eat_comma() {
            break;
        }
    }
    if !p.done() {
        return Err(format!("set {}: trailing element text", set.name));
    }
    Ok(())
}

/// Parses `Table::render` output.
pub fn table(text: &str) -> R<Table> {
    let mut lines = text.lines().peekable();
    let head = lines.next().ok_or("empty file")?;
    let parts: Vec<&str> = head.split_whitespace().collect();
    let family = match parts[..] {
        ["table", "inet", _, "{"] => Family::Inet,
        ["table", "ip", _, "{"] => Family::Ip,
        ["table", "ip6", _, "{"] => Family::Ip6,
        ["table", "bridge", _, "{"] => Family::Bridge,
        _ => return Err(format!("not a table block: {head}")),
    };
    let mut t = Table::new(family, parts[2]);
    while let Some(line) = lines.next() {
        if line == "}" {
            break;
        }
        let l = line.trim();
        let words: Vec<&str> = l.split_whitespace().collect();
        match words[..] {
            [kw @ ("set" | "map"), name, "{"] => {
                let mut set = Set::new(name, Vec::new());
                loop {
                    let line = lines.next().ok_or("unterminated set")?;
                    let l = line.trim();
                    if l == "}" {
                        break;
                    }
                    if let Some(ty) = l.strip_prefix("type ") {
                        let (k, v) = match ty.split_once(" : ") {
                            Some((k, v)) => (k, Some(v)),
                            None => (ty, None),
                        };
                        set.key = types(k)?;
                        set.map = match v {
                            None => None,
                            Some("verdict") => Some(MapType::Verdict),
                            Some(v) => Some(MapType::Data(types(v)?)),
                        };
                    } else if let Some(f) = l.strip_prefix("flags ") {
                        for f in f.split(',') {
                            match f {
                                "interval" => set.flags.interval = true,
                                "timeout" => set.flags.timeout = true,
                                "dynamic" => set.flags.dynamic = true,
                                _ => return Err(format!("set {name}: flag {f}")),
                            }
                        }
                    } else if let Some(s) = l.strip_prefix("timeout ") {
                        set.timeout = Some(seconds(s)?);
                    } else if let Some(c) = l.strip_prefix("comment ") {
                        let c = c.trim_matches('"');
                        set.comment = split_hash(c);
                    } else if let Some(first) = l.strip_prefix("elements = {") {
                        let mut text = first.to_string();
                        while !text.ends_with(" }") {
                            text.push(' ');
                            text.push_str(lines.next().ok_or("unterminated elements")?.trim());
                        }
                        text.truncate(text.len() - 2);
                        parse_elements(&mut set, &text)?;
                    } else {
                        return Err(format!("set {name}: {l}"));
                    }
                }
                if (kw == "map") != set.map.is_some() {
                    return Err(format!("set {name}: {kw} without a map type"));
                }
                t.add_set(set);
            }
            ["chain", name, "{"] => {
                let mut chain = Chain::new(name);
                loop {
                    let line = lines.next().ok_or("unterminated chain")?;
                    let l = line.trim();
                    if l == "}" {
                        break;
                    }
                    if l.starts_with("type ") && l.contains(" hook ") {
                        let w: Vec<&str> = l
                            .split(|c: char| c.is_whitespace() || c == ';')
                            .filter(|w| !w.is_empty())
                            .collect();
                        let [_, kind, _, hook, _, prio, _, policy] = w[..] else {
                            return Err(format!("chain {name}: {l}"));
                        };
                        let kind = match kind {
                            "filter" => ChainType::Filter,
                            "nat" => ChainType::Nat,
                            "route" => ChainType::Route,
                            _ => return Err(format!("chain type {kind}")),
                        };
                        let hook = [
                            Hook::Prerouting,
                            Hook::Input,
                            Hook::Forward,
                            Hook::Output,
                            Hook::Postrouting,
                        ]
                        .into_iter()
                        .find(|h| h.as_str() == hook)
                        .ok_or_else(|| format!("hook {hook}"))?;
                        let policy = match policy {
                            "accept" => Policy::Accept,
                            "drop" => Policy::Drop,
                            _ => return Err(format!("policy {policy}")),
                        };
                        chain.base = Some(BaseChain {
                            kind,
                            hook,
                            priority: num(prio)?,
                            policy,
                        });
                    } else {
                        chain
                            .rules
                            .push(parse_rule(l).map_err(|e| format!("chain {name}: {l}: {e}"))?);
                    }
                }
                if let Some(last) = chain.rules.last_mut() {
                    last.comment = last.comment.as_deref().and_then(split_hash);
                }
                t.add_chain(chain);
            }
            _ => return Err(format!("unexpected line: {line}")),
        }
    }
    Ok(t)
}
