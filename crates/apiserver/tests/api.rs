//! The REST API through a real kube-rs client: CRUD, optimistic concurrency, patches, dry run,
//! selectors, pagination, errors, discovery and persistence across restarts.

mod common;

use common::{eventually, fields, status_of, TestServer};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 80}]}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_conflict_and_metadata() {
    let ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let created = pods
        .create(&PostParams::default(), &pod("web", json!({"app": "web"})))
        .await
        .unwrap();
    let m = &created.metadata;
    assert_eq!(m.namespace.as_deref(), Some("default"));
    assert_eq!(m.uid.as_ref().map(String::len), Some(36));
    assert!(m.creation_timestamp.is_some());
    assert!(m.resource_version.is_some());
    assert_eq!(m.generation, Some(1));
    assert_eq!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    // Defaults as kube-apiserver fills them.
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(
        spec.containers[0].ports.as_ref().unwrap()[0]
            .protocol
            .as_deref(),
        Some("TCP")
    );
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));

    // AlreadyExists.
    let s = status_of(
        pods.create(&PostParams::default(), &pod("web", json!({})))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.message, "pods \"web\" already exists");

    // Optimistic concurrency: a stale resourceVersion is a 409 Conflict.
    let mut a = pods.get("web").await.unwrap();
    let mut b = a.clone();
    a.metadata
        .labels
        .get_or_insert_default()
        .insert("x".into(), "1".into());
    let a2 = pods
        .replace("web", &PostParams::default(), &a)
        .await
        .unwrap();
    assert!(
        a2.metadata
            .resource_version
            .as_ref()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > a.metadata
                .resource_version
                .as_ref()
                .unwrap()
                .parse::<u64>()
                .unwrap()
    );
    b.metadata
        .labels
        .get_or_insert_default()
        .insert("x".into(), "2".into());
    let s = status_of(pods.replace("web", &PostParams::default(), &b).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("the object has been modified"),
        "{}",
        s.message
    );

    // generateName.
    let mut g = pod("", json!({}));
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let g = pods.create(&PostParams::default(), &g).await.unwrap();
    let gname = g.metadata.name.unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // NotFound.
    let s = status_of(pods.get("nope").await);
    assert_eq!(
        (s.code, s.reason.as_str(), s.message.as_str()),
        (404, "NotFound", "pods \"nope\" not found")
    );

    // Creating into a missing namespace.
    let other: Api<Pod> = Api::namespaced(ts.client(), "missing");
    let s = status_of(
        other
            .create(&PostParams::default(), &pod("x", json!({})))
            .await,
    );
    assert_eq!(s.code, 404);
    assert!(s.message.contains("namespaces \"missing\" not found"));

    // A pod without a node is deleted at once.
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(status_of(pods.get("web").await).code, 404);
}

#[tokio::test]
async fn patches_and_dry_run() {
    let ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    pods.create(&PostParams::default(), &pod("p", json!({"a": "1"})))
        .await
        .unwrap();
    let pp = PatchParams::default();
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"b": "2", "a": null}}})),
        )
        .await
        .unwrap();
    let labels = p.metadata.labels.unwrap();
    assert_eq!(labels.get("b").map(String::as_str), Some("2"));
    assert!(!labels.contains_key("a"));
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Strategic(json!({"metadata": {"labels": {"c": "3"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap().len(), 2);
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}
    ]))
    .unwrap();
    let p = pods.patch("p", &pp, &Patch::Json::<()>(jp)).await.unwrap();
    assert_eq!(
        p.metadata
            .annotations
            .unwrap()
            .get("note")
            .map(String::as_str),
        Some("x")
    );

    // Status through the status subresource only.
    let p = pods
        .patch_status(
            "p",
            &pp,
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.244.0.5",
            "podIPs": [{"ip": "10.244.0.5"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    // A main-resource write cannot change status.
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));

    // Server-side apply creates, then merges.
    let apply = PatchParams::apply("test").force();
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    let s = svcs
        .patch("applied", &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "applied"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}})))
        .await
        .unwrap();
    let ip = s.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    let s = svcs
        .patch("applied", &apply, &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "applied", "labels": {"l": "v"}}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}})))
        .await
        .unwrap();
    assert_eq!(s.spec.unwrap().cluster_ip.unwrap(), ip);
    assert!(s.metadata.managed_fields.is_none());

    // dryRun: validated, not stored.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    pods.create(&dry, &pod("dry", json!({}))).await.unwrap();
    assert_eq!(status_of(pods.get("dry").await).code, 404);
    let mut bad = pod("dry2", json!({}));
    bad.spec.as_mut().unwrap().containers[0]
        .ports
        .as_mut()
        .unwrap()[0]
        .container_port = 0;
    assert_eq!(status_of(pods.create(&dry, &bad).await).code, 422);
    let rv_before = pods.get("p").await.unwrap().metadata.resource_version;
    let dry_patch = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    pods.patch(
        "p",
        &dry_patch,
        &Patch::Merge(json!({"metadata": {"labels": {"z": "1"}}})),
    )
    .await
    .unwrap();
    let after = pods.get("p").await.unwrap();
    assert_eq!(after.metadata.resource_version, rv_before);
    assert!(!after.metadata.labels.unwrap().contains_key("z"));
}

