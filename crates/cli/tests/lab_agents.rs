//! Lab end to end: the lab installs sarasa the way a cluster does. Every node's agent is a pod
//! of the deploy/sarasa.yaml DaemonSet — host network (its podIP is the node's), Ready by its
//! readiness probe, configured from the ConfigMap, talking to the API with the projected token
//! of the `sarasa-system/sarasa-agent` ServiceAccount (in-cluster config pointed at the API by
//! the `kubernetes-services-endpoint` ConfigMap). Deleting an agent pod brings a new one from
//! the DaemonSet while established pod traffic keeps flowing; `lab agent stop|start` label the
//! Node and the DaemonSet follows.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sarasa_bin, TestLab};
use serde_json::Value;

const AGENT_SA: &str = "system:serviceaccount:sarasa-system:sarasa-agent";

/// The live agent pods, by node name.
fn agent_pods(lab: &TestLab) -> Vec<(String, Value)> {
    let list = lab.get_json(&["pods", "-n", "sarasa-system"]);
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["metadata"]["labels"]["app.kubernetes.io/name"] == "sarasa-agent")
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p.clone(),
            )
        })
        .collect()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn name(p: &Value) -> String {
    p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn agents_are_daemonset_pods_on_the_host_network_ready_and_authenticated_as_the_service_account() {
    let lab = TestLab::up(&["--nodes", "2", "--backend", "host-gw", "--mode", "routed"]);
    let nodes = lab.get_json(&["nodes"]);
    let node_ip = |node: &str| -> String {
        nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["metadata"]["name"] == node)
            .and_then(|n| {
                n["status"]["addresses"]
                    .as_array()?
                    .iter()
                    .find(|a| a["type"] == "InternalIP")?["address"]
                    .as_str()
                    .map(str::to_string)
            })
            .expect("node InternalIP")
    };
    let mut pods = agent_pods(&lab);
    pods.sort_by(|a, b| a.0.cmp(&b.0));
    let on: Vec<&str> = pods.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(on, ["node-1", "node-2"], "one agent pod per node");
    let wide = lab.ok(&["get", "pods", "-n", "sarasa-system", "-o", "wide"]);
    for (node, p) in &pods {
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "DaemonSet", "{p}");
        assert_eq!(owner["name"], "sarasa-agent");
        let spec = &p["spec"];
        assert_eq!(spec["hostNetwork"], true);
        assert_eq!(spec["serviceAccountName"], "sarasa-agent");
        // The shipped container: only the manifest's arguments, no lab-only flags.
        assert_eq!(
            spec["containers"][0]["args"],
            serde_json::json!([
                "--config=/etc/sarasa/config.yaml",
                "--host-netns",
                "--health-listen=0.0.0.0:9099"
            ])
        );
        assert_eq!(
            spec["containers"][0]["readinessProbe"]["httpGet"]["path"],
            "/readyz"
        );
        assert_eq!(p["status"]["podIP"], node_ip(node).as_str(), "{p}");
        assert!(ready(p), "agent pod on {node} is not Ready: {p}");
        // `-o wide` shows the pod on its node at the node's address.
        let line = wide
            .lines()
            .find(|l| l.starts_with(&name(p)))
            .unwrap_or_else(|| panic!("{} missing in:\n{wide}", name(p)));
        assert!(
            line.contains(&node_ip(node)) && line.contains(node.as_str()),
            "{line}"
        );
        // The readiness probe's target answers on the node's address.
        let readyz = lab.ok(&[
            "exec",
            &format!("node/{node}"),
            "--",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{}:9099/readyz", node_ip(node)),
        ]);
        assert_eq!(readyz, "200");
        // The image has no `nft` (lab/src/image_fs.rs covers the machine's): the agent
        // programmed its node over netlink alone, and the node's tables are there.
        let out = lab.run(&[
            "exec",
            "-n",
            "sarasa-system",
            &name(p),
            "--",
            "nft",
            "list",
            "tables",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("ermission denied"),
            "nft ran in the agent's container: {err}"
        );
        let tables = lab.ok(&[
            "exec",
            &format!("node/{node}"),
            "--",
            "nft",
            "list",
            "tables",
        ]);
        assert!(tables.contains("table inet sarasa"), "{tables}");
    }

    // The agent's settings come from the ConfigMap the lab overlaid with its spec.
    let (_, p1) = &pods[0];
    let target = name(p1);
    let config = lab.ok(&[
        "exec",
        "-n",
        "sarasa-system",
        &target,
        "--",
        "cat",
        "/etc/sarasa/config.yaml",
    ]);
    assert!(config.contains("backend: host-gw"), "{config}");
    assert!(config.contains("cniMode: routed"), "{config}");
    // In-cluster config: the agent process runs with the API's real address from
    // kubernetes-services-endpoint (read from the kubelet's record of the pod).
    let uid = p1["metadata"]["uid"].as_str().expect("uid");
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/var/lib/sarasa/{}/pods/{uid}.json", lab.name))
            .expect("the kubelet's record of the agent pod"),
    )
    .expect("record JSON");
    let pid = record["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "agent")
        .and_then(|c| c["process"]["pid"].as_i64())
        .expect("agent pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let env: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for want in [
        "KUBERNETES_SERVICE_HOST=192.168.33.1",
        "KUBERNETES_SERVICE_PORT=6443",
        "NODE_NAME=node-1",
    ] {
        assert!(env.iter().any(|v| v == want), "{want} not in {env:?}");
    }
    assert!(!env.iter().any(|v| v.starts_with("KUBECONFIG=")), "{env:?}");
    // The token the agent uses is its ServiceAccount's: the API says who it is.
    let token = lab.ok(&[
        "exec",
        "-n",
        "sarasa-system",
        &target,
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
    ]);
    let ca = format!("/var/lib/sarasa/{}/pki/ca.crt", lab.name);
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let api = |method: &str, path: &str, body: &str| -> Value {
        let out = lab.ok(&[
            "exec",
            "node/node-1",
            "--",
            "curl",
            "-s",
            "--cacert",
            &ca,
            "-X",
            method,
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &format!("https://192.168.33.1:6443{path}"),
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    // What the shipped ClusterRole grants works with it...
    let list = api("GET", "/api/v1/nodes", "");
    assert_eq!(list["kind"], "NodeList", "{list}");
    // ...and what it does not is refused, naming the ServiceAccount the token stands for.
    let refused = api(
        "POST",
        "/api/v1/namespaces",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"agent-made"}}"#,
    );
    assert_eq!(refused["code"], 403, "{refused}");
    let msg = refused["message"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("User \"{AGENT_SA}\"")), "{msg}");
    // The nodes' CNI config and plugin are where the DaemonSet put them: the node's own
    // /etc/cni/net.d and /opt/cni/bin (hostPaths under the node's root).
    let root = format!("/var/lib/sarasa/{}/nodes/node-1/root", lab.name);
    assert!(std::path::Path::new(&format!("{root}/etc/cni/net.d/10-sarasa.conflist")).exists());
    assert!(std::path::Path::new(&format!("{root}/opt/cni/bin/sarasa-cni")).exists());
}

