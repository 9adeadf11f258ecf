//! A small ruleset shaped like the service proxy's, shared by the tests.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

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
