//! The agent end to end over its watch path: kube-rs against an in-memory API server, agents
//! running against real node namespaces. Requires root (namespaces); fails loudly otherwise.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::{connect, ip_out, listen, netns_path, Topology};
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::{AgentConfig, AgentHandle, Backend};
use serde_json::json;

/// Polls `f` until it returns Some, failing after `timeout`.
async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn config(
    node: &str,
    api: std::net::SocketAddr,
    dir: &std::path::Path,
    backend: Backend,
) -> AgentConfig {
    let mut c = AgentConfig::new(node);
    c.apiserver = Some(format!("http://{api}"));
    c.backend = backend;
    c.cni_conf_dir = dir.join(node).join("net.d");
    c.ipam_data_dir = dir.join(node).join("ipam");
    c.health_listen = "127.0.0.1:0".parse().unwrap();
    c
}

async fn start(cfg: AgentConfig, ns: &str) -> AgentHandle {
    sarasa_agent::start(cfg, NetnsTarget::Path(netns_path(ns)))
        .await
        .expect("agent starts")
}

fn lease_rv(api: &FakeApi, node: &str) -> Option<u64> {
    api.get("leases", &format!("agent-{node}"))?["metadata"]["annotations"]
        ["sarasa.io/observed-resource-version"]
        .as_str()?
        .parse()
        .ok()
}

async fn healthz(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_register_publish_program_and_report() {
    let (mut topo, nodes) = Topology::new("agent", 2);
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApi::new();
    let addr = api.serve().await;
    let wait = Duration::from_secs(20);

    let a1 = start(
        config("node-1", addr, dir.path(), Backend::Vxlan),
        &nodes[0].ns,
    )
    .await;
    let a2 = start(
        config("node-2", addr, dir.path(), Backend::Vxlan),
        &nodes[1].ns,
    )
    .await;

    // Registration through the agent, with the annotations other nodes need.
    for (name, ip) in [("node-1", "192.168.33.11"), ("node-2", "192.168.33.12")] {
        let node = eventually("node registered and annotated", wait, || {
            let n = api.get("nodes", name)?;
            n["metadata"]["annotations"]["sarasa.io/vtep-mac"].as_str()?;
            Some(n)
        })
        .await;
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], name);
        assert_eq!(node["status"]["addresses"][0]["type"], "InternalIP");
        assert_eq!(node["status"]["addresses"][0]["address"], ip);
        assert_eq!(node["metadata"]["annotations"]["sarasa.io/public-ip"], ip);
        assert_eq!(
            node["metadata"]["annotations"]["sarasa.io/backend"],
            "vxlan"
        );
    }
    // No podCIDR yet: not programmed, not healthy.
    assert!(!a1.metrics.programmed.load(Ordering::Relaxed));
    assert!(healthz(a1.health_addr).await.starts_with("HTTP/1.1 503"));

    // The control plane assigns podCIDRs.
    api.patch(
        "nodes",
        "node-1",
        json!({"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}}),
    );
    let assigned_rv = api
        .patch(
            "nodes",
            "node-2",
            json!({"spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24"]}}),
        )
        .unwrap();

    for (name, a) in [("node-1", &a1), ("node-2", &a2)] {
        eventually("lease with observed rv", wait, || {
            (lease_rv(&api, name)? >= assigned_rv).then_some(())
        })
        .await;
        assert!(a.metrics.programmed.load(Ordering::Relaxed));
        assert_eq!(a.metrics.remote_nodes.load(Ordering::Relaxed), 1);
        let node = eventually("NetworkUnavailable=False", wait, || {
            let n = api.get("nodes", name)?;
            let conds = n["status"]["conditions"].as_array()?.clone();
            conds
                .iter()
                .find(|c| c["type"] == "NetworkUnavailable" && c["status"] == "False")
                .cloned()
        })
        .await;
        assert_eq!(node["reason"], "SarasaAgentReady");
        assert_eq!(
            api.get("leases", &format!("agent-{name}")).unwrap()["spec"]["holderIdentity"],
            name
        );
    }
    assert!(healthz(a1.health_addr).await.starts_with("HTTP/1.1 200"));

    // The CNI config from the podCIDR, MTU from the uplink (1500 - 50).
    let conf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("node-1/net.d/10-sarasa.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(conf["plugins"][0]["mtu"], 1450);
    assert_eq!(
        conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.244.1.0/24"
    );

    // Pods on both nodes reach each other without NAT.
    let p1 = topo.add_pod(&nodes[0], "p1", "10.244.1.10");
    let p2 = topo.add_pod(&nodes[1], "p2", "10.244.2.10");
    let listener = listen(&p2, "0.0.0.0:7000");
    let mut client = connect(&p1, "10.244.2.10:7000").expect("cross-node connect");
    let (mut server, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip().to_string(), "10.244.1.10");

    // No write loop: once ready, the agents' own Node writes do not cause more Node writes.
    let node_writes = api.writes("nodes");
    let reconciles = a1.metrics.reconciles.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        api.writes("nodes"),
        node_writes,
        "agents keep writing their Node"
    );
    assert_eq!(a1.metrics.reconciles.load(Ordering::Relaxed), reconciles);

    // A pod event advances the observed resourceVersion without reprogramming.
    let pod_rv = api.put(
        "pods",
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"nodeName": "node-2"},
               "status": {"podIP": "10.244.2.10"}}),
    );
    eventually("observed rv covers the pod", wait, || {
        (lease_rv(&api, "node-1")? >= pod_rv).then_some(())
    })
    .await;
    assert_eq!(a1.metrics.reconciles.load(Ordering::Relaxed), reconciles);

    // Agent restart: nothing in the kernel changes and the connection stays up.
    let vx_before = ip_out(&["-n", &nodes[0].ns, "-o", "link", "show", "sarasa.1"]);
    a1.stop();
    drop(a1);
    let a1 = start(
        config("node-1", addr, dir.path(), Backend::Vxlan),
        &nodes[0].ns,
    )
    .await;
    eventually("restarted agent programmed", wait, || {
        a1.metrics.programmed.load(Ordering::Relaxed).then_some(())
    })
    .await;
    assert_eq!(
        a1.metrics.fabric_ops.load(Ordering::Relaxed),
        0,
        "restart applied no fabric change"
    );
    assert_eq!(
        a1.metrics.nft_ops.load(Ordering::Relaxed),
        0,
        "restart wrote no nftables operation"
    );
    assert_eq!(
        ip_out(&["-n", &nodes[0].ns, "-o", "link", "show", "sarasa.1"]),
        vx_before
    );
    client.write_all(b"alive").unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"alive");

    // A node going away removes its routes on the others.
    let before = a2.metrics.fabric_ops.load(Ordering::Relaxed);
    api.patch(
        "nodes",
        "node-1",
        json!({"spec": {"podCIDR": null, "podCIDRs": null}}),
    );
    eventually("node-2 drops node-1's routes", wait, || {
        (a2.metrics.remote_nodes.load(Ordering::Relaxed) == 0).then_some(())
    })
    .await;
    assert_eq!(a2.metrics.fabric_ops.load(Ordering::Relaxed), before + 3);
    drop(a1);
    drop(a2);
}
