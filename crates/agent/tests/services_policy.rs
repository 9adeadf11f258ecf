//! Services and NetworkPolicy programmed by real agents from the real lab control plane, over
//! real packets between pod namespaces on three node namespaces (one pod each). Requires root.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{connect, listen, netns_path, nft_out, Topology};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::{AgentConfig, AgentHandle, Backend};
use serde_json::json;

async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually_within(what, Duration::from_secs(30), f).await
}

/// Accepts connections forever on a thread, counting them and echoing one line back.
fn serve_counting(l: TcpListener) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            count.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 || s.write_all(&buf[..k]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    n
}

/// `GET /metrics` of an agent's health listener, over a plain TCP connection.
async fn metrics_text(addr: std::net::SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap()
}

async fn start_agent(name: &str, ns: &str, api: &str, dir: &std::path::Path) -> AgentHandle {
    let mut c = AgentConfig::new(name);
    c.apiserver = Some(api.to_string());
    c.backend = Backend::HostGw;
    c.cni_conf_dir = dir.join(name).join("net.d");
    c.ipam_data_dir = dir.join(name).join("ipam");
    c.health_listen = "127.0.0.1:0".parse().unwrap();
    sarasa_agent::start(c, NetnsTarget::Path(netns_path(ns)))
        .await
        .expect("agent starts")
}

/// The proxy's tables (`inet sarasa` and its shards `inet sarasa-svcNN`) as `table/chain` →
/// rule lines (with handles).
fn chains(ns: &str) -> BTreeMap<String, Vec<String>> {
    let tables: Vec<String> = nft_out(ns, &["list", "tables"])
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .filter(|t| *t == "sarasa" || t.starts_with("sarasa-svc"))
        .map(str::to_string)
        .collect();
    assert!(
        tables.len() > 1,
        "no proxy shard tables in {ns}: {tables:?}"
    );
    let mut map = BTreeMap::new();
    for table in tables {
        let out = nft_out(ns, &["-a", "list", "table", "inet", &table]);
        let mut current: Option<String> = None;
        for line in out.lines() {
            let t = line.trim();
            if let Some(rest) = t.strip_prefix("chain ") {
                let name = format!(
                    "{table}/{}",
                    rest.split_whitespace().next().unwrap_or_default()
                );
                map.insert(name.clone(), Vec::new());
                current = Some(name);
            } else if t == "}" {
                current = None;
            } else if let Some(c) = &current {
                if t.contains("# handle") {
                    map.get_mut(c).unwrap().push(t.to_string());
                }
            }
        }
    }
    map
}

