//! Lab end-to-end with real clients: the machine's `kubectl` through the kubeconfig
//! `sarasa lab kubeconfig` prints (apply with validation on, tables, -o wide/yaml/json,
//! describe, create, expose, run, label, annotate, patch, scale, rollout status, wait, explain,
//! delete), and the Python `kubernetes` client listing and watching pods.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TestLab;
use serde_json::Value;

const KUBECTL: &str = "/usr/bin/kubectl";

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: registry.local/web:1, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
"#;

/// A manifest with a field Deployment does not have.
const BAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  replicas: 1
  replicaz: 2
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers: [{name: c, image: x}]
"#;

struct Kubectl {
    config: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("running kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl -o json")
    }
}

/// A printed table: the header's columns and each row's cells by column.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Splits on the column starts of the header (cells may contain single spaces).
    fn parse(text: &str) -> Table {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let head = lines.next().expect("a header line");
        let mut starts = Vec::new();
        let bytes = head.as_bytes();
        for i in 0..bytes.len() {
            if bytes[i] != b' '
                && (i == 0 || (i >= 2 && bytes[i - 1] == b' ' && bytes[i - 2] == b' '))
            {
                starts.push(i);
            }
        }
        let cut = |line: &str| -> Vec<String> {
            starts
                .iter()
                .enumerate()
                .map(|(k, &s)| {
                    let e = starts
                        .get(k + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    line.get(s.min(line.len())..e)
                        .unwrap_or("")
                        .trim()
                        .to_string()
                })
                .collect()
        };
        Table {
            header: cut(head),
            rows: lines.map(cut).collect(),
        }
    }

    fn row(&self, first: &str) -> &Vec<String> {
        self.rows
            .iter()
            .find(|r| r[0] == first)
            .unwrap_or_else(|| panic!("no row {first} in {:?}", self.rows))
    }

    fn cell(&self, first: &str, column: &str) -> &str {
        let i = self
            .header
            .iter()
            .position(|h| h == column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.header));
        &self.row(first)[i]
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.to_str().expect("utf8").to_string()
}

