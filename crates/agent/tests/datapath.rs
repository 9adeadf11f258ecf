//! Privileged tests: the node programming in real namespaces, both backends, real packets.
//! Requires root (CAP_NET_ADMIN, CAP_SYS_ADMIN for setns); fails loudly otherwise.

mod common;

use std::io::{Read, Write};
use std::net::IpAddr;

use common::{connect, ip_out, listen, netns_path, nft_out, NodeNs, Topology};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use kube::runtime::watcher;
use sarasa_agent::datapath::{NodeDatapath, Uplink};
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::plan::{compile, LocalNode};
use sarasa_agent::Backend;
use sarasa_cluster::state::{ANNOTATION_PUBLIC_IP, ANNOTATION_VTEP_MAC};
use sarasa_cluster::ClusterState;
use sarasa_model::MacAddr;

struct Agent {
    dp: NodeDatapath,
    uplink: Uplink,
    mac: Option<MacAddr>,
}

async fn start_agent(node: &NodeNs, backend: Backend) -> Agent {
    let dp = NodeDatapath::connect(NetnsTarget::Path(netns_path(&node.ns)), false)
        .await
        .expect("connect");
    let cluster: Vec<ipnet::IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
    let uplink = dp.discover_uplink(None, &cluster).await.expect("uplink");
    assert_eq!(uplink.name, "eth0");
    assert_eq!(uplink.address.to_string(), node.underlay);
    let mac = match backend {
        Backend::Vxlan => Some(dp.ensure_vtep(&uplink, None).await.expect("vtep")),
        Backend::HostGw | Backend::Bgp | Backend::Vpc => None,
    };
    Agent { dp, uplink, mac }
}

fn state_of(nodes: &[NodeNs], agents: &[Agent]) -> ClusterState {
    let mut state = ClusterState::default();
    for (n, a) in nodes.iter().zip(agents) {
        let mut obj = Node::default();
        obj.metadata.name = Some(format!("node-{}", n.index));
        let mut ann = std::collections::BTreeMap::new();
        ann.insert(ANNOTATION_PUBLIC_IP.to_string(), n.underlay.clone());
        if let Some(m) = a.mac {
            ann.insert(ANNOTATION_VTEP_MAC.to_string(), m.to_string());
        }
        obj.metadata.annotations = Some(ann);
        obj.spec = Some(NodeSpec {
            pod_cidr: Some(format!("10.244.{}.0/24", n.index)),
            ..Default::default()
        });
        state.apply_node_event(watcher::Event::Apply(obj));
    }
    state
}

fn local_of(n: &NodeNs, a: &Agent, backend: Backend) -> LocalNode {
    LocalNode {
        name: format!("node-{}", n.index),
        backend,
        underlay_ip: a.uplink.address,
        uplink: a.uplink.name.clone(),
        uplink_mtu: a.uplink.mtu,
        vtep_mac: a.mac,
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        remote_cluster_cidrs: Vec::new(),
        global_egress: Vec::new(),
    }
}

/// Connects from `from` to a listener at `to_ip:port` in `to` and returns the source address
/// the server saw.
fn seen_source(from: &str, to: &str, to_ip: &str, port: u16) -> IpAddr {
    let listener = listen(to, &format!("0.0.0.0:{port}"));
    let mut client = connect(from, &format!("{to_ip}:{port}")).expect("connect across nodes");
    let (mut server, peer) = listener.accept().expect("accept");
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    peer.ip()
}

fn routes(ns: &str) -> String {
    ip_out(&["-n", ns, "route", "show", "proto", "83"])
}

