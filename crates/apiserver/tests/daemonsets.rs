//! The DaemonSet controller observed through the API: one pinned pod per eligible Node
//! (nodeSelector, taints, tolerations, cordoned and NotReady Nodes), Nodes coming and going,
//! RollingUpdate within maxUnavailable, OnDelete, status for `kubectl rollout status`, garbage
//! collection with the DaemonSet; and the ConfigMap/Secret write rules (stringData, immutable).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{eventually, fields, status_of, TestServer};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("typed")
}

async fn add_node(nodes: &Api<Node>, name: &str, labels: Value, spec: Value, ready: &str) {
    nodes
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": name, "labels": labels}, "spec": spec})),
        )
        .await
        .unwrap();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": ready}]}})),
        )
        .await
        .unwrap();
}

fn daemonset(name: &str, image: &str, pod_spec_extra: Value, strategy: Value) -> DaemonSet {
    let mut spec = json!({"containers": [{"name": "c", "image": image}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), pod_spec_extra.as_object()) {
        s.extend(extra.clone());
    }
    typed(json!({"metadata": {"name": name}, "spec": {
        "selector": {"matchLabels": {"app": name}},
        "updateStrategy": strategy,
        "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}))
}

/// Live (not terminating) pods of `app`, by the node they are bound to.
async fn pods_by_node(pods: &Api<Pod>, app: &str) -> BTreeMap<String, Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, p)))
        .collect()
}

fn hash(p: &Pod) -> String {
    p.metadata.labels.as_ref().unwrap()["controller-revision-hash"].clone()
}

/// Plays the nodes' kubelets: bound pods become Ready, terminating ones are finalized. Counts
/// how many of `app`'s nodes were without a Ready pod at once (the rollout's unavailability).
fn fake_kubelets(
    pods: Api<Pod>,
    app: &'static str,
    nodes: usize,
    worst: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok(list) = pods.list(&ListParams::default()).await else {
                return;
            };
            let mut ready_nodes = BTreeSet::new();
            for p in list.items {
                let name = p.metadata.name.clone().unwrap();
                let bound = p.spec.as_ref().and_then(|s| s.node_name.clone());
                let Some(node) = bound else { continue };
                if p.metadata.deletion_timestamp.is_some() {
                    let _ = pods
                        .delete(
                            &name,
                            &DeleteParams {
                                grace_period_seconds: Some(0),
                                ..Default::default()
                            },
                        )
                        .await;
                    continue;
                }
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready {
                    if p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("app"))
                        .map(String::as_str)
                        == Some(app)
                    {
                        ready_nodes.insert(node);
                    }
                    continue;
                }
                let _ = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {
                        "phase": "Running", "podIP": "192.168.33.10",
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})))
                    .await;
            }
            worst.fetch_max(nodes.saturating_sub(ready_nodes.len()), Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
}

async fn status(dss: &Api<DaemonSet>, name: &str) -> Value {
    serde_json::to_value(dss.get(name).await.unwrap().status).unwrap()
}

