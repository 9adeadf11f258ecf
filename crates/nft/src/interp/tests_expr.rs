//! Unit tests of every expression and set kind: payload, meta, ct, fib, masks,
//! concatenations, literals, named/interval/anonymous/dynamic sets and verdict maps; `tcp
//! flags` and MSS clamping.

use super::tests::{env, events, filter, ip, matched, one, table, tcp};
use super::*;
use crate::expr::{
    CtKey, Expr, Field, Keyword, MetaKey, Rule, Stmt, Verdict, TCP_ACK, TCP_RST, TCP_SYN,
};
use crate::model::{Chain, DataType, Hook, Key, L4Proto, Policy, Set, Value};

#[test]
fn payload_fields_of_another_family_or_protocol_never_match() {
    let v4 = tcp("10.0.0.1", "10.0.0.2", 80);
    let v6 = tcp("fd00::1", "fd00::2", 80);
    let saddr4 = || Expr::Payload(Field::IpSaddr);
    let any4 = || Expr::Value(Value::Prefix("0.0.0.0/0".parse().unwrap()));
    assert!(matched(Rule::new().eq(saddr4(), any4()), None, &v4));
    assert!(!matched(Rule::new().eq(saddr4(), any4()), None, &v6));
    // Not even with `!=`: the rule carries an implicit nfproto dependency.
    let other = || Expr::value(ip("10.9.9.9"));
    assert!(matched(Rule::new().ne(saddr4(), other()), None, &v4));
    assert!(!matched(Rule::new().ne(saddr4(), other()), None, &v6));
    assert!(matched(
        Rule::new().eq(Expr::Payload(Field::Ip6Daddr), Expr::value(ip("fd00::2"))),
        None,
        &v6
    ));
    let port = |f| Rule::new().eq(Expr::Payload(f), Expr::Value(Value::Port(80)));
    assert!(matched(port(Field::TcpDport), None, &v4));
    assert!(!matched(port(Field::UdpDport), None, &v4));
    assert!(matched(port(Field::ThDport), None, &v4));
    let mut udp = v4.clone();
    udp.proto = L4Proto::Udp;
    assert!(matched(port(Field::UdpDport), None, &udp));
    assert!(!matched(port(Field::TcpDport), None, &udp));
    let sport = Rule::new().eq(
        Expr::Payload(Field::ThSport),
        Expr::Value(Value::Port(40000)),
    );
    assert!(matched(sport.clone(), None, &udp));
    let icmp = Packet::new(ip("10.0.0.1"), ip("10.0.0.2"), L4Proto::Icmp, 0, 0);
    assert!(!matched(
        Rule::new().ne(Expr::Payload(Field::ThDport), Expr::Value(Value::Port(80))),
        None,
        &icmp
    ));
}

#[test]
fn meta_keys_and_masks() {
    let mut p = tcp("10.0.0.1", "10.0.0.2", 80);
    let l4 = |x| Rule::new().eq(Expr::Meta(MetaKey::L4proto), Expr::value(x));
    assert!(matched(l4(L4Proto::Tcp), None, &p));
    assert!(!matched(l4(L4Proto::Udp), None, &p));
    let nf = |k| Rule::new().eq(Expr::Meta(MetaKey::Nfproto), Expr::keyword(k));
    assert!(matched(nf(Keyword::Ipv4), None, &p));
    assert!(!matched(nf(Keyword::Ipv6), None, &p));
    assert!(matched(
        nf(Keyword::Ipv6),
        None,
        &tcp("fd00::1", "fd00::2", 80)
    ));
    let masked = |v| {
        Rule::new().eq(
            Expr::And(Box::new(Expr::Meta(MetaKey::Mark)), 0x4000),
            Expr::Value(Value::Mark(v)),
        )
    };
    assert!(matched(masked(0), None, &p));
    p.mark = 0x4001;
    assert!(!matched(masked(0), None, &p));
    assert!(matched(masked(0x4000), None, &p));
    // Port masks (policy port ranges): 1000-1007 is `th dport & 0xfff8 == 1000`.
    let range = Rule::new().eq(
        Expr::And(Box::new(Expr::Payload(Field::ThDport)), 0xfff8),
        Expr::Value(Value::Port(1000)),
    );
    assert!(matched(
        range.clone(),
        None,
        &tcp("10.0.0.1", "10.0.0.2", 1005)
    ));
    assert!(!matched(range, None, &tcp("10.0.0.1", "10.0.0.2", 1008)));
    // Interfaces: an absent one reads as "", a trailing `*` is a wildcard.
    let iif = |n: &str| {
        Rule::new().eq(
            Expr::Meta(MetaKey::Iifname),
            Expr::Value(Value::Ifname(n.into())),
        )
    };
    let oif = |n: &str| {
        Rule::new().ne(
            Expr::Meta(MetaKey::Oifname),
            Expr::Value(Value::Ifname(n.into())),
        )
    };
    assert!(!matched(iif("eth0"), None, &p));
    assert!(matched(oif("lo"), None, &p), "no oif: \"\" != lo");
    p.iifname = Some("veth12".into());
    p.oifname = Some("lo".into());
    assert!(matched(iif("veth*"), None, &p));
    assert!(!matched(iif("veth1"), None, &p));
    assert!(!matched(oif("lo"), None, &p));
}

