//! Privileged tests of the native netlink backend, inside test-made network namespaces: the
//! netlink listing against `nft -j` parsed by `KernelTable::parse`, native programming against
//! `nft -f`, multi-table batches (atomicity) and a large batch. They need root and the `nft`,
//! `ip` and `nsenter` tools; they fail (never skip) without them.

mod common;

use common::*;
use sarasa_nft::*;

impl Netns {
    fn cli(&self) -> NftCli {
        NftCli::in_netns(self.path())
    }
    fn native(&self) -> NetlinkBackend {
        NetlinkBackend::in_netns(self.path()).unwrap()
    }
    /// `nft list table`, without element expiry times (they tick).
    fn listing(&self, family: Family, name: &str) -> String {
        let text = self.nft(&["list", "table", family.as_str(), name]);
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find(" expires ") {
            out.push_str(&rest[..at]);
            let tail = &rest[at + " expires ".len()..];
            let end = tail.find([' ', ',', '\n']).unwrap_or(tail.len());
            rest = &tail[end..];
        }
        out.push_str(rest);
        out
    }
    fn script(&self, s: &str) {
        self.cli()
            .run_script(s)
            .unwrap_or_else(|e| panic!("{e}\n{s}"));
    }
}

/// Asserts that the netlink listing equals the JSON one, and returns it.
fn same_listing(ns: &Netns, family: Family, name: &str) -> Option<KernelTable> {
    let json = ns.cli().list_table(family, name).unwrap();
    let native = ns.native().list_table(family, name).unwrap();
    assert_eq!(native, json, "netlink and JSON listings of {name} differ");
    native
}

/// `nft -j list table` without rule and object handles (they count per namespace) and without
/// set elements' expiry (it ticks).
fn kernel_json(ns: &Netns, family: Family, name: &str) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                m.remove("expires");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value =
        serde_json::from_str(&ns.nft(&["-j", "list", "table", family.as_str(), name])).unwrap();
    strip(&mut v);
    v
}

#[test]
fn logging_tables_go_native_and_leave_what_nft_f_leaves() {
    // The policy-shaped table with its nflog and syslog `log` statements: natively in one
    // namespace, through `nft -f` in another; the kernel must hold the same thing.
    let native_ns = Netns::new("sx-nft-t");
    let nft_ns = Netns::new("sx-nft-t");
    let want = logged("sarasa-policy");
    let tx = diff_kernel(None, &want);
    let mut nl = native_ns.native();
    nl.apply_to(Family::Inet, "sarasa-policy", &tx).unwrap();
    assert_eq!(nl.native_count, 1);
    nft_ns.script(&tx.script());
    let native = kernel_json(&native_ns, Family::Inet, "sarasa-policy");
    assert_eq!(native, kernel_json(&nft_ns, Family::Inet, "sarasa-policy"));
    let text = serde_json::to_string(&native).unwrap();
    for needle in [
        r#""prefix":"sarasa-pol I 1a2b3c4d""#,
        r#""group":100"#,
        r#""group":7"#,
    ] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    // Read back: nothing to change; a changed prefix is one chain rewrite, still native.
    let k = same_listing(&native_ns, Family::Inet, "sarasa-policy").unwrap();
    assert!(diff_kernel(Some(&k), &want).is_empty());
    let mut changed = want.clone();
    for r in &mut changed.chains.get_mut("ing_default_web").unwrap().rules {
        for st in &mut r.stmts {
            if let Stmt::Log {
                prefix: Some(p), ..
            } = st
            {
                p.push_str(" v2");
            }
        }
    }
    let tx = diff_kernel(Some(&k), &changed);
    assert!(!tx.is_empty());
    nl.apply_to(Family::Inet, "sarasa-policy", &tx).unwrap();
    assert_eq!(nl.native_count, 2);
    assert!(kernel_json(&native_ns, Family::Inet, "sarasa-policy")
        .to_string()
        .contains("1a2b3c4d v2"));
}

#[test]
fn missing_table_lists_as_none() {
    let ns = Netns::new("sx-nft-t");
    assert!(ns
        .native()
        .list_table(Family::Inet, "sarasa")
        .unwrap()
        .is_none());
    ns.script("add table ip sarasa\n");
    // Same name, other family: still none.
    assert!(ns
        .native()
        .list_table(Family::Inet, "sarasa")
        .unwrap()
        .is_none());
    assert!(same_listing(&ns, Family::Ip, "sarasa").is_some());
}