#[tokio::test]
async fn selectors_and_pagination() {
    let ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "fe"})),
        ("b", json!({"app": "web", "tier": "be"})),
        ("c", json!({"app": "db"})),
        ("d", json!({})),
    ] {
        pods.create(&PostParams::default(), &pod(name, labels))
            .await
            .unwrap();
    }
    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect()
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(pods.list(&q("app=web")).await.unwrap()), ["a", "b"]);
    assert_eq!(names(pods.list(&q("app!=web")).await.unwrap()), ["c", "d"]);
    assert_eq!(
        names(pods.list(&q("tier in (fe,xx)")).await.unwrap()),
        ["a"]
    );
    assert_eq!(
        names(pods.list(&q("app notin (web)")).await.unwrap()),
        ["c", "d"]
    );
    assert_eq!(names(pods.list(&q("tier")).await.unwrap()), ["a", "b"]);
    assert_eq!(names(pods.list(&q("!app")).await.unwrap()), ["d"]);
    assert_eq!(
        names(pods.list(&q("app=web,tier=be")).await.unwrap()),
        ["b"]
    );
    let s = status_of(pods.list(&q("app in web")).await);
    assert_eq!(s.code, 400);
    let f = |s: &str| ListParams::default().fields(s);
    assert_eq!(
        names(pods.list(&f("metadata.name=c")).await.unwrap()),
        ["c"]
    );
    assert_eq!(
        names(
            pods.list(&f("metadata.namespace=default,metadata.name!=a"))
                .await
                .unwrap()
        ),
        ["b", "c", "d"]
    );
    assert_eq!(
        names(pods.list(&f("spec.nodeName=")).await.unwrap()).len(),
        4
    );
    assert_eq!(status_of(pods.list(&f("spec.bogus=1")).await).code, 400);

    // All namespaces.
    let all: Api<Pod> = Api::all(ts.client());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );

    // Pagination.
    let page = pods.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page.items.len(), 3);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = pods
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(rest), ["d"]);
}

