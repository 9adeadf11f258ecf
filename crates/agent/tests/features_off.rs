//! `serviceProxy: false` (beside kube-proxy) and `networkPolicy: false` in a node namespace
//! (issue 14: "Turning a feature off removes its tables"). An agent with both on programs the
//! node, it is stopped, and one with both off starts over the same node: the proxy's tables
//! (`inet sarasa` and its shards) and the policy table (`inet sarasa-policy`) are removed, the
//! fabric and masquerade table stay, and Services created afterwards program nothing. Requires
//! root (namespaces).

mod common;

use std::time::Duration;

use common::{netns_path, nft_out, Topology};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::PostParams;
use kube::Api;
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::AgentConfig;

fn tables(ns: &str) -> Vec<String> {
    nft_out(ns, &["list", "tables"])
        .lines()
        .filter_map(|l| l.strip_prefix("table inet ").map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_turned_off_remove_their_tables() {
    let (_topo, nodes) = Topology::new("featoff", 1);
    let ns = &nodes[0].ns;
    let dir = tempfile::tempdir().unwrap();
    let server =
        sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new(dir.path().join("api")))
            .expect("open control plane");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = server.clone();
    let serving = tokio::spawn(async move { srv.serve(listener).await });
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let node_api: Api<Node> = Api::all(client.clone());
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = |name: &str, ip: &str| -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .unwrap()
    };
    services
        .create(&PostParams::default(), &svc("before", "10.96.0.50"))
        .await
        .unwrap();

    let config = |proxy: bool, policy: bool| {
        let mut c = AgentConfig::new("node-1");
        c.apiserver = Some(format!("http://{addr}"));
        c.cni_conf_dir = dir.path().join("net.d");
        c.ipam_data_dir = dir.path().join("ipam");
        c.health_listen = "127.0.0.1:0".parse().unwrap();
        c.service_proxy = proxy;
        c.network_policy = policy;
        c
    };
    let target = || NetnsTarget::Path(netns_path(ns));

    // Both on: the node has the proxy's tables and the policy table.
    let agent = sarasa_agent::start(config(true, true), target())
        .await
        .expect("agent starts");
    common::network_ready(&node_api, "node-1", Duration::from_secs(30)).await;
    common::eventually_within("service programmed", Duration::from_secs(20), || async {
        nft_out(ns, &["list", "ruleset"])
            .contains("10.96.0.50")
            .then_some(())
    })
    .await;
    let on = tables(ns);
    for t in ["sarasa", "sarasa-svc00", "sarasa-policy", "sarasa-node"] {
        assert!(on.iter().any(|x| x == t), "{t} not in {on:?}");
    }
    drop(agent);

    // Both off (kube-proxy programs Services; no NetworkPolicy): their tables go.
    let agent = sarasa_agent::start(config(false, false), target())
        .await
        .expect("agent starts with serviceProxy and networkPolicy off");
    let off = common::eventually_within("tables removed", Duration::from_secs(30), || async {
        let t = tables(ns);
        (!t.iter().any(|x| x == "sarasa" || x == "sarasa-policy")).then_some(t)
    })
    .await;
    assert_eq!(off, ["sarasa-node"], "only the masquerade table stays");
    assert!(agent
        .metrics
        .programmed
        .load(std::sync::atomic::Ordering::Relaxed));
    assert!(common::ip_out(&["-n", ns, "link", "show"]).contains("sarasa.1"));

    // A Service created now programs nothing on this node.
    services
        .create(&PostParams::default(), &svc("after", "10.96.0.51"))
        .await
        .unwrap();
    let created_rv = services
        .get("after")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let created_rv: u64 = created_rv.parse().unwrap();
    common::eventually_within(
        "the agent observed the Service",
        Duration::from_secs(20),
        || async {
            (agent
                .metrics
                .observed_resource_version
                .load(std::sync::atomic::Ordering::Relaxed)
                >= created_rv)
                .then_some(())
        },
    )
    .await;
    assert!(!nft_out(ns, &["list", "ruleset"]).contains("10.96.0.51"));
    assert_eq!(tables(ns), ["sarasa-node"]);
    drop(agent);
    server.shutdown();
    let _ = serving.await;
}
