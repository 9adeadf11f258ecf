//! The agent's own API code (node registration, annotations, conditions, the Lease, the
//! listing and watching of every kind it programs, the Events on refused Nodes) run as the `sarasa-agent` ServiceAccount
//! against a server with RBAC on and deploy/rbac.yaml loaded: every request is allowed, and a
//! write the role does not grant is refused with 403. The user is set by a TEST-ONLY layer
//! standing in for authentication (its tokens are tested by its own tests).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::Api;
use sarasa_apiserver::authz::AuthorizationMode;
use sarasa_apiserver::store::WriteOpts;
use sarasa_apiserver::{resources, ApiServer, Config, UserInfo};
use serde_json::Value;

const MANIFEST: &str = include_str!("../../../deploy/rbac.yaml");
const AGENT: &str = "system:serviceaccount:sarasa-system:sarasa-agent";

/// TEST-ONLY: every request is the agent's ServiceAccount.
async fn as_agent(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(UserInfo {
        name: AGENT.into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:sarasa-system".into(),
            "system:authenticated".into(),
        ],
        ..UserInfo::default()
    });
    next.run(req).await
}

fn load_manifest(server: &ApiServer) {
    for doc in serde_norway::Deserializer::from_str(MANIFEST) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
        let res = resources::by_kind(
            v["apiVersion"].as_str().unwrap_or(""),
            v["kind"].as_str().unwrap_or(""),
        )
        .expect("a stored kind");
        let ns = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // Already there (the test's own Namespace) is fine, as for `kubectl apply`.
        match server.store().create(res, &ns, v, WriteOpts::internal()) {
            Ok(_) => {}
            Err(e) if e.code == 409 => {}
            Err(e) => panic!("create: {e:?}"),
        }
    }
}

async fn synced<K>(client: &kube::Client)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default());
    let mut stream = Box::pin(stream);
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::InitDone) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("stream ended".to_string())
    })
    .await
    .expect("watch in time");
    assert_eq!(got, Ok(()), "{}", K::kind(&()));
}