#[tokio::test]
async fn cluster_scoped_and_other_kinds() {
    let ts = TestServer::start().await;
    let nss: Api<Namespace> = Api::all(ts.client());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    for want in ["default", "kube-system", "sarasa-system"] {
        assert!(names.contains(&want.to_string()), "{names:?}");
    }
    // Bad names are 422 with the field.
    let bad: Namespace = serde_json::from_value(json!({"metadata": {"name": "Bad_Name"}})).unwrap();
    let s = status_of(nss.create(&PostParams::default(), &bad).await);
    assert_eq!(s.code, 422);
    assert_eq!(fields(&s), ["metadata.name"]);
    // The system namespaces cannot go.
    let s = status_of(nss.delete("default", &DeleteParams::default()).await);
    assert_eq!(s.code, 403);

    let leases: Api<Lease> = Api::namespaced(ts.client(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "l"},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    // Leases may be created with PUT (as kube-apiserver allows).
    let mut l2 = lease.clone();
    l2.metadata.name = Some("l2".into());
    leases
        .replace("l2", &PostParams::default(), &l2)
        .await
        .unwrap();
    assert_eq!(
        leases
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    // Unknown paths are 404 Status objects.
    let nodes: Api<Node> = Api::all(ts.client());
    assert_eq!(status_of(nodes.get("none").await).code, 404);
}

#[tokio::test]
async fn discovery_documents() {
    let ts = TestServer::start().await;
    let client = ts.client();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    let groups = client.list_api_groups().await.unwrap();
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    for g in [
        "apps",
        "discovery.k8s.io",
        "networking.k8s.io",
        "coordination.k8s.io",
    ] {
        assert!(names.contains(&g), "{names:?}");
    }
    let core = client.list_core_api_resources("v1").await.unwrap();
    let pods = core.resources.iter().find(|r| r.name == "pods").unwrap();
    assert!(pods.namespaced && pods.verbs.contains(&"watch".to_string()));
    assert!(core.resources.iter().any(|r| r.name == "pods/status"));
    let apps = client.list_api_group_resources("apps/v1").await.unwrap();
    assert!(apps.resources.iter().any(|r| r.name == "deployments/scale"));
    // kube-rs discovery runs over these documents.
    let disc = kube::discovery::Discovery::new(client).run().await.unwrap();
    assert!(disc.has_group("networking.k8s.io"));
}

#[tokio::test]
async fn restart_keeps_objects_and_resource_version() {
    let mut ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    for i in 0..20 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("p{i}"), json!({"i": i.to_string()})),
        )
        .await
        .unwrap();
    }
    pods.delete("p3", &DeleteParams::default()).await.unwrap();
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "s"},
        "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}}))
    .unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let before = pods.list(&ListParams::default()).await.unwrap();
    let rv_before: u64 = before
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();

    ts.restart().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let after = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        serde_json::to_value(&before.items).unwrap(),
        serde_json::to_value(&after.items).unwrap()
    );
    let rv_after: u64 = after
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_after >= rv_before);
    // The counter continues, and allocations are remembered.
    let p = pods
        .create(&PostParams::default(), &pod("new", json!({})))
        .await
        .unwrap();
    assert!(p.metadata.resource_version.unwrap().parse::<u64>().unwrap() > rv_after);
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    let np = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap();
    let clash: Service = serde_json::from_value(json!({"metadata": {"name": "t"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": np}]}}))
    .unwrap();
    let s = status_of(svcs.create(&PostParams::default(), &clash).await);
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("provided port is already allocated"),
        "{}",
        s.message
    );

    // A torn write at the end of the log (a crash mid-write) loses nothing before it.
    ts.stop().await;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(ts.config.state_dir.join("log.jsonl"))
        .unwrap();
    f.write_all(b"{\"rv\":99999,\"op\":\"put\",\"res\":\"po")
        .unwrap();
    drop(f);
    ts.restart().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    eventually(15, "server back", || {
        let pods = pods.clone();
        async move { pods.get("new").await.ok() }
    })
    .await;
}

#[tokio::test]
async fn error_status_matches_kube_apiserver() {
    // The Status kube-apiserver builds for one field error (apimachinery's StatusError for
    // field.ErrorList: message `<Kind> "<name>" is invalid: <field>: <detail>`, one cause each).
    let recorded = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Service \"bad\" is invalid: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "reason": "Invalid",
        "details": {"name": "bad", "kind": "Service", "causes": [{"reason": "FieldValueInvalid",
            "message": "Invalid value: 70000: must be between 1 and 65535, inclusive", "field": "spec.ports[0].port"}]},
        "code": 422
    });
    let ts = TestServer::start().await;
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    let bad: Service = serde_json::from_value(json!({"metadata": {"name": "bad"},
        "spec": {"ports": [{"port": 70000, "targetPort": 8080}]}}))
    .unwrap();
    let s = status_of(svcs.create(&PostParams::default(), &bad).await);
    let ours = serde_json::to_value(&*s).unwrap();
    let theirs: kube::core::Status = serde_json::from_value(recorded).unwrap();
    assert_eq!(ours, serde_json::to_value(&theirs).unwrap());
}

