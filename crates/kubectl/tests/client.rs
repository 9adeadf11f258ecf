//! apply / get / delete through a kube::Client against the in-memory API server (mock tier).

mod fake;

use fake::Fake;
use sarasa_kubectl::{
    apply, delete, delete_manifests, get, parse_manifests, ApplyAction, ApplyOptions, KubectlError,
    OutputFormat, Scope,
};

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
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
  - name: c
    image: busybox
";

fn out() -> Vec<u8> {
    Vec::new()
}

#[tokio::test]
async fn apply_creates_then_reports_unchanged_then_configured() {
    let fake = Fake::new();
    let client = fake.client();
    let manifests = parse_manifests("app.yaml", APP).unwrap();

    let mut o = out();
    let report = apply(&client, &manifests, &ApplyOptions::default(), &mut o)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(o).unwrap(),
        "namespace/shop created\ndeployment.apps/my-nginx created\nservice/my-nginx created\npod/client created\n"
    );
    assert!(report
        .applied
        .iter()
        .all(|a| a.action == ApplyAction::Created));
    assert_eq!(report.pods().count(), 1);
    assert_eq!(report.deployments().count(), 1);
    let max_rv = report.max_resource_version().unwrap();
    assert!(max_rv >= 4, "{max_rv}");
    // Namespace defaulting: the Pod without a namespace went to "default".
    assert!(fake.object("pods", "default", "client").is_some());
    let svc = fake.object("services", "shop", "my-nginx").unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].clone();
    assert!(cluster_ip.is_string());

    // Same manifests again: nothing written.
    fake.clear_log();
    let mut o = out();
    let report = apply(&client, &manifests, &ApplyOptions::default(), &mut o)
        .await
        .unwrap();
    assert!(String::from_utf8(o)
        .unwrap()
        .contains("service/my-nginx unchanged"));
    assert!(report
        .applied
        .iter()
        .all(|a| a.action == ApplyAction::Unchanged));
    assert_eq!(fake.writes(), Vec::<String>::new());
    assert_eq!(report.max_resource_version(), Some(max_rv));

    // A changed Service: replaced, keeping the clusterIP the server assigned.
    let changed = APP.replace(
        "  - port: 80\n    protocol: TCP\n",
        "  - port: 8080\n    protocol: TCP\n",
    );
    let manifests = parse_manifests("app.yaml", &changed).unwrap();
    let mut o = out();
    apply(&client, &manifests, &ApplyOptions::default(), &mut o)
        .await
        .unwrap();
    let o = String::from_utf8(o).unwrap();
    assert!(o.contains("service/my-nginx configured"), "{o}");
    assert!(o.contains("deployment.apps/my-nginx unchanged"), "{o}");
    let svc = fake.object("services", "shop", "my-nginx").unwrap();
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert_eq!(svc["spec"]["clusterIP"], cluster_ip);
}

#[tokio::test]
async fn apply_retries_when_a_controller_bumps_the_resource_version() {
    let fake = Fake::new();
    let client = fake.client();
    let manifests = parse_manifests("app.yaml", APP).unwrap();
    apply(&client, &manifests, &ApplyOptions::default(), &mut out())
        .await
        .unwrap();
    fake.touch("deployments", "shop", "my-nginx");
    // The plan's read and the first write's read both go stale before the write.
    fake.bump_after_get("deployments", "shop", "my-nginx", 2);
    let changed = APP.replace("replicas: 2", "replicas: 3");
    let manifests = parse_manifests("app.yaml", &changed).unwrap();
    let report = apply(&client, &manifests, &ApplyOptions::default(), &mut out())
        .await
        .unwrap();
    let d = report.deployments().next().unwrap();
    assert_eq!(d.spec.replicas, Some(3));
    let puts = fake
        .writes()
        .iter()
        .filter(|w| w.starts_with("PUT ") && !w.contains("dryRun"))
        .count();
    assert_eq!(puts, 2, "one conflict, one retry: {:?}", fake.writes());
}

#[tokio::test]
async fn invalid_fields_are_named_and_nothing_is_applied() {
    let fake = Fake::new();
    let client = fake.client();
    let bad = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports:
  - port: 70000
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow, namespace: default}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/33}
";
    let manifests = parse_manifests("bad.yaml", bad).unwrap();
    let before = fake.count();
    let e = apply(&client, &manifests, &ApplyOptions::default(), &mut out())
        .await
        .unwrap_err();
    let KubectlError::Invalid(rejected) = &e else {
        panic!("expected Invalid, got {e}")
    };
    assert_eq!(rejected.len(), 2, "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains("bad.yaml (document 2): service/web"),
        "{shown}"
    );
    assert!(shown.contains("spec.ports[0].port"), "{shown}");
    assert!(
        shown.contains("networkpolicy.networking.k8s.io/allow"),
        "{shown}"
    );
    assert!(
        shown.contains("spec.ingress[0].from[0].ipBlock.cidr"),
        "{shown}"
    );
    assert_eq!(fake.count(), before, "nothing of the file was applied");
    assert!(
        fake.writes().iter().all(|w| w.contains("dryRun=All")),
        "{:?}",
        fake.writes()
    );
}

