//! One test per Service behaviour, asserting on the compiled ruleset (no root needed).
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use common::*;
use sarasa_model::*;
use sarasa_proxy::*;

fn web() -> (Service, EndpointSlice) {
    (
        svc("web", "10.96.0.10", vec![port("http", Protocol::Tcp, 80)]),
        slice(
            "web",
            "web-1",
            &[("http", Protocol::Tcp, 8080)],
            &[("10.244.1.5", "node-1"), ("10.244.2.5", "node-2")],
        ),
    )
}

#[test]
fn cluster_ip_dispatches_through_numgen_to_dnat_endpoints() {
    let (s, sl) = web();
    let st = build(&[s], &[sl]);
    let map = elements(&st, "service-ips-v4");
    assert!(
        map.contains("10.96.0.10 . tcp . 80 : goto svc4-default-web-http-"),
        "{map}"
    );
    let svc = chain_text(&st, "svc4-default-web-http");
    // Two endpoints: 1/2 for the first, the rest for the second (uniform).
    assert!(
        svc.contains("numgen random mod 2 0 goto ep4-default-web-http-10.244.1.5-8080-"),
        "{svc}"
    );
    assert!(
        svc.contains("\t\tgoto ep4-default-web-http-10.244.2.5-8080-"),
        "{svc}"
    );
    let ep = chain_text(&st, "ep4-default-web-http-10.244.1.5-8080");
    assert!(
        ep.contains("meta l4proto tcp dnat ip to 10.244.1.5:8080"),
        "{ep}"
    );
    assert_eq!(chains_with(&st, "ep4-").len(), 2);
}

#[test]
fn many_endpoints_are_chosen_by_one_numgen_vmap() {
    let (s, _) = web();
    let eps: Vec<(String, &str)> = (1..=12)
        .map(|i| (format!("10.244.3.{i}"), "node-3"))
        .collect();
    let refs: Vec<(&str, &str)> = eps.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    let sl = slice("web", "web-1", &[("http", Protocol::Tcp, 8080)], &refs);
    let st = build(&[s], &[sl]);
    let svc = chain_text(&st, "svc4-");
    assert!(
        svc.contains("numgen random mod 12 vmap { 0 : goto ep4-default-web-http-10.244.3.1-8080-"),
        "{svc}"
    );
    assert!(
        svc.contains(", 11 : goto ep4-default-web-http-10.244.3.12-8080-"),
        "{svc}"
    );
    // Three endpoints: 1/3, then 1/2 of the rest, then the last.
    let sl = slice("web", "web-1", &[("http", Protocol::Tcp, 8080)], &refs[..3]);
    let (s, _) = web();
    let svc = chain_text(&build(&[s], &[sl]), "svc4-");
    assert!(
        svc.contains("numgen random mod 3 0 goto ep4-default-web-http-10.244.3.1-"),
        "{svc}"
    );
    assert!(
        svc.contains("numgen random mod 2 0 goto ep4-default-web-http-10.244.3.2-"),
        "{svc}"
    );
}

#[test]
fn several_ports_and_protocols_get_their_own_chains() {
    let s = svc(
        "dns",
        "10.96.0.53",
        vec![
            port("dns", Protocol::Udp, 53),
            port("dns-tcp", Protocol::Tcp, 53),
            port("sig", Protocol::Sctp, 3868),
        ],
    );
    let sl = slice(
        "dns",
        "dns-1",
        &[
            ("dns", Protocol::Udp, 5353),
            ("dns-tcp", Protocol::Tcp, 5353),
            ("sig", Protocol::Sctp, 3868),
        ],
        &[("10.244.1.7", "node-1")],
    );
    let st = build(&[s], &[sl]);
    let map = elements(&st, "service-ips-v4");
    for key in [
        "10.96.0.53 . udp . 53",
        "10.96.0.53 . tcp . 53",
        "10.96.0.53 . sctp . 3868",
    ] {
        assert!(map.contains(key), "{key} missing: {map}");
    }
    assert!(chain_text(&st, "ep4-default-dns-dns-10.244")
        .contains("meta l4proto udp dnat ip to 10.244.1.7:5353"));
    assert!(chain_text(&st, "ep4-default-dns-sig-")
        .contains("meta l4proto sctp dnat ip to 10.244.1.7:3868"));
    // One endpoint: a plain goto, no numgen.
    assert!(chain_text(&st, "svc4-default-dns-dns-tcp")
        .contains("goto ep4-default-dns-dns-tcp-10.244.1.7-5353-"));
}

