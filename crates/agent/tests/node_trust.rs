//! Privileged: a node namespace programmed with forged Nodes in the cluster state and a
//! leftover route to a remote podCIDR. The forged Nodes are left out (one reported conflict
//! each), the real node keeps its podCIDR, the leftover route is replaced rather than failing
//! the reconcile with EEXIST (issue 14), and pods still talk across nodes.

mod common;

use std::io::{Read, Write};

use common::{connect, ip, ip_out, listen, netns_path, Topology};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::watcher;
use sarasa_agent::datapath::NodeDatapath;
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::plan::{LocalNode, NodeTrust};
use sarasa_agent::Backend;
use sarasa_cluster::state::ANNOTATION_PUBLIC_IP;
use sarasa_cluster::ClusterState;

/// A Node created `age` seconds after the first.
fn node(name: &str, cidr: &str, underlay: &str, age: i64) -> Node {
    let mut obj = Node::default();
    obj.metadata.name = Some(name.into());
    obj.metadata.creation_timestamp = Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + age).unwrap(),
    ));
    obj.metadata.annotations =
        Some([(ANNOTATION_PUBLIC_IP.to_string(), underlay.to_string())].into());
    obj.spec = Some(NodeSpec {
        pod_cidr: Some(cidr.into()),
        ..Default::default()
    });
    obj
}

#[tokio::test(flavor = "current_thread")]
async fn forged_nodes_are_left_out_and_leftover_routes_replaced() {
    let (mut topo, nodes) = Topology::new("trust", 2);
    let mut state = ClusterState::default();
    for n in [
        node("node-1", "10.244.1.0/24", "192.168.33.11", 0),
        node("node-2", "10.244.2.0/24", "192.168.33.12", 1),
        // Younger, sorting before node-2 by name, claiming its podCIDR; and one claiming the
        // underlay.
        node("a-forged", "10.244.2.0/24", "192.168.33.66", 2),
        node("b-forged", "192.168.33.0/24", "192.168.33.67", 3),
    ] {
        state.apply_node_event(watcher::Event::Apply(n));
    }
    // A route to node-2's podCIDR someone else left (not sarasa's protocol).
    ip(&[
        "-n",
        &nodes[0].ns,
        "route",
        "add",
        "10.244.2.0/24",
        "via",
        "192.168.33.1",
        "proto",
        "boot",
    ]);

    let mut trusts = Vec::new();
    for n in &nodes {
        let dp = NodeDatapath::connect(NetnsTarget::Path(netns_path(&n.ns)), false)
            .await
            .expect("connect");
        let cluster = vec!["10.244.0.0/16".parse().unwrap()];
        let uplink = dp.discover_uplink(None, &cluster).await.expect("uplink");
        let local = LocalNode {
            name: format!("node-{}", n.index),
            backend: Backend::HostGw,
            underlay_ip: uplink.address,
            uplink: uplink.name.clone(),
            uplink_mtu: uplink.mtu,
            vtep_mac: None,
            cluster_cidrs: cluster,
            remote_cluster_cidrs: Vec::new(),
            global_egress: Vec::new(),
        };
        let mut trust = NodeTrust::default();
        let plan = trust.compile(&state, &local).expect("compile");
        let refused: Vec<(String, &str)> = trust
            .unreported(&plan)
            .iter()
            .map(|c| (c.node.clone(), c.reason.as_str()))
            .collect();
        assert_eq!(
            refused,
            [
                ("a-forged".to_string(), "PodCIDRConflict"),
                ("b-forged".to_string(), "PodCIDRConflict")
            ]
        );
        assert_eq!(plan.remote_nodes, 1);
        dp.program(&plan, &uplink, None)
            .await
            .expect("programming succeeds over the leftover route");
        let again = dp.program(&plan, &uplink, None).await.expect("reprogram");
        assert!(again.fabric_ops.is_empty(), "{again:?}");
        trusts.push(trust);
    }
    let route = ip_out(&["-n", &nodes[0].ns, "route", "show", "10.244.2.0/24"]);
    assert!(
        route.contains("via 192.168.33.12") && route.contains("proto 83"),
        "{route}"
    );
    let underlay = ip_out(&["-n", &nodes[0].ns, "route", "show", "192.168.33.0/24"]);
    assert!(underlay.contains("dev eth0 proto kernel"), "{underlay}");

    let p1 = topo.add_pod(&nodes[0], "p1", "10.244.1.10");
    let p2 = topo.add_pod(&nodes[1], "p2", "10.244.2.10");
    let l = listen(&p2, "0.0.0.0:8080");
    let mut c = connect(&p1, "10.244.2.10:8080").expect("pod to pod across nodes");
    let (mut s, peer) = l.accept().expect("accept");
    assert_eq!(peer.ip().to_string(), "10.244.1.10");
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    drop(trusts);
}
