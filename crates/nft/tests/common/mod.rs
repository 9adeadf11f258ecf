//! A small ruleset shaped like the service proxy's, shared by the tests.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::net::IpAddr;

use sarasa_nft::*;

/// A network namespace made by a test and removed on drop, also when the test fails.
pub struct Netns(pub String);

impl Netns {
    /// `<prefix><pid>-<n>`: unique per test process and call.
    pub fn new(prefix: &str) -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name} (are we root?)");
        Netns(name)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// Runs `nft ARGS` in the namespace; panics with its stderr on failure.
    pub fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn svc_key(ip: &str, proto: L4Proto, port: u16) -> Key {
    Key(vec![
        Value::Addr(ip.parse().unwrap()),
        Value::Proto(proto),
        Value::Port(port),
    ])
}

pub fn ep_chain(name: &str, ip: &str, port: u16) -> Chain {
    Chain::new(name)
        .rule(
            Rule::new()
                .eq(
                    Expr::Payload(Field::IpSaddr),
                    Expr::value(ip.parse::<std::net::IpAddr>().unwrap()),
                )
                .then(Stmt::MarkOr(0x4000)),
        )
        .rule(
            Rule::new()
                .then(Stmt::UpdateSet {
                    set: "aff-a".into(),
                    key: Expr::Payload(Field::IpSaddr),
                    timeout: Some(10800),
                })
                .eq(Expr::Meta(MetaKey::L4proto), Expr::value(L4Proto::Tcp))
                .then(Stmt::Dnat {
                    addr: ip.parse().unwrap(),
                    port: Some(port),
                }),
        )
}

pub fn sample() -> Table {
    let mut t = Table::new(Family::Inet, "sarasa");
    let mut services = Set::verdict_map(
        "services-v4",
        vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
    );
    services.insert_verdict(
        svc_key("10.96.0.10", L4Proto::Tcp, 80),
        Verdict::Goto("svc-a".into()),
    );
    services.insert_verdict(
        svc_key("10.96.0.11", L4Proto::Udp, 53),
        Verdict::Goto("svc-b".into()),
    );
    t.add_set(services);
    let mut aff = Set::new("aff-a", vec![DataType::Ipv4Addr]);
    aff.flags.dynamic = true;
    aff.flags.timeout = true;
    aff.timeout = Some(10800);
    t.add_set(aff);
    let mut nets = Set::new("cluster-cidrs", vec![DataType::Ipv4Addr]);
    nets.flags.interval = true;
    nets.insert(Key::one("10.244.0.0/16".parse::<ipnet::IpNet>().unwrap()));
    nets.comment = Some("pod CIDRs".into());
    t.add_set(nets);
    t.add_chain(
        Chain::base(
            "nat-prerouting",
            ChainType::Nat,
            Hook::Prerouting,
            -100,
            Policy::Accept,
        )
        .rule(Rule::new().then(Stmt::Vmap {
            key: Expr::Concat(vec![
                Expr::Payload(Field::IpDaddr),
                Expr::Meta(MetaKey::L4proto),
                Expr::Payload(Field::ThDport),
            ]),
            map: "services-v4".into(),
        })),
    );
    t.add_chain(
        Chain::base(
            "nat-postrouting",
            ChainType::Nat,
            Hook::Postrouting,
            100,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::And(Box::new(Expr::Meta(MetaKey::Mark)), 0x4000),
                    Expr::Value(Value::Mark(0)),
                )
                .verdict(Verdict::Return),
        )
        .rule(Rule::new().then(Stmt::Masquerade { fully_random: true })),
    );
    t.add_chain(
        Chain::new("svc-a")
            .rule(
                Rule::new()
                    .ne(
                        Expr::Payload(Field::IpSaddr),
                        Expr::Set("cluster-cidrs".into()),
                    )
                    .then(Stmt::MarkOr(0x4000)),
            )
            .rule(
                Rule::new()
                    .then(Stmt::NumgenVmap {
                        targets: vec![Verdict::Goto("ep-a1".into()), Verdict::Goto("ep-a2".into())],
                    })
                    .comment("default/a:http"),
            ),
    );
    t.add_chain(ep_chain("ep-a1", "10.244.1.5", 8080));
    t.add_chain(ep_chain("ep-a2", "10.244.2.5", 8080));
    t.add_chain(
        Chain::new("svc-b")
            .rule(
                Rule::new()
                    .eq(Expr::Meta(MetaKey::L4proto), Expr::value(L4Proto::Tcp))
                    .then(Stmt::Reject(RejectKind::TcpReset)),
            )
            .rule(
                Rule::new()
                    .counter()
                    .then(Stmt::Reject(RejectKind::IcmpxPortUnreachable)),
            ),
    );
    t.validate().unwrap();
    t
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn net(s: &str) -> Value {
    Value::Prefix(s.parse().unwrap())
}