#[test]
fn masquerade_node_to_cluster_ip_but_never_pods() {
    let (s, sl) = web();
    let st = build(&[s], &[sl]);
    let svc = chain_text(&st, "svc4-default-web-http");
    assert!(
        svc.contains("ip daddr 10.96.0.10 meta l4proto tcp th dport 80 ip saddr != @cluster-cidrs-v4 jump mark-for-masquerade"),
        "{svc}"
    );
    assert!(elements(&st, "cluster-cidrs-v4").contains("10.244.0.0/16"));
    // Postrouting masquerades only marked packets.
    let masq = chain_text(&st, "masquerading");
    assert!(
        masq.contains("meta mark & 0x00004000 == 0x00000000 return"),
        "{masq}"
    );
    assert!(masq.contains("masquerade fully-random"));
}

#[test]
fn hairpin_is_masqueraded() {
    let (s, sl) = web();
    let st = build(&[s], &[sl]);
    let ep = chain_text(&st, "ep4-default-web-http-10.244.2.5");
    assert!(
        ep.contains("ip saddr 10.244.2.5 jump mark-for-masquerade"),
        "{ep}"
    );
}

#[test]
fn node_port_with_cluster_policy_masquerades_and_uses_all_endpoints() {
    let (mut s, sl) = web();
    s.type_ = ServiceType::NodePort;
    s.ports[0].node_port = Some(30080);
    let st = build(&[s], &[sl]);
    let np = elements(&st, "service-nodeports-v4");
    assert!(
        np.contains("tcp . 30080 : goto ext4-default-web-http-"),
        "{np}"
    );
    let ext = chain_text(&st, "ext4-");
    assert!(ext.contains("\t\tjump mark-for-masquerade\n"), "{ext}");
    assert!(ext.contains("goto svc4-default-web-http-"), "{ext}");
    // Dispatched in the Service's shard, after every shard's IP dispatch (-100).
    let shard = st.shard_table(shard_of(&st, "web"));
    for (chain, hook) in [
        ("nat-prerouting-nodeports", "prerouting"),
        ("nat-output-nodeports", "output"),
    ] {
        let text = table_chain_text(&shard, chain);
        assert!(
            text.contains(&format!("type nat hook {hook} priority -99;")),
            "{text}"
        );
        assert!(
            text.contains("fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports-v4"),
            "{text}"
        );
    }
}

#[test]
fn cluster_ip_service_ignores_node_port_field() {
    let (mut s, sl) = web();
    s.ports[0].node_port = Some(30080);
    let st = build(&[s], &[sl]);
    assert_eq!(elements(&st, "service-nodeports-v4"), "");
}

#[test]
fn load_balancer_ips_and_source_ranges() {
    let (mut s, sl) = web();
    s.type_ = ServiceType::LoadBalancer;
    s.ports[0].node_port = Some(30080);
    s.load_balancer_ips = vec![ip("192.168.34.1")];
    s.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    let st = build(&[s], &[sl]);
    let map = elements(&st, "service-ips-v4");
    assert!(
        map.contains("192.168.34.1 . tcp . 80 : goto ext4-default-web-http-"),
        "{map}"
    );
    let fw_map = elements(&st, "firewall-ips-v4");
    assert!(
        fw_map.contains("192.168.34.1 . tcp . 80 comment \"default/web/tcp/http/4\" : goto fw4-"),
        "{fw_map}"
    );
    let fw = chain_text(&st, "fw4-");
    assert!(fw.contains("ip saddr != { 203.0.113.0/24 } drop"), "{fw}");
    // Checked before DNAT, on new connections.
    assert!(chain_text(&st, "filter-prerouting").contains("ct state new jump firewall-check"));
}

