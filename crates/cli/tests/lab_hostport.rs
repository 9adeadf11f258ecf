//! Lab end-to-end: a pod's `hostPort` (the runtime passes the `portMappings` capability to
//! sarasa-cni) is reachable from the external host at its node's address with the client's
//! own address kept; a second pod asking for the same port on that node is refused with a
//! `FailedCreatePodSandBox` Event naming the port and stays ContainerCreating, while the first
//! keeps serving; once the first pod is deleted the second one starts and takes the port.

mod common;

use std::time::Duration;

use common::{client_ip, TestLab};

const EXTERNAL_IP: &str = "203.0.113.10";
const NODE1_IP: &str = "192.168.33.11";

fn pod(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: hostport}}
spec:
  nodeName: node-1
  containers:
  - name: web
    image: sarasa/serve
    ports:
    - containerPort: 8080
      hostPort: 18080
"#
    )
}

fn phase(lab: &TestLab, name: &str) -> String {
    lab.object("pods", "default", name)
        .and_then(|p| p["status"]["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn hostport_from_the_external_host_and_a_conflict_on_the_node() {
    let lab = TestLab::up(&["--nodes", "2"]);
    let url = format!("http://{NODE1_IP}:18080/");
    lab.apply(&pod("hp-a"));
    let reply = lab
        .eventually(Duration::from_secs(20), || lab.probe("external", &url))
        .unwrap_or_else(|| panic!("hostPort on {NODE1_IP} unreachable\n{}", lab.logs()));
    assert_eq!(reply["pod"], "hp-a", "{reply}");
    assert_eq!(
        client_ip(&reply),
        EXTERNAL_IP,
        "source address kept: {reply}"
    );

    // The same hostPort on the same node: refused, reported, the first pod keeps the port.
    lab.apply_nowait(&pod("hp-b"));
    let event = lab.wait_event("default", "hp-b", "FailedCreatePodSandBox", "");
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("hostPort 18080/tcp") && message.contains("already in use"),
        "{event}"
    );
    assert_eq!(event["type"], "Warning");
    assert_ne!(phase(&lab, "hp-b"), "Running");
    let reply = lab.probe("external", &url).expect("hp-a still serves");
    assert_eq!(reply["pod"], "hp-a");

    // The port is freed with the pod; the second pod then starts and takes it.
    lab.ok(&["delete", "pod", "hp-a"]);
    let reply = lab
        .eventually(Duration::from_secs(60), || {
            lab.probe("external", &url).filter(|r| r["pod"] == "hp-b")
        })
        .unwrap_or_else(|| panic!("hp-b never took the port\n{}", lab.logs()));
    assert_eq!(client_ip(&reply), EXTERNAL_IP);
}