/// A table with a bit of everything the model has, for `family` (`ip` fields in ip and inet
/// tables, `ip6` ones in ip6 and inet tables).
pub fn varied(family: Family, name: &str) -> Table {
    let v4 = family != Family::Ip6;
    let v6 = family != Family::Ip;
    let mut t = Table::new(family, name);
    // Base chains on every hook the proxy uses, and more, with various priorities/policies.
    for (cname, kind, hook, prio, policy) in [
        (
            "pre-nat",
            ChainType::Nat,
            Hook::Prerouting,
            -100,
            Policy::Accept,
        ),
        (
            "pre-raw",
            ChainType::Filter,
            Hook::Prerouting,
            -300,
            Policy::Accept,
        ),
        ("in", ChainType::Filter, Hook::Input, 0, Policy::Drop),
        (
            "forward-filter",
            ChainType::Filter,
            Hook::Forward,
            -110,
            Policy::Accept,
        ),
        (
            "out-nat",
            ChainType::Nat,
            Hook::Output,
            -100,
            Policy::Accept,
        ),
        (
            "out-route",
            ChainType::Route,
            Hook::Output,
            -150,
            Policy::Accept,
        ),
        ("out", ChainType::Filter, Hook::Output, -90, Policy::Accept),
        (
            "post-nat",
            ChainType::Nat,
            Hook::Postrouting,
            100,
            Policy::Accept,
        ),
        (
            "post",
            ChainType::Filter,
            Hook::Postrouting,
            300,
            Policy::Drop,
        ),
    ] {
        t.add_chain(Chain::base(cname, kind, hook, prio, policy));
    }
    t.add_chain(Chain::new("empty"));
    t.add_chain(Chain::new("target-a").rule(Rule::new().counter().verdict(Verdict::Accept)));
    t.add_chain(
        Chain::new("target-b").rule(Rule::new().counter()).rule(
            Rule::new()
                .verdict(Verdict::Return)
                .comment("with a user comment"),
        ),
    );

    let mut pre = Chain::base(
        "pre-nat",
        ChainType::Nat,
        Hook::Prerouting,
        -100,
        Policy::Accept,
    );
    let mut filter = Chain::base("in", ChainType::Filter, Hook::Input, 0, Policy::Drop)
        .rule(
            Rule::new()
                .eq(
                    Expr::Ct(CtKey::State),
                    Expr::Keywords(vec![Keyword::Established, Keyword::Related]),
                )
                .verdict(Verdict::Accept),
        )
        .rule(
            Rule::new()
                .eq(Expr::Payload(Field::ThDport), Expr::Set("ports".into()))
                .verdict(Verdict::Jump("target-a".into())),
        )
        .rule(
            Rule::new()
                .eq(Expr::Meta(MetaKey::Mark), Expr::Set("marks".into()))
                .verdict(Verdict::Accept),
        )
        .rule(
            Rule::new()
                .then(Stmt::NumgenVmap {
                    targets: vec![
                        Verdict::Goto("target-a".into()),
                        Verdict::Goto("target-b".into()),
                        Verdict::Drop,
                    ],
                })
                .comment("anonymous map"),
        );
    let mut sets = Vec::new();
    let elem = |v: Verdict, c: Option<&str>| Element {
        value: Some(MapValue::Verdict(v)),
        timeout: None,
        comment: c.map(str::to_string),
    };
    for (fam_ok, suffix, addr_t, daddr, saddr, a, b, nets) in [
        (
            v4,
            "4",
            DataType::Ipv4Addr,
            Field::IpDaddr,
            Field::IpSaddr,
            "10.96.0.1",
            "10.96.0.2",
            [
                "10.0.0.0/24",
                "10.0.1.0/24",
                "10.1.0.0/16",
                "255.255.255.0/24",
            ],
        ),
        (
            v6,
            "6",
            DataType::Ipv6Addr,
            Field::Ip6Daddr,
            Field::Ip6Saddr,
            "fd00::1",
            "fd00::2",
            ["fd00:1::/64", "fd00:1:0:1::/64", "fd00:2::/48", "ffff::/16"],
        ),
    ] {
        if !fam_ok {
            continue;
        }
        // A concatenated verdict map with every kind of verdict and element comments.
        let mut svc = Set::verdict_map(
            format!("svc{suffix}"),
            vec![addr_t, DataType::InetProto, DataType::InetService],
        );
        svc.comment = Some("services".into());
        let key = |ip_: &str, p: L4Proto, port: u16| {
            Key(vec![
                Value::Addr(ip(ip_)),
                Value::Proto(p),
                Value::Port(port),
            ])
        };
        svc.elements.insert(
            key(a, L4Proto::Tcp, 80),
            elem(Verdict::Goto("target-a".into()), Some("a/http")),
        );
        svc.elements.insert(
            key(a, L4Proto::Udp, 53),
            elem(Verdict::Jump("target-b".into()), None),
        );
        svc.elements.insert(
            key(b, L4Proto::Sctp, 9),
            elem(Verdict::Drop, Some("dropped")),
        );
        svc.elements
            .insert(key(b, L4Proto::Tcp, 443), elem(Verdict::Accept, None));
        svc.elements
            .insert(key(b, L4Proto::Tcp, 8443), elem(Verdict::Return, None));
        svc.elements
            .insert(key(b, L4Proto::Tcp, 8444), elem(Verdict::Continue, None));
        sets.push(svc);
        // Plain addresses with and without comments.
        let mut addrs = Set::new(format!("addrs{suffix}"), vec![addr_t]);
        addrs.insert(Key::one(ip(a)));
        addrs.elements.insert(
            Key::one(ip(b)),
            Element {
                comment: Some("second".into()),
                ..Element::default()
            },
        );
        sets.push(addrs);
        // Prefixes (two adjacent), a single address, a range up to the maximum.
        let mut cidrs = Set::new(format!("cidrs{suffix}"), vec![addr_t]);
        cidrs.flags.interval = true;
        cidrs.comment = Some("networks".into());
        for n in nets {
            cidrs.insert(Key::one(net(n)));
        }
        cidrs.elements.insert(
            Key::one(ip(b)),
            Element {
                comment: Some("one address".into()),
                ..Element::default()
            },
        );
        sets.push(cidrs);
        // An interval verdict map.
        let mut ivmap = Set::verdict_map(format!("ivmap{suffix}"), vec![addr_t]);
        ivmap.flags.interval = true;
        ivmap.elements.insert(
            Key::one(net(nets[2])),
            elem(Verdict::Goto("target-a".into()), None),
        );
        ivmap
            .elements
            .insert(Key::one(ip(a)), elem(Verdict::Drop, Some("one")));
        sets.push(ivmap);
        // A data map yielding a concatenation.
        let mut dm = Set::new(format!("dnat{suffix}"), vec![addr_t]);
        dm.map = Some(MapType::Data(vec![addr_t, DataType::InetService]));
        dm.elements.insert(
            Key::one(ip(a)),
            Element {
                value: Some(MapValue::Data(Key(vec![
                    Value::Addr(ip(b)),
                    Value::Port(8080),
                ]))),
                ..Element::default()
            },
        );
        sets.push(dm);
        // Affinity-like dynamic set (the datapath owns its elements).
        let mut aff = Set::new(format!("aff{suffix}"), vec![addr_t]);
        aff.flags.dynamic = true;
        aff.flags.timeout = true;
        aff.timeout = Some(10800);
        sets.push(aff);

        pre.push(
            Rule::new()
                .then(Stmt::Vmap {
                    key: Expr::Concat(vec![
                        Expr::Payload(daddr),
                        Expr::Meta(MetaKey::L4proto),
                        Expr::Payload(Field::ThDport),
                    ]),
                    map: format!("svc{suffix}"),
                })
                .counter(),
        );
        filter.push(
            Rule::new()
                .ne(
                    Expr::Payload(saddr),
                    Expr::AnonSet(vec![vec![net(nets[0])], vec![Value::Addr(ip(b))]]),
                )
                .eq(Expr::Payload(daddr), Expr::Set(format!("addrs{suffix}")))
                .then(Stmt::UpdateSet {
                    set: format!("aff{suffix}"),
                    key: Expr::Payload(saddr),
                    timeout: Some(600),
                })
                .verdict(Verdict::Accept),
        );
        filter.push(
            Rule::new()
                .eq(Expr::Payload(saddr), Expr::Set(format!("cidrs{suffix}")))
                .then(Stmt::Vmap {
                    key: Expr::Payload(daddr),
                    map: format!("ivmap{suffix}"),
                }),
        );
        filter.push(
            Rule::new()
                .eq(
                    Expr::Payload(saddr),
                    Expr::AnonSet(vec![vec![net(nets[2])]]),
                )
                .verdict(Verdict::Drop),
        );
    }
    let mut ports = Set::new("ports", vec![DataType::InetService]);
    for p in [22, 80, 443] {
        ports.insert(Key::one(Value::Port(p)));
    }
    sets.push(ports);
    let mut port_ranges = Set::new("port-ranges", vec![DataType::InetService]);
    port_ranges.flags.interval = true;
    port_ranges.insert(Key::one(Value::Port(53)));
    port_ranges.insert(Key::one(Value::Port(65535)));
    sets.push(port_ranges);
    let mut protos = Set::new("protos", vec![DataType::InetProto]);
    protos.insert(Key::one(L4Proto::Tcp));
    protos.insert(Key::one(L4Proto::Icmpv6));
    sets.push(protos);
    let mut marks = Set::new("marks", vec![DataType::Mark]);
    marks.insert(Key::one(Value::Mark(0x4000)));
    marks.insert(Key::one(Value::Mark(1)));
    sets.push(marks);
    let mut ifs = Set::new("ifaces", vec![DataType::Ifname]);
    ifs.insert(Key::one(Value::Ifname("eth0".into())));
    ifs.insert(Key::one(Value::Ifname("veth-abc.10".into())));
    sets.push(ifs);
    let mut timed = Set::new("timed", vec![DataType::InetService]);
    timed.flags.timeout = true;
    timed.timeout = Some(3600);
    timed.elements.insert(
        Key::one(Value::Port(1)),
        Element {
            timeout: Some(60),
            ..Element::default()
        },
    );
    sets.push(timed);
    sets.push(Set::new("nothing", vec![DataType::Ipv4Addr]));
    sets.push(Set::verdict_map(
        "nothing-map",
        vec![DataType::InetProto, DataType::InetService],
    ));
    for s in sets {
        t.add_set(s);
    }
    t.add_chain(pre);
    t.add_chain(filter);
    t.validate().unwrap();
    t
}

