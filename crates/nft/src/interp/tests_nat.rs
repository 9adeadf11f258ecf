//! Unit tests of hook ordering across tables and of NAT: which chains run, where the first
//! binding stops the rest, and how DNAT, SNAT and masquerade rewrite the packet.

use super::tests::{env, filter, ip, one, table, tcp, TestEnv};
use super::*;
use crate::expr::{CtKey, Expr, Keyword, Rule, Stmt, Verdict};
use crate::model::{Chain, ChainType, Hook, Policy, Table};
use crate::NftError;

fn nat(name: &str, hook: Hook, prio: i32) -> Chain {
    Chain::base(name, ChainType::Nat, hook, prio, Policy::Accept)
}

fn dnat(to: &str, port: u16) -> Rule {
    Rule::new().then(Stmt::Dnat {
        addr: ip(to),
        port: Some(port),
    })
}

/// (table, chain) of every base chain entered, and of every NAT chain skipped.
fn order(p: &Path) -> (Vec<String>, Vec<String>) {
    let mut entered = Vec::new();
    let mut skipped = Vec::new();
    for s in &p.steps {
        match s.event {
            Event::EnterChain { base: Some(_) } => entered.push(format!("{}/{}", s.table, s.chain)),
            Event::NatSkipped => skipped.push(format!("{}/{}", s.table, s.chain)),
            _ => {}
        }
    }
    (entered, skipped)
}

#[test]
fn chains_run_by_priority_with_nat_at_the_nat_core_and_ties_by_name() {
    let a = table(
        "a",
        vec![
            filter("early", Hook::Prerouting, -120, Policy::Accept),
            // A nat chain at -150 still runs from the NAT core's hook at -100.
            nat("nat", Hook::Prerouting, -150),
            filter("late", Hook::Prerouting, -90, Policy::Accept),
            filter("same", Hook::Prerouting, -100, Policy::Accept),
        ],
    );
    let b = table(
        "b",
        vec![
            nat("nat", Hook::Prerouting, -160),
            filter("same", Hook::Prerouting, -100, Policy::Accept),
        ],
    );
    let p = one(
        &[&b, &a],
        Hook::Prerouting,
        &tcp("10.0.0.1", "10.0.0.2", 80),
    );
    assert_eq!(
        order(&p).0,
        ["a/early", "a/same", "b/same", "b/nat", "a/nat", "a/late"]
    );
}

#[test]
fn nat_chains_run_only_for_a_connections_first_packet() {
    let t = table(
        "t",
        vec![nat("pre", Hook::Prerouting, -100).rule(dnat("10.244.0.5", 8080))],
    );
    let mut p = tcp("10.0.0.1", "10.96.0.1", 80);
    p.ct = CtState::Established;
    let path = one(&[&t], Hook::Prerouting, &p);
    assert_eq!(path.packet, p, "nothing rewritten");
    assert_eq!(order(&path).1, ["t/pre"]);
    p.ct = CtState::New;
    let path = one(&[&t], Hook::Prerouting, &p);
    assert_eq!(
        (path.packet.daddr, path.packet.dport),
        (ip("10.244.0.5"), 8080)
    );
    assert!(path.packet.ct_dnat);
    assert_eq!(path.dnat(), Some((ip("10.244.0.5"), Some(8080))));
}

#[test]
fn the_first_dnat_binding_ends_nat_for_the_hook_but_filters_still_run() {
    let one_table = |name: &str, prio: i32, rule: Rule| {
        table(name, vec![nat("out", Hook::Output, prio).rule(rule)])
    };
    // Shard a matches nothing; shard b binds; shard c would bind too but is skipped.
    let a = one_table(
        "a",
        -100,
        Rule::new()
            .eq(Expr::FibDaddrType, Expr::keyword(Keyword::Local))
            .then(Stmt::MarkSet(1)),
    );
    let b = one_table("b", -100, dnat("10.244.0.5", 8080));
    let c = one_table("c", -99, dnat("10.244.0.6", 8080));
    let post = table(
        "post",
        vec![filter("check", Hook::Output, -90, Policy::Accept).rule(
            Rule::new()
                .eq(Expr::Ct(CtKey::Status), Expr::keyword(Keyword::Dnat))
                .then(Stmt::MarkSet(42)),
        )],
    );
    let p = one(
        &[&c, &b, &a, &post],
        Hook::Output,
        &tcp("10.0.0.1", "10.96.0.1", 80),
    );
    assert_eq!(p.verdict, HookVerdict::Accept);
    assert_eq!(
        order(&p),
        (
            vec!["a/out".into(), "b/out".into(), "post/check".into()],
            vec!["c/out".into()]
        )
    );
    assert_eq!(p.packet.daddr, ip("10.244.0.5"));
    assert_eq!(p.packet.mark, 42, "ct status dnat seen after the binding");
    // A nat chain that accepts without binding lets the next one run.
    let a = one_table("a", -100, Rule::new().verdict(Verdict::Accept));
    let p = one(&[&c, &a], Hook::Output, &tcp("10.0.0.1", "10.96.0.1", 80));
    assert_eq!(p.packet.daddr, ip("10.244.0.6"));
    // `drop` in a nat chain drops.
    let a = one_table("a", -100, Rule::new().verdict(Verdict::Drop));
    let p = one(&[&c, &a], Hook::Output, &tcp("10.0.0.1", "10.96.0.1", 80));
    assert_eq!(p.verdict, HookVerdict::Drop);
    assert_eq!(p.packet.daddr, ip("10.96.0.1"));
}