#[tokio::test]
async fn delete_collection_orphan_and_events() {
    use k8s_openapi::api::apps::v1::Deployment;
    let ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    for (n, l) in [("a", "x"), ("b", "x"), ("c", "y")] {
        pods.create(&PostParams::default(), &pod(n, json!({"g": l})))
            .await
            .unwrap();
    }
    let gone = pods
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("g=x"),
        )
        .await
        .unwrap();
    let gone = gone.left().expect("the deleted items");
    assert_eq!(gone.items.len(), 2);
    let left: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["c"]);

    // Orphan propagation keeps the pods and drops their owner reference.
    let deps: Api<Deployment> = Api::namespaced(ts.client(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "o"}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "o"}},
        "template": {"metadata": {"labels": {"app": "o"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})).unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    eventually(15, "2 pods", || {
        let pods = pods.clone();
        async move {
            (pods
                .list(&ListParams::default().labels("app=o"))
                .await
                .ok()?
                .items
                .len()
                == 2)
                .then_some(())
        }
    })
    .await;
    // Orphaning happens within the delete, so the garbage collector has nothing to act on.
    deps.delete("o", &DeleteParams::orphan()).await.unwrap();
    let orphans = pods
        .list(&ListParams::default().labels("app=o"))
        .await
        .unwrap()
        .items;
    assert_eq!(orphans.len(), 2);
    assert!(orphans.iter().all(|p| p
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(|r| r.is_empty())));

    // events.k8s.io/v1 Events (what kube-rs' event Recorder writes) and core/v1 Events.
    let ev: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(ts.client(), "default");
    let e: k8s_openapi::api::events::v1::Event =
        serde_json::from_value(json!({"metadata": {"name": "e1"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "Programmed", "action": "Apply",
        "reportingController": "sarasa.io/agent", "reportingInstance": "n1", "type": "Normal"}))
        .unwrap();
    ev.create(&PostParams::default(), &e).await.unwrap();
    let core_ev: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(ts.client(), "default");
    let e2: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({"metadata": {"name": "e2"},
        "involvedObject": {"kind": "Pod", "name": "c", "namespace": "default"}, "reason": "Started"})).unwrap();
    core_ev.create(&PostParams::default(), &e2).await.unwrap();
    let l = core_ev
        .list(&ListParams::default().fields("involvedObject.name=c"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
}

#[tokio::test]
async fn serves_on_a_unix_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server =
        sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new(dir.path().join("state")))
            .unwrap();
    let sock = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let s2 = server.clone();
    let h = tokio::spawn(async move { s2.serve_unix(listener).await });
    let mut conn = tokio::net::UnixStream::connect(&sock).await.unwrap();
    conn.write_all(
        b"GET /api/v1/namespaces/default HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("\"kubernetes.io/metadata.name\":\"default\""),
        "{out}"
    );
    server.shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(5), h)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn run_listens_on_configured_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sarasa_apiserver::Config::new(dir.path().join("state"));
    // A free port: bind, note, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.listen = vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))];
    config.unix_socket = Some(dir.path().join("api.sock"));
    let server = sarasa_apiserver::ApiServer::open(config).unwrap();
    let s2 = server.clone();
    let h = tokio::spawn(async move { s2.run().await });
    let url: http::Uri = format!("http://127.0.0.1:{port}").parse().unwrap();
    let client = kube::Client::try_from(kube::Config::new(url)).unwrap();
    let nss: Api<Namespace> = Api::all(client);
    eventually(15, "TCP listener up", || {
        let nss = nss.clone();
        async move { nss.get("default").await.ok() }
    })
    .await;
    assert!(dir.path().join("api.sock").exists());
    server.shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(5), h)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn reapplying_the_same_manifests_is_a_no_op() {
    use k8s_openapi::api::apps::v1::Deployment;
    let ts = TestServer::start().await;
    let nodes: Api<Node> = Api::all(ts.client());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap(),
        )
        .await
        .unwrap();
    let apply = PatchParams::apply("sarasa").force();
    let pod_doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ap", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}});
    let svc_doc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "as"},
        "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": 80}]}});
    let dep_doc = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ad"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    let deps: Api<Deployment> = Api::namespaced(ts.client(), "default");
    pods.patch("ap", &apply, &Patch::Apply(&pod_doc))
        .await
        .unwrap();
    svcs.patch("as", &apply, &Patch::Apply(&svc_doc))
        .await
        .unwrap();
    deps.patch("ad", &apply, &Patch::Apply(&dep_doc))
        .await
        .unwrap();
    // Wait for the scheduler and the deployment controller to settle.
    let p = eventually(15, "pod scheduled", || {
        let pods = pods.clone();
        async move {
            pods.get("ap")
                .await
                .ok()
                .filter(|p| p.spec.as_ref().unwrap().node_name.is_some())
        }
    })
    .await;
    let d = eventually(15, "deployment status", || {
        let deps = deps.clone();
        async move {
            deps.get("ad")
                .await
                .ok()
                .filter(|d| d.status.as_ref().and_then(|s| s.replicas) == Some(2))
        }
    })
    .await;
    let s = svcs.get("as").await.unwrap();
    let p2 = pods
        .patch("ap", &apply, &Patch::Apply(&pod_doc))
        .await
        .unwrap();
    let s2 = svcs
        .patch("as", &apply, &Patch::Apply(&svc_doc))
        .await
        .unwrap();
    let d2 = deps
        .patch("ad", &apply, &Patch::Apply(&dep_doc))
        .await
        .unwrap();
    assert_eq!(p2.metadata.resource_version, p.metadata.resource_version);
    assert_eq!(s2.metadata.resource_version, s.metadata.resource_version);
    assert_eq!(d2.metadata.resource_version, d.metadata.resource_version);
    assert_eq!(p2.spec.unwrap().node_name.as_deref(), Some("n1"));
}

