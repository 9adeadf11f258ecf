//! Unit tests of chain walking (verdicts, jumps, policies, families, numgen forks) on small
//! hand-built tables, and the helpers the other interpreter tests share.

use std::net::IpAddr;

use super::*;
use crate::expr::{Expr, Field, MetaKey, RejectKind, Rule, Stmt, Verdict};
use crate::model::{Chain, ChainType, Family, Hook, L4Proto, Policy, Table, Value};
use crate::NftError;

pub(super) struct TestEnv {
    pub local: Vec<IpAddr>,
    pub masquerade: Option<IpAddr>,
}

impl Env for TestEnv {
    fn is_local(&self, addr: IpAddr) -> bool {
        self.local.contains(&addr)
    }
    fn masquerade_source(&self, _oifname: Option<&str>, _daddr: IpAddr) -> Option<IpAddr> {
        self.masquerade
    }
}

pub(super) fn env() -> TestEnv {
    TestEnv {
        local: vec![ip("192.168.1.1")],
        masquerade: Some(ip("192.168.1.1")),
    }
}

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn tcp(src: &str, dst: &str, dport: u16) -> Packet {
    Packet::new(ip(src), ip(dst), L4Proto::Tcp, 40000, dport)
}

pub(super) fn filter(name: &str, hook: Hook, prio: i32, policy: Policy) -> Chain {
    Chain::base(name, ChainType::Filter, hook, prio, policy)
}

pub(super) fn table(name: &str, chains: Vec<Chain>) -> Table {
    let mut t = Table::new(Family::Inet, name);
    for c in chains {
        t.add_chain(c);
    }
    t
}

/// The only path of a walk without numgen.
pub(super) fn one(tables: &[&Table], hook: Hook, p: &Packet) -> Path {
    let mut paths = run_hook(tables, hook, p, &env()).unwrap();
    assert_eq!(paths.len(), 1, "{paths:#?}");
    paths.remove(0)
}

/// Verdict of a one-chain forward filter table whose chain has `rule` then `accept`-less end
/// with policy drop: Accept iff the rule matched.
pub(super) fn matched(rule: Rule, t: Option<Table>, p: &Packet) -> bool {
    let mut t = t.unwrap_or_else(|| table("t", vec![]));
    t.add_chain(filter("fwd", Hook::Forward, 0, Policy::Drop).rule(rule.verdict(Verdict::Accept)));
    one(&[&t], Hook::Forward, p).verdict == HookVerdict::Accept
}

pub(super) fn events(p: &Path) -> Vec<&Event> {
    p.steps.iter().map(|s| &s.event).collect()
}

