//! Text rendering in `nft -f` syntax, and the content hashes stored in comments.

use std::fmt::Write;

use sarasa_model::hash::fnv1a64_parts;

use crate::expr::{CmpOp, Expr, Field, RejectKind, Rule, Stmt, Verdict, TCP_FLAG_NAMES};
use crate::model::{Chain, Element, Key, MapType, MapValue, Set, Table, Value};
use crate::text::{ident, quoted, MAX_COMMENT, MAX_IFNAME, MAX_LOG_PREFIX};

/// Marker before the content hash in a comment.
pub(crate) const HASH_MARK: &str = "sarasa:";

pub(crate) fn value(out: &mut String, v: &Value) {
    // Writing to a String cannot fail.
    let _ = match v {
        Value::Addr(a) => write!(out, "{a}"),
        Value::Prefix(n) => write!(out, "{n}"),
        Value::Proto(p) => write!(out, "{}", p.as_str()),
        Value::Port(p) => write!(out, "{p}"),
        Value::Mark(m) => write!(out, "0x{m:08x}"),
        Value::Num(n) => write!(out, "{n}"),
        Value::Ifname(n) => write!(out, "{}", quoted(n, MAX_IFNAME)),
    };
}

pub(crate) fn key(out: &mut String, k: &Key) {
    for (i, v) in k.0.iter().enumerate() {
        if i > 0 {
            out.push_str(" . ");
        }
        value(out, v);
    }
}

pub(crate) fn verdict(out: &mut String, v: &Verdict) {
    match v {
        Verdict::Accept => out.push_str("accept"),
        Verdict::Drop => out.push_str("drop"),
        Verdict::Continue => out.push_str("continue"),
        Verdict::Return => out.push_str("return"),
        Verdict::Jump(c) => {
            out.push_str("jump ");
            out.push_str(&ident(c))
        }
        Verdict::Goto(c) => {
            out.push_str("goto ");
            out.push_str(&ident(c))
        }
    }
}

fn expr(out: &mut String, e: &Expr) {
    match e {
        Expr::Payload(f) => out.push_str(f.as_str()),
        Expr::Meta(m) => out.push_str(m.as_str()),
        Expr::Ct(c) => out.push_str(c.as_str()),
        Expr::FibDaddrType => out.push_str("fib daddr type"),
        Expr::FibSaddrType => out.push_str("fib saddr type"),
        Expr::NumgenRandom(m) => {
            let _ = write!(out, "numgen random mod {m}");
        }
        Expr::And(inner, mask) => {
            expr(out, inner);
            let _ = write!(out, " & 0x{mask:08x}");
        }
        Expr::Concat(es) => {
            for (i, e) in es.iter().enumerate() {
                if i > 0 {
                    out.push_str(" . ");
                }
                expr(out, e);
            }
        }
        Expr::Value(v) => value(out, v),
        Expr::Keywords(ks) => {
            for (i, k) in ks.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k.as_str());
            }
        }
        Expr::Set(s) => {
            out.push('@');
            out.push_str(&ident(s));
        }
        Expr::AnonSet(keys) => {
            out.push_str("{ ");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                for (j, v) in k.iter().enumerate() {
                    if j > 0 {
                        out.push_str(" . ");
                    }
                    value(out, v);
                }
            }
            out.push_str(" }");
        }
    }
}

/// `tcp flags` bits by name: `syn`, `(syn | rst)`; bits nft has no name for as a number.
fn tcp_flags(out: &mut String, bits: u32) {
    if bits == 0 || bits > 0xff {
        let _ = write!(out, "{bits}");
        return;
    }
    let names: Vec<&str> = TCP_FLAG_NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    match names[..] {
        [one] => out.push_str(one),
        _ => {
            let _ = write!(out, "({})", names.join(" | "));
        }
    }
}

/// The operand of a `tcp flags` match (`tcp flags` or `tcp flags & mask`), if it is one.
fn tcp_flags_operand(e: &Expr) -> Option<Option<u32>> {
    match e {
        Expr::Payload(Field::TcpFlags) => Some(None),
        Expr::And(inner, mask) if **inner == Expr::Payload(Field::TcpFlags) => Some(Some(*mask)),
        _ => None,
    }
}

