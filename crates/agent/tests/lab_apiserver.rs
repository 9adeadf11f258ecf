//! The agent against the real lab control plane (crates/apiserver): registration through the
//! agent, podCIDRs from the control plane's node IPAM, readiness, cross-node traffic, and the
//! observed resourceVersion `apply --wait` relies on. Requires root (namespaces).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{connect, listen, netns_path, Topology};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::{AgentConfig, Backend};

async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually_within(what, Duration::from_secs(20), f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_the_lab_control_plane() {
    for backend in [Backend::HostGw, Backend::Vxlan] {
        let tag = match backend {
            Backend::Vxlan => "apivx",
            Backend::HostGw => "apigw",
            Backend::Bgp | Backend::Vpc => {
                unreachable!("not in this test (lab_bgp and lab_vpc run those backends)")
            }
        };
        let (mut topo, nodes) = Topology::new(tag, 2);
        let dir = tempfile::tempdir().unwrap();
        let server = sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new(
            dir.path().join("api"),
        ))
        .expect("open control plane");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let srv = server.clone();
        let serving = tokio::spawn(async move { srv.serve(listener).await });

        let mut agents = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let name = format!("node-{}", i + 1);
            let mut c = AgentConfig::new(&name);
            c.apiserver = Some(format!("http://{addr}"));
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

        let client =
            kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
                .unwrap();
        let node_api: Api<Node> = Api::all(client.clone());
        let lease_api: Api<Lease> = Api::namespaced(client.clone(), "sarasa-system");

        // Both agents programmed: their Leases exist and NetworkUnavailable=False is set.
        let mut cidrs = Vec::new();
        for i in 1..=2 {
            let name = format!("node-{i}");
            let node = common::network_ready(&node_api, &name, Duration::from_secs(20)).await;
            cidrs.push(node.spec.unwrap().pod_cidr.expect("podCIDR assigned"));
            assert_eq!(
                node.metadata.annotations.unwrap()["sarasa.io/backend"],
                backend.as_str()
            );
        }
        let pod_ip = |c: &str| c.replace(".0/24", ".10");
        let p1 = topo.add_pod(&nodes[0], "p1", &pod_ip(&cidrs[0]));
        let p2 = topo.add_pod(&nodes[1], "p2", &pod_ip(&cidrs[1]));
        let listener = listen(&p2, "0.0.0.0:7001");
        connect(&p1, &format!("{}:7001", pod_ip(&cidrs[1]))).expect("cross-node connect");
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(
            peer.ip().to_string(),
            pod_ip(&cidrs[0]),
            "no NAT between pods"
        );

        // What `apply --wait` does: create, then wait for every agent's observed rv to cover it.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "web", "image": "sarasa"}]}
        }))
        .unwrap();
        let created = pods.create(&PostParams::default(), &pod).await.unwrap();
        let pod_rv: u64 = created.resource_version().unwrap().parse().unwrap();
        // A Service alone (no pod event follows it) must be covered as well.
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let svc: Service = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
        }))
        .unwrap();
        let created = services.create(&PostParams::default(), &svc).await.unwrap();
        let rv: u64 = created.resource_version().unwrap().parse().unwrap();
        assert!(rv > pod_rv);
        for i in 1..=2 {
            let name = format!("agent-node-{i}");
            eventually("observed rv covers the apply", || {
                let lease_api = lease_api.clone();
                let name = name.clone();
                async move {
                    let l = lease_api.get(&name).await.ok()?;
                    let seen: u64 = l
                        .annotations()
                        .get("sarasa.io/observed-resource-version")?
                        .parse()
                        .ok()?;
                    (seen >= rv).then_some(())
                }
            })
            .await;
        }
        assert!(agents
            .iter()
            .all(|a| a.metrics.programmed.load(Ordering::Relaxed)));
        drop(agents);
        server.shutdown();
        let _ = serving.await;
    }
}