#[test]
fn filter_prerouting_only_while_a_service_has_source_ranges() {
    // Every packet through the node would pass it, and it only jumps to `firewall-check`.
    let (mut lb, sl) = web();
    lb.type_ = ServiceType::LoadBalancer;
    lb.ports[0].node_port = Some(30080);
    lb.load_balancer_ips = vec![ip("192.168.34.1")];
    let mut st = build(&[lb.clone()], &[sl]);
    let main = |st: &ProxyState| st.main_table();
    assert!(!main(&st).chains.contains_key("filter-prerouting"));
    let output = |st: &ProxyState| table_chain_text(&main(st), "filter-output");
    assert!(!output(&st).contains("firewall-check"));
    // Source ranges on: the chain and the output jump come in the Service's update.
    let mut ranged = lb.clone();
    ranged.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    let up = st.upsert_service(ranged);
    assert!(main(&st).chains.contains_key("filter-prerouting"));
    assert!(output(&st).contains("ct state new jump firewall-check"));
    let written = up.chains_written();
    for c in ["sarasa/filter-prerouting", "sarasa/filter-output"] {
        assert!(written.iter().any(|w| w == c), "{written:?}");
    }
    // And off again.
    let up = st.upsert_service(lb);
    assert!(!main(&st).chains.contains_key("filter-prerouting"));
    assert!(up.transactions["sarasa"]
        .chains_deleted
        .contains("filter-prerouting"));
    main(&st).validate().unwrap();
}

#[test]
fn external_ips_enter_through_the_external_chain() {
    let (mut s, sl) = web();
    s.external_ips = vec![ip("203.0.113.50")];
    let st = build(&[s], &[sl]);
    let map = elements(&st, "service-ips-v4");
    assert!(
        map.contains("203.0.113.50 . tcp . 80 : goto ext4-default-web-http-"),
        "{map}"
    );
    assert!(chain_text(&st, "ext4-").contains("jump mark-for-masquerade"));
}

fn local_lb() -> Service {
    let (mut s, _) = web();
    s.type_ = ServiceType::LoadBalancer;
    s.ports[0].node_port = Some(30080);
    s.load_balancer_ips = vec![ip("192.168.34.1")];
    s.external_traffic_policy = TrafficPolicy::Local;
    s.health_check_node_port = Some(32000);
    s
}

#[test]
fn external_traffic_policy_local_keeps_source_and_uses_local_endpoints() {
    let (_, sl) = web();
    let st = build(&[local_lb()], &[sl]);
    let ext = chain_text(&st, "ext4-");
    // No unconditional masquerade: only the node's own traffic is masqueraded.
    assert!(!ext.contains("\t\tjump mark-for-masquerade\n"), "{ext}");
    assert!(
        ext.contains("ip saddr @cluster-cidrs-v4 goto svc4-"),
        "{ext}"
    );
    assert!(
        ext.contains("fib saddr type local jump mark-for-masquerade"),
        "{ext}"
    );
    assert!(ext.contains("goto local4-default-web-http-"), "{ext}");
    let local = chain_text(&st, "local4-");
    assert!(
        local.contains("goto ep4-default-web-http-10.244.1.5-8080"),
        "{local}"
    );
    assert!(
        !local.contains("10.244.2.5"),
        "remote endpoint in local chain: {local}"
    );
    assert_eq!(
        st.health_checks(),
        vec![HealthCheck {
            service: ServiceRef::new("default", "web"),
            node_port: 32000,
            local_endpoints: 1
        }]
    );
}