#[tokio::test]
async fn events_expire_after_the_ttl() {
    let ts = TestServer::start_with(|c| c.event_ttl = std::time::Duration::from_secs(1)).await;
    let ev: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(ts.client(), "default");
    let e: k8s_openapi::api::core::v1::Event =
        serde_json::from_value(json!({"metadata": {"name": "short"},
        "involvedObject": {"kind": "Pod", "name": "x"}, "reason": "Test"}))
        .unwrap();
    ev.create(&PostParams::default(), &e).await.unwrap();
    eventually(15, "event expired", || {
        let ev = ev.clone();
        async move { ev.get("short").await.is_err().then_some(()) }
    })
    .await;
}

/// The kinds an install needs (deploy/): ConfigMap, Secret, ServiceAccount, DaemonSet and RBAC
/// are stored, listed and served at their group's path, namespaced or cluster-scoped as in
/// Kubernetes.
#[tokio::test]
async fn install_kinds_are_served() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let ts = TestServer::start().await;
    let c = ts.client();
    let pp = PostParams::default();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"backend": "vxlan"}}))
            .unwrap();
    let got = Api::<ConfigMap>::namespaced(c.clone(), "default")
        .create(&pp, &cm)
        .await
        .unwrap();
    assert_eq!(got.data.unwrap()["backend"], "vxlan");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dmFsdWU="}}),
    )
    .unwrap();
    let got = Api::<Secret>::namespaced(c.clone(), "default")
        .create(&pp, &secret)
        .await
        .unwrap();
    assert_eq!(got.data.unwrap()["k"].0, b"value");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "agent"}})).unwrap();
    Api::<ServiceAccount>::namespaced(c.clone(), "kube-system")
        .create(&pp, &sa)
        .await
        .unwrap();
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "sarasa-agent"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "a"}},
                              "spec": {"hostNetwork": true,
                                       "containers": [{"name": "agent", "image": "sarasa"}]}}}}))
    .unwrap();
    Api::<DaemonSet>::namespaced(c.clone(), "kube-system")
        .create(&pp, &ds)
        .await
        .unwrap();
    let rule = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]);
    let cr: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": "reader"}, "rules": rule})).unwrap();
    Api::<ClusterRole>::all(c.clone())
        .create(&pp, &cr)
        .await
        .unwrap();
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": "reader"}, "rules": rule})).unwrap();
    Api::<Role>::namespaced(c.clone(), "default")
        .create(&pp, &role)
        .await
        .unwrap();
    let subjects = json!([{"kind": "ServiceAccount", "name": "agent", "namespace": "kube-system"}]);
    let crb: ClusterRoleBinding = serde_json::from_value(json!({"metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
        "subjects": subjects}))
    .unwrap();
    Api::<ClusterRoleBinding>::all(c.clone())
        .create(&pp, &crb)
        .await
        .unwrap();
    let rb: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": subjects}))
    .unwrap();
    Api::<RoleBinding>::namespaced(c.clone(), "default")
        .create(&pp, &rb)
        .await
        .unwrap();
    let lp = ListParams::default();
    assert_eq!(
        Api::<DaemonSet>::all(c.clone())
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        Api::<ClusterRole>::all(c.clone())
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        Api::<RoleBinding>::all(c.clone())
            .list(&lp)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}
