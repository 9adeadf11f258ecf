//! Mock-API tier: `list_view` against an in-process API server (an axum router driven through
//! `kube::Client::new`, no sockets) that answers each kind's list.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use kube::runtime::watcher;
use sarasa_cluster::watch::Watched;
use sarasa_cluster::{build_policy_state, list_view, ClusterError};
use serde_json::{json, Value};

/// List path → items; any other path is a 403 (as RBAC would answer).
#[derive(Default)]
struct Lists {
    by_path: BTreeMap<&'static str, Vec<Value>>,
    requests: Mutex<Vec<String>>,
}

async fn handle(State(lists): State<Arc<Lists>>, uri: Uri) -> Response {
    lists.requests.lock().unwrap().push(uri.path().to_string());
    match lists.by_path.get(uri.path()) {
        Some(items) => axum::Json(json!({
            "kind": "List", "apiVersion": "v1",
            "metadata": {"resourceVersion": "100"},
            "items": items,
        }))
        .into_response(),
        None => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("{} is forbidden", uri.path()), "reason": "Forbidden", "code": 403})),
        )
            .into_response(),
    }
}

fn client(lists: Lists) -> (kube::Client, Arc<Lists>) {
    let lists = Arc::new(lists);
    let router = Router::new().fallback(handle).with_state(lists.clone());
    (kube::Client::new(router, "default"), lists)
}