#[test]
fn updates_say_when_health_checks_change() {
    let (_, sl) = web();
    let mut st = ProxyState::new(config(), node()).unwrap();
    let u = st.upsert_service(local_lb());
    assert!(u.health_checks_changed, "a new health-check node port");
    assert_eq!(st.health_checks()[0].local_endpoints, 0);
    // An unrelated Service neither changes nor lists a health check.
    let other = svc("other", "10.96.0.20", vec![port("http", Protocol::Tcp, 80)]);
    assert!(!st.upsert_service(other).health_checks_changed);
    assert_eq!(st.health_checks().len(), 1);
    // The local endpoint count moves with the EndpointSlice.
    assert!(st.upsert_endpoint_slice(sl.clone()).health_checks_changed);
    assert_eq!(st.health_checks()[0].local_endpoints, 1);
    // A remote endpoint leaving changes traffic, not the local count.
    let mut only_local = sl;
    only_local
        .endpoints
        .retain(|e| e.node_name.as_deref() == Some("node-1"));
    let u = st.upsert_endpoint_slice(only_local);
    assert!(!u.transactions.is_empty() && !u.health_checks_changed);
    // Back to Cluster policy: the port goes.
    let mut cluster = local_lb();
    cluster.external_traffic_policy = TrafficPolicy::Cluster;
    cluster.health_check_node_port = None;
    assert!(st.upsert_service(cluster).health_checks_changed);
    assert!(st.health_checks().is_empty());
    assert!(st.upsert_service(local_lb()).health_checks_changed);
    assert!(st.delete_service("default", "web").health_checks_changed);
    assert!(st.health_checks().is_empty());
}

#[test]
fn external_traffic_policy_local_without_local_endpoints_drops() {
    let sl = slice(
        "web",
        "web-1",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.244.2.5", "node-2")],
    );
    let st = build(&[local_lb()], &[sl]);
    assert!(elements(&st, "no-endpoint-services-v4")
        .contains("192.168.34.1 . tcp . 80 comment \"default/web/tcp/http/4\" : drop"));
    assert!(elements(&st, "no-endpoint-nodeports-v4")
        .contains("tcp . 30080 comment \"default/web/tcp/http/4\" : drop"));
    // The ClusterIP still works, and pods/node still short-circuit to the cluster chain.
    assert!(elements(&st, "service-ips-v4").contains("10.96.0.10 . tcp . 80 : goto svc4-"));
    let ext = chain_text(&st, "ext4-");
    assert!(!ext.contains("local4-"), "{ext}");
    // What neither short-circuit took ends here, not in another shard's NodePort chain.
    let last_rule = ext.lines().rev().nth(2).unwrap();
    assert!(
        last_rule.starts_with("\t\tdrop comment \"no local endpoints"),
        "{ext}"
    );
    assert_eq!(st.health_checks()[0].local_endpoints, 0);
}

#[test]
fn internal_traffic_policy_local() {
    let (mut s, sl) = web();
    s.internal_traffic_policy = TrafficPolicy::Local;
    let st = build(&[s.clone()], &[sl]);
    let map = elements(&st, "service-ips-v4");
    assert!(
        map.contains("10.96.0.10 . tcp . 80 : goto local4-default-web-http-"),
        "{map}"
    );
    assert!(!chain_text(&st, "local4-").contains("10.244.2.5"));
    assert!(chains_with(&st, "svc4-").is_empty());
    // No local endpoint: ClusterIP traffic is dropped, not rejected.
    let remote = slice(
        "web",
        "web-1",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.244.2.5", "node-2")],
    );
    let st = build(&[s], &[remote]);
    assert!(elements(&st, "no-endpoint-services-v4")
        .contains("10.96.0.10 . tcp . 80 comment \"default/web/tcp/http/4\" : drop"));
}

#[test]
fn session_affinity_client_ip_uses_per_endpoint_timeout_sets() {
    let (mut s, sl) = web();
    s.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    let st = build(&[s], &[sl]);
    let table = st.shard_table(shard_of(&st, "web"));
    let sets: Vec<_> = table
        .sets
        .values()
        .filter(|s| s.name.starts_with("aff4-"))
        .collect();
    assert_eq!(sets.len(), 2);
    assert!(sets
        .iter()
        .all(|s| s.flags.dynamic && s.flags.timeout && s.timeout == Some(60)));
    let svc = chain_text(&st, "svc4-");
    assert!(
        svc.contains("ip saddr @aff4-default-web-http-10.244.1.5-8080-"),
        "{svc}"
    );
    let ep = chain_text(&st, "ep4-default-web-http-10.244.1.5");
    assert!(
        ep.contains("update @aff4-default-web-http-10.244.1.5-8080-"),
        "{ep}"
    );
    assert!(ep.contains("{ ip saddr } meta l4proto tcp dnat"), "{ep}");
}