#[test]
fn netlink_listing_equals_json_listing() {
    let ns = Netns::new("sx-nft-t");
    // Tables written by nft (the JSON path's reference), in every family.
    for (family, name) in [
        (Family::Inet, "varied"),
        (Family::Ip, "varied4"),
        (Family::Ip6, "varied6"),
    ] {
        let want = varied(family, name);
        ns.script(&diff_kernel(None, &want).script());
        let k = same_listing(&ns, family, name).unwrap();
        assert!(
            diff_kernel(Some(&k), &want).is_empty(),
            "{name}: kernel differs from the model"
        );
        assert_eq!(k.chains.len(), want.chains.len());
        assert_eq!(
            k.sets.len(),
            want.sets.len(),
            "anonymous sets are not listed"
        );
        // Small tables are read by name too (the chain dump has no table filter).
        let mut nl = ns.native();
        assert_eq!(nl.list_table_like(&want).unwrap(), Some(k), "{name}");
        assert_eq!(nl.chain_dumps, 0, "{name}: read by name, no chain dump");
    }
    // The proxy-like sample, with a datapath-added affinity element.
    ns.script(&diff_kernel(None, &sample()).script());
    ns.nft(&[
        "add",
        "element",
        "inet",
        "sarasa",
        "aff-a",
        "{ 192.0.2.1 timeout 1h, 192.0.2.2 }",
    ]);
    let k = same_listing(&ns, Family::Inet, "sarasa").unwrap();
    assert_eq!(k.sets["aff-a"].elements.len(), 2);
    assert!(diff_kernel(Some(&k), &sample()).is_empty());
    assert_eq!(ns.native().list_table_like(&sample()).unwrap(), Some(k));
    // Things only other writers produce: rules without hash comments, a user-only comment,
    // elements added separately next to each other, a foreign table of the same name.
    ns.script(
        "add chain inet varied nohash\n\
         add rule inet varied nohash counter\n\
         add chain inet varied user-comment\n\
         add rule inet varied user-comment accept comment \"no hash here\"\n\
         add element inet varied cidrs4 { 10.0.2.0/24 comment \"adjacent\" }\n\
         add element inet varied cidrs4 { 10.0.3.0/24 }\n\
         add element inet varied timed { 2 timeout 2h comment \"c\" }\n\
         add table ip6 varied\n\
         add chain ip6 varied x\n",
    );
    let k = same_listing(&ns, Family::Inet, "varied").unwrap();
    assert_eq!(k.chains["nohash"].hash, None);
    assert_eq!(k.chains["user-comment"].hash, None);
    assert_eq!(k.chains["user-comment"].rule_count, 1);
    assert_eq!(k.sets["cidrs4"].elements.len(), 7);
    assert!(!k.chains.contains_key("x"));
    // Ranges the model has no value for: both readers refuse them.
    ns.script("add element inet varied cidrs4 { 10.7.0.1-10.7.0.5 }\n");
    assert!(ns.cli().list_table(Family::Inet, "varied").is_err());
    let err = ns.native().list_table(Family::Inet, "varied").unwrap_err();
    assert!(err.to_string().contains("range"), "{err}");
}