/// A table with the statements of the proxy's, the policy's and the masquerade tables that
/// `varied` lacks: marks, nat, masquerade, reject, fib, ct state bits, numgen compare.
pub fn datapath_like(name: &str) -> Table {
    let mut t = Table::new(Family::Inet, name);
    let ct_new = || Rule::new().eq(Expr::Ct(CtKey::State), Expr::Keywords(vec![Keyword::New]));
    t.add_chain(
        Chain::base(
            "nat-pre",
            ChainType::Nat,
            Hook::Prerouting,
            -100,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::Meta(MetaKey::Nfproto),
                    Expr::Keywords(vec![Keyword::Ipv4]),
                )
                .eq(
                    Expr::Payload(Field::IpDaddr),
                    Expr::Value(Value::Addr(ip("10.96.0.10"))),
                )
                .eq(
                    Expr::Meta(MetaKey::L4proto),
                    Expr::Value(Value::Proto(L4Proto::Udp)),
                )
                .eq(Expr::Payload(Field::ThDport), Expr::Value(Value::Port(53)))
                .verdict(Verdict::Jump("svc".into())),
        )
        .rule(
            Rule::new()
                .eq(Expr::FibDaddrType, Expr::Keywords(vec![Keyword::Local]))
                .ne(
                    Expr::Payload(Field::IpDaddr),
                    Expr::Value(net("127.0.0.0/8")),
                )
                .eq(
                    Expr::Meta(MetaKey::L4proto),
                    Expr::AnonSet(vec![
                        vec![Value::Proto(L4Proto::Tcp)],
                        vec![Value::Proto(L4Proto::Udp)],
                    ]),
                )
                .verdict(Verdict::Accept),
        ),
    );
    t.add_chain(
        Chain::new("svc")
            .rule(
                Rule::new()
                    .eq(Expr::NumgenRandom(2), Expr::Value(Value::Num(0)))
                    .verdict(Verdict::Goto("ep-0".into())),
            )
            .rule(Rule::new().verdict(Verdict::Goto("ep-1".into()))),
    );
    for (i, (addr, port)) in [("10.244.1.5", Some(53)), ("fd00::5", None)]
        .iter()
        .enumerate()
    {
        t.add_chain(
            Chain::new(format!("ep-{i}"))
                .rule(
                    Rule::new()
                        .eq(
                            Expr::Payload(Field::IpSaddr),
                            Expr::Value(Value::Addr(ip("10.244.1.5"))),
                        )
                        .then(Stmt::MarkOr(0x4000)),
                )
                .rule(Rule::new().then(Stmt::Dnat {
                    addr: ip(addr),
                    port: *port,
                })),
        );
    }
    t.add_chain(
        Chain::base(
            "filter-out",
            ChainType::Filter,
            Hook::Output,
            -110,
            Policy::Accept,
        )
        .rule(ct_new().verdict(Verdict::Jump("reject".into())))
        .rule(
            Rule::new()
                .eq(Expr::FibSaddrType, Expr::Keywords(vec![Keyword::Local]))
                .then(Stmt::MarkSet(7)),
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::Ct(CtKey::State),
                    Expr::Keywords(vec![Keyword::Established, Keyword::Related]),
                )
                .verdict(Verdict::Accept),
        ),
    );
    t.add_chain(
        Chain::new("reject")
            .rule(
                Rule::new()
                    .eq(
                        Expr::Meta(MetaKey::L4proto),
                        Expr::Value(Value::Proto(L4Proto::Tcp)),
                    )
                    .then(Stmt::Reject(RejectKind::TcpReset)),
            )
            .rule(Rule::new().then(Stmt::Reject(RejectKind::IcmpxAdminProhibited)))
            .rule(Rule::new().then(Stmt::Reject(RejectKind::IcmpxPortUnreachable))),
    );
    t.add_chain(
        Chain::base(
            "nat-post",
            ChainType::Nat,
            Hook::Postrouting,
            100,
            Policy::Accept,
        )
        .rule(Rule::new().verdict(Verdict::Jump("masquerading".into())))
        .rule(
            Rule::new()
                .eq(
                    Expr::Payload(Field::IpSaddr),
                    Expr::AnonSet(vec![vec![net("10.244.0.0/16")], vec![net("10.245.0.0/16")]]),
                )
                .ne(
                    Expr::Payload(Field::IpDaddr),
                    Expr::AnonSet(vec![vec![net("10.244.0.0/16")], vec![net("10.96.0.0/12")]]),
                )
                .ne(
                    Expr::Payload(Field::IpDaddr),
                    Expr::Value(net("224.0.0.0/4")),
                )
                .counter()
                .then(Stmt::Masquerade { fully_random: true }),
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::Payload(Field::Ip6Saddr),
                    Expr::Value(net("fd00::/64")),
                )
                .then(Stmt::Snat {
                    addr: ip("fd00::1"),
                }),
        ),
    );
    t.add_chain(
        Chain::new("masquerading")
            .rule(
                Rule::new()
                    .eq(
                        Expr::And(Box::new(Expr::Meta(MetaKey::Mark)), 0x4000),
                        Expr::Value(Value::Mark(0)),
                    )
                    .verdict(Verdict::Return),
            )
            .rule(Rule::new().then(Stmt::MarkAnd(!0x4000)))
            .rule(Rule::new().then(Stmt::Masquerade {
                fully_random: false,
            })),
    );
    t.validate().unwrap();
    t
}

