//! EndpointSlice controller semantics, observed through the API.

mod common;

use std::collections::BTreeMap;

use common::{eventually, TestServer};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("typed")
}

async fn pod(pods: &Api<Pod>, name: &str, labels: Value, ports: Value, node: Option<&str>) {
    let mut spec = json!({"containers": [{"name": "c", "image": "i", "ports": ports}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    pods.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": name, "labels": labels}, "spec": spec})),
    )
    .await
    .unwrap();
}

async fn set_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let r = if ready { "True" } else { "False" };
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": r}]}}),
        ),
    )
    .await
    .unwrap();
}

async fn slices(api: &Api<EndpointSlice>, svc: &str) -> Vec<EndpointSlice> {
    api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .unwrap()
        .items
}

fn eps_of(s: &EndpointSlice) -> &[k8s_openapi::api::discovery::v1::Endpoint] {
    s.endpoints.as_deref().unwrap_or(&[])
}

fn endpoint_count(s: &[EndpointSlice]) -> usize {
    s.iter().map(|s| eps_of(s).len()).sum()
}

/// address → (ready, serving, terminating)
fn conditions(s: &[EndpointSlice]) -> BTreeMap<String, (bool, bool, bool)> {
    s.iter()
        .flat_map(|s| eps_of(s).iter())
        .map(|e| {
            let c = &e.conditions.as_ref().unwrap();
            (
                e.addresses[0].clone(),
                (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap()),
            )
        })
        .collect()
}