const TWO_PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  nodeName: node-2
  containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]
"#;

#[test]
fn a_deleted_agent_pod_is_replaced_by_the_daemonset_and_the_datapath_stays() {
    let lab = TestLab::up(&["--nodes", "2"]);
    lab.apply(TWO_PODS);
    let server = lab.get_json(&["pods", "server"]);
    let server_ip = server["status"]["podIP"]
        .as_str()
        .expect("podIP")
        .to_string();
    let bin = sarasa_bin();
    // A long-lived connection client(node-1) -> server(node-2), one line every 100 ms, held
    // while node-2's agent pod is deleted and replaced.
    let hold = Command::new(&bin)
        .args(["--lab", &lab.name, "exec", "client", "--"])
        .arg(&bin)
        .args(["probe", "--hold", "8s", "--timeout", "2s"])
        .arg(format!("tcp://{server_ip}:8080"))
        .env("KUBECONFIG", lab.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hold");
    let old = agent_pods(&lab)
        .into_iter()
        .find(|(n, _)| n == "node-2")
        .map(|(_, p)| name(&p))
        .expect("agent pod on node-2");
    lab.ok(&["delete", "pod", &old, "-n", "sarasa-system"]);
    let new = lab
        .eventually(Duration::from_secs(60), || {
            agent_pods(&lab)
                .into_iter()
                .find(|(n, p)| n == "node-2" && name(p) != old && ready(p))
                .map(|(_, p)| name(&p))
        })
        .expect("the DaemonSet made a new, Ready agent pod on node-2");
    assert_ne!(new, old);
    let out = hold.wait_with_output().expect("hold");
    assert!(
        out.status.success(),
        "the connection broke while the agent pod was replaced:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // stop: the Node is labelled, the DaemonSet takes its pod away; start brings one back.
    lab.ok(&["lab", "agent", "stop", "node-2"]);
    let node = lab.get_json(&["nodes", "node-2"]);
    assert_eq!(node["metadata"]["labels"]["sarasa.io/agent"], "stopped");
    assert!(agent_pods(&lab).iter().all(|(n, _)| n != "node-2"));
    let status = lab.ok(&["lab", "status"]);
    let row = status
        .lines()
        .find(|l| l.starts_with("node-2"))
        .expect("node-2 row");
    assert!(row.contains("Stopped"), "{status}");
    // Traffic still flows on the datapath the stopped agent left.
    let reply = lab
        .probe("client", &format!("tcp://{server_ip}:8080"))
        .expect("server reachable while its node's agent is stopped");
    assert_eq!(reply["pod"], "server");
    lab.ok(&["lab", "agent", "start", "node-2"]);
    let node = lab.get_json(&["nodes", "node-2"]);
    assert!(node["metadata"]["labels"]["sarasa.io/agent"].is_null());
    let back = agent_pods(&lab)
        .into_iter()
        .find(|(n, _)| n == "node-2")
        .expect("agent pod back on node-2");
    assert!(ready(&back.1));
    let again = lab.run(&["lab", "agent", "start", "node-2"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));
}