fn stmt(out: &mut String, s: &Stmt) {
    match s {
        Stmt::Match { left, op, right } => {
            // `tcp flags & (syn | rst) == syn`: flags by name and an explicit `==` (after `tcp
            // flags`, nft reads a bare flag as a bit test: "any of these set").
            if let (Some(mask), Expr::Value(Value::Num(v))) = (tcp_flags_operand(left), right) {
                out.push_str("tcp flags");
                if let Some(m) = mask {
                    out.push_str(" & ");
                    tcp_flags(out, m);
                }
                out.push_str(match op {
                    CmpOp::Eq => " == ",
                    CmpOp::Ne => " != ",
                    CmpOp::Lt => " < ",
                });
                tcp_flags(out, *v);
                return;
            }
            expr(out, left);
            match op {
                // A masked value needs an explicit operator.
                CmpOp::Eq if matches!(left, Expr::And(..)) => out.push_str(" == "),
                CmpOp::Eq => out.push(' '),
                CmpOp::Ne => out.push_str(" != "),
                CmpOp::Lt => out.push_str(" < "),
            }
            expr(out, right);
        }
        Stmt::Counter => out.push_str("counter"),
        Stmt::Verdict(v) => verdict(out, v),
        Stmt::Vmap { key, map } => {
            expr(out, key);
            out.push_str(" vmap @");
            out.push_str(&ident(map));
        }
        Stmt::NumgenVmap { targets } => {
            let _ = write!(out, "numgen random mod {} vmap {{ ", targets.len());
            for (i, v) in targets.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{i} : ");
                verdict(out, v);
            }
            out.push_str(" }");
        }
        Stmt::Dnat { addr, port } => match (addr, port) {
            (std::net::IpAddr::V4(a), Some(p)) => {
                let _ = write!(out, "dnat ip to {a}:{p}");
            }
            (std::net::IpAddr::V4(a), None) => {
                let _ = write!(out, "dnat ip to {a}");
            }
            (std::net::IpAddr::V6(a), Some(p)) => {
                let _ = write!(out, "dnat ip6 to [{a}]:{p}");
            }
            (std::net::IpAddr::V6(a), None) => {
                let _ = write!(out, "dnat ip6 to {a}");
            }
        },
        Stmt::Snat { addr } => {
            let fam = if addr.is_ipv4() { "ip" } else { "ip6" };
            let _ = write!(out, "snat {fam} to {addr}");
        }
        Stmt::Masquerade { fully_random } => {
            out.push_str("masquerade");
            if *fully_random {
                out.push_str(" fully-random");
            }
        }
        Stmt::MarkOr(bits) => {
            let _ = write!(out, "meta mark set meta mark | 0x{bits:08x}");
        }
        Stmt::MarkAnd(bits) => {
            let _ = write!(out, "meta mark set meta mark & 0x{bits:08x}");
        }
        Stmt::MarkSet(m) => {
            let _ = write!(out, "meta mark set 0x{m:08x}");
        }
        Stmt::Reject(k) => out.push_str(match k {
            RejectKind::TcpReset => "reject with tcp reset",
            RejectKind::IcmpxPortUnreachable => "reject with icmpx port-unreachable",
            RejectKind::IcmpxAdminProhibited => "reject with icmpx admin-prohibited",
        }),
        Stmt::Log { prefix, group } => {
            out.push_str("log");
            if let Some(p) = prefix {
                let _ = write!(out, " prefix {}", quoted(p, MAX_LOG_PREFIX));
            }
            if let Some(g) = group {
                let _ = write!(out, " group {g}");
            }
        }
        Stmt::UpdateSet { set, key, timeout } => {
            let _ = write!(out, "update @{} {{ ", ident(set));
            expr(out, key);
            if let Some(t) = timeout {
                let _ = write!(out, " timeout {t}s");
            }
            out.push_str(" }");
        }
        Stmt::ClampMssToPmtu => out.push_str("tcp option maxseg size set rt mtu"),
        Stmt::Notrack => out.push_str("notrack"),
    }
}

/// One rule's statements, without its comment.
pub(crate) fn rule_body(out: &mut String, r: &Rule) {
    for (i, s) in r.stmts.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        stmt(out, s);
    }
}

