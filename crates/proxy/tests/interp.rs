//! Compiled Services run through the general nftables interpreter (`sarasa_nft::interp`):
//! main table and every shard, every hook a new connection crosses, every numgen path. The
//! DNAT targets over all paths must be the Service's usable endpoints, and the verdicts must
//! be what the Service's kind and policies promise. No root needed.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use common::*;
use sarasa_model::*;
use sarasa_nft::interp::{run_hook, CtState, Env, Event, HookVerdict, Packet, Path};
use sarasa_nft::{Hook, L4Proto, RejectKind, Table};
use sarasa_proxy::*;

const NODE_IP: &str = "192.168.33.11";
const CLIENT: &str = "203.0.113.7";
const POD: &str = "10.244.1.7";

/// The node of `common::node()`: its address, loopback, and masquerade to its address.
struct NodeEnv;

impl Env for NodeEnv {
    fn is_local(&self, addr: IpAddr) -> bool {
        addr == ip(NODE_IP) || addr.is_loopback()
    }
    fn masquerade_source(&self, _oifname: Option<&str>, daddr: IpAddr) -> Option<IpAddr> {
        daddr.is_ipv4().then(|| ip(NODE_IP))
    }
}

fn run(st: &ProxyState, hook: Hook, p: &Packet) -> Vec<Path> {
    let tables = st.tables();
    let refs: Vec<&Table> = tables.iter().collect();
    run_hook(&refs, hook, p, &NodeEnv).unwrap_or_else(|e| panic!("{hook:?}: {e}"))
}

fn tcp(src: &str, dst: &str, dport: u16) -> Packet {
    Packet::new(ip(src), ip(dst), L4Proto::Tcp, 40000, dport)
}

/// A pod's packet arriving from its veth.
fn from_pod(dst: &str, dport: u16) -> Packet {
    let mut p = tcp(POD, dst, dport);
    p.iifname = Some("veth-pod".into());
    p
}

/// An outside client's packet arriving on the node's uplink.
fn from_outside(src: &str, dst: &str, dport: u16) -> Packet {
    let mut p = tcp(src, dst, dport);
    p.iifname = Some("eth0".into());
    p
}

/// The DNAT target of every path (`None` for a path without DNAT).
fn targets(paths: &[Path]) -> BTreeSet<Option<(IpAddr, u16)>> {
    paths
        .iter()
        .map(|p| {
            p.dnat()
                .map(|(a, port)| (a, port.expect("dnat with a port")))
        })
        .collect()
}

fn eps(list: &[(&str, u16)]) -> BTreeSet<Option<(IpAddr, u16)>> {
    list.iter().map(|(a, p)| Some((ip(a), *p))).collect()
}

fn verdicts(paths: &[Path]) -> HashSet<HookVerdict> {
    paths.iter().map(|p| p.verdict).collect()
}

fn mark(st: &ProxyState) -> u32 {
    st.config().masquerade_mark
}

/// `web` (ClusterIP 10.96.0.10, tcp 80 → 8080) with endpoints `(ip, node)`.
fn web(endpoints: &[(&str, &str)]) -> (Service, EndpointSlice) {
    (
        svc("web", "10.96.0.10", vec![port("http", Protocol::Tcp, 80)]),
        slice("web", "web-1", &[("http", Protocol::Tcp, 8080)], endpoints),
    )
}

const TWO: [(&str, &str); 2] = [("10.244.1.5", "node-1"), ("10.244.2.5", "node-2")];