#[test]
fn kubectl_and_the_python_client_drive_the_lab() {
    assert!(
        Path::new(KUBECTL).exists(),
        "kubectl is missing (scripts/install-deps.sh installs it)"
    );
    let lab = TestLab::up(&["--nodes", "2"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = format!("sarasa-{}", lab.name);

    // `lab up` merged the context into $KUBECONFIG; `lab kubeconfig` prints a standalone one.
    let merged = std::fs::read_to_string(lab.kubeconfig()).expect("merged kubeconfig");
    assert!(merged.contains(&format!("name: {ctx}")), "{merged}");
    let printed = lab.ok(&["lab", "kubeconfig"]);
    assert!(
        printed.contains(&format!("current-context: {ctx}")),
        "{printed}"
    );
    assert!(printed.contains("server: https://127.0.0.1:"), "{printed}");
    assert!(
        printed.contains("certificate-authority-data: "),
        "{printed}"
    );
    assert!(printed.contains("token: "), "{printed}");
    let k = Kubectl {
        config: PathBuf::from(write(dir.path(), "kubeconfig", &printed)),
    };
    let via_merged = Command::new(KUBECTL)
        .env("KUBECONFIG", lab.kubeconfig())
        .args(["--context", &ctx, "get", "ns", "default", "-o", "name"])
        .output()
        .expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&via_merged.stdout).trim(),
        "namespace/default"
    );

    // Nodes: the server-side table, wide columns included.
    let nodes = Table::parse(&k.ok(&["get", "nodes", "-o", "wide"]));
    assert_eq!(
        &nodes.header[..6],
        &["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    );
    assert_eq!(
        nodes.header.last().map(String::as_str),
        Some("CONTAINER-RUNTIME")
    );
    assert_eq!(nodes.rows.len(), 2);
    for n in k.json(&["get", "nodes"])["items"]
        .as_array()
        .expect("nodes")
    {
        let name = n["metadata"]["name"].as_str().unwrap();
        let internal = n["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>");
        assert_eq!(nodes.cell(name, "INTERNAL-IP"), internal);
        assert_ne!(internal, "<none>", "{name} has no InternalIP");
    }

    // Each node's kubelet reports Ready and what the machine is, as `kubectl get nodes -o wide`
    // shows for a real cluster.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let nodes = loop {
        let t = Table::parse(&k.ok(&["get", "nodes", "-o", "wide"]));
        let names: Vec<String> = t.rows.iter().map(|r| r[0].clone()).collect();
        if names.iter().all(|n| t.cell(n, "STATUS") == "Ready")
            || std::time::Instant::now() > deadline
        {
            break t;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for row in &nodes.rows {
        let name = row[0].as_str();
        assert_eq!(nodes.cell(name, "STATUS"), "Ready", "{name}");
        assert_eq!(nodes.cell(name, "VERSION"), "v1.34.0-sarasa", "{name}");
        assert_eq!(nodes.cell(name, "KERNEL-VERSION"), kernel.trim(), "{name}");
        assert_ne!(nodes.cell(name, "OS-IMAGE"), "<unknown>", "{name}");
        assert!(
            nodes
                .cell(name, "CONTAINER-RUNTIME")
                .starts_with("sarasa-lab://"),
            "{name}"
        );
    }

    // apply with client validation on (kubectl's default): the good manifest goes in, the one
    // with an unknown field is refused and nothing of it is created.
    let out = k.ok(&["apply", "-f", &write(dir.path(), "web.yaml", WEB)]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("service/web created"), "{out}");
    let bad = k.run(&["apply", "-f", &write(dir.path(), "bad.yaml", BAD)]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "an unknown field was accepted");
    // kubectl's own client-side message (from the OpenAPI v2 schema), not the server's.
    assert!(
        err.contains("error validating data: ValidationError(Deployment.spec): unknown field \"replicaz\" in io.k8s.api.apps.v1.DeploymentSpec"),
        "{err}"
    );
    let strict = k.run(&[
        "create",
        "--validate=strict",
        "-f",
        &write(dir.path(), "bad.yaml", BAD),
    ]);
    assert!(!strict.status.success());
    assert!(String::from_utf8_lossy(&strict.stderr).contains("ValidationError(Deployment.spec)"));
    assert!(!k.run(&["get", "deployment", "bad"]).status.success());
    // With validation off kubectl sends it, and the server's own check (kubectl asks for
    // fieldValidation=Ignore then) lets it through without the unknown field.
    let off = k.ok(&[
        "apply",
        "--validate=false",
        "-f",
        &write(dir.path(), "bad.yaml", BAD),
    ]);
    assert!(off.contains("deployment.apps/bad created"), "{off}");
    assert!(k.json(&["get", "deployment", "bad"])["spec"]
        .get("replicaz")
        .is_none());
    k.ok(&["delete", "deployment", "bad"]);

    let rolled = k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    let waited = k.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=60s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");

    // get: tables with values, -o wide, -o yaml, -o json.
    let deploy = Table::parse(&k.ok(&["get", "deployments"]));
    assert_eq!(
        deploy.header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(deploy.cell("web", "READY"), "2/2");
    let pods = Table::parse(&k.ok(&["get", "pods", "-l", "app=web", "-o", "wide"]));
    assert_eq!(
        pods.header,
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    assert_eq!(pods.rows.len(), 2);
    let pod_json = k.json(&["get", "pods", "-l", "app=web"]);
    for (row, item) in pods
        .rows
        .iter()
        .zip(pod_json["items"].as_array().expect("items"))
    {
        assert_eq!(row[0], item["metadata"]["name"].as_str().unwrap());
        assert_eq!(&row[1..3], &["1/1", "Running"]);
        assert_eq!(row[5], item["status"]["podIP"].as_str().unwrap());
        assert_eq!(row[6], item["spec"]["nodeName"].as_str().unwrap());
        assert_eq!(row[7], "<none>");
    }
    let svc_json = k.json(&["get", "service", "web"]);
    let svcs = Table::parse(&k.ok(&["get", "services", "-o", "wide"]));
    assert_eq!(
        svcs.header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    assert_eq!(svcs.cell("web", "TYPE"), "ClusterIP");
    assert_eq!(
        svcs.cell("web", "CLUSTER-IP"),
        svc_json["spec"]["clusterIP"].as_str().unwrap()
    );
    assert_eq!(svcs.cell("web", "EXTERNAL-IP"), "<none>");
    assert_eq!(svcs.cell("web", "PORT(S)"), "80/TCP");
    assert_eq!(svcs.cell("web", "SELECTOR"), "app=web");
    let yaml = k.ok(&["get", "deployment", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 2"),
        "{yaml}"
    );
    let slices = Table::parse(&k.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]));
    assert_eq!(
        slices.header,
        ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    );
    assert_eq!(slices.rows[0][1], "IPv4");
    assert_eq!(slices.rows[0][2], "8080");

    // create namespace / deployment, expose, run, label, annotate, patches, scale.
    assert!(k
        .ok(&["create", "namespace", "demo"])
        .contains("namespace/demo created"));
    let ns = Table::parse(&k.ok(&["get", "namespace", "demo"]));
    assert_eq!(ns.header, ["NAME", "STATUS", "AGE"]);
    assert_eq!(ns.cell("demo", "STATUS"), "Active");
    let created = k.ok(&[
        "create",
        "deployment",
        "api",
        "-n",
        "demo",
        "--image=registry.local/api:1",
        "--replicas=1",
        "--port=8080",
    ]);
    assert!(created.contains("deployment.apps/api created"), "{created}");
    let exposed = k.ok(&[
        "expose",
        "deployment",
        "api",
        "-n",
        "demo",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
    ]);
    assert!(exposed.contains("service/api exposed"), "{exposed}");
    let api_svc = k.json(&["get", "service", "api", "-n", "demo"]);
    let node_port = api_svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("nodePort");
    let svcs = Table::parse(&k.ok(&["get", "services", "-n", "demo"]));
    assert_eq!(svcs.cell("api", "TYPE"), "NodePort");
    assert_eq!(svcs.cell("api", "PORT(S)"), format!("80:{node_port}/TCP"));
    let ran = k.ok(&[
        "run",
        "solo",
        "-n",
        "demo",
        "--image=registry.local/solo:1",
        "--port=8080",
    ]);
    assert!(ran.contains("pod/solo created"), "{ran}");
    let ready = k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/solo",
        "-n",
        "demo",
        "--timeout=60s",
    ]);
    assert!(ready.contains("condition met"), "{ready}");
    assert!(k
        .ok(&["label", "pod", "solo", "-n", "demo", "tier=front"])
        .contains("pod/solo labeled"));
    assert!(k
        .ok(&["annotate", "pod", "solo", "-n", "demo", "owner=team-a"])
        .contains("pod/solo annotated"));
    let labelled = Table::parse(&k.ok(&["get", "pods", "-n", "demo", "-l", "tier=front"]));
    assert_eq!(labelled.rows.len(), 1);
    assert_eq!(labelled.cell("solo", "STATUS"), "Running");
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"merge":"yes"}}}"#,
    ]);
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/jsonpatch","value":"yes"}]"#,
    ]);
    k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        r#"{"metadata":{"labels":{"strategic":"yes"}}}"#,
    ]);
    let labels = &k.json(&["get", "deployment", "web"])["metadata"]["labels"];
    for l in ["merge", "jsonpatch", "strategic"] {
        assert_eq!(labels[l], "yes", "{l} patch lost: {labels}");
    }
    let ssa = k.ok(&[
        "apply",
        "--server-side",
        "-f",
        &write(dir.path(), "web.yaml", WEB),
    ]);
    assert!(ssa.contains("serverside-applied"), "{ssa}");
    assert!(k
        .ok(&["scale", "deployment", "web", "--replicas=3"])
        .contains("deployment.apps/web scaled"));
    k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let deploy = Table::parse(&k.ok(&["get", "deployment", "web"]));
    assert_eq!(deploy.cell("web", "READY"), "3/3");

    // describe (reads events), explain (OpenAPI v3).
    let described = k.ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains("Replicas:") && described.contains("3 desired"),
        "{described}"
    );
    let described = k.ok(&["describe", "pod", "solo", "-n", "demo"]);
    assert!(
        described.contains("tier=front") && described.contains("Events:"),
        "{described}"
    );
    let explained = k.ok(&["explain", "pod.spec.containers"]);
    assert!(
        explained.contains("FIELD: containers <[]Container>"),
        "{explained}"
    );
    assert!(explained.contains("image\t<string>"), "{explained}");

    // The Python client lists and watches pods.
    python_client_lists_and_watches(&lab, &k.config, dir.path());

    // The published port survives a control-plane restart: the same kubeconfig still works.
    lab.ok(&["lab", "control-plane", "restart"]);
    assert_eq!(lab.ok(&["lab", "kubeconfig"]), printed);
    let ns = Table::parse(&k.ok(&["get", "namespace", "demo"]));
    assert_eq!(ns.cell("demo", "STATUS"), "Active");

    // delete
    assert!(k
        .ok(&["delete", "deployment", "api", "-n", "demo"])
        .contains("deleted"));
    assert!(k
        .ok(&["delete", "namespace", "demo", "--wait=false"])
        .contains("namespace \"demo\" deleted"));
    drop(lab);
    // `lab down` took its entries out of the merged kubeconfig.
}

fn python_client_lists_and_watches(lab: &TestLab, kubeconfig: &Path, dir: &Path) {
    let venv = dir.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3");
    assert!(
        made.status.success(),
        "python3 -m venv: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "kubernetes"])
        .output()
        .expect("pip");
    assert!(
        pip.status.success(),
        "pip install kubernetes: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/list_watch_pods.py");
    let out = Command::new(venv.join("bin/python"))
        .arg(script)
        .arg(kubeconfig)
        .args(["default", "py-watched"])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        lab.logs()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("script JSON");
    let listed: Vec<&str> = seen["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        listed.iter().filter(|n| n.starts_with("web-")).count(),
        3,
        "{seen}"
    );
    let events = seen["events"].as_array().unwrap();
    assert_eq!(events[0][0], "ADDED", "{seen}");
    assert_eq!(seen["running"], true, "{seen}");
    assert!(
        seen["pod_ip"].as_str().is_some_and(|ip| !ip.is_empty()),
        "{seen}"
    );
}