#[test]
fn endpoint_choice_ready_then_serving_terminating_then_reject() {
    let (s, mut sl) = web();
    sl.endpoints[1].conditions = EndpointConditions {
        ready: false,
        serving: true,
        terminating: true,
    };
    let st = build(&[s.clone()], &[sl.clone()]);
    assert!(
        chains_with(&st, "ep4-default-web-http-10.244.2.5").is_empty(),
        "terminating used while one is ready"
    );
    // None ready: serving-and-terminating ones take over; not-serving ones never.
    sl.endpoints[0].conditions = EndpointConditions {
        ready: false,
        serving: false,
        terminating: true,
    };
    let st = build(&[s.clone()], &[sl.clone()]);
    assert_eq!(chains_with(&st, "ep4-").len(), 1);
    assert!(chains_with(&st, "ep4-")[0].contains("10.244.2.5"));
    // None usable: reject at once.
    sl.endpoints[1].conditions.serving = false;
    let st = build(&[s], &[sl]);
    assert!(chains_with(&st, "ep4-").is_empty());
    let ne = elements(&st, "no-endpoint-services-v4");
    assert!(
        ne.contains("10.96.0.10 . tcp . 80 comment \"default/web/tcp/http/4\" : goto reject-chain"),
        "{ne}"
    );
    let reject = chain_text(&st, "reject-chain");
    assert!(reject.contains("meta l4proto tcp reject with tcp reset"));
    assert!(reject.contains("reject with icmpx port-unreachable"));
    assert!(chain_text(&st, "filter-forward").contains("ct state new jump endpoints-check"));
}

#[test]
fn unallocated_service_addresses_are_dropped() {
    let (s, sl) = web();
    let st = build(&[s], &[sl]);
    assert!(elements(&st, "service-cidrs-v4").contains("10.96.0.0/12"));
    assert!(elements(&st, "cluster-ips-v4").contains("10.96.0.10"));
    let check = chain_text(&st, "cluster-ips-check");
    assert!(
        check.contains("ip daddr @cluster-ips-v4 reject with icmpx port-unreachable"),
        "{check}"
    );
    assert!(check.contains("ip daddr @service-cidrs-v4 drop"), "{check}");
    assert!(chain_text(&st, "filter-output-post-dnat").contains("jump cluster-ips-check"));
}

#[test]
fn headless_and_external_name_are_not_proxied() {
    let empty = build(&[], &[]);
    let (mut headless, sl) = web();
    headless.cluster_ips.clear();
    headless.headless = true;
    let ext = Service {
        type_: ServiceType::ExternalName,
        external_name: Some("example.com".into()),
        ..Service::cluster_ip("default", "ext", vec![])
    };
    let st = build(&[headless, ext], &[sl]);
    assert_eq!(st.tables(), empty.tables());
}

#[test]
fn dual_stack_service_programs_both_families() {
    let mut s = svc("web", "10.96.0.10", vec![port("http", Protocol::Tcp, 80)]);
    s.cluster_ips.push(ip("fd00:96::10"));
    s.ip_families = vec![IpFamily::V4, IpFamily::V6];
    let v4 = slice(
        "web",
        "web-v4",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.244.1.5", "node-1")],
    );
    let v6 = slice(
        "web",
        "web-v6",
        &[("http", Protocol::Tcp, 8080)],
        &[("fd00:244:1::5", "node-1")],
    );
    let st = build(&[s], &[v4, v6]);
    assert!(elements(&st, "service-ips-v6").contains("fd00:96::10 . tcp . 80 : goto svc6-"));
    let ep6 = chain_text(&st, "ep6-");
    assert!(
        ep6.contains("meta l4proto tcp dnat ip6 to [fd00:244:1::5]:8080"),
        "{ep6}"
    );
    assert!(ep6.contains("ip6 saddr fd00:244:1::5 jump mark-for-masquerade"));
    assert!(chain_text(&st, "svc6-").contains("ip6 saddr != @cluster-cidrs-v6"));
}