#[tokio::test]
async fn one_pinned_pod_per_eligible_node_as_nodes_come_and_go() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let dss: Api<DaemonSet> = Api::namespaced(ts.client(), "default");
    add_node(&nodes, "n1", json!({"disk": "ssd"}), json!({}), "True").await;
    add_node(
        &nodes,
        "n2",
        json!({"disk": "ssd"}),
        json!({"unschedulable": true}),
        "True",
    )
    .await;
    add_node(&nodes, "n3", json!({"disk": "hdd"}), json!({}), "True").await;
    add_node(
        &nodes,
        "n4",
        json!({"disk": "ssd"}),
        json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
        "True",
    )
    .await;
    add_node(&nodes, "n5", json!({"disk": "ssd"}), json!({}), "False").await;
    let ds = dss
        .create(
            &PostParams::default(),
            &daemonset(
                "agent",
                "agent:1",
                json!({"nodeSelector": {"disk": "ssd"}, "hostNetwork": true}),
                json!({}),
            ),
        )
        .await
        .unwrap();
    // n1 and the cordoned n2 (default tolerations); not n3 (selector), n4 (taint), n5 (NotReady).
    let placed = eventually(15, "pods on n1 and n2", || async {
        let m = pods_by_node(&pods, "agent").await;
        (m.keys().cloned().collect::<Vec<_>>() == ["n1", "n2"]).then_some(m)
    })
    .await;
    let p = &placed["n1"];
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("DaemonSet", "agent", Some(true))
    );
    assert_eq!(owner.uid, ds.metadata.uid.clone().unwrap());
    let labels = p.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["pod-template-generation"], "1");
    assert!(!labels["controller-revision-hash"].is_empty());
    let spec = serde_json::to_value(p.spec.as_ref().unwrap()).unwrap();
    assert_eq!(
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"],
        json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])
    );
    let tolerations: Vec<String> = spec["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "node.kubernetes.io/not-ready:NoExecute",
        "node.kubernetes.io/unreachable:NoExecute",
        "node.kubernetes.io/disk-pressure:NoSchedule",
        "node.kubernetes.io/memory-pressure:NoSchedule",
        "node.kubernetes.io/pid-pressure:NoSchedule",
        "node.kubernetes.io/unschedulable:NoSchedule",
        "node.kubernetes.io/network-unavailable:NoSchedule",
    ] {
        assert!(
            tolerations.contains(&want.to_string()),
            "{want} missing from {tolerations:?}"
        );
    }
    // Status before any pod is Ready.
    eventually(10, "desired 2, current 2, ready 0", || async {
        let s = status(&dss, "agent").await;
        (s["desiredNumberScheduled"] == 2
            && s["currentNumberScheduled"] == 2
            && s["numberReady"] == 0
            && s["numberUnavailable"] == 2
            && s["observedGeneration"] == 1)
            .then_some(())
    })
    .await;
    // A new eligible node gets a pod; a node relabelled out loses it; a deleted node loses it.
    add_node(&nodes, "n6", json!({"disk": "ssd"}), json!({}), "True").await;
    eventually(15, "a pod on n6", || async {
        pods_by_node(&pods, "agent")
            .await
            .contains_key("n6")
            .then_some(())
    })
    .await;
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"disk": "hdd"}}})),
        )
        .await
        .unwrap();
    nodes.delete("n6", &DeleteParams::default()).await.unwrap();
    let worst = Arc::new(AtomicUsize::new(0));
    let kubelets = fake_kubelets(pods.clone(), "agent", 1, worst);
    eventually(15, "only n2 keeps a pod", || async {
        let m = pods_by_node(&pods, "agent").await;
        (m.keys().cloned().collect::<Vec<_>>() == ["n2"]).then_some(())
    })
    .await;
    eventually(10, "status of one ready node", || async {
        let s = status(&dss, "agent").await;
        (s["desiredNumberScheduled"] == 1
            && s["numberReady"] == 1
            && s["numberAvailable"] == 1
            && s["updatedNumberScheduled"] == 1
            && s["numberMisscheduled"] == 0
            && s.get("numberUnavailable").is_none())
        .then_some(())
    })
    .await;
    // Deleting the DaemonSet collects its pods.
    dss.delete("agent", &DeleteParams::default()).await.unwrap();
    eventually(15, "pods collected", || async {
        pods.list(&ListParams::default().labels("app=agent"))
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    kubelets.abort();
}

#[tokio::test]
async fn tolerating_everything_runs_on_every_node_and_a_noexecute_taint_evicts_otherwise() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let dss: Api<DaemonSet> = Api::namespaced(ts.client(), "default");
    add_node(&nodes, "ready", json!({}), json!({}), "True").await;
    add_node(&nodes, "notready", json!({}), json!({}), "False").await;
    add_node(
        &nodes,
        "tainted",
        json!({}),
        json!({"unschedulable": true, "taints": [{"key": "x", "effect": "NoExecute"}]}),
        "Unknown",
    )
    .await;
    dss.create(
        &PostParams::default(),
        &daemonset(
            "cni",
            "cni:1",
            json!({"tolerations": [{"operator": "Exists"}]}),
            json!({}),
        ),
    )
    .await
    .unwrap();
    dss.create(
        &PostParams::default(),
        &daemonset("plain", "plain:1", json!({}), json!({})),
    )
    .await
    .unwrap();
    eventually(15, "cni on all three nodes", || async {
        (pods_by_node(&pods, "cni").await.len() == 3).then_some(())
    })
    .await;
    eventually(15, "plain only on the ready node", || async {
        let m = pods_by_node(&pods, "plain").await;
        (m.keys().cloned().collect::<Vec<_>>() == ["ready"]).then_some(())
    })
    .await;
    // A NoExecute taint evicts the intolerant pod; a NoSchedule one only marks it misscheduled.
    nodes
        .patch(
            "ready",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "y", "effect": "NoSchedule"}]}})),
        )
        .await
        .unwrap();
    eventually(10, "plain misscheduled", || async {
        let s = status(&dss, "plain").await;
        (s["numberMisscheduled"] == 1 && s["desiredNumberScheduled"] == 0).then_some(())
    })
    .await;
    assert_eq!(pods_by_node(&pods, "plain").await.len(), 1);
    nodes
        .patch(
            "ready",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": [{"key": "y", "effect": "NoExecute"}]}})),
        )
        .await
        .unwrap();
    eventually(15, "plain evicted", || async {
        pods_by_node(&pods, "plain").await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn rolling_update_stays_within_max_unavailable_and_on_delete_waits() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let dss: Api<DaemonSet> = Api::namespaced(ts.client(), "default");
    for n in ["a", "b", "c", "d"] {
        add_node(&nodes, n, json!({}), json!({}), "True").await;
    }
    let worst = Arc::new(AtomicUsize::new(0));
    let kubelets = fake_kubelets(pods.clone(), "web", 4, worst.clone());
    dss.create(
        &PostParams::default(),
        &daemonset(
            "web",
            "web:1",
            json!({}),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}),
        ),
    )
    .await
    .unwrap();
    let rolled_out = |gen: i64| {
        let dss = dss.clone();
        async move {
            let d = dss.get("web").await.unwrap();
            let s = serde_json::to_value(&d.status).unwrap();
            // kubectl rollout status's DaemonSet check.
            (d.metadata.generation == Some(gen)
                && s["observedGeneration"] == gen
                && s["updatedNumberScheduled"] == 4
                && s["numberAvailable"] == 4
                && s["desiredNumberScheduled"] == 4)
                .then_some(())
        }
    };
    eventually(20, "first rollout", || rolled_out(1)).await;
    let first = pods_by_node(&pods, "web").await;
    worst.store(0, Ordering::SeqCst);
    dss.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:2"}]}}}}))).await.unwrap();
    eventually(30, "second rollout", || rolled_out(2)).await;
    let second = pods_by_node(&pods, "web").await;
    assert_eq!(second.len(), 4);
    for (node, p) in &second {
        assert_ne!(
            hash(p),
            hash(&first[node]),
            "{node} still runs the old template"
        );
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()["pod-template-generation"],
            "2"
        );
    }
    // 50% of 4 nodes: never more than 2 without a Ready pod, and the budget was used.
    let w = worst.load(Ordering::SeqCst);
    assert!((1..=2).contains(&w), "{w} nodes were unavailable at once");
    // OnDelete: a template change replaces nothing until a pod is deleted.
    dss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {
        "updateStrategy": {"type": "OnDelete", "rollingUpdate": null},
        "template": {"spec": {"containers": [{"name": "c", "image": "web:3"}]}}}})),
    )
    .await
    .unwrap();
    eventually(10, "observed generation 3", || async {
        (status(&dss, "web").await["observedGeneration"] == 3).then_some(())
    })
    .await;
    let s = status(&dss, "web").await;
    assert_eq!(s["updatedNumberScheduled"], 0);
    let still = pods_by_node(&pods, "web").await;
    assert!(still
        .iter()
        .all(|(n, p)| p.metadata.uid == second[n].metadata.uid));
    pods.delete(
        second["a"].metadata.name.as_ref().unwrap(),
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    eventually(15, "a replaced with the new template", || async {
        let m = pods_by_node(&pods, "web").await;
        let p = m.get("a")?;
        (p.metadata.uid != second["a"].metadata.uid
            && p.metadata.labels.as_ref()?.get("pod-template-generation")? == "3")
            .then_some(())
    })
    .await;
    eventually(10, "one updated", || async {
        (status(&dss, "web").await["updatedNumberScheduled"] == 1).then_some(())
    })
    .await;
    kubelets.abort();
}

