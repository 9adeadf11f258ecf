//! Policy fails closed (issue 14): a NetworkPolicy the agent cannot enforce as written (here one
//! the API server in front of it did not validate: `endPort` below `port`) isolates the pods it
//! selects, over real traffic between pods on two nodes; a valid policy afterwards opens what it
//! allows. Requires root (namespaces).

mod common;

use std::time::Duration;

use common::fake_api::FakeApi;
use common::{connect, listen, netns_path, Topology};
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::AgentConfig;
use serde_json::json;

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection attempt with a short timeout (a dropped SYN must not hang the test).
fn reaches(from: &str, to: &str) -> bool {
    let to: std::net::SocketAddr = to.parse().unwrap();
    common::in_ns(from, || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprogrammable_policy_isolates_its_pods() {
    let (mut topo, nodes) = Topology::new("failclosed", 2);
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApi::new();
    let addr = api.serve().await;
    let mut agents = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let name = format!("node-{}", i + 1);
        let mut c = AgentConfig::new(&name);
        c.apiserver = Some(format!("http://{addr}"));
        c.cni_conf_dir = dir.path().join(&name).join("net.d");
        c.ipam_data_dir = dir.path().join(&name).join("ipam");
        c.health_listen = "127.0.0.1:0".parse().unwrap();
        agents.push(
            sarasa_agent::start(c, NetnsTarget::Path(netns_path(&n.ns)))
                .await
                .expect("agent starts"),
        );
    }
    for i in 1..=2 {
        let name = format!("node-{i}");
        eventually("node registered", || api.get("nodes", &name)).await;
        let cidr = format!("10.244.{i}.0/24");
        api.patch(
            "nodes",
            &name,
            json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
        );
    }
    api.put(
        "namespaces",
        json!({"metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}}),
    );
    for (name, node, ip, app) in [
        ("client", "node-1", "10.244.1.10", "client"),
        ("db", "node-2", "10.244.2.10", "db"),
    ] {
        api.put(
            "pods",
            json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
                   "spec": {"nodeName": node, "containers": [{"name": "c"}]},
                   "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}),
        );
    }
    for a in &agents {
        eventually("programmed", || {
            a.metrics
                .programmed
                .load(std::sync::atomic::Ordering::Relaxed)
                .then_some(())
        })
        .await;
    }
    let p1 = topo.add_pod(&nodes[0], "p1", "10.244.1.10");
    let p2 = topo.add_pod(&nodes[1], "p2", "10.244.2.10");
    let l = listen(&p2, "0.0.0.0:7000");
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    connect(&p1, "10.244.2.10:7000").expect("open before any policy");

    // A policy selecting db that the agent cannot program as written (endPort < port; the
    // API in front of it did not refuse it): db is isolated, not left open.
    api.put(
        "networkpolicies",
        json!({"metadata": {"name": "broken", "namespace": "default"},
               "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                        "ingress": [{"ports": [{"port": 7000, "endPort": 6000}]}]}}),
    );
    eventually("db isolated by the broken policy", || {
        (!reaches(&p1, "10.244.2.10:7000")).then_some(())
    })
    .await;
    // The client, selected by nothing, stays open.
    let l1 = listen(&p1, "0.0.0.0:7001");
    std::thread::spawn(move || {
        for c in l1.incoming() {
            drop(c);
        }
    });
    assert!(
        reaches(&p2, "10.244.1.10:7001"),
        "unselected pods stay open"
    );

    // Fixed (a valid port range): what it allows is open again.
    api.put(
        "networkpolicies",
        json!({"metadata": {"name": "broken", "namespace": "default"},
               "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                        "ingress": [{"ports": [{"port": 6000, "endPort": 7000}]}]}}),
    );
    eventually("db reachable on the allowed range", || {
        reaches(&p1, "10.244.2.10:7000").then_some(())
    })
    .await;
    drop(agents);
}
