//! Sharding: which Service goes to which table, and what each table holds.

mod common;

use common::*;
use sarasa_model::*;
use sarasa_proxy::*;

#[test]
fn table_names_follow_the_main_table() {
    let c = ProxyConfig::default();
    assert_eq!(c.shards, DEFAULT_SHARDS);
    assert_eq!(DEFAULT_SHARDS, 32);
    assert_eq!(c.shard_table(0), "sarasa-svc00");
    assert_eq!(c.shard_table(31), "sarasa-svc31");
    let names = c.table_names();
    assert_eq!(names.len(), 33);
    assert_eq!(names[0], "sarasa");
    assert_eq!(names[1], "sarasa-svc00");
    assert_eq!(names[32], "sarasa-svc31");
    let st = ProxyState::new(c.clone(), node()).unwrap();
    let built: Vec<String> = st.tables().into_iter().map(|t| t.name).collect();
    assert_eq!(built, names);
    assert_eq!(st.main_table().name, "sarasa");
    assert_eq!(st.shard_table(7).name, "sarasa-svc07");
}

#[test]
fn shard_assignment_is_fixed_fnv1a_of_namespace_and_name() {
    let st = ProxyState::new(config(), node()).unwrap();
    // FNV-1a 64 of "namespace/name" mod 16, computed independently: the same in every process
    // and after restarts (a randomized hasher would move Services between tables).
    for (ns, name, shard) in [
        ("default", "web", 11),
        ("default", "dns", 6),
        ("kube-system", "kube-dns", 8),
        ("default", "s0", 0),
        ("default", "s1", 3),
    ] {
        assert_eq!(
            st.shard_of(&ServiceRef::new(ns, name)),
            shard,
            "{ns}/{name}"
        );
    }
    let five = ProxyState::new(
        ProxyConfig {
            shards: 5,
            ..config()
        },
        node(),
    )
    .unwrap();
    assert_eq!(five.shard_of(&ServiceRef::new("default", "web")), 2);
    assert_eq!(
        five.shard_of(&ServiceRef::new("kube-system", "kube-dns")),
        0
    );
}

#[test]
fn shards_are_evenly_spread() {
    let st = ProxyState::new(config(), node()).unwrap();
    let mut count = [0usize; 16];
    for i in 0..1000 {
        count[shard_of(&st, &format!("svc-{i}"))] += 1;
    }
    let (min, max) = (*count.iter().min().unwrap(), *count.iter().max().unwrap());
    // 62.5 on average.
    assert!(min >= 40 && max <= 90, "{count:?}");
}

fn web_lb() -> (Service, EndpointSlice) {
    let mut s = svc("web", "10.96.0.10", vec![port("http", Protocol::Tcp, 80)]);
    s.type_ = ServiceType::LoadBalancer;
    s.ports[0].node_port = Some(30080);
    s.load_balancer_ips = vec![ip("192.168.34.1")];
    s.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    s.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    let sl = slice(
        "web",
        "web-1",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.244.1.5", "node-1"), ("10.244.2.5", "node-2")],
    );
    (s, sl)
}

#[test]
fn dnat_path_sits_in_the_services_shard_and_filter_path_in_main() {
    let (s, sl) = web_lb();
    let empty = svc("dns", "10.96.0.53", vec![port("dns", Protocol::Udp, 53)]);
    let st = build(&[s, empty], &[sl]);
    let home = st.config().shard_table(shard_of(&st, "web"));
    // The shard: dispatch elements, svc/ext/ep chains, affinity sets.
    assert_eq!(tables_with_elements(&st, "service-ips-v4"), [home.as_str()]);
    assert_eq!(
        tables_with_elements(&st, "service-nodeports-v4"),
        [home.as_str()]
    );
    let shard = st.shard_table(shard_of(&st, "web"));
    for prefix in ["svc4-", "ext4-", "ep4-", "aff4-"] {
        assert!(
            shard
                .chains
                .keys()
                .chain(shard.sets.keys())
                .any(|n| n.starts_with(prefix)),
            "{prefix} missing in {home}"
        );
    }
    // The main table: ClusterIPs, no-endpoint and firewall elements, firewall chains, and no
    // per-Service DNAT path and no NAT dispatch.
    let main = st.main_table();
    assert_eq!(tables_with_elements(&st, "cluster-ips-v4"), ["sarasa"]);
    assert_eq!(
        tables_with_elements(&st, "no-endpoint-services-v4"),
        ["sarasa"]
    );
    assert_eq!(tables_with_elements(&st, "firewall-ips-v4"), ["sarasa"]);
    assert!(main
        .chains
        .keys()
        .any(|c| c.starts_with("fw4-default-web-")));
    assert!(!main.chains.keys().any(|c| ["svc", "ext", "ep", "local"]
        .iter()
        .any(|p| c.starts_with(p))));
    assert!(!main.chains.contains_key("services"));
    assert!(!main.sets.contains_key("service-ips-v4"));
    assert_eq!(
        main.chains
            .values()
            .filter_map(|c| c.base.as_ref())
            .filter(|b| b.kind == sarasa_nft::ChainType::Nat)
            .map(|b| b.priority)
            .collect::<Vec<_>>(),
        [100],
        "main's only nat chain is nat-postrouting"
    );
    // Every other shard: just the fixed part, no Service objects.
    let bare = ProxyState::new(config(), node()).unwrap();
    for i in 0..16 {
        if st.config().shard_table(i) != home {
            assert_eq!(st.shard_table(i), bare.shard_table(i), "shard {i}");
        }
    }
}

