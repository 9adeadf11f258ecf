//! apply / get / delete against the lab's real API server (crates/apiserver) over HTTP on
//! 127.0.0.1:0, with its validation, dry run and controllers.

use sarasa_apiserver::{ApiServer, Config};
use sarasa_kubectl::{
    apply, delete, delete_manifests, get, parse_manifests, ApplyAction, ApplyOptions, KubectlError,
    OutputFormat, Scope,
};
use tokio::task::JoinHandle;

/// The server and its state directory; shut down and removed on drop, also when a test fails.
struct Lab {
    api: ApiServer,
    task: JoinHandle<()>,
    _state: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.api.shutdown();
        self.task.abort();
    }
}

async fn start() -> (kube::Client, Lab) {
    let state = tempfile::tempdir().unwrap();
    let api = ApiServer::open(Config::new(state.path().join("api"))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = api.clone();
    let task = tokio::spawn(async move {
        let _ = server.serve(listener).await;
    });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    (
        client,
        Lab {
            api,
            task,
            _state: state,
        },
    )
}

const APP: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-nginx
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {run: my-nginx}
  template:
    metadata:
      labels: {run: my-nginx}
    spec:
      containers:
      - name: my-nginx
        image: nginx
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: my-nginx
  namespace: shop
spec:
  ports:
  - port: 80
    protocol: TCP
  selector: {run: my-nginx}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
  namespace: shop
spec:
  podSelector:
    matchLabels: {run: my-nginx}
  ingress:
  - from:
    - ipBlock: {cidr: 10.244.0.0/16}
";

fn out() -> Vec<u8> {
    Vec::new()
}

#[tokio::test]
async fn apply_twice_then_change_then_delete() {
    let (client, _lab) = start().await;
    let manifests = parse_manifests("app.yaml", APP).unwrap();
    let mut o = out();
    let report = apply(&client, &manifests, &ApplyOptions::default(), &mut o)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(o).unwrap(),
        "namespace/shop created\ndeployment.apps/my-nginx created\nservice/my-nginx created\nnetworkpolicy.networking.k8s.io/web created\n"
    );
    assert!(report.max_resource_version().is_some());
    let cluster_ip = get(
        &client,
        "svc",
        Some("my-nginx"),
        &Scope::Namespace("shop".into()),
        OutputFormat::Json,
    )
    .await
    .unwrap();
    let cluster_ip = serde_json::from_str::<serde_json::Value>(&cluster_ip).unwrap()["spec"]
        ["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cluster_ip.starts_with("10.9"), "{cluster_ip}");

    // Controllers and defaulting change the live objects; the manifests did not change.
    let report = apply(&client, &manifests, &ApplyOptions::default(), &mut out())
        .await
        .unwrap();
    assert!(
        report
            .applied
            .iter()
            .all(|a| a.action == ApplyAction::Unchanged),
        "{:?}",
        report.applied.iter().map(|a| a.line()).collect::<Vec<_>>()
    );

    let changed = APP.replace("  - port: 80\n", "  - port: 8080\n");
    let mut o = out();
    apply(
        &client,
        &parse_manifests("app.yaml", &changed).unwrap(),
        &ApplyOptions::default(),
        &mut o,
    )
    .await
    .unwrap();
    assert!(String::from_utf8(o)
        .unwrap()
        .contains("service/my-nginx configured"));
    let table = get(
        &client,
        "services",
        None,
        &Scope::Namespace("shop".into()),
        OutputFormat::Table,
    )
    .await
    .unwrap();
    assert!(
        table.contains(&format!("my-nginx   ClusterIP   {cluster_ip}")),
        "{table}"
    );
    assert!(table.contains("8080/TCP"), "{table}");

    let pods = get(
        &client,
        "po",
        None,
        &Scope::AllNamespaces,
        OutputFormat::Wide,
    )
    .await
    .unwrap();
    assert!(pods.starts_with("NAMESPACE   NAME"), "{pods}");

    let mut o = out();
    delete_manifests(&client, &manifests, None, &mut o)
        .await
        .unwrap();
    assert!(String::from_utf8(o)
        .unwrap()
        .ends_with("namespace \"shop\" deleted\n"));
}

#[tokio::test]
async fn server_validation_names_fields_and_nothing_is_applied() {
    let (client, _lab) = start().await;
    let bad = "\
apiVersion: v1
kind: Pod
metadata: {name: fine}
spec:
  containers: [{name: c, image: i}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports:
  - port: 70000
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/33}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector:
    matchExpressions:
    - {key: run, operator: Sometimes, values: [x]}
  template:
    metadata:
      labels: {run: x}
    spec:
      containers: [{name: c, image: i}]
";
    let manifests = parse_manifests("bad.yaml", bad).unwrap();
    let e = apply(&client, &manifests, &ApplyOptions::default(), &mut out())
        .await
        .unwrap_err();
    let shown = e.to_string();
    let KubectlError::Invalid(rejected) = &e else {
        panic!("expected Invalid, got {shown}")
    };
    assert_eq!(rejected.len(), 3, "{shown}");
    assert!(
        shown.contains("bad.yaml (document 2): service/web"),
        "{shown}"
    );
    assert!(shown.contains("spec.ports[0].port"), "{shown}");
    assert!(shown.contains("ipBlock.cidr"), "{shown}");
    assert!(shown.contains("deployment.apps/d"), "{shown}");
    assert!(shown.contains("spec.selector"), "{shown}");
    // The valid Pod of the same file was not created either.
    let e = get(
        &client,
        "pod",
        Some("fine"),
        &Scope::Namespace("default".into()),
        OutputFormat::Table,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, KubectlError::NotFound(_)), "{e}");
}