#[test]
fn native_programming_matches_nft() {
    let by_nft = Netns::new("sx-nft-t");
    let native = Netns::new("sx-nft-t");
    let mut nl = native.native();
    for (family, name, want) in [
        (Family::Inet, "varied", varied(Family::Inet, "varied")),
        (Family::Ip, "varied4", varied(Family::Ip, "varied4")),
        (Family::Ip6, "varied6", varied(Family::Ip6, "varied6")),
        (Family::Inet, "sarasa", sample()),
    ] {
        let tx = diff_kernel(None, &want);
        by_nft.script(&tx.script());
        nl.apply_to(family, name, &tx)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            native.listing(family, name),
            by_nft.listing(family, name),
            "{name}: nft lists what the two writers left differently"
        );
        let k = same_listing(&native, family, name).unwrap();
        let rest = diff_kernel(Some(&k), &want);
        assert!(rest.is_empty(), "{name}: left to do:\n{}", rest.script());
    }
    assert_eq!(nl.native_count, 4);

    // Updates: elements of interval sets and maps deleted and added, a set redeclared,
    // chains changed.
    let old = varied(Family::Inet, "varied");
    let mut new = old.clone();
    let cidrs = new.sets.get_mut("cidrs4").unwrap();
    cidrs.elements.remove(&Key::one(net("10.0.1.0/24")));
    cidrs.insert(Key::one(net("10.0.2.0/24")));
    cidrs.insert(Key::one(net("10.0.1.128/25")));
    let svc = new.sets.get_mut("svc4").unwrap();
    svc.elements.clear();
    svc.insert_verdict(
        Key(vec![
            Value::Addr(ip("10.96.0.3")),
            Value::Proto(L4Proto::Tcp),
            Value::Port(80),
        ]),
        Verdict::Goto("target-b".into()),
    );
    new.sets.get_mut("ports").unwrap().comment = Some("redeclared".into());
    new.add_chain(Chain::new("target-a").rule(Rule::new().verdict(Verdict::Drop)));
    new.chains.remove("empty");
    new.sets.get_mut("svc6").unwrap().elements.retain(
        |_, e| !matches!(&e.value, Some(MapValue::Verdict(Verdict::Jump(c))) if c == "target-b"),
    );
    new.sets
        .get_mut("ivmap4")
        .unwrap()
        .elements
        .retain(|_, e| e.comment.is_some());
    new.sets
        .get_mut("ivmap6")
        .unwrap()
        .elements
        .retain(|_, e| e.comment.is_some());
    let tx = diff(&old, &new);
    by_nft.script(&tx.script());
    nl.apply_to(Family::Inet, "varied", &tx).unwrap();
    assert_eq!(
        native.listing(Family::Inet, "varied"),
        by_nft.listing(Family::Inet, "varied")
    );
    let k = same_listing(&native, Family::Inet, "varied").unwrap();
    assert!(diff_kernel(Some(&k), &new).is_empty());
}

#[test]
fn ct_status_dnat_goes_native_and_leaves_what_nft_f_leaves() {
    // The lab's cloud load balancer accepts what its listeners DNATed (`ct status dnat`): a
    // bit test of IPS_DST_NAT, written over netlink as nft writes it.
    let mut t = Table::new(Family::Inet, "lb");
    t.add_chain(
        Chain::base(
            "lb-forward",
            ChainType::Filter,
            Hook::Forward,
            0,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::Payload(Field::IpDaddr),
                    Expr::value("10.96.0.0/12".parse::<ipnet::IpNet>().unwrap()),
                )
                .eq(Expr::Ct(CtKey::Status), Expr::keyword(Keyword::Dnat))
                .verdict(Verdict::Accept),
        )
        .rule(
            Rule::new()
                .ne(Expr::Ct(CtKey::Status), Expr::keyword(Keyword::Dnat))
                .counter(),
        ),
    );
    let (by_nft, native) = (Netns::new("sx-nft-t"), Netns::new("sx-nft-t"));
    let tx = diff_kernel(None, &t);
    by_nft.script(&tx.script());
    native.native().apply_to(Family::Inet, "lb", &tx).unwrap();
    assert_eq!(
        kernel_json(&native, Family::Inet, "lb"),
        kernel_json(&by_nft, Family::Inet, "lb")
    );
    let listed = native.listing(Family::Inet, "lb");
    assert!(listed.contains("ct status dnat accept"), "{listed}");
    assert!(listed.contains("ct status != dnat counter"), "{listed}");
    let k = same_listing(&native, Family::Inet, "lb").unwrap();
    assert!(diff_kernel(Some(&k), &t).is_empty());
}