#[test]
fn dnat_inside_a_jumped_chain_ends_the_base_chain() {
    let t = table(
        "t",
        vec![
            nat("pre", Hook::Prerouting, -100)
                .rule(Rule::new().verdict(Verdict::Jump("svc".into())))
                .rule(Rule::new().then(Stmt::MarkSet(9))),
            Chain::new("svc")
                .rule(dnat("10.244.0.5", 8080))
                .rule(Rule::new().then(Stmt::MarkSet(8))),
        ],
    );
    let p = one(&[&t], Hook::Prerouting, &tcp("10.0.0.1", "10.96.0.1", 80));
    assert_eq!((p.packet.mark, p.verdict), (0, HookVerdict::Accept));
    assert_eq!(p.deciding_step().map(|s| s.chain.as_str()), Some("svc"));
}

#[test]
fn dnat_of_the_other_family_does_nothing() {
    let t = table(
        "t",
        vec![nat("pre", Hook::Prerouting, -100)
            .rule(dnat("10.244.0.5", 8080))
            .rule(Rule::new().then(Stmt::MarkSet(3)))],
    );
    let p = one(&[&t], Hook::Prerouting, &tcp("fd00::1", "fd00::2", 80));
    assert_eq!(
        (p.packet.daddr, p.packet.mark, p.packet.ct_dnat),
        (ip("fd00::2"), 3, false)
    );
}

#[test]
fn nat_statements_outside_their_chains_are_errors() {
    let in_filter = table(
        "t",
        vec![filter("f", Hook::Prerouting, 0, Policy::Accept).rule(dnat("10.0.0.5", 1))],
    );
    let wrong_hook = table(
        "t",
        vec![nat("p", Hook::Postrouting, 100).rule(dnat("10.0.0.5", 1))],
    );
    let masq_pre = table(
        "t",
        vec![
            nat("p", Hook::Prerouting, -100).rule(Rule::new().then(Stmt::Masquerade {
                fully_random: false,
            })),
        ],
    );
    for (t, hook) in [
        (&in_filter, Hook::Prerouting),
        (&wrong_hook, Hook::Postrouting),
        (&masq_pre, Hook::Prerouting),
    ] {
        match run_hook(&[t], hook, &tcp("10.0.0.1", "10.0.0.2", 80), &env()) {
            Err(NftError::Invalid(m)) => assert!(m.contains("outside a nat chain"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

fn masq_table() -> Table {
    table(
        "node",
        vec![nat("postrouting", Hook::Postrouting, 100).rule(
            Rule::new()
                .eq(
                    Expr::Payload(crate::expr::Field::IpSaddr),
                    Expr::Set("pods".into()),
                )
                .counter()
                .then(Stmt::Masquerade { fully_random: true }),
        )],
    )
}

#[test]
fn masquerade_takes_the_nodes_source_and_stops_later_snat() {
    let mut t = masq_table();
    let mut pods = crate::model::Set::new("pods", vec![crate::model::DataType::Ipv4Addr]);
    pods.flags.interval = true;
    pods.insert(crate::model::Key::one(
        "10.244.1.0/24".parse::<ipnet::IpNet>().unwrap(),
    ));
    t.add_set(pods);
    let later = table(
        "z",
        vec![
            nat("snat", Hook::Postrouting, 110).rule(Rule::new().then(Stmt::Snat {
                addr: ip("1.1.1.1"),
            })),
        ],
    );
    let mut p = tcp("10.244.1.5", "8.8.8.8", 53);
    p.oifname = Some("eth0".into());
    let path = one(&[&t, &later], Hook::Postrouting, &p);
    assert_eq!(path.packet.saddr, ip("192.168.1.1"));
    assert_eq!(order(&path).1, ["z/snat"]);
    assert!(path.steps.iter().any(|s| s.event
        == Event::Masquerade {
            addr: Some(ip("192.168.1.1"))
        }));
    // Not a pod: the later table's snat binds.
    let path = one(
        &[&t, &later],
        Hook::Postrouting,
        &tcp("10.9.0.1", "8.8.8.8", 53),
    );
    assert_eq!(path.packet.saddr, ip("1.1.1.1"));
    assert!(path.steps.iter().any(|s| s.event
        == Event::Snat {
            addr: ip("1.1.1.1")
        }));
    // No address to masquerade to: the kernel drops.
    let none = TestEnv {
        local: vec![],
        masquerade: None,
    };
    let paths = run_hook(&[&t], Hook::Postrouting, &p, &none).unwrap();
    assert_eq!(paths[0].verdict, HookVerdict::Drop);
    assert_eq!(paths[0].packet.saddr, p.saddr);
}
