//! Controllers, observed through the API: podCIDRs, scheduling, Deployments, graceful pod
//! deletion, Service allocations, LoadBalancer addresses, namespace termination.

mod common;

use std::time::Instant;

use common::{eventually, status_of, TestServer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("typed")
}

async fn add_node(nodes: &Api<Node>, name: &str, ready: bool) {
    nodes
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": name}})),
        )
        .await
        .unwrap();
    let status = if ready { "True" } else { "False" };
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{"type": "Ready", "status": status}]}})),
        )
        .await
        .unwrap();
}

fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    typed(
        json!({"metadata": {"name": name}, "spec": {"replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": image}]}}}}),
    )
}

async fn owned_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn mark_ready(pods: &Api<Pod>, name: &str, ip: &str) {
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn nodes_get_distinct_pod_cidrs() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    for n in ["n1", "n2", "n3"] {
        add_node(&nodes, n, true).await;
    }
    let cidr = |n: Node| n.spec.and_then(|s| s.pod_cidr);
    let get = |name: &'static str| {
        let nodes = nodes.clone();
        async move { nodes.get(name).await.ok().and_then(cidr) }
    };
    let c1 = eventually(15, "n1 podCIDR", || get("n1")).await;
    let c2 = eventually(15, "n2 podCIDR", || get("n2")).await;
    let c3 = eventually(15, "n3 podCIDR", || get("n3")).await;
    let mut all = vec![c1, c2.clone(), c3];
    all.sort();
    assert_eq!(all, ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]);
    let n = nodes.get("n1").await.unwrap();
    assert_eq!(n.spec.unwrap().pod_cidrs.unwrap().len(), 1);
    // A freed podCIDR goes to the next node.
    nodes.delete("n2", &DeleteParams::default()).await.unwrap();
    add_node(&nodes, "n4", true).await;
    let c4 = eventually(15, "n4 podCIDR", || get("n4")).await;
    assert_eq!(c4, c2);
    // A node registering with its own podCIDR keeps it; it cannot be changed afterwards.
    nodes
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": "n5"}, "spec": {"podCIDR": "10.244.100.0/24"}})),
        )
        .await
        .unwrap();
    let s = status_of(
        nodes.patch("n5", &PatchParams::default(), &Patch::Merge(json!({"spec": {"podCIDR": "10.244.101.0/24", "podCIDRs": ["10.244.101.0/24"]}})))
            .await,
    );
    assert_eq!(s.code, 422);
}

#[tokio::test]
async fn scheduler_spreads_over_ready_nodes() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    add_node(&nodes, "n1", true).await;
    add_node(&nodes, "n2", true).await;
    add_node(&nodes, "n3", false).await;
    let deps: Api<Deployment> = Api::namespaced(ts.client(), "default");
    deps.create(&PostParams::default(), &deployment("web", 6, "nginx"))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let placed = eventually(15, "6 scheduled pods", || {
        let pods = pods.clone();
        async move {
            let ps = owned_pods(&pods, "web").await;
            let nodes: Vec<String> = ps
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect();
            (nodes.len() == 6).then_some(nodes)
        }
    })
    .await;
    assert_eq!(
        placed.iter().filter(|n| *n == "n1").count(),
        3,
        "{placed:?}"
    );
    assert_eq!(
        placed.iter().filter(|n| *n == "n2").count(),
        3,
        "{placed:?}"
    );
    let p = &owned_pods(&pods, "web").await[0];
    let conds = p.status.as_ref().unwrap().conditions.as_ref().unwrap();
    assert!(conds
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.status == "True"));

    // With no Ready node, pods still land, spread over all nodes.
    for n in ["n1", "n2"] {
        nodes
            .patch_status(
                n,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                ),
            )
            .await
            .unwrap();
    }
    deps.create(&PostParams::default(), &deployment("other", 3, "nginx"))
        .await
        .unwrap();
    let placed = eventually(15, "3 scheduled pods", || {
        let pods = pods.clone();
        async move {
            let ps = owned_pods(&pods, "other").await;
            let mut nodes: Vec<String> = ps
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect();
            nodes.sort();
            (nodes.len() == 3).then_some(nodes)
        }
    })
    .await;
    assert_eq!(placed, ["n1", "n2", "n3"]);
}