#[test]
fn mss_clamp_goes_native_and_leaves_what_nft_f_leaves() {
    // The cluster-set gateway's clamp (`inet sarasa-node`), in every family, and the
    // variants the encoder must write as nft does: one interface name (a comparison, not a
    // set), an explicit `meta l4proto tcp` (no second dependency), `!=`, a bare flags match.
    let ifnames = |names: &[&str]| {
        Expr::AnonSet(
            names
                .iter()
                .map(|n| vec![Value::Ifname(n.to_string())])
                .collect(),
        )
    };
    let syn = |op| Stmt::Match {
        left: Expr::And(Box::new(Expr::Payload(Field::TcpFlags)), TCP_SYN | TCP_RST),
        op,
        right: Expr::Value(Value::Num(TCP_SYN)),
    };
    for family in [Family::Inet, Family::Ip, Family::Ip6] {
        let mut t = Table::new(family, "clamp");
        t.add_chain(
            Chain::base(
                "forward",
                ChainType::Filter,
                Hook::Forward,
                -150,
                Policy::Accept,
            )
            .rule(
                Rule::new()
                    .eq(
                        Expr::Meta(MetaKey::Oifname),
                        ifnames(&["sarasa-cable", "sarasa-wg"]),
                    )
                    .then(syn(CmpOp::Eq))
                    .then(Stmt::ClampMssToPmtu),
            )
            .rule(
                Rule::new()
                    .eq(Expr::Meta(MetaKey::Iifname), ifnames(&["sarasa-cable"]))
                    .eq(Expr::Meta(MetaKey::L4proto), Expr::value(L4Proto::Tcp))
                    .then(syn(CmpOp::Ne))
                    .eq(
                        Expr::Payload(Field::TcpFlags),
                        Expr::Value(Value::Num(TCP_SYN | TCP_ACK)),
                    )
                    .counter(),
            )
            .rule(Rule::new().then(Stmt::ClampMssToPmtu)),
        );
        let (by_nft, native) = (Netns::new("sx-nft-t"), Netns::new("sx-nft-t"));
        let tx = diff_kernel(None, &t);
        by_nft.script(&tx.script());
        let mut nl = native.native();
        nl.apply_to(family, "clamp", &tx).unwrap();
        assert_eq!(nl.native_count, 1);
        assert_eq!(
            kernel_json(&native, family, "clamp"),
            kernel_json(&by_nft, family, "clamp"),
            "{}",
            family.as_str()
        );
        let listed = native.listing(family, "clamp");
        assert_eq!(listed, by_nft.listing(family, "clamp"));
        for line in [
            "type filter hook forward priority mangle; policy accept;",
            r#"oifname { "sarasa-wg", "sarasa-cable" } tcp flags syn / syn,rst tcp option maxseg size set rt mtu"#,
            r#"iifname "sarasa-cable" tcp flags != syn / syn,rst tcp flags == 0x12 counter"#,
        ] {
            assert!(listed.contains(line), "{line} not in {listed}");
        }
        let k = same_listing(&native, family, "clamp").unwrap();
        assert!(diff_kernel(Some(&k), &t).is_empty());
    }
}

#[test]
fn tunnel_notrack_goes_native_and_leaves_what_nft_f_leaves() {
    // The node table's raw chains (`inet sarasa-node`): a tunnel's underlay UDP skips
    // conntrack, received on the uplink at the node's address and sent to its peers; `ct
    // state untracked` as nft writes it.
    let ports = || Expr::AnonSet(vec![vec![Value::Port(8472)], vec![Value::Port(4801)]]);
    let peers = Expr::AnonSet(vec![
        vec![Value::Addr("192.168.33.12".parse().unwrap())],
        vec![Value::Addr("192.168.33.13".parse().unwrap())],
    ]);
    let mut t = Table::new(Family::Inet, "raw");
    t.add_chain(
        Chain::base(
            "raw-prerouting",
            ChainType::Filter,
            Hook::Prerouting,
            -300,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::Meta(MetaKey::Iifname),
                    Expr::value(Value::Ifname("eth0".into())),
                )
                .eq(
                    Expr::Payload(Field::IpDaddr),
                    Expr::value("192.168.33.11".parse::<std::net::IpAddr>().unwrap()),
                )
                .eq(Expr::Payload(Field::UdpDport), ports())
                .then(Stmt::Notrack),
        ),
    );
    t.add_chain(
        Chain::base(
            "raw-output",
            ChainType::Filter,
            Hook::Output,
            -300,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::Meta(MetaKey::Oifname),
                    Expr::value(Value::Ifname("eth0".into())),
                )
                .eq(Expr::Payload(Field::IpDaddr), peers)
                .eq(Expr::Payload(Field::UdpDport), ports())
                .then(Stmt::Notrack),
        ),
    );
    t.add_chain(
        Chain::base("seen", ChainType::Filter, Hook::Input, 0, Policy::Accept).rule(
            Rule::new()
                .eq(Expr::Ct(CtKey::State), Expr::keyword(Keyword::Untracked))
                .counter(),
        ),
    );
    let (by_nft, native) = (Netns::new("sx-nft-t"), Netns::new("sx-nft-t"));
    let tx = diff_kernel(None, &t);
    by_nft.script(&tx.script());
    let mut nl = native.native();
    nl.apply_to(Family::Inet, "raw", &tx).unwrap();
    assert_eq!(nl.native_count, 1);
    assert_eq!(
        kernel_json(&native, Family::Inet, "raw"),
        kernel_json(&by_nft, Family::Inet, "raw")
    );
    let listed = native.listing(Family::Inet, "raw");
    assert_eq!(listed, by_nft.listing(Family::Inet, "raw"));
    for line in [
        "type filter hook prerouting priority raw; policy accept;",
        r#"iifname "eth0" ip daddr 192.168.33.11 udp dport { 4801, 8472 } notrack"#,
        r#"oifname "eth0" ip daddr { 192.168.33.12, 192.168.33.13 } udp dport { 4801, 8472 } notrack"#,
        "ct state untracked counter",
    ] {
        assert!(listed.contains(line), "{line} not in {listed}");
    }
    let k = same_listing(&native, Family::Inet, "raw").unwrap();
    assert!(diff_kernel(Some(&k), &t).is_empty());
}

