//! sarasa's own podCIDR allocation (agent/src/podcidr.rs) against the real lab API server
//! (crates/apiserver) with its node IPAM off, as a cluster whose kube-controller-manager runs
//! without `--allocate-node-cidrs`: agents racing get distinct blocks, a deleted Node's block is
//! released, `spec.podCIDRs` wins; and two full agents in node namespaces reach each other's
//! pods over the blocks they allocated. The second test requires root (namespaces).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{connect, listen, netns_path, Topology};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::podcidr::{self, NodeMasks, ALLOCATIONS};
use sarasa_agent::{AgentConfig, Backend};

struct Server {
    server: sarasa_apiserver::ApiServer,
    serving: tokio::task::JoinHandle<()>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The lab's API server without node IPAM.
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = sarasa_apiserver::Config::new(dir.path().join("api"));
        config.allocate_node_cidrs = false;
        let server = sarasa_apiserver::ApiServer::open(config).expect("open control plane");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let srv = server.clone();
        let serving = tokio::spawn(async move {
            let _ = srv.serve(listener).await;
        });
        Server {
            server,
            serving,
            addr,
            _dir: dir,
        }
    }

    /// A client with its own connections (each agent has its own).
    fn client(&self) -> kube::Client {
        kube::Client::try_from(kube::Config::new(
            format!("http://{}", self.addr).parse().unwrap(),
        ))
        .unwrap()
    }

    async fn stop(self) {
        self.server.shutdown();
        let _ = self.serving.await;
    }
}

fn node(name: &str, spec_cidr: Option<&str>) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": spec_cidr.map(|c| serde_json::json!({"podCIDR": c, "podCIDRs": [c]})),
    }))
    .unwrap()
}

fn cluster() -> Vec<IpNet> {
    vec![
        "10.244.0.0/16".parse().unwrap(),
        "fd00:10:244::/56".parse().unwrap(),
    ]
}