#[test]
fn accept_ends_only_its_base_chain_and_drop_ends_the_hook() {
    let a = table(
        "a",
        vec![filter("f", Hook::Forward, -10, Policy::Accept)
            .rule(Rule::new().verdict(Verdict::Accept).comment("first"))],
    );
    let b = table(
        "b",
        vec![filter("f", Hook::Forward, 10, Policy::Accept)
            .rule(Rule::new().verdict(Verdict::Drop).comment("second"))],
    );
    let c = table(
        "c",
        vec![filter("f", Hook::Forward, 20, Policy::Accept).rule(Rule::new().counter())],
    );
    let p = one(
        &[&c, &b, &a],
        Hook::Forward,
        &tcp("10.0.0.1", "10.0.0.2", 80),
    );
    assert_eq!(p.verdict, HookVerdict::Drop);
    let tables: Vec<&str> = p.steps.iter().map(|s| s.table.as_str()).collect();
    assert_eq!(tables, ["a", "a", "b", "b"], "{p:#?}");
    let last = p.steps.last().unwrap();
    assert_eq!(
        (last.rule, last.comment.as_deref(), &last.event),
        (Some(0), Some("second"), &Event::Verdict(Verdict::Drop))
    );
    assert_eq!(p.deciding_step(), Some(last));
    // Other hooks run nothing.
    let p = one(&[&a, &b], Hook::Input, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!((p.verdict, p.steps.len()), (HookVerdict::Accept, 0));
}

#[test]
fn falling_off_a_base_chain_applies_its_policy() {
    let t = table("t", vec![filter("f", Hook::Input, 0, Policy::Drop)]);
    let p = one(&[&t], Hook::Input, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(p.verdict, HookVerdict::Drop);
    assert_eq!(
        p.steps.last().unwrap().event,
        Event::ChainPolicy(Policy::Drop)
    );
}

#[test]
fn jump_returns_goto_does_not_and_return_in_a_base_chain_ends_it() {
    let mut t = table(
        "t",
        vec![
            filter("f", Hook::Forward, 0, Policy::Drop)
                .rule(Rule::new().verdict(Verdict::Jump("callee".into())))
                .rule(Rule::new().then(Stmt::MarkSet(1)))
                .rule(Rule::new().verdict(Verdict::Goto("gone".into())))
                .rule(Rule::new().then(Stmt::MarkSet(2))),
            Chain::new("callee")
                .rule(Rule::new().verdict(Verdict::Return))
                .rule(Rule::new().then(Stmt::MarkSet(9))),
            Chain::new("gone").rule(Rule::new().verdict(Verdict::Continue)),
        ],
    );
    let p = one(&[&t], Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80));
    // jump came back (mark 1), goto did not (no mark 2), and the base policy applied.
    assert_eq!(p.packet.mark, 1);
    assert_eq!(p.verdict, HookVerdict::Drop);
    let chains: Vec<&str> = p
        .steps
        .iter()
        .filter(|s| matches!(s.event, Event::EnterChain { .. }))
        .map(|s| s.chain.as_str())
        .collect();
    assert_eq!(chains, ["f", "callee", "gone"]);
    // `return` in the base chain: end of chain, policy.
    t.add_chain(
        filter("f", Hook::Forward, 0, Policy::Drop)
            .rule(Rule::new().verdict(Verdict::Return))
            .rule(Rule::new().verdict(Verdict::Accept)),
    );
    let p = one(&[&t], Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(p.verdict, HookVerdict::Drop);
}

#[test]
fn a_jump_loop_is_an_error_naming_the_chain() {
    let t = table(
        "t",
        vec![
            filter("f", Hook::Forward, 0, Policy::Accept)
                .rule(Rule::new().verdict(Verdict::Jump("loop".into()))),
            Chain::new("loop").rule(Rule::new().verdict(Verdict::Jump("loop".into()))),
        ],
    );
    let err = run_hook(
        &[&t],
        Hook::Forward,
        &tcp("10.0.0.1", "10.0.0.2", 80),
        &env(),
    );
    match err {
        Err(NftError::Invalid(m)) => assert!(m.contains("chain loop"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reject_ends_the_hook_with_its_kind() {
    let t = table(
        "t",
        vec![filter("f", Hook::Input, 0, Policy::Accept)
            .rule(Rule::new().then(Stmt::Reject(RejectKind::TcpReset)))],
    );
    let t2 = table(
        "u",
        vec![filter("f", Hook::Input, 5, Policy::Accept).rule(Rule::new().then(Stmt::MarkSet(3)))],
    );
    let p = one(&[&t, &t2], Hook::Input, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(p.verdict, HookVerdict::Reject(RejectKind::TcpReset));
    assert_eq!(p.packet.mark, 0, "later chains do not run");
}

#[test]
fn mark_statements() {
    let t = table(
        "t",
        vec![filter("out", Hook::Output, 0, Policy::Accept)
            .rule(Rule::new().then(Stmt::MarkSet(0xf0)))
            .rule(Rule::new().then(Stmt::MarkOr(0x4000)))
            .rule(Rule::new().then(Stmt::MarkAnd(!0x10)))],
    );
    let p = one(&[&t], Hook::Output, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(p.packet.mark, 0x40e0);
    let marks: Vec<&Event> = events(&p)
        .into_iter()
        .filter(|e| matches!(e, Event::MarkSet { .. }))
        .collect();
    assert_eq!(
        marks,
        [
            &Event::MarkSet { mark: 0xf0 },
            &Event::MarkSet { mark: 0x40f0 },
            &Event::MarkSet { mark: 0x40e0 }
        ]
    );
}

#[test]
fn numgen_vmap_forks_one_path_per_slot() {
    let mut chains = vec![
        filter("fwd", Hook::Forward, 0, Policy::Accept).rule(Rule::new().then(Stmt::NumgenVmap {
            targets: (0..3).map(|i| Verdict::Goto(format!("ep{i}"))).collect(),
        })),
    ];
    for i in 0..3 {
        chains.push(Chain::new(format!("ep{i}")).rule(Rule::new().then(Stmt::MarkSet(10 + i))));
    }
    let t = table("t", chains);
    let paths = run_hook(
        &[&t],
        Hook::Forward,
        &tcp("10.0.0.1", "10.0.0.2", 80),
        &env(),
    )
    .unwrap();
    let marks: Vec<u32> = paths.iter().map(|p| p.packet.mark).collect();
    assert_eq!(marks, [10, 11, 12]);
    for (i, p) in paths.iter().enumerate() {
        assert!(events(p).contains(&&Event::Numgen {
            modulus: 3,
            picked: i as u32
        }));
    }
}

#[test]
fn numgen_compared_with_a_value_forks_matched_and_not() {
    // kube-proxy's uniform choice: mod 3 == 0 → ep0; mod 2 == 0 → ep1; else ep2.
    let t = table(
        "t",
        vec![
            filter("fwd", Hook::Forward, 0, Policy::Accept)
                .rule(
                    Rule::new()
                        .eq(Expr::NumgenRandom(3), Expr::Value(Value::Num(0)))
                        .then(Stmt::MarkSet(10)),
                )
                .rule(Rule::new().eq(Expr::Payload(Field::ThDport), Expr::Value(Value::Port(1))))
                .rule(Rule::new().verdict(Verdict::Jump("rest".into()))),
            Chain::new("rest")
                .rule(
                    Rule::new()
                        .eq(Expr::Meta(MetaKey::Mark), Expr::Value(Value::Mark(10)))
                        .verdict(Verdict::Return),
                )
                .rule(
                    Rule::new()
                        .eq(Expr::NumgenRandom(2), Expr::Value(Value::Num(0)))
                        .then(Stmt::MarkSet(11))
                        .verdict(Verdict::Return),
                )
                .rule(Rule::new().then(Stmt::MarkSet(12))),
        ],
    );
    let paths = run_hook(
        &[&t],
        Hook::Forward,
        &tcp("10.0.0.1", "10.0.0.2", 80),
        &env(),
    )
    .unwrap();
    let marks: Vec<u32> = paths.iter().map(|p| p.packet.mark).collect();
    assert_eq!(marks, [10, 11, 12]);
    let numgens = |p: &Path| -> Vec<(u32, u32)> {
        p.steps
            .iter()
            .filter_map(|s| match s.event {
                Event::Numgen { modulus, picked } => Some((modulus, picked)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(numgens(&paths[0]), [(3, 0)]);
    assert_eq!(numgens(&paths[1]), [(3, 1), (2, 0)]);
    assert_eq!(numgens(&paths[2]), [(3, 1), (2, 1)]);
    // Degenerate moduli do not fork.
    let t = table(
        "t",
        vec![filter("fwd", Hook::Forward, 0, Policy::Accept)
            .rule(
                Rule::new()
                    .eq(Expr::NumgenRandom(1), Expr::Value(Value::Num(0)))
                    .then(Stmt::MarkOr(1)),
            )
            .rule(
                Rule::new()
                    .eq(Expr::NumgenRandom(2), Expr::Value(Value::Num(5)))
                    .then(Stmt::MarkOr(2)),
            )],
    );
    let p = one(&[&t], Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(p.packet.mark, 1);
}

#[test]
fn tables_of_another_family_are_not_run() {
    let mut v4only = Table::new(Family::Ip, "four");
    v4only.add_chain(filter("f", Hook::Forward, 0, Policy::Drop));
    let mut v6only = Table::new(Family::Ip6, "six");
    v6only.add_chain(filter("f", Hook::Forward, 0, Policy::Drop));
    let p = one(&[&v4only], Hook::Forward, &tcp("fd00::1", "fd00::2", 80));
    assert_eq!(p.verdict, HookVerdict::Accept);
    let p = one(&[&v4only], Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(p.verdict, HookVerdict::Drop);
    let p = one(&[&v6only], Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(p.verdict, HookVerdict::Accept);
}

#[test]
fn numgen_less_than_forks_below_and_not() {
    // The WAN's loss rule: below 50 of 10000 dropped; degenerate bounds do not fork.
    let t = table(
        "t",
        vec![filter("fwd", Hook::Forward, 0, Policy::Accept)
            .rule(
                Rule::new()
                    .lt(Expr::NumgenRandom(10_000), Expr::Value(Value::Num(50)))
                    .verdict(Verdict::Drop),
            )
            .rule(
                Rule::new()
                    .lt(Expr::NumgenRandom(4), Expr::Value(Value::Num(0)))
                    .then(Stmt::MarkOr(1)),
            )
            .rule(
                Rule::new()
                    .lt(Expr::NumgenRandom(4), Expr::Value(Value::Num(4)))
                    .then(Stmt::MarkOr(2)),
            )
            .rule(
                Rule::new()
                    .lt(
                        Expr::Payload(Field::ThDport),
                        Expr::Value(Value::Port(1024)),
                    )
                    .then(Stmt::MarkOr(4)),
            )],
    );
    let paths = run_hook(
        &[&t],
        Hook::Forward,
        &tcp("10.0.0.1", "10.0.0.2", 80),
        &env(),
    )
    .unwrap();
    let v: Vec<(HookVerdict, u32)> = paths.iter().map(|p| (p.verdict, p.packet.mark)).collect();
    assert_eq!(v, [(HookVerdict::Drop, 0), (HookVerdict::Accept, 6)]);
}

#[test]
fn bridge_tables_are_refused() {
    let mut br = Table::new(Family::Bridge, "sarasa-wan");
    br.add_chain(filter("forward", Hook::Forward, -200, Policy::Accept));
    let e = run_hook(
        &[&br],
        Hook::Forward,
        &tcp("10.0.0.1", "10.0.0.2", 80),
        &env(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("bridge sarasa-wan"), "{e}");
}