#[test]
fn wan_loss_bridge_table_goes_native_and_leaves_what_nft_f_leaves() {
    // The cluster set's WAN loss (`bridge sarasa-wan`: frames crossing the bridge between
    // ports dropped with probability 50/10000), and `<` where nft writes it without a byte
    // order conversion (a port) and with one (a mark).
    let mut wan = Table::new(Family::Bridge, "sarasa-wan");
    wan.add_chain(
        Chain::base(
            "forward",
            ChainType::Filter,
            Hook::Forward,
            -200,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .lt(Expr::NumgenRandom(10_000), Expr::Value(Value::Num(50)))
                .verdict(Verdict::Drop),
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::Meta(MetaKey::Iifname),
                    Expr::Value(Value::Ifname("site10".into())),
                )
                .lt(Expr::Meta(MetaKey::Mark), Expr::Value(Value::Mark(16)))
                .counter(),
        ),
    );
    let mut ports = Table::new(Family::Inet, "ports");
    ports.add_chain(
        Chain::base("input", ChainType::Filter, Hook::Input, 0, Policy::Accept).rule(
            Rule::new()
                .lt(
                    Expr::Payload(Field::ThDport),
                    Expr::Value(Value::Port(1024)),
                )
                .counter(),
        ),
    );
    let (by_nft, native) = (Netns::new("sx-nft-t"), Netns::new("sx-nft-t"));
    for (family, name, t) in [
        (Family::Bridge, "sarasa-wan", &wan),
        (Family::Inet, "ports", &ports),
    ] {
        let tx = diff_kernel(None, t);
        by_nft.script(&tx.script());
        let mut nl = native.native();
        nl.apply_to(family, name, &tx).unwrap();
        assert_eq!(nl.native_count, 1);
        assert_eq!(
            kernel_json(&native, family, name),
            kernel_json(&by_nft, family, name),
            "{name}"
        );
        assert_eq!(native.listing(family, name), by_nft.listing(family, name));
        let k = same_listing(&native, family, name).unwrap();
        assert!(diff_kernel(Some(&k), t).is_empty(), "{name}");
    }
    let listed = native.listing(Family::Bridge, "sarasa-wan");
    for line in [
        "table bridge sarasa-wan {",
        "type filter hook forward priority filter; policy accept;",
        "numgen random mod 10000 < 50 drop",
        r#"iifname "site10" meta mark < 0x00000010 counter"#,
    ] {
        assert!(listed.contains(line), "{line} not in {listed}");
    }
    assert!(native
        .listing(Family::Inet, "ports")
        .contains("th dport < 1024 counter"));
    // Deleted natively: the bridge family's table goes.
    native
        .native()
        .apply_to(
            Family::Bridge,
            "sarasa-wan",
            &Transaction::delete_table(Family::Bridge, "sarasa-wan"),
        )
        .unwrap();
    assert!(native
        .native()
        .list_table(Family::Bridge, "sarasa-wan")
        .unwrap()
        .is_none());
}