#[test]
fn ct_state_status_and_mark() {
    let mut p = tcp("10.0.0.1", "10.0.0.2", 80);
    let est = || {
        Rule::new().eq(
            Expr::Ct(CtKey::State),
            Expr::Keywords(vec![Keyword::Established, Keyword::Related]),
        )
    };
    assert!(!matched(est(), None, &p));
    p.ct = CtState::Related;
    assert!(matched(est(), None, &p));
    p.ct = CtState::Established;
    assert!(matched(est(), None, &p));
    let dnat = || Rule::new().eq(Expr::Ct(CtKey::Status), Expr::keyword(Keyword::Dnat));
    assert!(!matched(dnat(), None, &p));
    p.ct_dnat = true;
    assert!(matched(dnat(), None, &p));
    assert!(matched(
        Rule::new().eq(Expr::Ct(CtKey::Mark), Expr::Value(Value::Mark(0))),
        None,
        &p
    ));
}

#[test]
fn not_equal_to_symbols_is_modelled_only_where_the_kernel_agrees() {
    let mut p = tcp("10.0.0.1", "10.0.0.9", 80);
    p.ct = CtState::Established;
    // One symbol of a one-valued field: "not that one", as the kernel's whole-value compare.
    let not_new = Rule::new().ne(Expr::Ct(CtKey::State), Expr::keyword(Keyword::New));
    assert!(matched(not_new, None, &p));
    // A list, or ct status (whose other bits the model does not hold): refused, not guessed.
    for rule in [
        Rule::new().ne(
            Expr::Ct(CtKey::State),
            Expr::Keywords(vec![Keyword::Established, Keyword::Related]),
        ),
        Rule::new().ne(Expr::Ct(CtKey::Status), Expr::keyword(Keyword::Dnat)),
    ] {
        let mut t = table("t", vec![]);
        t.add_chain(
            filter("fwd", Hook::Forward, 0, Policy::Drop).rule(rule.verdict(Verdict::Accept)),
        );
        let e = run_hook(&[&t], Hook::Forward, &p, &env()).unwrap_err();
        assert!(e.to_string().contains("not modelled"), "{e}");
    }
}

#[test]
fn fib_type_local_asks_the_node() {
    let d = || Rule::new().eq(Expr::FibDaddrType, Expr::keyword(Keyword::Local));
    let s = || Rule::new().eq(Expr::FibSaddrType, Expr::keyword(Keyword::Local));
    assert!(matched(d(), None, &tcp("10.0.0.1", "192.168.1.1", 80)));
    assert!(!matched(d(), None, &tcp("10.0.0.1", "192.168.1.2", 80)));
    assert!(matched(s(), None, &tcp("192.168.1.1", "10.0.0.1", 80)));
    assert!(!matched(s(), None, &tcp("192.168.1.2", "10.0.0.1", 80)));
    assert!(matched(
        Rule::new().ne(Expr::FibDaddrType, Expr::keyword(Keyword::Local)),
        None,
        &tcp("10.0.0.1", "10.0.0.9", 80)
    ));
}

fn tuple() -> Expr {
    Expr::Concat(vec![
        Expr::Payload(Field::IpDaddr),
        Expr::Meta(MetaKey::L4proto),
        Expr::Payload(Field::ThDport),
    ])
}