#[tokio::test]
async fn deployment_replicas_scale_replace_roll_and_delete() {
    let ts = TestServer::start().await;
    let deps: Api<Deployment> = Api::namespaced(ts.client(), "default");
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let d = deps
        .create(&PostParams::default(), &deployment("app", 4, "v1"))
        .await
        .unwrap();
    let uid = d.metadata.uid.clone().unwrap();
    let ps = eventually(15, "4 pods", || {
        let pods = pods.clone();
        async move { Some(owned_pods(&pods, "app").await).filter(|p| p.len() == 4) }
    })
    .await;
    let hash = ps[0].metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    for p in &ps {
        let name = p.metadata.name.as_ref().unwrap();
        assert!(
            name.starts_with(&format!("app-{hash}-"))
                && name.len() == format!("app-{hash}-").len() + 5,
            "{name}"
        );
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Deployment", uid.as_str(), Some(true))
        );
    }
    // Scale down and up (through /scale too).
    deps.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    eventually(15, "2 pods", || {
        let pods = pods.clone();
        async move { (owned_pods(&pods, "app").await.len() == 2).then_some(()) }
    })
    .await;
    deps.patch_scale(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    assert_eq!(
        deps.get_scale("app").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );
    let ps = eventually(15, "3 pods", || {
        let pods = pods.clone();
        async move { Some(owned_pods(&pods, "app").await).filter(|p| p.len() == 3) }
    })
    .await;
    // A deleted pod is replaced.
    let victim = ps[0].metadata.name.clone().unwrap();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually(15, "replacement", || {
        let pods = pods.clone();
        let victim = victim.clone();
        async move {
            let ps = owned_pods(&pods, "app").await;
            (ps.len() == 3
                && ps
                    .iter()
                    .all(|p| p.metadata.name.as_deref() != Some(victim.as_str())))
            .then_some(())
        }
    })
    .await;
    // Status.
    for (i, p) in owned_pods(&pods, "app").await.iter().enumerate() {
        mark_ready(
            &pods,
            p.metadata.name.as_ref().unwrap(),
            &format!("10.244.0.{}", 10 + i),
        )
        .await;
    }
    eventually(15, "status ready 3", || {
        let deps = deps.clone();
        async move {
            let s = deps.get("app").await.ok()?.status?;
            (s.replicas == Some(3)
                && s.ready_replicas == Some(3)
                && s.available_replicas == Some(3))
            .then_some(())
        }
    })
    .await;
    // A template change rolls the pods: new ones first, old ones go as new ones become Ready.
    deps.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}),
        ),
    )
    .await
    .unwrap();
    let new_pods = eventually(15, "3 new-template pods", || {
        let pods = pods.clone();
        let hash = hash.clone();
        async move {
            let ps: Vec<Pod> = owned_pods(&pods, "app")
                .await
                .into_iter()
                .filter(|p| p.metadata.labels.as_ref().unwrap()["pod-template-hash"] != hash)
                .collect();
            (ps.len() == 3).then_some(ps)
        }
    })
    .await;
    for (i, p) in new_pods.iter().enumerate() {
        mark_ready(
            &pods,
            p.metadata.name.as_ref().unwrap(),
            &format!("10.244.0.{}", 50 + i),
        )
        .await;
    }
    eventually(15, "old pods gone", || {
        let pods = pods.clone();
        async move {
            let ps = owned_pods(&pods, "app").await;
            (ps.len() == 3
                && ps
                    .iter()
                    .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("v2")))
            .then_some(())
        }
    })
    .await;
    // Deleting the Deployment deletes its pods.
    deps.delete("app", &DeleteParams::default()).await.unwrap();
    eventually(15, "pods collected", || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels("app=app"))
                .await
                .unwrap()
                .items
                .is_empty()
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn hundred_pod_deployment_is_created_and_scheduled_fast() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    for n in ["n1", "n2", "n3"] {
        add_node(&nodes, n, true).await;
    }
    let deps: Api<Deployment> = Api::namespaced(ts.client(), "default");
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let start = Instant::now();
    deps.create(&PostParams::default(), &deployment("big", 100, "nginx"))
        .await
        .unwrap();
    eventually(30, "100 scheduled pods", || {
        let pods = pods.clone();
        async move {
            let ps = owned_pods(&pods, "big").await;
            (ps.len() == 100
                && ps
                    .iter()
                    .all(|p| p.spec.as_ref().unwrap().node_name.is_some()))
            .then_some(())
        }
    })
    .await;
    // A figure, not a timed assertion (see the brief's performance targets).
    println!(
        "100-pod Deployment created and scheduled in {:?}",
        start.elapsed()
    );
    let mut per_node = std::collections::HashMap::new();
    for p in owned_pods(&pods, "big").await {
        *per_node
            .entry(p.spec.unwrap().node_name.unwrap())
            .or_insert(0) += 1;
    }
    let mut counts: Vec<i32> = per_node.values().copied().collect();
    counts.sort();
    assert_eq!(counts, [33, 33, 34]);
}