async fn cross_node(backend: Backend, tag: &str) {
    let (mut topo, nodes) = Topology::new(tag, 3);
    let mut agents = Vec::new();
    for n in &nodes {
        agents.push(start_agent(n, backend).await);
    }
    let state = state_of(&nodes, &agents);
    for (n, a) in nodes.iter().zip(&agents) {
        let plan = compile(&state, &local_of(n, a, backend)).expect("compile");
        assert_eq!(plan.remote_nodes, 2);
        let report =
            a.dp.program(&plan, &a.uplink, a.mac)
                .await
                .expect("program");
        assert_eq!(
            report.fabric_ops.len(),
            if backend == Backend::Vxlan { 6 } else { 2 }
        );
    }
    let out = ip_out(&[
        "netns",
        "exec",
        &nodes[0].ns,
        "sysctl",
        "-n",
        "net.ipv4.ip_forward",
    ]);
    assert_eq!(out.trim(), "1", "forwarding on inside the node namespace");

    let pods: Vec<String> = nodes
        .iter()
        .map(|n| {
            topo.add_pod(
                n,
                &format!("p{}", n.index),
                &format!("10.244.{}.10", n.index),
            )
        })
        .collect();

    // pod → pod across nodes, no NAT.
    assert_eq!(
        seen_source(&pods[0], &pods[1], "10.244.2.10", 8080).to_string(),
        "10.244.1.10"
    );
    assert_eq!(
        seen_source(&pods[2], &pods[0], "10.244.1.10", 8081).to_string(),
        "10.244.3.10"
    );
    // node → remote pod.
    let from_node = seen_source(&nodes[0].ns, &pods[2], "10.244.3.10", 8082).to_string();
    assert!(
        from_node == "192.168.33.11" || from_node == "10.244.1.0",
        "node traffic keeps a node address, got {from_node}"
    );

    // A long-lived connection across nodes, then an agent restart over the programmed node.
    let listener = listen(&pods[1], "0.0.0.0:9000");
    let mut client = connect(&pods[0], "10.244.2.10:9000").expect("connect");
    let (mut server, _) = listener.accept().unwrap();
    let before_routes = routes(&nodes[0].ns);
    let before_link = ip_out(&["-n", &nodes[0].ns, "-o", "link", "show"]);
    let restarted = start_agent(&nodes[0], backend).await;
    assert_eq!(
        restarted.mac, agents[0].mac,
        "vtep MAC stable across restarts"
    );
    let plan = compile(&state, &local_of(&nodes[0], &restarted, backend)).unwrap();
    let report = restarted
        .dp
        .program(&plan, &restarted.uplink, restarted.mac)
        .await
        .unwrap();
    assert!(report.is_noop(), "restart must change nothing: {report:?}");
    assert_eq!(routes(&nodes[0].ns), before_routes);
    assert_eq!(
        ip_out(&["-n", &nodes[0].ns, "-o", "link", "show"]),
        before_link,
        "same links, same ifindexes"
    );
    client.write_all(b"still-up").unwrap();
    let mut buf = [0u8; 8];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still-up");

    // A removed node: its entries go, others stay.
    let mut smaller = ClusterState::default();
    for name in ["node-1", "node-2"] {
        let info = state.node(name).unwrap();
        let mut obj = Node::default();
        obj.metadata.name = Some(name.into());
        let mut ann = std::collections::BTreeMap::new();
        ann.insert(
            ANNOTATION_PUBLIC_IP.to_string(),
            info.underlay_ip().unwrap().to_string(),
        );
        if let Some(m) = info.vtep_mac {
            ann.insert(ANNOTATION_VTEP_MAC.to_string(), m.to_string());
        }
        obj.metadata.annotations = Some(ann);
        obj.spec = Some(NodeSpec {
            pod_cidr: Some(info.pod_cidrs[0].to_string()),
            ..Default::default()
        });
        smaller.apply_node_event(watcher::Event::Apply(obj));
    }
    let plan = compile(&smaller, &local_of(&nodes[0], &restarted, backend)).unwrap();
    let report = restarted
        .dp
        .program(&plan, &restarted.uplink, restarted.mac)
        .await
        .unwrap();
    let expected_dels = if backend == Backend::Vxlan { 3 } else { 1 };
    assert_eq!(report.fabric_ops.len(), expected_dels, "{report:?}");
    let r = routes(&nodes[0].ns);
    assert!(
        !r.contains("10.244.3.0/24") && r.contains("10.244.2.0/24"),
        "{r}"
    );
    client.write_all(b"still-up").unwrap();
    server.read_exact(&mut buf).unwrap();

    // Masquerade: pod → external sees the node's underlay address; external cannot reach pods.
    let ext = topo.ns("ext");
    assert_eq!(
        seen_source(&pods[0], &ext, "203.0.113.10", 8083).to_string(),
        "192.168.33.11"
    );
    let table = nft_out(&nodes[0].ns, &["list", "table", "inet", "sarasa-node"]);
    assert!(table.contains("masquerade"), "{table}");
    assert!(connect(&ext, "10.244.1.10:9000").is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn vxlan_cross_node_restart_and_masquerade() {
    cross_node(Backend::Vxlan, "vx").await;
}

#[tokio::test(flavor = "current_thread")]
async fn host_gw_cross_node_restart_and_masquerade() {
    cross_node(Backend::HostGw, "gw").await;
}

/// With the BGP backend the agent's routes stand behind BIRD's (metric 1024); switching
/// between host-gw and bgp rewrites them with the other metric, leaving none in front.
#[tokio::test(flavor = "current_thread")]
async fn bgp_standby_routes_take_the_fallback_metric_and_back() {
    let (_topo, nodes) = Topology::new("bgpm", 2);
    let mut agents = Vec::new();
    for n in &nodes {
        agents.push(start_agent(n, Backend::HostGw).await);
    }
    let state = state_of(&nodes, &agents);
    let (n, a) = (&nodes[0], &agents[0]);
    let plan = compile(&state, &local_of(n, a, Backend::HostGw)).expect("compile");
    a.dp.program(&plan, &a.uplink, a.mac)
        .await
        .expect("host-gw");
    let hostgw = routes(&n.ns);
    assert!(
        hostgw.contains("10.244.2.0/24 via 192.168.33.12"),
        "{hostgw}"
    );
    assert!(!hostgw.contains("metric"), "{hostgw}");
    let mut bgp = plan.clone();
    bgp.routes_by_bgp = true;
    a.dp.program(&bgp, &a.uplink, a.mac).await.expect("bgp");
    let standby = routes(&n.ns);
    assert_eq!(standby.lines().count(), hostgw.lines().count(), "{standby}");
    assert!(
        standby.lines().all(|l| l.contains("metric 1024")),
        "{standby}"
    );
    // Programmed again with nothing changed: nothing is rewritten.
    let again =
        a.dp.program(&bgp, &a.uplink, a.mac)
            .await
            .expect("bgp again");
    assert!(
        again.fabric_ops.is_empty() && again.link_changes == 0,
        "{again:?}"
    );
    a.dp.program(&plan, &a.uplink, a.mac)
        .await
        .expect("host-gw again");
    assert_eq!(routes(&n.ns), hostgw);
}

#[tokio::test(flavor = "current_thread")]
async fn refuses_root_namespace_without_host_netns() {
    let err = NodeDatapath::connect(NetnsTarget::Path("/proc/self/ns/net".into()), false).await;
    assert!(
        matches!(err, Err(sarasa_agent::Error::RootNetns)),
        "the test process runs in the machine's root namespace; the agent must refuse it"
    );
    let (topo, nodes) = Topology::new("guard", 1);
    assert!(
        NodeDatapath::connect(NetnsTarget::Path(netns_path(&nodes[0].ns)), false)
            .await
            .is_ok()
    );
    drop(topo);
}

#[tokio::test(flavor = "current_thread")]
async fn uplink_is_found_without_default_route() {
    let (topo, nodes) = Topology::new("uplink", 1);
    // Without a default route the uplink is the one interface with a non-pod address, even
    // with a pod gateway address on another interface.
    let ns = nodes[0].ns.clone();
    for cmd in [
        "route del default",
        "link add sarasa0 type bridge",
        "link set sarasa0 up",
        "addr add 10.244.1.1/24 dev sarasa0",
        "link add cni9 type veth peer name cni9p",
        "link set cni9 up",
        "link set cni9p up",
        "addr add 169.254.1.1/32 dev cni9",
        "addr add 10.244.1.2/32 dev cni9p",
    ] {
        let mut args = vec!["-n", ns.as_str()];
        args.extend(cmd.split(' '));
        common::ip(&args);
    }
    let dp = NodeDatapath::connect(NetnsTarget::Path(netns_path(&nodes[0].ns)), false)
        .await
        .unwrap();
    let cluster: Vec<ipnet::IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
    let uplink = dp.discover_uplink(None, &cluster).await.unwrap();
    assert_eq!(
        (uplink.name.as_str(), uplink.address.to_string().as_str()),
        ("eth0", "192.168.33.11")
    );
    assert!(dp.discover_uplink(Some("nope"), &cluster).await.is_err());
    drop(topo);
}