#[test]
fn cluster_ip_from_a_pod_reaches_every_ready_endpoint_and_only_those() {
    let (s, mut sl) = web(&TWO);
    sl.endpoints.push(Endpoint {
        conditions: EndpointConditions {
            ready: false,
            serving: false,
            terminating: true,
        },
        ..Endpoint::ready(ip("10.244.3.5"), Some("node-3"))
    });
    let st = build(&[s], &[sl]);
    let paths = run(&st, Hook::Prerouting, &from_pod("10.96.0.10", 80));
    assert_eq!(paths.len(), 2, "{paths:#?}");
    assert_eq!(
        targets(&paths),
        eps(&[("10.244.1.5", 8080), ("10.244.2.5", 8080)])
    );
    for p in &paths {
        assert_eq!(p.verdict, HookVerdict::Accept);
        assert_eq!(p.packet.mark & mark(&st), 0, "pods keep their source");
        assert!(p.packet.ct_dnat);
        // The Service is named on the path: its map hit and its numgen choice.
        assert!(p
            .steps
            .iter()
            .any(|s| matches!(&s.event, Event::MapHit { map, .. } if map == "service-ips-v4")));
        assert!(p
            .steps
            .iter()
            .any(|s| matches!(s.event, Event::Numgen { modulus: 2, .. })));
    }
    // Then the forward hook lets the DNATed packet through (it is nobody's ClusterIP now).
    for p in &paths {
        let mut fwd = p.packet.clone();
        fwd.oifname = Some("vxlan0".into());
        assert_eq!(
            verdicts(&run(&st, Hook::Forward, &fwd)),
            [HookVerdict::Accept].into()
        );
    }
    // Later packets of the connection run no NAT chain.
    let mut est = from_pod("10.96.0.10", 80);
    est.ct = CtState::Established;
    let paths = run(&st, Hook::Prerouting, &est);
    assert_eq!(targets(&paths), [None].into());
}

#[test]
fn many_endpoints_fork_through_the_numgen_vmap() {
    let owned: Vec<(String, &str)> = (1..=12)
        .map(|i| (format!("10.244.3.{i}"), "node-3"))
        .collect();
    let list: Vec<(&str, &str)> = owned.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    let (s, sl) = web(&list);
    let st = build(&[s], &[sl]);
    let paths = run(&st, Hook::Prerouting, &from_pod("10.96.0.10", 80));
    let want: Vec<(&str, u16)> = owned.iter().map(|(a, _)| (a.as_str(), 8080)).collect();
    assert_eq!(paths.len(), 12);
    assert_eq!(targets(&paths), eps(&want));
}

#[test]
fn node_to_cluster_ip_is_marked_then_masqueraded_at_postrouting() {
    let (s, sl) = web(&TWO);
    let st = build(&[s], &[sl]);
    let paths = run(&st, Hook::Output, &tcp(NODE_IP, "10.96.0.10", 80));
    assert_eq!(
        targets(&paths),
        eps(&[("10.244.1.5", 8080), ("10.244.2.5", 8080)])
    );
    for p in &paths {
        assert_eq!(p.verdict, HookVerdict::Accept);
        assert_ne!(p.packet.mark & mark(&st), 0, "masquerade mark: {p:#?}");
        let mut out = p.packet.clone();
        out.oifname = Some("eth0".into());
        let post = run(&st, Hook::Postrouting, &out);
        assert_eq!(post.len(), 1);
        let post = &post[0];
        assert_eq!(post.verdict, HookVerdict::Accept);
        assert!(post.steps.iter().any(|s| s.event
            == Event::Masquerade {
                addr: Some(ip(NODE_IP))
            }));
        assert_eq!(post.packet.saddr, ip(NODE_IP));
        assert_eq!(post.packet.mark & mark(&st), 0, "mark cleared");
    }
    // A pod's DNATed packet carries no mark: postrouting leaves it alone.
    let pod = run(&st, Hook::Prerouting, &from_pod("10.96.0.10", 80));
    let post = run(&st, Hook::Postrouting, &pod[0].packet);
    assert!(!post[0]
        .steps
        .iter()
        .any(|s| matches!(s.event, Event::Masquerade { .. })));
    assert_eq!(post[0].packet.saddr, ip(POD));
}

fn node_port(policy: TrafficPolicy) -> ProxyState {
    let (mut s, sl) = web(&TWO);
    s.type_ = ServiceType::NodePort;
    s.ports[0].node_port = Some(30080);
    s.external_traffic_policy = policy;
    build(&[s], &[sl])
}