#[tokio::test]
async fn pods_on_nodes_are_deleted_gracefully() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    add_node(&nodes, "n1", true).await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let mk = |name: &str, grace: Option<i64>| -> Pod {
        let mut spec = json!({"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]});
        if let Some(g) = grace {
            spec["terminationGracePeriodSeconds"] = json!(g);
        }
        typed(json!({"metadata": {"name": name}, "spec": spec}))
    };
    pods.create(&PostParams::default(), &mk("a", None))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &mk("b", Some(5)))
        .await
        .unwrap();
    let out = pods.delete("a", &DeleteParams::default()).await.unwrap();
    let pending = out.left().expect("the pod object while it terminates");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(30));
    assert!(pods.get("a").await.is_ok());
    pods.delete("b", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        pods.get("b")
            .await
            .unwrap()
            .metadata
            .deletion_grace_period_seconds,
        Some(5)
    );
    // The node's pod runner finalizes with grace 0.
    pods.delete(
        "a",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(status_of(pods.get("a").await).code, 404);
    // Pods of a removed node go with it.
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    eventually(15, "pod b removed with its node", || {
        let pods = pods.clone();
        async move { pods.get("b").await.is_err().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn service_allocations_and_load_balancers() {
    let ts = TestServer::start().await;
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    let mk = |name: &str, spec: Value| -> Service {
        typed(json!({"metadata": {"name": name}, "spec": spec}))
    };
    let a = svcs
        .create(
            &PostParams::default(),
            &mk("a", json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    let b = svcs
        .create(
            &PostParams::default(),
            &mk("b", json!({"ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    let (ia, ib) = (
        a.spec.unwrap().cluster_ip.unwrap(),
        b.spec.unwrap().cluster_ip.unwrap(),
    );
    assert_ne!(ia, ib);
    assert!(ia.starts_with("10.9") && ia != "10.96.0.1", "{ia}");
    let headless = svcs
        .create(
            &PostParams::default(),
            &mk("h", json!({"clusterIP": "None", "selector": {"app": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let np = svcs
        .create(
            &PostParams::default(),
            &mk("np", json!({"type": "NodePort", "ports": [{"port": 80}]})),
        )
        .await
        .unwrap();
    let port = np.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap();
    assert!((30000..=32767).contains(&port));
    let lb = svcs
        .create(&PostParams::default(), &mk("lb", json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 443}]})))
        .await
        .unwrap();
    let spec = lb.spec.unwrap();
    let hc = spec.health_check_node_port.unwrap();
    assert!((30000..=32767).contains(&hc) && hc != spec.ports.unwrap()[0].node_port.unwrap());
    let ing = eventually(15, "LoadBalancer ingress", || {
        let svcs = svcs.clone();
        async move {
            let s = svcs.get("lb").await.ok()?;
            s.status?.load_balancer?.ingress?.first()?.ip.clone()
        }
    })
    .await;
    assert!(ing.starts_with("198.51.100."), "{ing}");
    let lb2 = svcs
        .create(&PostParams::default(), &mk("lb2", json!({"type": "LoadBalancer", "loadBalancerIP": "198.51.100.77", "ports": [{"port": 443}]})))
        .await
        .unwrap();
    let _ = lb2;
    let ing2 = eventually(15, "requested LoadBalancer address", || {
        let svcs = svcs.clone();
        async move {
            svcs.get("lb2")
                .await
                .ok()?
                .status?
                .load_balancer?
                .ingress?
                .first()?
                .ip
                .clone()
        }
    })
    .await;
    assert_eq!(ing2, "198.51.100.77");
    // Turning a LoadBalancer into a ClusterIP releases its address and node ports.
    svcs.patch(
        "lb",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": null}})),
    )
    .await
    .unwrap();
    eventually(15, "ingress cleared", || {
        let svcs = svcs.clone();
        async move {
            let s = svcs.get("lb").await.ok()?;
            let none = s
                .status?
                .load_balancer?
                .ingress
                .is_none_or(|i| i.is_empty());
            let no_np = s.spec?.ports?.iter().all(|p| p.node_port.is_none());
            (none && no_np).then_some(())
        }
    })
    .await;
    // A deleted Service's NodePort can be taken again.
    svcs.delete("np", &DeleteParams::default()).await.unwrap();
    let again = svcs
        .create(
            &PostParams::default(),
            &mk(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(again.spec.unwrap().ports.unwrap()[0].node_port, Some(port));
    // Replacing a Service without its ClusterIP keeps it.
    let mut cur = svcs.get("a").await.unwrap();
    cur.spec.as_mut().unwrap().cluster_ip = None;
    cur.spec.as_mut().unwrap().cluster_ips = None;
    let replaced = svcs
        .replace("a", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(replaced.spec.unwrap().cluster_ip.unwrap(), ia);
    // The kubernetes Service holds the first address.
    let k = svcs.get("kubernetes").await.unwrap();
    assert_eq!(k.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));
}

#[tokio::test]
async fn namespace_deletion_removes_its_contents() {
    let ts = TestServer::start().await;
    let nss: Api<Namespace> = Api::all(ts.client());
    nss.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": "tmp"}})),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(ts.client(), "tmp");
    pods.create(&PostParams::default(), &typed(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})))
        .await
        .unwrap();
    let svcs: Api<Service> = Api::namespaced(ts.client(), "tmp");
    svcs.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}})),
    )
    .await
    .unwrap();
    let ns = nss
        .delete("tmp", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    // No new content while terminating (unless it is already gone).
    if let Err(kube::Error::Api(s)) = pods
        .create(&PostParams::default(), &typed(json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})))
        .await
    {
        assert!(s.code == 403 || s.code == 404, "{s:?}");
    }
    eventually(15, "namespace gone", || {
        let nss = nss.clone();
        async move { nss.get("tmp").await.is_err().then_some(()) }
    })
    .await;
    assert!(Api::<Pod>::all(ts.client())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    add_node(&nodes, "n1", true).await;
    let deps: Api<Deployment> = Api::namespaced(ts.client(), "default");
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    deps.create(&PostParams::default(), &deployment("fg", 2, "i"))
        .await
        .unwrap();
    eventually(15, "2 scheduled pods", || {
        let pods = pods.clone();
        async move {
            let ps = owned_pods(&pods, "fg").await;
            (ps.len() == 2
                && ps
                    .iter()
                    .all(|p| p.spec.as_ref().unwrap().node_name.is_some()))
            .then_some(())
        }
    })
    .await;
    let pending = deps
        .delete("fg", &DeleteParams::foreground())
        .await
        .unwrap()
        .left()
        .expect("still there");
    assert!(pending
        .metadata
        .finalizers
        .unwrap()
        .contains(&"foregroundDeletion".to_string()));
    // Pods on a node terminate gracefully; the Deployment waits for them.
    let terminating = eventually(15, "pods terminating", || {
        let pods = pods.clone();
        async move {
            let ps = pods
                .list(&ListParams::default().labels("app=fg"))
                .await
                .ok()?
                .items;
            (ps.len() == 2 && ps.iter().all(|p| p.metadata.deletion_timestamp.is_some()))
                .then_some(ps)
        }
    })
    .await;
    assert!(deps.get("fg").await.is_ok());
    for p in terminating {
        pods.delete(
            p.metadata.name.as_ref().unwrap(),
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    eventually(15, "deployment gone", || {
        let deps = deps.clone();
        async move { deps.get("fg").await.is_err().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn dangling_owner_references_are_collected_at_start() {
    let mut ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    pods.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": "orphan", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": "gone", "uid": "00000000-0000-4000-8000-000000000000"}]},
            "spec": {"containers": [{"name": "c", "image": "i"}]}})),
    )
    .await
    .unwrap();
    ts.restart().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    eventually(15, "orphan collected", || {
        let pods = pods.clone();
        async move {
            matches!(pods.get("orphan").await, Err(kube::Error::Api(s)) if s.code == 404)
                .then_some(())
        }
    })
    .await;
}

/// A Node running as many pods as `status.allocatable.pods` takes no more (kube-scheduler's
/// NodeResourcesFit); a pod none can take is marked Unschedulable with kube-scheduler's words.
#[tokio::test]
async fn scheduler_keeps_to_allocatable_pods() {
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    for n in ["n1", "n2"] {
        add_node(&nodes, n, true).await;
        nodes
            .patch_status(
                n,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"allocatable": {"pods": "2"}, "capacity": {"pods": "2"}}}),
                ),
            )
            .await
            .unwrap();
    }
    let deps: Api<Deployment> = Api::namespaced(ts.client(), "default");
    deps.create(&PostParams::default(), &deployment("full", 5, "nginx"))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let unschedulable = eventually(15, "4 scheduled pods and 1 unschedulable", || {
        let pods = pods.clone();
        async move {
            let ps = owned_pods(&pods, "full").await;
            let placed = ps
                .iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
                .count();
            let waiting: Vec<_> = ps
                .iter()
                .filter_map(|p| {
                    p.status
                        .as_ref()?
                        .conditions
                        .as_ref()?
                        .iter()
                        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                        .cloned()
                })
                .collect();
            (ps.len() == 5 && placed == 4 && waiting.len() == 1).then(|| waiting[0].clone())
        }
    })
    .await;
    assert_eq!(unschedulable.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        unschedulable.message.as_deref(),
        Some("0/2 nodes are available: 2 Too many pods.")
    );
    for n in ["n1", "n2"] {
        let on: usize = owned_pods(&pods, "full")
            .await
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n))
            .count();
        assert_eq!(on, 2, "{n}");
    }
}