/// The rules of a chain as text lines; the last one's comment carries the content hash.
/// Returns the lines and the hash.
pub(crate) fn chain_rules(chain: &Chain) -> (Vec<String>, u64) {
    let mut lines: Vec<String> = chain
        .rules
        .iter()
        .map(|r| {
            let mut s = String::new();
            rule_body(&mut s, r);
            if let Some(c) = &r.comment {
                let _ = write!(s, " comment {}", quoted(c, MAX_COMMENT));
            }
            s
        })
        .collect();
    let h = fnv1a64_parts(lines.iter().flat_map(|l| [l.as_bytes(), b"\n"]));
    if let (Some(last), Some(rule)) = (lines.last_mut(), chain.rules.last()) {
        // Re-render the comment with the hash appended.
        if rule.comment.is_some() {
            last.pop(); // closing quote
            let _ = write!(last, " {HASH_MARK}{h:016x}\"");
        } else {
            let _ = write!(last, " comment \"{HASH_MARK}{h:016x}\"");
        }
    }
    (lines, h)
}

/// The last rule's comment as stored: the user comment (if any) and the chain's hash.
pub(crate) fn final_comment(user: Option<&str>, hash: u64) -> String {
    let user = user.map(|c| crate::text::sanitize(c, MAX_COMMENT));
    match user {
        Some(c) => format!("{c} {HASH_MARK}{hash:016x}"),
        None => format!("{HASH_MARK}{hash:016x}"),
    }
}

/// The hash of a chain's rules (what [`chain_rules`] stores).
pub(crate) fn chain_hash(chain: &Chain) -> u64 {
    chain_rules(chain).1
}

/// The base-chain line (`type nat hook prerouting priority -100; policy accept;`), if any.
pub(crate) fn base_line(chain: &Chain) -> Option<String> {
    chain.base.as_ref().map(|b| {
        format!(
            "type {} hook {} priority {}; policy {};",
            b.kind.as_str(),
            b.hook.as_str(),
            b.priority,
            b.policy.as_str()
        )
    })
}

/// The declaration lines of a set or map (without elements) and their hash.
pub(crate) fn set_decl(set: &Set) -> (Vec<String>, u64) {
    let mut lines = Vec::new();
    let mut ty = String::from("type ");
    for (i, t) in set.key.iter().enumerate() {
        if i > 0 {
            ty.push_str(" . ");
        }
        ty.push_str(t.as_str());
    }
    match &set.map {
        None => {}
        Some(MapType::Verdict) => ty.push_str(" : verdict"),
        Some(MapType::Data(types)) => {
            ty.push_str(" : ");
            for (i, t) in types.iter().enumerate() {
                if i > 0 {
                    ty.push_str(" . ");
                }
                ty.push_str(t.as_str());
            }
        }
    }
    lines.push(ty);
    let mut flags = Vec::new();
    if set.flags.dynamic {
        flags.push("dynamic");
    }
    if set.flags.interval {
        flags.push("interval");
    }
    if set.flags.timeout {
        flags.push("timeout");
    }
    if !flags.is_empty() {
        lines.push(format!("flags {}", flags.join(",")));
    }
    if let Some(t) = set.timeout {
        lines.push(format!("timeout {t}s"));
    }
    let h = fnv1a64_parts(
        lines
            .iter()
            .flat_map(|l| [l.as_bytes(), b"\n"])
            .chain(set.comment.iter().map(|c| c.as_bytes())),
    );
    let comment = match &set.comment {
        Some(c) => format!(
            "comment \"{} {HASH_MARK}{h:016x}\"",
            crate::text::sanitize(c, MAX_COMMENT)
        ),
        None => format!("comment \"{HASH_MARK}{h:016x}\""),
    };
    lines.push(comment);
    (lines, h)
}

pub(crate) fn set_keyword(set: &Set) -> &'static str {
    if set.map.is_some() {
        "map"
    } else {
        "set"
    }
}

/// One element: `key [timeout Ns] [comment "c"] [: value]`.
pub(crate) fn element(out: &mut String, k: &Key, e: &Element) {
    key(out, k);
    if let Some(t) = e.timeout {
        let _ = write!(out, " timeout {t}s");
    }
    if let Some(c) = &e.comment {
        let _ = write!(out, " comment {}", quoted(c, MAX_COMMENT));
    }
    match &e.value {
        None => {}
        Some(MapValue::Verdict(v)) => {
            out.push_str(" : ");
            verdict(out, v);
        }
        Some(MapValue::Data(d)) => {
            out.push_str(" : ");
            key(out, d);
        }
    }
}

