//! Lab end to end: a DaemonSet of hostNetwork pods applied with the machine's real `kubectl`
//! lands one pod per node, each serving on its node's address; the downward API and ConfigMap
//! values are in the container's environment (seen through `kubectl exec`); `kubectl rollout
//! status` completes; a missing required key holds a container in CreateContainerConfigError
//! until the key exists; init containers run first, in order, and a failing one is retried
//! with back-off (`Init:Error` first); containers restart per restartPolicy with the crash
//! back-off (CrashLoopBackOff, lastState) and when their livenessProbe fails (`kubectl logs
//! --previous` shows the killed instance); deleting the DaemonSet removes the pods and leaves
//! the nodes intact.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::TestLab;
use serde_json::Value;

/// kubectl pointed at one lab, run in its fabric namespace (where the API server listens).
struct Kubectl {
    netns: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(lab: &TestLab) -> Kubectl {
        let handle = sarasa_lab::Lab::open(&lab.name).expect("lab spec");
        let spec = handle.spec.clone();
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("config");
        // The lab's own kubeconfig (its CA, the admin token), pointed at the underlay address.
        let mut doc = handle.kubeconfig().expect("lab kubeconfig");
        doc["clusters"][0]["cluster"]["server"] = spec.api_url().into();
        std::fs::write(&kubeconfig, serde_norway::to_string(&doc).expect("yaml"))
            .expect("write kubeconfig");
        Kubectl {
            netns: spec.fabric_netns,
            kubeconfig,
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args);
        match stdin {
            None => c.output().expect("running kubectl"),
            Some(text) => {
                use std::io::Write;
                let mut child = c
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("running kubectl");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(text.as_bytes())
                    .expect("write stdin");
                child.wait_with_output().expect("kubectl output")
            }
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, None)
    }

    fn ok_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("json")
    }
}

const PORT: u16 = 18080;