#[test]
fn every_shard_dispatches_ips_before_any_node_port() {
    let (s, sl) = web_lb();
    let st = build(&[s], &[sl]);
    let t = st.shard_table(shard_of(&st, "web"));
    let base = |name: &str| t.chains[name].base.clone().unwrap();
    for (ip, np, hook) in [
        (
            "nat-prerouting",
            "nat-prerouting-nodeports",
            sarasa_nft::Hook::Prerouting,
        ),
        (
            "nat-output",
            "nat-output-nodeports",
            sarasa_nft::Hook::Output,
        ),
    ] {
        assert_eq!(base(ip).hook, hook);
        assert_eq!(base(np).hook, hook);
        assert_eq!(base(ip).kind, sarasa_nft::ChainType::Nat);
        assert_eq!(base(ip).priority, -100);
        assert_eq!(base(np).priority, -99);
        assert!(table_chain_text(&t, ip).contains("jump services"));
        assert!(table_chain_text(&t, np).contains("vmap @service-nodeports-v4"));
    }
    // Rules name only sets of their own table: the shard has its own copies.
    assert!(t.sets["cluster-cidrs-v4"].elements.len() == 1);
    assert!(table_chain_text(&t, "mark-for-masquerade").contains("meta mark | 0x00004000"));
    t.validate().unwrap();
}

#[test]
fn endpoint_slices_follow_their_service() {
    let (s, sl) = web_lb();
    let mut st = ProxyState::new(config(), node()).unwrap();
    // The slice first: filed under its Service's shard even before the Service exists.
    assert!(st.upsert_endpoint_slice(sl).is_empty());
    let u = st.upsert_service(s);
    let home = st.config().shard_table(shard_of(&st, "web"));
    assert_eq!(
        u.transactions.keys().cloned().collect::<Vec<_>>(),
        ["sarasa".to_string(), home.clone()]
    );
    assert!(u.transactions[&home]
        .chains_written
        .iter()
        .any(|c| c.starts_with("ep4-default-web-http-10.244.1.5")));
    // Its shard's chains, its firewall and (the first firewall) the filter chains to it.
    assert!(
        u.chains_written()
            .iter()
            .all(|c| c.starts_with(&format!("{home}/"))
                || c.starts_with("sarasa/fw4-")
                || ["sarasa/filter-prerouting", "sarasa/filter-output"].contains(&c.as_str())),
        "{:?}",
        u.chains_written()
    );
}

#[test]
fn only_shards_holding_services_have_base_chains() {
    // A new connection passes the dispatch of every shard with base chains. A shard has them
    // while one of its Services has endpoints to dispatch to (its sets and `services` chain
    // stay, so that Service's first slice adds four chains, its last takes them).
    let hooks = |t: &sarasa_nft::Table| t.chains.values().filter(|c| c.base.is_some()).count();
    let hook_chains = |u: &Update, name: &str, written: bool| {
        let tx = &u.transactions[name];
        let chains = if written {
            &tx.chains_written
        } else {
            &tx.chains_deleted
        };
        [
            "nat-prerouting",
            "nat-output",
            "nat-prerouting-nodeports",
            "nat-output-nodeports",
        ]
        .iter()
        .all(|c| chains.contains(*c))
    };
    let mut st = ProxyState::new(config(), node()).unwrap();
    let all = 0..st.config().shards;
    assert!(all.clone().all(|i| hooks(&st.shard_table(i)) == 0));
    let (s, sl) = web_lb();
    st.upsert_service(s);
    let home = shard_of(&st, "web");
    let name = st.config().shard_table(home);
    // Without endpoints the Service's traffic is rejected from the main table.
    assert_eq!(hooks(&st.shard_table(home)), 0);
    let up = st.upsert_endpoint_slice(sl.clone());
    assert_eq!(hooks(&st.shard_table(home)), 4);
    assert!(hook_chains(&up, &name, true), "{up:?}");
    assert!(all
        .clone()
        .filter(|&i| i != home)
        .all(|i| hooks(&st.shard_table(i)) == 0));
    // Another change of the same Service leaves them be.
    let mut more = sl.clone();
    more.endpoints.truncate(1);
    let up = st.upsert_endpoint_slice(more);
    assert!(!up
        .chains_written()
        .iter()
        .any(|c| c.ends_with("/nat-prerouting")));
    let up = st.delete_endpoint_slice("default", "web-1");
    assert_eq!(hooks(&st.shard_table(home)), 0);
    assert!(hook_chains(&up, &name, false), "{up:?}");
}