impl Table {
    /// The whole table as an `nft -f` script in block syntax (`table inet sarasa { ... }`).
    ///
    /// Loading it into a kernel that has no such table creates it; for an existing table use
    /// [`crate::diff_kernel`] instead, which never flushes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "table {} {} {{",
            self.family.as_str(),
            ident(&self.name)
        );
        for set in self.sets.values() {
            let _ = writeln!(out, "\t{} {} {{", set_keyword(set), ident(&set.name));
            for l in set_decl(set).0 {
                let _ = writeln!(out, "\t\t{l}");
            }
            if set.elements_managed() && !set.elements.is_empty() {
                out.push_str("\t\telements = {");
                for (i, (k, e)) in set.elements.iter().enumerate() {
                    out.push_str(if i == 0 { " " } else { ",\n\t\t\t     " });
                    element(&mut out, k, e);
                }
                out.push_str(" }\n");
            }
            out.push_str("\t}\n");
        }
        for chain in self.chains.values() {
            let _ = writeln!(out, "\tchain {} {{", ident(&chain.name));
            if let Some(b) = base_line(chain) {
                let _ = writeln!(out, "\t\t{b}");
            }
            for l in chain_rules(chain).0 {
                let _ = writeln!(out, "\t\t{l}");
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{Field, MetaKey};
    use crate::model::{DataType, L4Proto};

    #[test]
    fn hash_goes_into_last_rule_comment() {
        let c = Chain::new("a")
            .rule(Rule::new().counter())
            .rule(Rule::new().verdict(Verdict::Accept).comment("hi"));
        let (lines, h) = chain_rules(&c);
        assert_eq!(lines[0], "counter");
        assert_eq!(lines[1], format!("accept comment \"hi sarasa:{h:016x}\""));
        let other = Chain::new("a").rule(Rule::new().verdict(Verdict::Accept));
        assert_ne!(chain_hash(&other), h);
    }

    #[test]
    fn renders_match_with_concat_and_anonymous_set() {
        let r = Rule::new()
            .eq(
                Expr::Concat(vec![
                    Expr::Payload(Field::IpDaddr),
                    Expr::Meta(MetaKey::L4proto),
                    Expr::Payload(Field::ThDport),
                ]),
                Expr::AnonSet(vec![vec![
                    Value::Addr("10.0.0.1".parse().unwrap()),
                    Value::Proto(L4Proto::Tcp),
                    Value::Port(80),
                ]]),
            )
            .verdict(Verdict::Drop);
        let mut s = String::new();
        rule_body(&mut s, &r);
        assert_eq!(
            s,
            "ip daddr . meta l4proto . th dport { 10.0.0.1 . tcp . 80 } drop"
        );
    }

    #[test]
    fn renders_tcp_flags_by_name_and_mss_clamp() {
        use crate::expr::{TCP_ACK, TCP_RST, TCP_SYN};
        let flags = |mask, v| {
            Rule::new().eq(
                Expr::And(Box::new(Expr::Payload(Field::TcpFlags)), mask),
                Expr::Value(Value::Num(v)),
            )
        };
        let r = flags(TCP_SYN | TCP_RST, TCP_SYN)
            .eq(
                Expr::Meta(MetaKey::Oifname),
                Expr::AnonSet(vec![
                    vec![Value::Ifname("sarasa-cable".into())],
                    vec![Value::Ifname("sarasa-wg".into())],
                ]),
            )
            .then(Stmt::ClampMssToPmtu);
        let mut s = String::new();
        rule_body(&mut s, &r);
        assert_eq!(
            s,
            "tcp flags & (syn | rst) == syn meta oifname { \"sarasa-cable\", \"sarasa-wg\" } \
             tcp option maxseg size set rt mtu"
        );
        let mut s = String::new();
        rule_body(
            &mut s,
            &flags(TCP_SYN | TCP_ACK, 0).ne(
                Expr::Payload(Field::TcpFlags),
                Expr::Value(Value::Num(TCP_ACK)),
            ),
        );
        assert_eq!(s, "tcp flags & (syn | ack) == 0 tcp flags != ack");
    }

    #[test]
    fn set_comment_carries_declaration_hash() {
        let a = Set::new("s", vec![DataType::Ipv4Addr]);
        let mut b = a.clone();
        b.flags.interval = true;
        assert_ne!(set_decl(&a).1, set_decl(&b).1);
        assert!(set_decl(&a)
            .0
            .last()
            .unwrap()
            .starts_with("comment \"sarasa:"));
    }
}