#[test]
fn node_port_with_cluster_policy_masquerades_and_reaches_every_endpoint() {
    let st = node_port(TrafficPolicy::Cluster);
    let paths = run(&st, Hook::Prerouting, &from_outside(CLIENT, NODE_IP, 30080));
    assert_eq!(
        targets(&paths),
        eps(&[("10.244.1.5", 8080), ("10.244.2.5", 8080)])
    );
    for p in &paths {
        assert_ne!(p.packet.mark & mark(&st), 0, "{p:#?}");
        assert!(p.steps.iter().any(
            |s| matches!(&s.event, Event::MapHit { map, .. } if map == "service-nodeports-v4")
        ));
    }
    // Not on loopback, and not on an address that is not the node's.
    let lo = run(&st, Hook::Output, &tcp("127.0.0.1", "127.0.0.1", 30080));
    assert_eq!(targets(&lo), [None].into());
    let other = run(
        &st,
        Hook::Prerouting,
        &from_outside(CLIENT, "192.168.33.99", 30080),
    );
    assert_eq!(targets(&other), [None].into());
}

#[test]
fn node_port_with_local_policy_keeps_the_source_and_uses_local_endpoints() {
    let st = node_port(TrafficPolicy::Local);
    let paths = run(&st, Hook::Prerouting, &from_outside(CLIENT, NODE_IP, 30080));
    assert_eq!(targets(&paths), eps(&[("10.244.1.5", 8080)]));
    assert_eq!(paths[0].packet.mark & mark(&st), 0);
    assert_eq!(paths[0].packet.saddr, ip(CLIENT));
    // The node's own traffic to its NodePort: masqueraded, cluster-wide endpoints.
    let paths = run(&st, Hook::Output, &tcp(NODE_IP, NODE_IP, 30080));
    assert_eq!(
        targets(&paths),
        eps(&[("10.244.1.5", 8080), ("10.244.2.5", 8080)])
    );
    assert!(paths.iter().all(|p| p.packet.mark & mark(&st) != 0));
    // No local endpoint: outside traffic is dropped, not DNATed elsewhere.
    let (mut s, sl) = web(&[("10.244.2.5", "node-2")]);
    s.type_ = ServiceType::NodePort;
    s.ports[0].node_port = Some(30080);
    s.external_traffic_policy = TrafficPolicy::Local;
    let st = build(&[s], &[sl]);
    let paths = run(&st, Hook::Prerouting, &from_outside(CLIENT, NODE_IP, 30080));
    assert_eq!(verdicts(&paths), [HookVerdict::Drop].into());
}

fn load_balancer(ranges: &[&str]) -> ProxyState {
    let (mut s, sl) = web(&TWO);
    s.type_ = ServiceType::LoadBalancer;
    s.ports[0].node_port = Some(30080);
    s.load_balancer_ips = vec![ip("192.168.34.1")];
    s.load_balancer_source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
    build(&[s], &[sl])
}

#[test]
fn load_balancer_ip_reaches_every_endpoint() {
    let st = load_balancer(&[]);
    let paths = run(
        &st,
        Hook::Prerouting,
        &from_outside(CLIENT, "192.168.34.1", 80),
    );
    assert_eq!(
        targets(&paths),
        eps(&[("10.244.1.5", 8080), ("10.244.2.5", 8080)])
    );
    assert!(paths.iter().all(|p| p.verdict == HookVerdict::Accept));
}

#[test]
fn load_balancer_source_ranges_refuse_other_sources_before_dnat() {
    let st = load_balancer(&["203.0.113.0/24"]);
    let ok = run(
        &st,
        Hook::Prerouting,
        &from_outside(CLIENT, "192.168.34.1", 80),
    );
    assert_eq!(
        targets(&ok),
        eps(&[("10.244.1.5", 8080), ("10.244.2.5", 8080)])
    );
    let refused = run(
        &st,
        Hook::Prerouting,
        &from_outside("198.51.100.1", "192.168.34.1", 80),
    );
    assert_eq!(refused.len(), 1);
    let p = &refused[0];
    assert_eq!(p.verdict, HookVerdict::Drop);
    assert_eq!(p.dnat(), None);
    let decided = p.deciding_step().unwrap();
    assert_eq!(
        decided.table,
        st.config().table,
        "the main table's firewall chain"
    );
    assert!(decided.chain.starts_with("fw4-"), "{decided:?}");
    assert!(
        !p.steps.iter().any(|s| s.event == Event::NatSkipped),
        "dropped before NAT"
    );
}