#[tokio::test]
async fn objects_in_a_namespace_created_by_the_same_apply_pass_the_dry_run() {
    let fake = Fake::new();
    let client = fake.client();
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: fresh}\nspec:\n  containers: [{name: c}]\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: fresh}\n";
    let manifests = parse_manifests("ns.yaml", text).unwrap();
    let mut o = out();
    apply(&client, &manifests, &ApplyOptions::default(), &mut o)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(o).unwrap(),
        "namespace/fresh created\npod/p created\n",
        "Namespaces go first"
    );
    // But a namespace nobody creates is the server's error.
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: nowhere}\nspec:\n  containers: [{name: c}]\n";
    let manifests = parse_manifests("ns.yaml", text).unwrap();
    let e = apply(&client, &manifests, &ApplyOptions::default(), &mut out())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("namespaces \"nowhere\" not found"), "{e}");
}

#[tokio::test]
async fn namespace_flag_applies_and_conflicts() {
    let fake = Fake::new();
    let client = fake.client();
    fake.insert(
        "namespaces",
        "",
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    );
    let opts = ApplyOptions {
        namespace: Some("team".into()),
        ..Default::default()
    };
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n";
    apply(
        &client,
        &parse_manifests("p.yaml", text).unwrap(),
        &opts,
        &mut out(),
    )
    .await
    .unwrap();
    assert!(fake.object("pods", "team", "p").is_some());
    let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: other}\nspec:\n  containers: [{name: c}]\n";
    let e = apply(
        &client,
        &parse_manifests("p.yaml", text).unwrap(),
        &opts,
        &mut out(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, KubectlError::NamespaceMismatch { .. }), "{e}");
}

#[tokio::test]
async fn get_tables_yaml_and_not_found() {
    let fake = Fake::new();
    let client = fake.client();
    apply(
        &client,
        &parse_manifests("app.yaml", APP).unwrap(),
        &ApplyOptions::default(),
        &mut out(),
    )
    .await
    .unwrap();
    let shop = Scope::Namespace("shop".into());

    let table = get(&client, "svc", None, &shop, OutputFormat::Table)
        .await
        .unwrap();
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap(),
        "NAME       TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)   AGE"
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with("my-nginx   ClusterIP   10.96.0."), "{row}");
    assert!(row.contains("<none>        80/TCP"), "{row}");

    let all = get(
        &client,
        "pods",
        None,
        &Scope::AllNamespaces,
        OutputFormat::Wide,
    )
    .await
    .unwrap();
    assert!(
        all.starts_with("NAMESPACE   NAME     READY   STATUS    RESTARTS   AGE"),
        "{all}"
    );
    assert!(
        all.contains("default     client   0/1     Pending   0"),
        "{all}"
    );

    let yaml = get(
        &client,
        "deploy",
        Some("my-nginx"),
        &shop,
        OutputFormat::Yaml,
    )
    .await
    .unwrap();
    assert!(
        yaml.starts_with("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"),
        "{yaml}"
    );
    assert!(!yaml.contains("managedFields"), "{yaml}");
    assert!(yaml.contains("replicas: 2"), "{yaml}");

    let json = get(&client, "namespaces", None, &shop, OutputFormat::Json)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert_eq!(v["items"][1]["kind"], "Namespace");

    let names = get(&client, "deployments.apps", None, &shop, OutputFormat::Name)
        .await
        .unwrap();
    assert_eq!(names, "deployment.apps/my-nginx\n");

    let empty = get(&client, "netpol", None, &shop, OutputFormat::Table)
        .await
        .unwrap();
    assert_eq!(empty, "No resources found in shop namespace.\n");

    let e = get(&client, "po", Some("nope"), &shop, OutputFormat::Table)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Error from server (NotFound): pods \"nope\" not found in namespace \"shop\""
    );
    let e = get(&client, "configmaps", None, &shop, OutputFormat::Table)
        .await
        .unwrap_err();
    assert!(matches!(e, KubectlError::UnknownResourceType(_)), "{e}");
}

#[tokio::test]
async fn delete_by_name_and_by_manifest() {
    let fake = Fake::new();
    let client = fake.client();
    let manifests = parse_manifests("app.yaml", APP).unwrap();
    apply(&client, &manifests, &ApplyOptions::default(), &mut out())
        .await
        .unwrap();

    let mut o = out();
    delete(&client, "po", "client", None, &mut o).await.unwrap();
    assert_eq!(String::from_utf8(o).unwrap(), "pod \"client\" deleted\n");
    assert!(fake.object("pods", "default", "client").is_none());

    let e = delete(&client, "pod", "client", None, &mut out())
        .await
        .unwrap_err();
    assert!(matches!(e, KubectlError::NotFound(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "Error from server (NotFound): pods \"client\" not found in namespace \"default\""
    );

    // By manifest: the rest is deleted (Namespace last), the missing Pod is reported.
    let mut o = out();
    let e = delete_manifests(&client, &manifests, None, &mut o)
        .await
        .unwrap_err();
    assert_eq!(
        String::from_utf8(o).unwrap(),
        "service \"my-nginx\" deleted\ndeployment.apps \"my-nginx\" deleted\nnamespace \"shop\" deleted\n"
    );
    let e = e.to_string();
    assert!(
        e.contains("app.yaml (document 4)") && e.contains("pods \"client\" not found"),
        "{e}"
    );
    assert_eq!(fake.count(), 1, "only the default namespace is left");
}