fn node(name: &str, ip: &str, cidr: &str, rv: u64) -> Value {
    json!({"metadata": {"name": name, "resourceVersion": rv.to_string(), "annotations": {
            "sarasa.io/public-ip": ip, "sarasa.io/vtep-mac": "02:00:00:00:00:01",
            "sarasa.io/backend": "vxlan"}},
        "spec": {"podCIDR": cidr},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

fn pod(name: &str, ip: &str, extra: Value) -> Value {
    let mut p = json!({
        "metadata": {"namespace": "x", "name": name, "uid": format!("u-{name}"),
            "resourceVersion": "7", "labels": {"pod": name}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [
            {"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    });
    if let (Value::Object(p), Value::Object(e)) = (&mut p, extra) {
        for (k, v) in e {
            if let (Some(Value::Object(into)), Value::Object(v)) = (p.get_mut(&k), &v) {
                into.extend(v.clone());
            } else {
                p.insert(k, v);
            }
        }
    }
    p
}

fn cluster() -> Lists {
    let mut by_path = BTreeMap::new();
    by_path.insert(
        "/api/v1/nodes",
        vec![
            node("node-1", "192.168.33.11", "10.244.1.0/24", 3),
            node("node-2", "192.168.33.12", "10.244.2.0/24", 4),
        ],
    );
    by_path.insert(
        "/api/v1/pods",
        vec![
            pod("a", "10.244.1.2", json!({})),
            pod("b", "10.244.1.3", json!({})),
            pod("host", "192.168.33.11", json!({"spec": {"nodeName": "node-1", "hostNetwork": true, "containers": [{"name": "c"}]}})),
            pod("bad-port", "10.244.1.4", json!({"spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": 0}]}]}})),
        ],
    );
    by_path.insert(
        "/api/v1/namespaces",
        vec![json!({"metadata": {"name": "x", "labels": {"team": "blue"}}})],
    );
    by_path.insert(
        "/api/v1/services",
        vec![
            json!({"metadata": {"namespace": "x", "name": "web", "resourceVersion": "40"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]}}),
        ],
    );
    by_path.insert(
        "/apis/discovery.k8s.io/v1/endpointslices",
        vec![json!({"metadata": {"namespace": "x", "name": "web-1",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.2"], "conditions": {"ready": true}, "nodeName": "node-1"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})],
    );
    by_path.insert(
        "/apis/networking.k8s.io/v1/networkpolicies",
        vec![
            json!({"metadata": {"namespace": "x", "name": "deny-b"},
                "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}}),
            json!({"metadata": {"namespace": "x", "name": "broken"},
                "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}}),
        ],
    );
    Lists {
        by_path,
        ..Default::default()
    }
}

/// Feeds `objects` to `w` as a watcher's first list does.
fn listed<K>(w: &mut Watched, objects: Vec<K>, apply: fn(&mut Watched, watcher::Event<K>) -> bool) {
    apply(w, watcher::Event::Init);
    for o in objects {
        apply(w, watcher::Event::InitApply(o));
    }
    apply(w, watcher::Event::InitDone);
}

#[tokio::test]
async fn list_view_folds_every_kind_through_the_watch_projections() {
    let (client, lists) = client(cluster());
    let view = list_view(&client).await.unwrap();
    assert_eq!(lists.requests.lock().unwrap().len(), 6, "one list per kind");

    let n1 = &view.nodes["node-1"];
    assert_eq!(n1.pod_cidrs, vec!["10.244.1.0/24".parse().unwrap()]);
    assert_eq!(n1.underlay_ip(), Some("192.168.33.11".parse().unwrap()));
    assert_eq!(n1.vtep_mac, Some("02:00:00:00:00:01".parse().unwrap()));
    assert_eq!(n1.backend.as_deref(), Some("vxlan"));
    assert_eq!(view.resource_version, 40);

    // Every pod is a pod; only those policy applies to are policy pods.
    assert_eq!(
        view.pods.keys().collect::<Vec<_>>(),
        ["x/a", "x/b", "x/bad-port", "x/host"]
    );
    assert!(view.pods["x/host"].host_network);
    assert_eq!(view.pods["x/a"].uid, "u-a");
    assert!(view.pods["x/a"].is_serving());
    assert_eq!(view.policy_pods.keys().collect::<Vec<_>>(), ["x/a", "x/b"]);
    assert_eq!(
        view.policy_pods["x/a"].named_port("http", sarasa_policy::Protocol::Tcp),
        Some(80)
    );

    assert_eq!(
        view.services["x/web"].cluster_ips,
        vec!["10.96.0.10".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(view.endpoint_slices_of("x", "web").count(), 1);
    assert_eq!(view.namespaces["x"].labels["team"], "blue");
    assert_eq!(
        view.network_policies.keys().collect::<Vec<_>>(),
        ["x/deny-b"]
    );
    let rejected: Vec<String> = view.rejected.iter().map(ToString::to_string).collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(rejected
        .iter()
        .any(|r| r.starts_with("Pod x/bad-port: ") && r.contains("containerPort")));
    assert!(rejected
        .iter()
        .any(|r| r.starts_with("NetworkPolicy x/broken: ") && r.contains("endPort")));

    // The policy state: policy pods only, both nodes' addresses, the valid policy.
    let (state, fed) = view.build_policy_state();
    assert!(fed.rejected.is_empty());
    assert_eq!(
        state
            .pods()
            .map(|p| p.key().to_string())
            .collect::<Vec<_>>(),
        ["x/a", "x/b"]
    );
    assert_eq!(
        state.node_addresses("node-2"),
        ["192.168.33.12".parse::<IpAddr>().unwrap()]
    );
    // The valid policy, and the broken one's isolating stand-in (fail closed).
    assert_eq!(state.policies().count(), 2);
    let broken = state
        .policies()
        .find(|p| p.name == "broken")
        .expect("stand-in");
    assert!(broken.ingress.is_empty() && broken.egress.is_empty());

    // It is the state an agent's enforcer builds from its watchers on a full rebuild.
    let objects = sarasa_cluster::list_objects(&client).await.unwrap();
    let mut w = Watched::default();
    listed(&mut w, objects.nodes, Watched::apply_node_event);
    listed(&mut w, objects.pods, Watched::apply_pod_event);
    listed(&mut w, objects.namespaces, Watched::apply_namespace_event);
    listed(
        &mut w,
        objects.network_policies,
        Watched::apply_network_policy_event,
    );
    let (enforced, enforcer_fed) = build_policy_state(w.take_policy_all());
    assert_eq!(enforced, state);
    assert_eq!(
        enforcer_fed.rejected.len(),
        2,
        "the enforcer leaves out the same objects"
    );
}

#[tokio::test]
async fn a_kind_that_cannot_be_listed_is_named() {
    let mut lists = cluster();
    lists
        .by_path
        .remove("/apis/networking.k8s.io/v1/networkpolicies");
    let (client, _) = client(lists);
    let err = list_view(&client).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClusterError::List {
                kind: "networkpolicies",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("listing networkpolicies: "),
        "{err}"
    );
}