#[tokio::test]
async fn daemonset_validation_names_the_field() {
    let ts = TestServer::start().await;
    let dss: Api<DaemonSet> = Api::namespaced(ts.client(), "default");
    let bad = daemonset(
        "x",
        "i",
        json!({}),
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "120%"}}),
    );
    let s = status_of(dss.create(&PostParams::default(), &bad).await);
    assert_eq!(s.code, 422);
    assert_eq!(
        fields(&s),
        ["spec.updateStrategy.rollingUpdate.maxUnavailable"]
    );
    let mut wrong = serde_json::to_value(daemonset("y", "i", json!({}), json!({}))).unwrap();
    wrong["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let s = status_of(dss.create(&PostParams::default(), &typed(wrong)).await);
    assert_eq!(fields(&s), ["spec.template.metadata.labels"]);
    let created = dss
        .create(
            &PostParams::default(),
            &daemonset("z", "i", json!({}), json!({})),
        )
        .await
        .unwrap();
    let strategy = serde_json::to_value(created.spec.update_strategy).unwrap();
    assert_eq!(
        strategy,
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
}

#[tokio::test]
async fn secret_string_data_and_immutable_config() {
    let ts = TestServer::start().await;
    let secrets: Api<Secret> = Api::namespaced(ts.client(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(ts.client(), "default");
    let s = secrets
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": "s"},
            "data": {"a": "b2xk"}, "stringData": {"a": "new", "b": "two"}})),
        )
        .await
        .unwrap();
    let raw = serde_json::to_value(&s).unwrap();
    assert_eq!(raw["data"], json!({"a": "bmV3", "b": "dHdv"}));
    assert_eq!(raw["type"], "Opaque");
    assert!(raw.get("stringData").is_none());
    let stored = serde_json::to_value(secrets.get("s").await.unwrap()).unwrap();
    assert_eq!(stored["data"], raw["data"]);
    secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"immutable": true})),
        )
        .await
        .unwrap();
    let e = status_of(
        secrets
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"a": "x"}})),
            )
            .await,
    );
    assert_eq!((e.code, fields(&e)), (422, vec!["data".to_string()]));
    let e = status_of(
        secrets
            .patch(
                "s",
                &PatchParams::default(),
                &Patch::Merge(json!({"immutable": false})),
            )
            .await,
    );
    assert_eq!(fields(&e), ["immutable"]);
    // Metadata still changes; deletion still works.
    secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    cms.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": "c"}, "immutable": true, "data": {"k": "v"}})),
    )
    .await
    .unwrap();
    let e = status_of(
        cms.patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "w"}})),
        )
        .await,
    );
    assert_eq!(fields(&e), ["data"]);
    let e = status_of(
        cms.create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": "d"}, "data": {"bad key": "v"}})),
        )
        .await,
    );
    assert_eq!(fields(&e), ["data[bad key]"]);
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    secrets.delete("s", &DeleteParams::default()).await.unwrap();
}