#[test]
fn endpoints_match_service_ports_by_name_and_protocol() {
    let (s, _) = web();
    let wrong = slice(
        "web",
        "web-1",
        &[("metrics", Protocol::Tcp, 9090)],
        &[("10.244.1.5", "node-1")],
    );
    let st = build(&[s], &[wrong]);
    assert!(chains_with(&st, "ep4-").is_empty());
}

#[test]
fn stale_udp_conntrack_is_reported_for_removed_endpoints() {
    let mut s = svc("dns", "10.96.0.53", vec![port("dns", Protocol::Udp, 53)]);
    s.type_ = ServiceType::NodePort;
    s.ports[0].node_port = Some(30053);
    let two = slice(
        "dns",
        "dns-1",
        &[("dns", Protocol::Udp, 5353)],
        &[("10.244.1.7", "node-1"), ("10.244.2.7", "node-2")],
    );
    let one = slice(
        "dns",
        "dns-1",
        &[("dns", Protocol::Udp, 5353)],
        &[("10.244.1.7", "node-1")],
    );
    let mut st = ProxyState::new(config(), node()).unwrap();
    st.upsert_service(s);
    // From no endpoints to some: entries to the Service address must go.
    let first = st.upsert_endpoint_slice(two);
    assert!(first.stale_udp.contains(&StaleUdp {
        dest: UdpDest::Ip {
            addr: ip("10.96.0.53"),
            port: 53
        },
        endpoint: None
    }));
    let u = st.upsert_endpoint_slice(one);
    assert_eq!(
        u.stale_udp,
        vec![
            StaleUdp {
                dest: UdpDest::Ip {
                    addr: ip("10.96.0.53"),
                    port: 53
                },
                endpoint: Some(ip("10.244.2.7"))
            },
            StaleUdp {
                dest: UdpDest::NodePort {
                    port: 30053,
                    family: IpFamily::V4
                },
                endpoint: Some(ip("10.244.2.7"))
            },
        ]
    );
}

#[test]
fn bad_config_is_rejected() {
    let c = ProxyConfig {
        masquerade_mark: 0x3,
        ..ProxyConfig::default()
    };
    assert!(ProxyState::new(c, node())
        .unwrap_err()
        .to_string()
        .contains("masquerade_mark"));
    let c = ProxyConfig {
        table: "1 bad".into(),
        ..ProxyConfig::default()
    };
    assert!(ProxyState::new(c, node()).is_err());
    for shards in [0, MAX_SHARDS + 1] {
        let c = ProxyConfig {
            shards,
            ..ProxyConfig::default()
        };
        let err = ProxyState::new(c, node()).unwrap_err().to_string();
        assert!(err.contains("shards"), "{err}");
    }
    for shards in [1, MAX_SHARDS] {
        let c = ProxyConfig {
            shards,
            ..ProxyConfig::default()
        };
        assert!(ProxyState::new(c, node()).is_ok());
    }
    // Shard names must stay valid nft names too.
    let long = |n: usize| ProxyConfig {
        table: "t".repeat(n),
        ..ProxyConfig::default()
    };
    assert!(ProxyState::new(long(194), node()).is_ok());
    assert!(ProxyState::new(long(195), node()).is_err());
    let st = ProxyState::new(long(194), node()).unwrap();
    for t in st.tables() {
        t.validate().unwrap();
    }
}

#[test]
fn stale_udp_gives_conntrack_arguments() {
    let one = StaleUdp {
        dest: UdpDest::Ip {
            addr: ip("10.96.0.53"),
            port: 53,
        },
        endpoint: Some(ip("10.244.2.7")),
    };
    assert_eq!(
        one.conntrack_args().join(" "),
        "-D -f ipv4 -p udp --orig-dst 10.96.0.53 --orig-port-dst 53 --reply-src 10.244.2.7"
    );
    let np = StaleUdp {
        dest: UdpDest::NodePort {
            port: 30053,
            family: IpFamily::V6,
        },
        endpoint: None,
    };
    assert_eq!(
        np.conntrack_args().join(" "),
        "-D -f ipv6 -p udp --orig-port-dst 30053"
    );
}