fn table_state(ns: &Netns) -> String {
    ns.nft(&["list", "ruleset"])
}

#[test]
fn multi_table_batch_is_one_commit() {
    let ns = Netns::new("sx-nft-t");
    let mut nl = ns.native();
    let main = sample();
    let mut shard = Table::new(Family::Inet, "sarasa-svc00");
    shard.add_chain(ep_chain("ep-x", "10.244.9.9", 80));
    let mut aff = Set::new("aff-a", vec![DataType::Ipv4Addr]);
    aff.flags.dynamic = true;
    aff.flags.timeout = true;
    shard.add_set(aff);
    let (tx_main, tx_shard) = (diff_kernel(None, &main), diff_kernel(None, &shard));
    nl.apply_batch(&[
        (Family::Inet, "sarasa", &tx_main),
        (Family::Inet, "sarasa-svc00", &tx_shard),
    ])
    .unwrap();
    assert_eq!(nl.native_count, 1, "one batch");
    let before = table_state(&ns);

    // Part one is fine on its own, part two refers to a missing chain: nothing applies.
    let mut main2 = main.clone();
    main2.add_chain(Chain::new("new-chain").rule(Rule::new().counter()));
    let mut shard2 = shard.clone();
    shard2.add_chain(Chain::new("ep-x").rule(Rule::new().verdict(Verdict::Jump("missing".into()))));
    let good = diff(&main, &main2);
    let bad = diff(&shard, &shard2);
    let err = nl
        .apply_batch(&[
            (Family::Inet, "sarasa", &good),
            (Family::Inet, "sarasa-svc00", &bad),
        ])
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("inet sarasa-svc00: add rule to ep-x: jump missing"),
        "{msg}"
    );
    assert_eq!(
        table_state(&ns),
        before,
        "a rejected batch changed the kernel"
    );

    // A construct the encoder does not cover (no sarasa table matches an interface name
    // wildcard): the whole batch is refused before anything is sent, naming it; there is no
    // `nft` fallback.
    main2.add_chain(
        Chain::new("by-name").rule(
            Rule::new()
                .eq(
                    Expr::Meta(MetaKey::Oifname),
                    Expr::Value(Value::Ifname("veth*".into())),
                )
                .verdict(Verdict::Accept),
        ),
    );
    let unencodable = diff(&main, &main2);
    let sent = nl.native_count;
    let err = nl
        .apply_batch(&[
            (Family::Inet, "sarasa", &unencodable),
            (Family::Inet, "sarasa-svc00", &fine_for(&shard)),
        ])
        .unwrap_err();
    assert!(
        matches!(
            err,
            NftError::Unencodable {
                what: "interface name wildcard",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("inet sarasa, inet sarasa-svc00"),
        "{err}"
    );
    assert_eq!(nl.native_count, sent, "a batch was sent");
    assert_eq!(
        table_state(&ns),
        before,
        "a refused batch changed the kernel"
    );

    // Both good: both apply, natively, in one batch.
    let fine = fine_for(&shard);
    let good = diff(&main, &{
        let mut m = main.clone();
        m.add_chain(Chain::new("new-chain").rule(Rule::new().counter()));
        m
    });
    nl.apply_batch(&[
        (Family::Inet, "sarasa", &good),
        (Family::Inet, "sarasa-svc00", &fine),
    ])
    .unwrap();
    let k = nl.list_table(Family::Inet, "sarasa").unwrap().unwrap();
    assert!(k.chains.contains_key("new-chain"));
    let k = nl
        .list_table(Family::Inet, "sarasa-svc00")
        .unwrap()
        .unwrap();
    assert!(k.chains.contains_key("ep-y"));

    // A whole table goes, with its chains, sets and rules, natively; the other stays.
    let gone = Transaction::delete_table(Family::Inet, "sarasa-svc00");
    nl.apply_batch(&[(Family::Inet, "sarasa-svc00", &gone)])
        .unwrap();
    assert_eq!(nl.list_table(Family::Inet, "sarasa-svc00").unwrap(), None);
    assert!(nl.list_table(Family::Inet, "sarasa").unwrap().is_some());
    // Deleting a table that is not there is an error naming it, and changes nothing.
    let err = nl
        .apply_batch(&[(Family::Inet, "sarasa-svc00", &gone)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("sarasa-svc00"), "{err}");
}

/// A good change to `shard`: one more endpoint chain.
fn fine_for(shard: &Table) -> Transaction {
    diff(shard, &{
        let mut s = shard.clone();
        s.add_chain(ep_chain("ep-y", "10.244.9.10", 80));
        s
    })
}

/// A table shaped like the proxy's at `n` Services (a service chain and two endpoint chains
/// each, the services map, the ClusterIP set).
fn proxy_like(n: usize) -> Table {
    let mut t = sample();
    let services = t.sets.get_mut("services-v4").unwrap();
    let mut chains = Vec::new();
    for i in 0..n {
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        let svc = format!("svc-{i}");
        let eps: Vec<String> = (0..2).map(|e| format!("ep-{i}-{e}")).collect();
        services.insert_verdict(svc_key(&ip, L4Proto::Tcp, 80), Verdict::Goto(svc.clone()));
        for (e, ep) in eps.iter().enumerate() {
            chains.push(ep_chain(
                ep,
                &format!("10.{}.{}.{}", 200 + e, i / 250, i % 250 + 1),
                8080,
            ));
        }
        chains.push(
            Chain::new(&svc)
                .rule(
                    Rule::new()
                        .eq(Expr::NumgenRandom(2), Expr::Value(Value::Num(0)))
                        .verdict(Verdict::Goto(eps[0].clone())),
                )
                .rule(
                    Rule::new()
                        .verdict(Verdict::Goto(eps[1].clone()))
                        .comment(format!("default/s{i}:http")),
                ),
        );
    }
    for c in chains {
        t.add_chain(c);
    }
    t
}

#[test]
fn large_first_program_goes_native() {
    let ns = Netns::new("sx-nft-t");
    let mut nl = ns.native();
    let want = proxy_like(7000); // ~21k chains
    let tx = diff_kernel(None, &want);
    assert!(tx.chains_written.len() > 20_000);
    assert!(
        tx.ops.is_some(),
        "large transactions must carry typed operations"
    );
    nl.apply_to(Family::Inet, "sarasa", &tx).unwrap();
    let k = same_listing(&ns, Family::Inet, "sarasa").unwrap();
    assert_eq!(k.chains.len(), want.chains.len());
    assert!(diff_kernel(Some(&k), &want).is_empty());

    // Chains looked up by name give the same listing, without the family-wide chain dump...
    let mut nl = ns.native();
    assert_eq!(nl.list_table_like(&want).unwrap(), Some(k.clone()));
    assert_eq!(nl.chain_dumps, 0);
    // ... also when the model lacks Services the kernel still has (found through the map
    // elements and the rules that jump to their chains) ...
    let fewer = proxy_like(6900);
    assert_eq!(nl.list_table_like(&fewer).unwrap(), Some(k.clone()));
    assert_eq!(nl.chain_dumps, 0);
    // ... and a chain nothing names is found by the dump after all.
    ns.nft(&["add", "chain", "inet", "sarasa", "stray"]);
    let full = nl.list_table(Family::Inet, "sarasa").unwrap().unwrap();
    assert!(full.chains.contains_key("stray"));
    assert_eq!(nl.list_table_like(&want).unwrap(), Some(full));
    assert_eq!(nl.chain_dumps, 2);
    assert!(nl
        .list_table_like(&Table::new(Family::Inet, "nosuch"))
        .unwrap()
        .is_none());
}

#[test]
fn rejected_batch_with_many_errors_reports_the_first() {
    let ns = Netns::new("sx-nft-t");
    let mut nl = ns.native();
    // 60k rules that each jump to a missing chain: the kernel reports every one, more than
    // the socket queues; the batch still reports the first error, nothing is applied, and
    // the socket stays usable.
    let mut t = Table::new(Family::Inet, "t");
    let mut c = Chain::new("x");
    for _ in 0..60_000 {
        c.push(Rule::new().verdict(Verdict::Jump("missing".into())));
    }
    t.add_chain(c);
    let err = nl
        .apply_to(Family::Inet, "t", &diff_kernel(None, &t))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("inet t: add rule to x: jump missing"), "{msg}");
    assert!(nl.list_table(Family::Inet, "t").unwrap().is_none());
    assert_eq!(ns.nft(&["list", "ruleset"]), "");
    println!("{msg}");
}