#[test]
fn external_ips_reach_every_endpoint_with_the_masquerade_mark() {
    let (mut s, sl) = web(&TWO);
    s.external_ips = vec![ip("203.0.113.50")];
    let st = build(&[s], &[sl]);
    let paths = run(
        &st,
        Hook::Prerouting,
        &from_outside(CLIENT, "203.0.113.50", 80),
    );
    assert_eq!(
        targets(&paths),
        eps(&[("10.244.1.5", 8080), ("10.244.2.5", 8080)])
    );
    assert!(paths.iter().all(|p| p.packet.mark & mark(&st) != 0));
    // Another port of that address is nobody's.
    let other = run(
        &st,
        Hook::Prerouting,
        &from_outside(CLIENT, "203.0.113.50", 81),
    );
    assert_eq!(targets(&other), [None].into());
}

#[test]
fn a_global_ingress_address_reaches_every_endpoint_keeping_the_source() {
    // GlobalNet: another cluster's egress address is outside this cluster's ranges, yet is
    // kept (not masqueraded), as for the ClusterIP from a pod.
    let (mut s, sl) = web(&TWO);
    s.global_ips = vec![ip("242.0.0.2")];
    let st = build(&[s], &[sl]);
    let paths = run(
        &st,
        Hook::Prerouting,
        &from_outside("242.1.0.1", "242.0.0.2", 80),
    );
    assert_eq!(
        targets(&paths),
        eps(&[("10.244.1.5", 8080), ("10.244.2.5", 8080)])
    );
    assert!(paths.iter().all(|p| p.packet.mark & mark(&st) == 0));
    let other = run(
        &st,
        Hook::Prerouting,
        &from_outside("242.1.0.1", "242.0.0.2", 81),
    );
    assert_eq!(targets(&other), [None].into());
}

#[test]
fn a_service_without_endpoints_is_rejected() {
    let (s, _) = web(&[]);
    let st = build(&[s], &[]);
    // From a pod: no DNAT at prerouting, rejected with a TCP reset at forward.
    let pre = run(&st, Hook::Prerouting, &from_pod("10.96.0.10", 80));
    assert_eq!(targets(&pre), [None].into());
    let mut fwd = pre[0].packet.clone();
    fwd.oifname = Some("eth0".into());
    let paths = run(&st, Hook::Forward, &fwd);
    assert_eq!(
        verdicts(&paths),
        [HookVerdict::Reject(RejectKind::TcpReset)].into()
    );
    assert!(paths[0].steps.iter().any(
        |s| matches!(&s.event, Event::MapHit { map, .. } if map == "no-endpoint-services-v4")
    ));
    // From the node: at output. UDP: ICMP port unreachable.
    let paths = run(&st, Hook::Output, &tcp(NODE_IP, "10.96.0.10", 80));
    assert_eq!(
        verdicts(&paths),
        [HookVerdict::Reject(RejectKind::TcpReset)].into()
    );
    let (s, _) = (
        svc("dns", "10.96.0.53", vec![port("dns", Protocol::Udp, 53)]),
        (),
    );
    let st = build(&[s], &[]);
    let udp = Packet::new(ip(NODE_IP), ip("10.96.0.53"), L4Proto::Udp, 40000, 53);
    let paths = run(&st, Hook::Output, &udp);
    assert_eq!(
        verdicts(&paths),
        [HookVerdict::Reject(RejectKind::IcmpxPortUnreachable)].into()
    );
}