#[tokio::test]
async fn the_agents_requests_are_allowed_by_deploy_rbac_yaml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(dir.path().join("state"));
    config.authorization = AuthorizationMode::Rbac;
    // No node IPAM: the agents allocate podCIDRs themselves (the ConfigMap path).
    config.allocate_node_cidrs = false;
    let server = ApiServer::open(config).expect("open");
    load_manifest(&server);
    server.start_controllers();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = server.router().layer(axum::middleware::from_fn(as_agent));
    let serving = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = kube::Client::try_from(kube::Config::new(
        format!("http://{addr}").parse().expect("url"),
    ))
    .expect("client");

    let nodes: Api<Node> = Api::all(client.clone());
    let node =
        sarasa_agent::node::ensure_registered(&nodes, "n1", "192.168.33.11".parse().expect("ip"))
            .await
            .expect("register");
    let desired = BTreeMap::from([(
        sarasa_cluster::state::ANNOTATION_VTEP_MAC,
        Some("02:00:00:00:00:01".to_string()),
    )]);
    assert!(
        sarasa_agent::node::publish_annotations(&nodes, &node, &desired)
            .await
            .expect("annotate")
    );
    sarasa_agent::node::set_network_ready(&nodes, "n1")
        .await
        .expect("conditions");
    sarasa_agent::lease::ensure_namespace(&client)
        .await
        .expect("namespace");
    let started = k8s_openapi::jiff::Timestamp::now();
    sarasa_agent::lease::renew(&client, "n1", 1, started)
        .await
        .expect("create lease");
    sarasa_agent::lease::renew(&client, "n1", 2, started)
        .await
        .expect("renew lease");
    // The cluster-set gateway: the election (create, then renew with a precondition) and the
    // other clusters' ConfigMap (absent here: no cluster set).
    let (remote_tx, _remote_rx) = tokio::sync::watch::channel(Default::default());
    let gateway = sarasa_agent::gateway::Gateway::new(
        client.clone(),
        "n1",
        sarasa_agent::netns::NetnsTarget::Current,
        remote_tx,
    );
    for round in ["take", "renew"] {
        assert_eq!(
            gateway.elect(true).await.expect(round).as_deref(),
            Some("n1"),
            "{round}"
        );
    }
    assert!(gateway
        .remotes()
        .await
        .expect("cluster set ConfigMap")
        .is_none());
    // The gateway watches that ConfigMap and the Lease by name (a named list, then a watch).
    for (what, list) in [
        (
            "the cluster set ConfigMap",
            gateway
                .config_maps
                .list(&kube::api::ListParams::default().fields("metadata.name=sarasa-clusterset"))
                .await
                .map(|l| l.items.len()),
        ),
        (
            "the gateway Lease",
            gateway
                .leases
                .list(&kube::api::ListParams::default().fields("metadata.name=sarasa-gateway"))
                .await
                .map(|l| l.items.len()),
        ),
    ] {
        list.unwrap_or_else(|e| panic!("list {what} by name: {e}"));
    }
    for (what, stream) in [
        (
            "the cluster set ConfigMap",
            gateway
                .config_maps
                .watch(
                    &kube::api::WatchParams::default().fields("metadata.name=sarasa-clusterset"),
                    "0",
                )
                .await
                .map(drop),
        ),
        (
            "the gateway Lease",
            gateway
                .leases
                .watch(
                    &kube::api::WatchParams::default().fields("metadata.name=sarasa-gateway"),
                    "0",
                )
                .await
                .map(drop),
        ),
    ] {
        stream.unwrap_or_else(|e| panic!("watch {what} by name: {e}"));
    }
    // A refused Node is reported as a Warning Event on it.
    let conflict = sarasa_agent::plan::NodeConflict {
        node: "forged".into(),
        reason: sarasa_agent::plan::ConflictReason::PodCidr,
        message: "podCIDR 10.244.1.0/24 overlaps podCIDR 10.244.1.0/24 of node n1".into(),
        kept_last_good: false,
    };
    sarasa_agent::conflicts::report(client.clone(), "n1", std::slice::from_ref(&conflict)).await;
    let events = server
        .store()
        .lock()
        .iter(resources::EVENTS, Some("default"))
        .cloned()
        .collect::<Vec<_>>();
    let ev = events
        .iter()
        .find(|e| e["involvedObject"]["name"] == "forged")
        .expect("the agent posted the Event");
    assert_eq!(ev["reason"], "PodCIDRConflict");
    assert_eq!(ev["type"], "Warning");
    // Reporting a failing part on the Node.
    sarasa_agent::node::set_degraded(
        &nodes,
        "n1",
        &[(sarasa_agent::reconcile::Part::Services, "test".to_string())],
    )
    .await
    .expect("degraded condition");
    // sarasa's own podCIDR allocation: the ConfigMap created, then replaced.
    sarasa_agent::node::ensure_registered(&nodes, "n2", "192.168.33.12".parse().expect("ip"))
        .await
        .expect("register n2");
    let cidrs = ["10.244.0.0/16".parse().expect("cidr")];
    for n in ["n1", "n2"] {
        let a =
            sarasa_agent::podcidr::ensure(&client, n, &cidrs, Default::default(), Duration::ZERO)
                .await
                .expect("allocate podCIDRs");
        assert!(a.own);
    }
    let objects = sarasa_cluster::list_objects(&client).await.expect("list");
    assert_eq!(objects.nodes.len(), 2);
    synced::<Node>(&client).await;
    synced::<Pod>(&client).await;
    synced::<Namespace>(&client).await;
    synced::<Service>(&client).await;
    synced::<EndpointSlice>(&client).await;
    synced::<NetworkPolicy>(&client).await;

    // Not granted: creating a pod.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    .expect("pod");
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(s.message, format!("pods is forbidden: User \"{AGENT}\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""));
        }
        other => panic!("creating a pod as the agent: {other:?}"),
    }
    server.shutdown();
    serving.abort();
}