#[test]
fn named_sets_exact_interval_and_concatenated() {
    let mut t = table("t", vec![]);
    let mut exact = Set::new(
        "svc",
        vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
    );
    exact.insert(Key(vec![
        Value::Addr(ip("10.96.0.1")),
        Value::Proto(L4Proto::Tcp),
        Value::Port(443),
    ]));
    t.add_set(exact);
    let mut nets = Set::new("nets", vec![DataType::Ipv4Addr]);
    nets.flags.interval = true;
    nets.insert(Key::one("10.244.0.0/16".parse::<ipnet::IpNet>().unwrap()));
    t.add_set(nets);
    let mut pairs = Set::new("pairs", vec![DataType::Ipv4Addr, DataType::InetService]);
    pairs.flags.interval = true;
    pairs.insert(Key(vec![
        Value::Prefix("10.1.0.0/24".parse().unwrap()),
        Value::Port(53),
    ]));
    t.add_set(pairs);

    let svc = || Rule::new().eq(tuple(), Expr::Set("svc".into()));
    let p = tcp("10.0.0.1", "10.96.0.1", 443);
    assert!(matched(svc(), Some(t.clone()), &p));
    assert!(!matched(
        svc(),
        Some(t.clone()),
        &tcp("10.0.0.1", "10.96.0.1", 80)
    ));
    let mut u = p.clone();
    u.proto = L4Proto::Udp;
    assert!(!matched(svc(), Some(t.clone()), &u));

    let nets = || Rule::new().eq(Expr::Payload(Field::IpSaddr), Expr::Set("nets".into()));
    assert!(matched(
        nets(),
        Some(t.clone()),
        &tcp("10.244.7.3", "10.0.0.1", 80)
    ));
    assert!(!matched(
        nets(),
        Some(t.clone()),
        &tcp("10.245.0.1", "10.0.0.1", 80)
    ));
    let not_nets = Rule::new().ne(Expr::Payload(Field::IpSaddr), Expr::Set("nets".into()));
    assert!(matched(
        not_nets,
        Some(t.clone()),
        &tcp("10.245.0.1", "10.0.0.1", 80)
    ));

    let pairs = || {
        Rule::new().eq(
            Expr::Concat(vec![
                Expr::Payload(Field::IpDaddr),
                Expr::Payload(Field::ThDport),
            ]),
            Expr::Set("pairs".into()),
        )
    };
    assert!(matched(
        pairs(),
        Some(t.clone()),
        &tcp("10.0.0.1", "10.1.0.9", 53)
    ));
    assert!(!matched(
        pairs(),
        Some(t.clone()),
        &tcp("10.0.0.1", "10.1.0.9", 54)
    ));
    assert!(!matched(
        pairs(),
        Some(t.clone()),
        &tcp("10.0.0.1", "10.1.1.9", 53)
    ));

    // The match is a step naming the set and the key.
    t.add_chain(filter("fwd", Hook::Forward, 0, Policy::Drop).rule(svc().verdict(Verdict::Accept)));
    let path = one(&[&t], Hook::Forward, &p);
    assert!(events(&path).contains(&&Event::SetMatch {
        set: "svc".into(),
        key: Key(vec![
            Value::Addr(ip("10.96.0.1")),
            Value::Proto(L4Proto::Tcp),
            Value::Port(443)
        ]),
    }));
    // `!= @set` that fails records no membership step.
    let mut neg = t.clone();
    neg.add_chain(
        filter("fwd", Hook::Forward, 0, Policy::Drop).rule(
            Rule::new()
                .ne(tuple(), Expr::Set("svc".into()))
                .verdict(Verdict::Accept),
        ),
    );
    let path = one(&[&neg], Hook::Forward, &p);
    assert_eq!(path.verdict, HookVerdict::Drop);
    assert!(!events(&path)
        .iter()
        .any(|e| matches!(e, Event::SetMatch { .. })));
    // An unknown set is an error.
    let bad = table(
        "t",
        vec![filter("fwd", Hook::Forward, 0, Policy::Drop)
            .rule(Rule::new().eq(Expr::Payload(Field::IpSaddr), Expr::Set("nope".into())))],
    );
    assert!(run_hook(&[&bad], Hook::Forward, &p, &env()).is_err());
}

#[test]
fn anonymous_sets_literals_and_prefixes() {
    let p = tcp("10.244.1.5", "203.0.113.9", 80);
    let anon =
        |keys: Vec<Vec<Value>>| Rule::new().eq(Expr::Payload(Field::IpSaddr), Expr::AnonSet(keys));
    let net = |s: &str| Value::Prefix(s.parse().unwrap());
    assert!(matched(anon(vec![vec![net("10.0.0.0/8")]]), None, &p));
    assert!(matched(
        anon(vec![
            vec![net("192.168.0.0/16")],
            vec![Value::Addr(ip("10.244.1.5"))]
        ]),
        None,
        &p
    ));
    assert!(!matched(anon(vec![vec![net("192.168.0.0/16")]]), None, &p));
    let pp = Rule::new().eq(
        Expr::Concat(vec![
            Expr::Meta(MetaKey::L4proto),
            Expr::Payload(Field::ThDport),
        ]),
        Expr::AnonSet(vec![
            vec![Value::Proto(L4Proto::Udp), Value::Port(80)],
            vec![Value::Proto(L4Proto::Tcp), Value::Port(80)],
        ]),
    );
    assert!(matched(pp, None, &p));
    let lit = Rule::new().ne(
        Expr::Payload(Field::IpDaddr),
        Expr::Value(net("203.0.113.0/24")),
    );
    assert!(!matched(lit, None, &p));
}