fn manifests(dir: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: agent-config}}
data: {{mode: fast, level: "3"}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: hostd}}
spec:
  selector: {{matchLabels: {{app: hostd}}}}
  template:
    metadata: {{labels: {{app: hostd}}}}
    spec:
      hostNetwork: true
      tolerations: [{{operator: Exists}}]
      initContainers:
      - name: prepare
        image: busybox
        command: ["/bin/sh", "-c", "echo prepared on $NODE_NAME > {dir}/init-$NODE_NAME"]
        env: [{{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}]
      containers:
      - name: serve
        image: sarasa
        ports: [{{containerPort: {PORT}}}]
        env:
        - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
        - {{name: MY_POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
        - {{name: MY_APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
        - {{name: MODE, valueFrom: {{configMapKeyRef: {{name: agent-config, key: mode}}}}}}
        - {{name: GREETING, value: "hi $(NODE_NAME)"}}
        envFrom:
        - {{configMapRef: {{name: agent-config}}, prefix: CFG_}}
"#
    )
}

/// `KEY=value` lines of `env` output.
fn env_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn live_pods(k: &Kubectl, selector: &str) -> Vec<Value> {
    k.json(&["get", "pods", "-l", selector])["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

#[test]
fn host_network_daemonset_with_env_lands_on_every_node() {
    let lab = TestLab::up(&["--nodes", "2"]);
    let k = Kubectl::new(&lab);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("utf8").to_string();
    k.ok_in(&["apply", "-f", "-"], Some(&manifests(&dir)));
    k.ok(&["rollout", "status", "ds/hostd", "--timeout=120s"]);
    let ds = k.json(&["get", "ds", "hostd"]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2, "{ds}");
    assert_eq!(ds["status"]["numberReady"], 2, "{ds}");
    let table = k.ok(&["get", "ds", "hostd"]);
    assert!(
        table.starts_with(
            "NAME    DESIRED   CURRENT   READY   UP-TO-DATE   AVAILABLE   NODE SELECTOR   AGE"
        ),
        "{table}"
    );

    let node_addrs: BTreeMap<String, String> = k.json(&["get", "nodes"])["items"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let ip = n["status"]["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                .and_then(|a| a["address"].as_str())
                .expect("InternalIP")
                .to_string();
            (
                n["metadata"]["name"].as_str().expect("name").to_string(),
                ip,
            )
        })
        .collect();
    let pods = live_pods(&k, "app=hostd");
    assert_eq!(pods.len(), 2);
    let mut nodes_seen = Vec::new();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().expect("name");
        let node = p["spec"]["nodeName"].as_str().expect("nodeName");
        nodes_seen.push(node.to_string());
        let addr = &node_addrs[node];
        // The pod's address is its node's.
        assert_eq!(p["status"]["podIP"], addr.as_str(), "{p}");
        assert_eq!(p["status"]["hostIP"], addr.as_str(), "{p}");
        assert_eq!(p["status"]["podIPs"][0]["ip"], addr.as_str());
        // Its init container ran first, with its own env.
        let written = std::fs::read_to_string(format!("{dir}/init-{node}")).expect("init output");
        assert_eq!(written.trim(), format!("prepared on {node}"));
        let init = &p["status"]["initContainerStatuses"][0];
        assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{p}");
        // It serves on the node's address, reachable from outside the cluster.
        let reply = lab
            .eventually(Duration::from_secs(20), || {
                lab.probe("external", &format!("http://{addr}:{PORT}/"))
            })
            .unwrap_or_else(|| panic!("{name} does not answer on {addr}:{PORT}"));
        assert!(reply.is_object(), "{reply}");
        // The environment, as `kubectl exec` sees it.
        let env = env_map(&k.ok(&["exec", name, "--", "env"]));
        assert_eq!(env.get("NODE_NAME").map(String::as_str), Some(node));
        assert_eq!(env.get("MY_POD_IP"), Some(addr));
        assert_eq!(env.get("MY_APP").map(String::as_str), Some("hostd"));
        assert_eq!(env.get("MODE").map(String::as_str), Some("fast"));
        assert_eq!(env.get("CFG_level").map(String::as_str), Some("3"));
        assert_eq!(env.get("GREETING"), Some(&format!("hi {node}")));
        // exec runs in the node's network namespace: the node's address is local.
        let addrs = k.ok(&["exec", name, "--", "ip", "-o", "addr"]);
        assert!(addrs.contains(&format!("inet {addr}/")), "{addrs}");
    }
    nodes_seen.sort();
    assert_eq!(nodes_seen, node_addrs.keys().cloned().collect::<Vec<_>>());

    // A required key that is missing keeps the container from starting, until it exists.
    let broken = r#"apiVersion: v1
kind: Pod
metadata: {name: needs-key, labels: {app: needs-key}}
spec:
  nodeName: node-1
  containers:
  - name: c
    image: x
    command: ["/bin/sh", "-c", "exec sleep 3600"]
    env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}]
"#;
    k.ok_in(&["apply", "-f", "-"], Some(broken));
    let waiting = lab
        .eventually(Duration::from_secs(20), || {
            let p = k.json(&["get", "pod", "needs-key"]);
            let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            (w["reason"] == "CreateContainerConfigError").then_some(w)
        })
        .expect("CreateContainerConfigError");
    assert_eq!(waiting["message"], "secret \"creds\" not found");
    let row = k.ok(&["get", "pod", "needs-key", "--no-headers"]);
    assert!(row.contains("CreateContainerConfigError"), "{row}");
    k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=token=s3cret",
    ]);
    lab.eventually(Duration::from_secs(30), || {
        let p = k.json(&["get", "pod", "needs-key"]);
        (p["status"]["phase"] == "Running").then_some(())
    })
    .expect("needs-key runs once the secret exists");
    let env = env_map(&k.ok(&["exec", "needs-key", "--", "env"]));
    assert_eq!(env.get("TOKEN").map(String::as_str), Some("s3cret"));

    // Init containers in order before the app; the second fails once: Init:Error, then after
    // the back-off it runs again and the pod starts.
    let order = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: inits}}
spec:
  nodeName: node-2
  initContainers:
  - {{name: first, image: x, command: ["/bin/sh", "-c", "sleep 1; echo first >> {dir}/order"]}}
  - name: second
    image: x
    command: ["/bin/sh", "-c", "echo second >> {dir}/order; n=$(cat {dir}/count 2>/dev/null || echo 0); echo $((n+1)) > {dir}/count; [ $n -ge 1 ]"]
  containers:
  - {{name: app, image: x, command: ["/bin/sh", "-c", "echo app >> {dir}/order; exec sleep 3600"]}}