/// A table shaped like NetworkPolicy's: a port range as a masked port, exact ports as an
/// anonymous set of protocol . port pairs, drops logged through
/// nflog once per source . destination pair (a dynamic timeout set), and the other forms of
/// `log` the model has.
pub fn logged(name: &str) -> Table {
    let mut t = Table::new(Family::Inet, name);
    let pair = Expr::Concat(vec![
        Expr::Payload(Field::IpSaddr),
        Expr::Payload(Field::IpDaddr),
    ]);
    let mut seen = Set::new("logged-v4", vec![DataType::Ipv4Addr, DataType::Ipv4Addr]);
    seen.flags = SetFlags {
        interval: false,
        timeout: true,
        dynamic: true,
    };
    seen.timeout = Some(5);
    seen.comment = Some("source . destination pairs logged recently".into());
    t.add_set(seen);
    t.add_chain(
        Chain::base(
            "forward",
            ChainType::Filter,
            Hook::Forward,
            0,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::Payload(Field::IpDaddr),
                    Expr::Value(Value::Addr(ip("10.244.1.5"))),
                )
                .verdict(Verdict::Jump("ing_default_web".into())),
        )
        .rule(
            // A NetworkPolicy port range as a masked block (ports 82-83).
            Rule::new()
                .eq(
                    Expr::Meta(MetaKey::L4proto),
                    Expr::Value(Value::Proto(L4Proto::Tcp)),
                )
                .eq(
                    Expr::And(Box::new(Expr::Payload(Field::ThDport)), 0xfffe),
                    Expr::Value(Value::Port(82)),
                )
                .verdict(Verdict::Accept),
        )
        .rule(
            // NetworkPolicy's exact ports: protocol . port pairs in an anonymous set.
            Rule::new()
                .eq(
                    Expr::Concat(vec![
                        Expr::Meta(MetaKey::L4proto),
                        Expr::Payload(Field::ThDport),
                    ]),
                    Expr::AnonSet(vec![
                        vec![Value::Proto(L4Proto::Tcp), Value::Port(80)],
                        vec![Value::Proto(L4Proto::Udp), Value::Port(53)],
                    ]),
                )
                .verdict(Verdict::Accept),
        )
        .rule(Rule::new().then(Stmt::Log {
            prefix: None,
            group: None,
        })),
    );
    t.add_chain(
        Chain::new("ing_default_web")
            .rule(
                Rule::new()
                    .eq(pair.clone(), Expr::Set("logged-v4".into()))
                    .counter()
                    .verdict(Verdict::Drop),
            )
            .rule(
                Rule::new()
                    .then(Stmt::UpdateSet {
                        set: "logged-v4".into(),
                        key: pair,
                        timeout: None,
                    })
                    .then(Stmt::Log {
                        prefix: Some("sarasa-pol I 1a2b3c4d".into()),
                        group: Some(100),
                    })
                    .counter()
                    .verdict(Verdict::Drop),
            )
            .rule(
                Rule::new()
                    .then(Stmt::Log {
                        prefix: Some("plain syslog".into()),
                        group: None,
                    })
                    .then(Stmt::Log {
                        prefix: None,
                        group: Some(7),
                    })
                    .counter()
                    .verdict(Verdict::Drop)
                    .comment("selected by default/deny"),
            ),
    );
    t.validate().unwrap();
    t
}

/// The `log` statements of `t`, as `(chain, statement)` in chain and rule order.
pub fn log_statements(t: &Table) -> Vec<(String, Stmt)> {
    let mut out = Vec::new();
    for c in t.chains.values() {
        for r in &c.rules {
            for s in &r.stmts {
                if matches!(s, Stmt::Log { .. }) {
                    out.push((c.name.clone(), s.clone()));
                }
            }
        }
    }
    out
}