#[test]
fn verdict_maps_hit_or_fall_through() {
    let mut t = table(
        "t",
        vec![
            filter("fwd", Hook::Forward, 0, Policy::Accept)
                .rule(Rule::new().then(Stmt::Vmap {
                    key: tuple(),
                    map: "m".into(),
                }))
                .rule(Rule::new().then(Stmt::MarkSet(7))),
            Chain::new("svc").rule(Rule::new().then(Stmt::MarkSet(1)).comment("in svc")),
        ],
    );
    let mut m = Set::verdict_map(
        "m",
        vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
    );
    let key = Key(vec![
        Value::Addr(ip("10.96.0.1")),
        Value::Proto(L4Proto::Tcp),
        Value::Port(80),
    ]);
    m.insert_verdict(key.clone(), Verdict::Jump("svc".into()));
    t.add_set(m);
    let p = one(&[&t], Hook::Forward, &tcp("10.0.0.1", "10.96.0.1", 80));
    assert_eq!(p.packet.mark, 7, "jump through the map came back: {p:#?}");
    assert!(events(&p).contains(&&Event::MapHit {
        map: "m".into(),
        key
    }));
    assert!(p
        .steps
        .iter()
        .any(|s| s.comment.as_deref() == Some("in svc") && s.event == Event::MarkSet { mark: 1 }));
    let miss = one(&[&t], Hook::Forward, &tcp("10.0.0.1", "10.96.0.1", 81));
    assert_eq!(miss.packet.mark, 7);
    assert!(!events(&miss)
        .iter()
        .any(|e| matches!(e, Event::MapHit { .. })));
}

#[test]
fn dynamic_sets_start_empty_and_updates_count_within_the_run() {
    let mut t = table(
        "t",
        vec![filter("fwd", Hook::Forward, 0, Policy::Accept)
            .rule(
                Rule::new()
                    .eq(Expr::Payload(Field::IpSaddr), Expr::Set("seen".into()))
                    .then(Stmt::MarkOr(2)),
            )
            .rule(
                Rule::new()
                    .then(Stmt::UpdateSet {
                        set: "seen".into(),
                        key: Expr::Payload(Field::IpSaddr),
                        timeout: None,
                    })
                    .then(Stmt::Log {
                        prefix: Some("first ".into()),
                        group: Some(5),
                    }),
            )
            .rule(
                Rule::new()
                    .eq(Expr::Payload(Field::IpSaddr), Expr::Set("seen".into()))
                    .then(Stmt::MarkOr(1)),
            )],
    );
    let mut seen = Set::new("seen", vec![DataType::Ipv4Addr]);
    seen.flags.dynamic = true;
    // What the kernel's set held at listing time does not count.
    seen.insert(Key::one(ip("10.0.0.1")));
    t.add_set(seen);
    let p = one(&[&t], Hook::Forward, &tcp("10.0.0.1", "10.0.0.2", 80));
    assert_eq!(p.packet.mark, 1, "{p:#?}");
    assert!(events(&p).contains(&&Event::UpdateSet {
        set: "seen".into(),
        key: Key::one(ip("10.0.0.1"))
    }));
    assert!(events(&p).contains(&&Event::Log {
        prefix: Some("first ".into()),
        group: Some(5)
    }));
}