"#
    );
    k.ok_in(&["apply", "-f", "-"], Some(&order));
    let mut seen = Vec::new();
    let phases = lab.eventually(Duration::from_secs(60), || {
        let row = k.ok(&["get", "pod", "inits", "--no-headers"]);
        let status = row
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        (status == "Running").then(|| seen.clone())
    });
    let phases = phases.unwrap_or_else(|| panic!("inits never ran; statuses seen: {seen:?}"));
    assert!(phases.iter().any(|s| s == "Init:0/2"), "{phases:?}");
    assert!(phases.iter().any(|s| s == "Init:Error"), "{phases:?}");
    let order_text = std::fs::read_to_string(format!("{dir}/order")).expect("order file");
    assert_eq!(
        order_text.lines().collect::<Vec<_>>(),
        ["first", "second", "first", "second", "app"]
    );

    // restartPolicy and liveness.
    let restarts = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  nodeName: node-1
  containers:
  - name: app
    image: x
    command: ["/bin/sh", "-c", "echo started; touch {dir}/healthy; exec sleep 3600"]
    livenessProbe:
      exec: {{command: ["test", "-f", "{dir}/healthy"]}}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {{name: crashy}}
spec:
  nodeName: node-2
  containers: [{{name: c, image: x, command: ["/bin/sh", "-c", "echo crash; exit 3"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: once}}
spec:
  nodeName: node-1
  restartPolicy: OnFailure
  containers: [{{name: c, image: x, command: ["/bin/sh", "-c", "echo done"]}}]
"#
    );
    k.ok_in(&["apply", "-f", "-"], Some(&restarts));
    lab.eventually(Duration::from_secs(30), || {
        let p = k.json(&["get", "pod", "live"]);
        (p["status"]["containerStatuses"][0]["ready"] == true).then_some(())
    })
    .expect("live runs");
    std::fs::remove_file(format!("{dir}/healthy")).expect("make live unhealthy");
    let restarted = lab
        .eventually(Duration::from_secs(30), || {
            let p = k.json(&["get", "pod", "live"]);
            let c = p["status"]["containerStatuses"][0].clone();
            (c["restartCount"] == 1 && c["state"]["running"].is_object()).then_some(c)
        })
        .expect("liveness failure restarts the container");
    // The shell exec'd sleep, which dies of the SIGTERM: 128 + 15.
    assert_eq!(
        restarted["lastState"]["terminated"]["exitCode"], 143,
        "{restarted}"
    );
    assert_eq!(restarted["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(k.ok(&["logs", "live", "--previous"]).trim(), "started");
    // The new instance made itself healthy again: it stays.
    std::thread::sleep(Duration::from_secs(3));
    let p = k.json(&["get", "pod", "live"]);
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 1,
        "{p}"
    );

    let crashy = lab
        .eventually(Duration::from_secs(30), || {
            let p = k.json(&["get", "pod", "crashy"]);
            let c = p["status"]["containerStatuses"][0].clone();
            (c["state"]["waiting"]["reason"] == "CrashLoopBackOff" && c["restartCount"] == 1)
                .then_some(c)
        })
        .expect("crashy backs off after its first restart");
    assert_eq!(crashy["lastState"]["terminated"]["exitCode"], 3, "{crashy}");
    assert!(
        crashy["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("back-off 10s restarting failed container=c")),
        "{crashy}"
    );
    let row = k.ok(&["get", "pod", "crashy", "--no-headers"]);
    assert!(row.contains("CrashLoopBackOff"), "{row}");
    lab.eventually(Duration::from_secs(20), || {
        let p = k.json(&["get", "pod", "once"]);
        (p["status"]["phase"] == "Succeeded").then_some(())
    })
    .expect("OnFailure pod that exits 0 succeeds");
    let once = k.json(&["get", "pod", "once"]);
    assert_eq!(once["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(
        once["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );

    // Deleting the DaemonSet removes its pods; the nodes keep their network.
    k.ok(&["delete", "ds", "hostd"]);
    lab.eventually(Duration::from_secs(60), || {
        live_pods(&k, "app=hostd").is_empty().then_some(())
    })
    .expect("DaemonSet pods deleted");
    lab.eventually(Duration::from_secs(60), || {
        k.json(&["get", "pods", "-l", "app=hostd"])["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    })
    .expect("DaemonSet pods gone");
    for (node, addr) in &node_addrs {
        let out = lab.ok(&["exec", &format!("node/{node}"), "--", "ip", "-o", "addr"]);
        assert!(
            out.contains(&format!("inet {addr}/")),
            "{node} lost {addr}: {out}"
        );
        assert!(
            lab.probe("external", &format!("http://{addr}:{PORT}/"))
                .is_none(),
            "{node} still serves {PORT} after the pod was deleted"
        );
    }
}