/// Agents allocating at once (each over its own connections, released together by a
/// barrier), round after round until writes have conflicted: every block stays distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_agents_get_distinct_blocks() {
    const AGENTS: usize = 12;
    const MAX_ROUNDS: usize = 5;
    let server = Server::start().await;
    let nodes: Api<Node> = Api::all(server.client());
    // A node whose podCIDR the cluster's allocator set: never given a sarasa block, and no
    // sarasa block overlaps it.
    nodes
        .create(
            &PostParams::default(),
            &node("spec-node", Some("10.244.0.0/26")),
        )
        .await
        .unwrap();
    let masks = NodeMasks { v4: 26, v6: 64 };

    let mut blocks = BTreeSet::new();
    let mut conflicts = 0;
    let mut rounds = 0;
    let mut allocated = 0;
    while rounds < MAX_ROUNDS && (rounds == 0 || conflicts == 0) {
        let first = rounds * AGENTS;
        rounds += 1;
        for i in first..first + AGENTS {
            nodes
                .create(&PostParams::default(), &node(&format!("n{i}"), None))
                .await
                .unwrap();
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(AGENTS));
        let mut tasks = Vec::new();
        for i in first..first + AGENTS {
            let client = server.client();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                // Connected before the barrier, so the requests leave together.
                let _ = Api::<Node>::all(client.clone()).get(&format!("n{i}")).await;
                barrier.wait().await;
                podcidr::ensure(&client, &format!("n{i}"), &cluster(), masks, Duration::ZERO).await
            }));
        }
        for (j, t) in tasks.into_iter().enumerate() {
            let i = first + j;
            let a = t.await.unwrap().expect("allocation");
            assert!(a.own);
            assert_eq!(a.pod_cidrs.len(), 2, "one block per family");
            assert_eq!(a.pod_cidrs[0].prefix_len(), 26);
            assert_eq!(a.pod_cidrs[1].prefix_len(), 64);
            assert_ne!(
                a.pod_cidrs[0].to_string(),
                "10.244.0.0/26",
                "the spec's block"
            );
            conflicts += a.conflicts;
            for b in &a.pod_cidrs {
                assert!(
                    blocks.insert(*b),
                    "n{i} got {b}, already given to another node"
                );
            }
            // Mirrored on the Node, where the other agents see it.
            let n = nodes.get(&format!("n{i}")).await.unwrap();
            let info = sarasa_cluster::state::NodeInfo::from_object(&n);
            assert_eq!(info.pod_cidrs, a.pod_cidrs);
            allocated += 1;
        }
    }
    println!(
        "{rounds} round(s) of {AGENTS} racing agents: {allocated} allocations, {} distinct \
         blocks, {conflicts} write conflicts retried",
        blocks.len()
    );
    assert!(conflicts > 0, "the agents never raced in {rounds} rounds");
    assert_eq!(blocks.len(), 2 * allocated);

    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "sarasa-system");
    let table = maps.get(ALLOCATIONS).await.unwrap();
    assert_eq!(table.data.as_ref().unwrap().len(), allocated);

    // The spec wins: no allocation for the node the cluster gave a podCIDR.
    let a = podcidr::ensure(
        &server.client(),
        "spec-node",
        &cluster(),
        masks,
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert!(!a.own);
    assert_eq!(a.pod_cidrs, vec!["10.244.0.0/26".parse::<IpNet>().unwrap()]);

    // A restarted agent keeps its block.
    let before = nodes.get("n3").await.unwrap().annotations()["sarasa.io/pod-cidrs"].clone();
    let again = podcidr::ensure(&server.client(), "n3", &cluster(), masks, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(podcidr::render_blocks(&again.pod_cidrs), before);

    // A deleted Node's block goes to the next node that allocates.
    nodes.delete("n5", &DeleteParams::default()).await.unwrap();
    let freed = podcidr::parse_blocks(&table.data.as_ref().unwrap()["n5"]).unwrap();
    nodes
        .create(&PostParams::default(), &node("late", None))
        .await
        .unwrap();
    let late = podcidr::ensure(&server.client(), "late", &cluster(), masks, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(late.pod_cidrs, freed);
    let table = maps.get(ALLOCATIONS).await.unwrap();
    let data = table.data.unwrap();
    assert!(!data.contains_key("n5") && data.contains_key("late"));
    server.stop().await;
}

/// Two agents, host-gw and VXLAN, with no cluster allocator: the blocks they allocate are what
/// they program, and pods on the two nodes talk without NAT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_without_cluster_ipam_program_their_own_blocks() {
    for backend in [Backend::HostGw, Backend::Vxlan] {
        let tag = match backend {
            Backend::Vxlan => "pcvx",
            Backend::HostGw => "pcgw",
            Backend::Bgp | Backend::Vpc => {
                unreachable!("not in this test (lab_bgp and lab_vpc run those backends)")
            }
        };
        let (mut topo, ns) = Topology::new(tag, 2);
        let server = Server::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut agents = Vec::new();
        for (i, n) in ns.iter().enumerate() {
            let name = format!("node-{}", i + 1);
            let mut c = AgentConfig::new(&name);
            c.apiserver = Some(format!("http://{}", server.addr));
            c.backend = backend;
            c.cni_conf_dir = dir.path().join(&name).join("net.d");
            c.ipam_data_dir = dir.path().join(&name).join("ipam");
            c.health_listen = "127.0.0.1:0".parse().unwrap();
            agents.push(
                sarasa_agent::start(c, NetnsTarget::Path(netns_path(&n.ns)))
                    .await
                    .expect("agent starts"),
            );
        }
        let nodes: Api<Node> = Api::all(server.client());
        let mut cidrs = Vec::new();
        for i in 1..=2 {
            let n =
                common::network_ready(&nodes, &format!("node-{i}"), Duration::from_secs(30)).await;
            assert!(
                n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_none(),
                "no cluster allocator"
            );
            cidrs.push(n.annotations()["sarasa.io/pod-cidrs"].clone());
            let conflist = std::fs::read_to_string(
                dir.path()
                    .join(format!("node-{i}"))
                    .join("net.d")
                    .join("10-sarasa.conflist"),
            )
            .unwrap_or_default();
            assert!(conflist.contains(&cidrs[i - 1]), "{conflist}");
        }
        assert_ne!(cidrs[0], cidrs[1]);
        let pod_ip = |c: &str| c.replace(".0/24", ".10");
        let p1 = topo.add_pod(&ns[0], "p1", &pod_ip(&cidrs[0]));
        let p2 = topo.add_pod(&ns[1], "p2", &pod_ip(&cidrs[1]));
        let l = listen(&p2, "0.0.0.0:7002");
        connect(&p1, &format!("{}:7002", pod_ip(&cidrs[1]))).expect("cross-node connect");
        let (_, peer) = l.accept().unwrap();
        assert_eq!(
            peer.ip().to_string(),
            pod_ip(&cidrs[0]),
            "no NAT between pods"
        );
        drop(agents);
        server.stop().await;
    }
}