fn can_connect(from: &str, to: &str) -> bool {
    connect(from, to).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_policies_across_nodes() {
    let (mut topo, nodes) = Topology::new("svcpol", 3);
    let dir = tempfile::tempdir().unwrap();
    let server =
        sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new(dir.path().join("api")))
            .expect("open control plane");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = server.clone();
    let serving = tokio::spawn(async move { srv.serve(listener).await });
    let api = format!("http://{addr}");

    let mut a1 = Some(start_agent("node-1", &nodes[0].ns, &api, dir.path()).await);
    let a2 = start_agent("node-2", &nodes[1].ns, &api, dir.path()).await;
    let a3 = start_agent("node-3", &nodes[2].ns, &api, dir.path()).await;

    let client = kube::Client::try_from(kube::Config::new(api.parse().unwrap())).unwrap();
    let node_api: Api<Node> = Api::all(client.clone());
    let mut cidrs = Vec::new();
    for i in 1..=3 {
        let name = format!("node-{i}");
        let node = common::network_ready(&node_api, &name, Duration::from_secs(30)).await;
        cidrs.push(node.spec.unwrap().pod_cidr.expect("podCIDR assigned"));
    }
    let pod_ip = |c: &str, last: u8| c.replace(".0/24", &format!(".{last}"));
    let (ip1, ip2, ip3) = (
        pod_ip(&cidrs[0], 10),
        pod_ip(&cidrs[1], 10),
        pod_ip(&cidrs[2], 10),
    );
    let p1 = topo.add_pod(&nodes[0], "p1", &ip1);
    let p2 = topo.add_pod(&nodes[1], "p2", &ip2);
    let p3 = topo.add_pod(&nodes[2], "p3", &ip3);
    let hits1 = serve_counting(listen(&p1, "0.0.0.0:8080"));
    let hits2 = serve_counting(listen(&p2, "0.0.0.0:8080"));
    let hits3 = serve_counting(listen(&p3, "0.0.0.0:8080"));

    let ns = format!("sarasa-t{}", std::process::id());
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"team": "a"}}})).unwrap();
    let _ = ns_api.create(&PostParams::default(), &namespace).await;

    // Selector-less Services with hand-made EndpointSlices: `web` over p1 (node-1) and p2
    // (node-2), `other` over p3.
    let svc_api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let mut cluster_ips = BTreeMap::new();
    for name in ["web", "other"] {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        }))
        .unwrap();
        let created = svc_api.create(&PostParams::default(), &svc).await.unwrap();
        cluster_ips.insert(name, created.spec.unwrap().cluster_ip.expect("clusterIP"));
    }
    let slice = |name: &str, svc: &str, eps: &[(&str, &str)]| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": eps.iter().map(|(ip, node)| json!({
                "addresses": [ip], "nodeName": node, "conditions": {"ready": true}
            })).collect::<Vec<_>>(),
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap()
    };
    slice_api
        .create(
            &PostParams::default(),
            &slice("web-1", "web", &[(&ip1, "node-1"), (&ip2, "node-2")]),
        )
        .await
        .unwrap();
    slice_api
        .create(
            &PostParams::default(),
            &slice("other-1", "other", &[(&ip3, "node-3")]),
        )
        .await
        .unwrap();

    // 1. The ClusterIP reaches the endpoints on both nodes, from a pod on node-1.
    let web = format!("{}:80", cluster_ips["web"]);
    let other = format!("{}:80", cluster_ips["other"]);
    eventually("ClusterIP spreads over both nodes", || {
        let ok = can_connect(&p1, &web);
        let spread = hits1.load(Ordering::Relaxed) > 0 && hits2.load(Ordering::Relaxed) > 0;
        async move { (ok && spread).then_some(()) }
    })
    .await;
    eventually("other's ClusterIP", || {
        let ok = can_connect(&p1, &other) && hits3.load(Ordering::Relaxed) > 0;
        async move { ok.then_some(()) }
    })
    .await;

    // 2. An EndpointSlice change rewrites only that Service's chains: `other`'s chains and the
    // dispatch chains keep their rules (same handles).
    let before = chains(&nodes[0].ns);
    let other_chains: Vec<String> = before
        .iter()
        .filter(|(_, rules)| {
            rules
                .iter()
                .any(|r| r.contains(&format!("dnat ip to {ip3}")))
        })
        .map(|(n, _)| n.clone())
        .collect();
    assert!(
        !other_chains.is_empty(),
        "no DNAT chain for {ip3}: {before:#?}"
    );
    slice_api
        .replace("web-1", &PostParams::default(), &{
            let mut s = slice_api.get("web-1").await.unwrap();
            let fresh = slice("web-1", "web", &[(&ip1, "node-1")]);
            s.endpoints = fresh.endpoints;
            s
        })
        .await
        .unwrap();
    let after = eventually("p2 gone from node-1's table", || {
        let t = chains(&nodes[0].ns);
        let gone = !t
            .values()
            .flatten()
            .any(|r| r.contains(&format!("dnat ip to {ip2}")));
        async move { gone.then_some(t) }
    })
    .await;
    let dispatch: Vec<String> = before
        .keys()
        .filter(|c| c.ends_with("/services"))
        .cloned()
        .collect();
    assert!(!dispatch.is_empty(), "no dispatch chains: {before:#?}");
    for c in other_chains.iter().chain(dispatch.iter()) {
        assert_eq!(before.get(c), after.get(c), "chain {c} was rewritten");
    }
    let h2 = hits2.load(Ordering::Relaxed);
    for _ in 0..10 {
        assert!(can_connect(&p1, &web));
    }
    assert_eq!(
        hits2.load(Ordering::Relaxed),
        h2,
        "removed endpoint still chosen"
    );

    // 3. Restarting the agent flushes nothing: the same rules (handles) and an established
    // connection through the Service survives.
    let mut established = connect(&p1, &other).expect("connect through the Service");
    established.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    established.read_exact(&mut buf).unwrap();
    let before = chains(&nodes[0].ns);
    drop(a1.take());
    let a1 = start_agent("node-1", &nodes[0].ns, &api, dir.path()).await;
    eventually("restarted agent programmed", || {
        let ok = a1.metrics.programmed.load(Ordering::Relaxed)
            && a1.metrics.services.load(Ordering::Relaxed) >= 2;
        async move { ok.then_some(()) }
    })
    .await;
    assert_eq!(before, chains(&nodes[0].ns), "restart changed the table");
    established.write_all(b"pong\n").unwrap();
    established.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong\n");

    // 4. NetworkPolicy: Pods as the API knows them, then a policy isolating `db` (p2) for
    // ingress except from role=client.
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for (name, node, ip, labels) in [
        ("client", "node-1", &ip1, json!({"role": "client"})),
        ("db", "node-2", &ip2, json!({"app": "db"})),
        ("stranger", "node-3", &ip3, json!({"role": "other"})),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "sarasa",
                "ports": [{"containerPort": 8080, "name": "http"}]}]}
        }))
        .unwrap();
        pod_api.create(&PostParams::default(), &pod).await.unwrap();
        pod_api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"}}),
                ),
            )
            .await
            .unwrap();
    }
    assert!(
        can_connect(&p3, &format!("{ip2}:8080")),
        "open before policy"
    );
    let np_api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    let np: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "db-from-clients"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                         "ports": [{"port": "http"}]}]
        }
    }))
    .unwrap();
    np_api.create(&PostParams::default(), &np).await.unwrap();
    eventually("stranger denied", || {
        let denied = !can_connect(&p3, &format!("{ip2}:8080"));
        async move { denied.then_some(()) }
    })
    .await;
    assert!(can_connect(&p1, &format!("{ip2}:8080")), "client allowed");
    let event = eventually("drop event naming the policy", || {
        let e = a2.metrics.last_policy_drop.lock().unwrap().clone();
        async move { e }
    })
    .await;
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["direction"], "ingress");
    assert_eq!(event["pod"], format!("{ns}/db"));
    assert_eq!(event["src"]["pod"], format!("{ns}/stranger"));
    assert_eq!(event["port"], 8080);
    assert_eq!(event["protocol"], "tcp");
    assert_eq!(event["policies"], json!([format!("{ns}/db-from-clients")]));

    // An invalid policy is skipped; the valid one stays enforced. Relabelling the stranger as a
    // client opens the way.
    let bad: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]}
    }))
    .unwrap();
    let _ = np_api.create(&PostParams::default(), &bad).await;
    pod_api
        .patch(
            "stranger",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "client"}}})),
        )
        .await
        .unwrap();
    eventually("relabelled pod allowed", || {
        let ok = can_connect(&p3, &format!("{ip2}:8080"));
        async move { ok.then_some(()) }
    })
    .await;
    assert!(a2.metrics.policy_drops.load(Ordering::Relaxed) > 0);
    // Every table, the policy table with its `log` statements included, went over netlink
    // (there is no other path): one batch per reconcile (node-1's agent was restarted over
    // a programmed node: it may have had nothing to write).
    for a in [&a2, &a3] {
        assert!(a.metrics.nft_batches.load(Ordering::Relaxed) > 0);
    }
    let metrics = metrics_text(a2.health_addr).await;
    assert!(
        metrics.contains("sarasa_agent_nft_batches_total "),
        "{metrics}"
    );

    drop(a1);
    drop(a2);
    drop(a3);
    server.shutdown();
    let _ = serving.await;
}