#[test]
fn session_affinity_remembers_the_client_on_every_path() {
    let (mut s, sl) = web(&TWO);
    s.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    let st = build(&[s], &[sl]);
    let paths = run(&st, Hook::Prerouting, &from_pod("10.96.0.10", 80));
    assert_eq!(
        targets(&paths),
        eps(&[("10.244.1.5", 8080), ("10.244.2.5", 8080)])
    );
    for p in &paths {
        let (addr, _) = p.dnat().unwrap();
        let update = p.steps.iter().find_map(|s| match &s.event {
            Event::UpdateSet { set, key } => Some((set.clone(), key.clone())),
            _ => None,
        });
        let (set, key) = update.unwrap_or_else(|| panic!("no affinity update: {p:#?}"));
        assert!(
            set.starts_with(&format!("aff4-default-web-http-{addr}-8080")),
            "{set}"
        );
        assert_eq!(key, sarasa_nft::Key::one(ip(POD)));
    }
}

#[test]
fn an_ip_match_beats_a_node_port_match_in_an_earlier_shard() {
    // `np` holds NodePort 30080; `ext` has the node's address as an externalIP on port 30080.
    // Pick names so that np's shard table sorts before ext's: table order must not matter.
    let st0 = build(&[], &[]);
    let shard = |name: &str| st0.shard_of(&ServiceRef::new("default", name));
    let names: Vec<String> = (0..200).map(|i| format!("svc{i}")).collect();
    let (np_name, ext_name) = names
        .iter()
        .flat_map(|a| names.iter().map(move |b| (a, b)))
        .find(|(a, b)| shard(a) < shard(b))
        .expect("two Services in different shards");
    let mut np = svc(np_name, "10.96.0.20", vec![port("p", Protocol::Tcp, 80)]);
    np.type_ = ServiceType::NodePort;
    np.ports[0].node_port = Some(30080);
    let mut ext = svc(
        ext_name,
        "10.96.0.30",
        vec![port("p", Protocol::Tcp, 30080)],
    );
    ext.external_ips = vec![ip(NODE_IP)];
    let slices = [
        slice(
            np_name,
            "a",
            &[("p", Protocol::Tcp, 8080)],
            &[("10.244.1.20", "node-1")],
        ),
        slice(
            ext_name,
            "b",
            &[("p", Protocol::Tcp, 9090)],
            &[("10.244.1.30", "node-1")],
        ),
    ];
    let st = build(&[np, ext], &slices);
    let paths = run(&st, Hook::Prerouting, &from_outside(CLIENT, NODE_IP, 30080));
    assert_eq!(targets(&paths), eps(&[("10.244.1.30", 9090)]));
    // The NodePort chains of every shard were skipped once the IP match bound.
    let skipped: Vec<&str> = paths[0]
        .steps
        .iter()
        .filter(|s| s.event == Event::NatSkipped)
        .map(|s| s.chain.as_str())
        .collect();
    assert!(skipped.contains(&"nat-prerouting-nodeports"), "{skipped:?}");
}

#[test]
fn ipv6_cluster_ip_reaches_its_endpoints_and_not_the_ipv4_ones() {
    let mut s = svc("web", "10.96.0.10", vec![port("http", Protocol::Tcp, 80)]);
    s.cluster_ips.push(ip("fd00:96::10"));
    let v4 = slice(
        "web",
        "web-4",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.244.1.5", "node-1")],
    );
    let v6 = slice(
        "web",
        "web-6",
        &[("http", Protocol::Tcp, 8080)],
        &[("fd00:244:1::5", "node-1"), ("fd00:244:2::5", "node-2")],
    );
    let st = build(&[s], &[v4, v6]);
    let paths = run(
        &st,
        Hook::Prerouting,
        &Packet::new(
            ip("fd00:244:1::7"),
            ip("fd00:96::10"),
            L4Proto::Tcp,
            40000,
            80,
        ),
    );
    assert_eq!(
        targets(&paths),
        eps(&[("fd00:244:1::5", 8080), ("fd00:244:2::5", 8080)])
    );
    let paths = run(&st, Hook::Prerouting, &from_pod("10.96.0.10", 80));
    assert_eq!(targets(&paths), eps(&[("10.244.1.5", 8080)]));
}