#[tokio::test]
async fn named_ports_resolve_per_pod_and_slices_carry_metadata() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    nodes
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": "n1"}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let eps: Api<EndpointSlice> = Api::namespaced(ts.client(), "default");
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    let svc = svcs
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": "web", "labels": {"team": "a"}}, "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9100, "targetPort": 9100}]}})),
        )
        .await
        .unwrap();
    // Placeholder first: no endpoints yet.
    let placeholder = eventually(15, "placeholder slice", || {
        let eps = eps.clone();
        async move { slices(&eps, "web").await.into_iter().next() }
    })
    .await;
    assert!(eps_of(&placeholder).is_empty());
    assert_eq!(placeholder.address_type, "IPv4");

    pod(
        &pods,
        "a",
        json!({"app": "web"}),
        json!([{"name": "http", "containerPort": 8080}]),
        Some("n1"),
    )
    .await;
    pod(
        &pods,
        "b",
        json!({"app": "web"}),
        json!([{"name": "http", "containerPort": 9090}]),
        Some("n1"),
    )
    .await;
    pod(
        &pods,
        "c",
        json!({"app": "web"}),
        json!([{"name": "other", "containerPort": 1234}]),
        Some("n1"),
    )
    .await;
    pod(&pods, "noip", json!({"app": "web"}), json!([]), Some("n1")).await;
    pod(
        &pods,
        "other-app",
        json!({"app": "db"}),
        json!([]),
        Some("n1"),
    )
    .await;
    set_status(&pods, "a", "10.244.0.2", true).await;
    set_status(&pods, "b", "10.244.0.3", true).await;
    set_status(&pods, "c", "10.244.0.4", true).await;
    set_status(&pods, "other-app", "10.244.0.5", true).await;

    let got =
        eventually(15, "three port groups", || {
            let eps = eps.clone();
            async move {
                Some(slices(&eps, "web").await).filter(|s| s.len() == 3 && endpoint_count(s) == 3)
            }
        })
        .await;
    // One slice per distinct port mapping: a (http→8080), b (http→9090), c (no http port).
    let mut groups: Vec<(String, Vec<(String, i32)>)> = got
        .iter()
        .map(|s| {
            let mut ports: Vec<(String, i32)> = s
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .map(|p| (p.name.clone().unwrap(), p.port.unwrap()))
                .collect();
            ports.sort();
            (eps_of(s)[0].addresses[0].clone(), ports)
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        vec![
            (
                "10.244.0.2".to_string(),
                vec![("http".to_string(), 8080), ("metrics".to_string(), 9100)]
            ),
            (
                "10.244.0.3".to_string(),
                vec![("http".to_string(), 9090), ("metrics".to_string(), 9100)]
            ),
            (
                "10.244.0.4".to_string(),
                vec![("metrics".to_string(), 9100)]
            ),
        ]
    );
    let s = got
        .iter()
        .find(|s| eps_of(s)[0].addresses[0] == "10.244.0.2")
        .unwrap();
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["kubernetes.io/service-name"], "web");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(labels["team"], "a");
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Service", svc.metadata.uid.as_deref().unwrap())
    );
    assert!(s.metadata.name.as_ref().unwrap().starts_with("web-"));
    let e = &eps_of(s)[0];
    assert_eq!(e.node_name.as_deref(), Some("n1"));
    let tr = e.target_ref.as_ref().unwrap();
    assert_eq!(
        (tr.kind.as_deref(), tr.name.as_deref()),
        (Some("Pod"), Some("a"))
    );
    assert_eq!(s.address_type, "IPv4");

    // Deleting the Service deletes its slices.
    svcs.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(15, "slices collected", || {
        let eps = eps.clone();
        async move { slices(&eps, "web").await.is_empty().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn ready_serving_terminating_and_publish_not_ready() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    nodes
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": "n1"}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let eps: Api<EndpointSlice> = Api::namespaced(ts.client(), "default");
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    for (name, publish) in [("s", false), ("pub", true)] {
        svcs.create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": name}, "spec": {"selector": {"app": "x"}, "publishNotReadyAddresses": publish,
                "ports": [{"port": 80}]}})),
        )
        .await
        .unwrap();
    }
    pod(&pods, "ready", json!({"app": "x"}), json!([]), Some("n1")).await;
    pod(&pods, "unready", json!({"app": "x"}), json!([]), Some("n1")).await;
    pod(&pods, "leaving", json!({"app": "x"}), json!([]), Some("n1")).await;
    set_status(&pods, "ready", "10.244.0.2", true).await;
    set_status(&pods, "unready", "10.244.0.3", false).await;
    set_status(&pods, "leaving", "10.244.0.4", true).await;
    pods.delete("leaving", &DeleteParams::default())
        .await
        .unwrap();
    let want: BTreeMap<String, (bool, bool, bool)> = [
        ("10.244.0.2".to_string(), (true, true, false)),
        ("10.244.0.3".to_string(), (false, false, false)),
        ("10.244.0.4".to_string(), (false, true, true)),
    ]
    .into();
    eventually(15, "conditions", || {
        let eps = eps.clone();
        let want = want.clone();
        async move { (conditions(&slices(&eps, "s").await) == want).then_some(()) }
    })
    .await;
    let want_pub: BTreeMap<String, (bool, bool, bool)> = [
        ("10.244.0.2".to_string(), (true, true, false)),
        ("10.244.0.3".to_string(), (true, true, false)),
        ("10.244.0.4".to_string(), (true, true, true)),
    ]
    .into();
    eventually(15, "publishNotReadyAddresses conditions", || {
        let eps = eps.clone();
        let want = want_pub.clone();
        async move { (conditions(&slices(&eps, "pub").await) == want).then_some(()) }
    })
    .await;
    // The pod runner finalizes: the endpoint goes.
    pods.delete(
        "leaving",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually(15, "terminated endpoint removed", || {
        let eps = eps.clone();
        async move { (!conditions(&slices(&eps, "s").await).contains_key("10.244.0.4")).then_some(()) }
    })
    .await;
    // Label changes move pods out of the Service.
    pods.patch(
        "ready",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
    )
    .await
    .unwrap();
    eventually(15, "relabelled pod removed", || {
        let eps = eps.clone();
        async move { (conditions(&slices(&eps, "s").await).len() == 1).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn at_most_100_endpoints_per_slice_updated_in_place() {
    let ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let eps: Api<EndpointSlice> = Api::namespaced(ts.client(), "default");
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    svcs.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": "big"}, "spec": {"selector": {"app": "big"}, "ports": [{"port": 80}]}})),
    )
    .await
    .unwrap();
    for i in 0..250 {
        let name = format!("p{i}");
        pod(&pods, &name, json!({"app": "big"}), json!([]), None).await;
        set_status(
            &pods,
            &name,
            &format!("10.244.{}.{}", i / 200, i % 200 + 2),
            true,
        )
        .await;
    }
    let got = eventually(30, "250 endpoints", || {
        let eps = eps.clone();
        async move { Some(slices(&eps, "big").await).filter(|s| endpoint_count(s) == 250) }
    })
    .await;
    let mut sizes: Vec<usize> = got.iter().map(|s| eps_of(s).len()).collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);
    let mut names_before: Vec<String> = got
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    names_before.sort();
    // Removing pods updates the slices that hold them, in place.
    for i in 0..10 {
        pods.delete(&format!("p{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let got = eventually(30, "240 endpoints", || {
        let eps = eps.clone();
        async move { Some(slices(&eps, "big").await).filter(|s| endpoint_count(s) == 240) }
    })
    .await;
    let mut names_after: Vec<String> = got
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    names_after.sort();
    assert_eq!(names_before, names_after);
    assert!(got.iter().all(|s| eps_of(s).len() <= 100));
}

#[tokio::test]
async fn dual_stack_service_gets_a_slice_per_family() {
    let ts =
        TestServer::start_with(|c| c.service_cidrs.push("fd00:10:96::/112".parse().unwrap())).await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let eps: Api<EndpointSlice> = Api::namespaced(ts.client(), "default");
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    svcs.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": "ds"}, "spec": {"ipFamilyPolicy": "RequireDualStack", "selector": {"app": "ds"}, "ports": [{"port": 80}]}})),
    )
    .await
    .unwrap();
    pod(&pods, "p", json!({"app": "ds"}), json!([]), None).await;
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}, {"ip": "fd00:10:244::9"}],
            "conditions": [{"type": "Ready", "status": "True"}]}})),
    )
    .await
    .unwrap();
    let got =
        eventually(15, "two families", || {
            let eps = eps.clone();
            async move {
                Some(slices(&eps, "ds").await).filter(|s| s.len() == 2 && endpoint_count(s) == 2)
            }
        })
        .await;
    let mut fams: Vec<(String, String)> = got
        .iter()
        .map(|s| (s.address_type.clone(), eps_of(s)[0].addresses[0].clone()))
        .collect();
    fams.sort();
    assert_eq!(
        fams,
        [
            ("IPv4".to_string(), "10.244.0.9".to_string()),
            ("IPv6".to_string(), "fd00:10:244::9".to_string())
        ]
    );
}