#[test]
fn tcp_flags_and_mss_clamping() {
    let syn = || {
        Rule::new().eq(
            Expr::And(Box::new(Expr::Payload(Field::TcpFlags)), TCP_SYN | TCP_RST),
            Expr::Value(Value::Num(TCP_SYN)),
        )
    };
    let mut p = tcp("10.0.0.1", "10.0.0.2", 80);
    assert!(
        matched(syn(), None, &p),
        "a new connection's first packet is a SYN"
    );
    p.tcp_flags = (TCP_SYN | TCP_ACK) as u8;
    assert!(matched(syn(), None, &p), "and so is the answer");
    p.tcp_flags = TCP_ACK as u8;
    assert!(!matched(syn(), None, &p));
    let udp = Packet::new(ip("10.0.0.1"), ip("10.0.0.2"), L4Proto::Udp, 5353, 53);
    assert!(!matched(syn(), None, &udp), "no tcp flags outside TCP");

    // The clamp is a step that changes no verdict: the rule goes on after it.
    let cables = Expr::AnonSet(vec![
        vec![Value::Ifname("sarasa-cable".into())],
        vec![Value::Ifname("sarasa-wg".into())],
    ]);
    let clamp = |hook| {
        table(
            "t",
            vec![filter("fwd", hook, -150, Policy::Accept).rule(
                syn()
                    .eq(Expr::Meta(MetaKey::Oifname), cables.clone())
                    .then(Stmt::ClampMssToPmtu)
                    .then(Stmt::MarkSet(1)),
            )],
        )
    };
    let t = clamp(Hook::Forward);
    let mut p = tcp("10.0.0.1", "10.1.0.2", 443);
    p.oifname = Some("sarasa-wg".into());
    let path = one(&[&t], Hook::Forward, &p);
    assert_eq!(path.verdict, HookVerdict::Accept);
    assert!(events(&path).contains(&&Event::MssClamped), "{path:#?}");
    assert_eq!(path.packet.mark, 1);
    p.oifname = Some("eth0".into());
    let path = one(&[&t], Hook::Forward, &p);
    assert!(!events(&path).contains(&&Event::MssClamped));
    // A packet that is not TCP ends the rule at the option write.
    let bare = table(
        "t",
        vec![filter("fwd", Hook::Forward, 0, Policy::Accept).rule(
            Rule::new()
                .then(Stmt::ClampMssToPmtu)
                .then(Stmt::MarkSet(1)),
        )],
    );
    let path = one(&[&bare], Hook::Forward, &udp);
    assert_eq!(path.packet.mark, 0);
    assert!(!events(&path).contains(&&Event::MssClamped));
    // `rt mtu` needs a route: the kernel refuses the rule in prerouting and input.
    p.oifname = Some("sarasa-cable".into());
    let err = run_hook(&[&clamp(Hook::Prerouting)], Hook::Prerouting, &p, &env()).unwrap_err();
    assert!(err.to_string().contains("rt mtu"), "{err}");
}

#[test]
fn notrack_before_conntrack_untracks_the_packet_and_skips_nat() {
    let vxlan = || {
        Rule::new()
            .eq(
                Expr::Payload(Field::UdpDport),
                Expr::Value(Value::Port(8472)),
            )
            .then(Stmt::Notrack)
    };
    let raw = table(
        "raw",
        vec![
            filter("pre", Hook::Prerouting, -300, Policy::Accept).rule(vxlan()),
            filter("seen", Hook::Prerouting, 0, Policy::Accept).rule(
                Rule::new()
                    .eq(Expr::Ct(CtKey::State), Expr::keyword(Keyword::Untracked))
                    .then(Stmt::MarkSet(7)),
            ),
        ],
    );
    let nat = table(
        "nat",
        vec![Chain::base(
            "dnat",
            crate::model::ChainType::Nat,
            Hook::Prerouting,
            -100,
            Policy::Accept,
        )
        .rule(Rule::new().then(Stmt::Dnat {
            addr: ip("10.9.0.1"),
            port: None,
        }))],
    );
    let mut outer = tcp("192.168.33.12", "192.168.33.11", 8472);
    outer.proto = L4Proto::Udp;
    let path = one(&[&raw, &nat], Hook::Prerouting, &outer);
    assert_eq!(path.packet.ct, CtState::Untracked);
    assert!(events(&path).contains(&&Event::Untracked), "{path:#?}");
    assert!(events(&path).contains(&&Event::NatSkipped), "{path:#?}");
    assert_eq!(path.packet.daddr, ip("192.168.33.11"), "no DNAT");
    assert_eq!(path.packet.mark, 7, "ct state untracked matches after it");

    // Another port: tracked, and the NAT chain runs.
    let mut other = outer.clone();
    other.dport = 53;
    let path = one(&[&raw, &nat], Hook::Prerouting, &other);
    assert_eq!(path.packet.ct, CtState::New);
    assert_eq!(path.packet.daddr, ip("10.9.0.1"));

    // After conntrack's priority the statement finds an entry and does nothing.
    let late = table(
        "late",
        vec![filter("pre", Hook::Prerouting, -150, Policy::Accept).rule(vxlan())],
    );
    let path = one(&[&late, &nat], Hook::Prerouting, &outer);
    assert_eq!(path.packet.ct, CtState::New);
    assert!(!events(&path).contains(&&Event::Untracked));
    assert_eq!(path.packet.daddr, ip("10.9.0.1"));
}