#[tokio::test]
async fn get_and_delete_built_in_objects() {
    let (client, _lab) = start().await;
    let table = get(
        &client,
        "ns",
        None,
        &Scope::Namespace("default".into()),
        OutputFormat::Table,
    )
    .await
    .unwrap();
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("\ndefault "), "{table}");
    assert!(table.contains("Active"), "{table}");
    let svc = get(
        &client,
        "svc/kubernetes",
        None,
        &Scope::Namespace("default".into()),
        OutputFormat::Yaml,
    )
    .await
    .unwrap();
    assert!(svc.starts_with("apiVersion: v1\nkind: Service\n"), "{svc}");
    assert!(!svc.contains("managedFields"), "{svc}");
    let nodes = get(
        &client,
        "no",
        None,
        &Scope::AllNamespaces,
        OutputFormat::Table,
    )
    .await
    .unwrap();
    assert_eq!(nodes, "No resources found\n");

    let e = delete(&client, "deploy", "nothing", Some("default"), &mut out())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Error from server (NotFound): deployments.apps \"nothing\" not found in namespace \"default\""
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let e = get(
        &client,
        "pods",
        None,
        &Scope::Namespace("default".into()),
        OutputFormat::Table,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("cannot list pods: "), "{e}");
    assert!(e.to_lowercase().contains("connection refused"), "{e}");
}

const MCS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{port: 80}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: web, namespace: default}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
# Not `web`: the MCS controller derives that one from the ServiceExport.
metadata: {name: manual, namespace: default}
spec:
  type: ClusterSetIP
  ips: [242.1.255.253]
  ports: [{name: http, port: 80}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: db, namespace: default}
spec:
  type: Headless
  ports: [{port: 5432}]
";

#[tokio::test]
async fn serviceexports_and_serviceimports_apply_get_and_delete() {
    let (client, _lab) = start().await;
    let manifests = parse_manifests("mcs.yaml", MCS).unwrap();
    let mut o = out();
    apply(&client, &manifests, &ApplyOptions::default(), &mut o)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(o).unwrap(),
        "service/web created\nserviceexport.multicluster.x-k8s.io/web created\n\
         serviceimport.multicluster.x-k8s.io/manual created\nserviceimport.multicluster.x-k8s.io/db created\n"
    );
    let default = Scope::Namespace("default".into());
    let table = get(&client, "svcim", None, &default, OutputFormat::Table)
        .await
        .unwrap();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "TYPE", "IP", "AGE"], "{table}");
    assert_eq!(rows[1][..3], ["db", "Headless", "<none>"], "{table}");
    assert_eq!(
        rows[2][..3],
        ["manual", "ClusterSetIP", "[\"242.1.255.253\"]"],
        "{table}"
    );
    let names = get(
        &client,
        "serviceexports",
        None,
        &default,
        OutputFormat::Name,
    )
    .await
    .unwrap();
    assert_eq!(names, "serviceexport.multicluster.x-k8s.io/web\n");
    // Applying again changes nothing (the server's defaults are not a difference).
    let report = apply(&client, &manifests, &ApplyOptions::default(), &mut out())
        .await
        .unwrap();
    assert!(
        report
            .applied
            .iter()
            .all(|a| a.action == ApplyAction::Unchanged),
        "{:?}",
        report.applied.iter().map(|a| a.line()).collect::<Vec<_>>()
    );
    delete(&client, "svcex", "web", Some("default"), &mut out())
        .await
        .unwrap();
    let table = get(&client, "svcex", None, &default, OutputFormat::Table)
        .await
        .unwrap();
    assert_eq!(table, "No resources found in default namespace.\n");
}
