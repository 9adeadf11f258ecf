//! Lab end-to-end: agent and control-plane restarts, two labs at once, `lab down` cleanliness,
//! and the CLI's answers to bad input.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{sarasa_bin, unique_lab, TestLab};

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

fn pod_ip(lab: &TestLab, name: &str) -> String {
    let pod = lab.get_json(&["pods", name]);
    pod["status"]["podIP"].as_str().expect("podIP").to_string()
}

#[test]
fn agent_restart_keeps_connections_and_catches_up() {
    let lab = TestLab::up(&["--nodes", "3"]);
    lab.apply(TWO_PODS);
    let server_ip = pod_ip(&lab, "server");
    let bin = sarasa_bin();
    // A long-lived connection client(node-1) -> server(node-2), one line every 100 ms.
    let hold = Command::new(&bin)
        .args([
            "--lab",
            &lab.name,
            "exec",
            "client",
            "--",
            bin.to_str().unwrap(),
        ])
        .args(["probe", "--hold", "8s", "--timeout", "2s"])
        .arg(format!("tcp://{server_ip}:8080"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hold");

    lab.ok(&["lab", "agent", "stop", "node-2"]);
    // A pod created while node-2's agent is down.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("late.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: late}\nspec:\n  nodeName: node-2\n  containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]\n",
    )
    .unwrap();
    lab.ok(&["apply", "-f", f.to_str().unwrap()]);
    lab.ok(&["lab", "agent", "start", "node-2"]);

    let out = hold.wait_with_output().expect("hold");
    assert!(
        out.status.success(),
        "the long-lived connection broke across the agent restart:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let late_ip = lab
        .eventually(Duration::from_secs(30), || {
            let p = lab.get_json(&["pods", "late"]);
            p["status"]["podIP"].as_str().map(str::to_string)
        })
        .expect("late pod got an IP");
    let reply = lab
        .eventually(Duration::from_secs(30), || {
            lab.probe("client", &format!("tcp://{late_ip}:8080"))
        })
        .expect("the pod created while the agent was down is reachable");
    assert_eq!(reply["pod"], "late");
}

#[test]
fn control_plane_restart_keeps_every_object() {
    let lab = TestLab::up(&["--nodes", "2"]);
    lab.apply(TWO_PODS);
    let before = lab.get_json(&["pods"]);
    lab.ok(&["lab", "control-plane", "restart"]);
    let after = lab.get_json(&["pods"]);
    let names = |v: &serde_json::Value| {
        let mut n: Vec<(String, String, String)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                    p["status"]["podIP"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        n.sort();
        n
    };
    assert_eq!(names(&before), names(&after));
    // The pods still answer (the restarted pod runner adopted them, not restarted them).
    let ip = pod_ip(&lab, "server");
    let reply = lab
        .probe("client", &format!("tcp://{ip}:8080"))
        .expect("server answers");
    assert_eq!(reply["pod"], "server");
}

fn leftovers(lab: &str) -> Vec<String> {
    let prefix = format!("sarasa-{lab}-");
    let mut found: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    if std::path::Path::new("/var/lib/sarasa").join(lab).exists() {
        found.push(format!("/var/lib/sarasa/{lab}"));
    }
    // Processes started for this lab carry `--lab NAME` or run in its namespaces.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args
                .windows(2)
                .any(|w| w[0] == b"--lab" && w[1] == lab.as_bytes())
            {
                found.push(format!("process {}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn two_labs_coexist_and_down_leaves_nothing() {
    let a = TestLab::up(&["--nodes", "1"]);
    let b = TestLab::up(&["--nodes", "1", "--backend", "host-gw"]);
    a.apply(TWO_PODS.split("---").next().unwrap());
    b.apply(TWO_PODS.split("---").next().unwrap());
    let ip_a = pod_ip(&a, "client");
    assert!(a
        .probe("node/node-1", &format!("tcp://{ip_a}:8080"))
        .is_some());
    let ip_b = pod_ip(&b, "client");
    assert!(b
        .probe("node/node-1", &format!("tcp://{ip_b}:8080"))
        .is_some());
    let (na, nb) = (a.name.clone(), b.name.clone());
    drop(a);
    assert!(leftovers(&na).is_empty(), "{:?}", leftovers(&na));
    // b is untouched by a's removal.
    assert!(b
        .probe("node/node-1", &format!("tcp://{ip_b}:8080"))
        .is_some());
    drop(b);
    assert!(leftovers(&nb).is_empty(), "{:?}", leftovers(&nb));
}

#[test]
fn bad_input_is_refused_clearly_and_applies_nothing() {
    let lab = TestLab::up(&["--nodes", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    // Malformed YAML in the second document: the first must not be applied either.
    let bad = write(
        "bad.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: first}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: x\n  labels: [\n",
    );
    let out = lab.run(&["apply", "-f", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml") && err.contains("line"), "{err}");
    assert!(err.contains('2'), "names the document: {err}");
    assert!(!lab.run(&["get", "namespace", "first"]).status.success());

    let unknown = write(
        "unknown.yaml",
        "apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n",
    );
    let out = lab.run(&["apply", "-f", &unknown]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Gizmo"));

    let port = write(
        "port.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: second}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 70000}]\n",
    );
    let out = lab.run(&["apply", "-f", &port]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port"), "{err}");
    assert!(!lab.run(&["get", "namespace", "second"]).status.success());

    let policy = write(
        "policy.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]\n",
    );
    let out = lab.run(&["apply", "-f", &policy]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cidr"));

    let selector = write(
        "sel.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  podSelector: {matchExpressions: [{key: a, operator: Near, values: [b]}]}\n",
    );
    let out = lab.run(&["apply", "-f", &selector]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("operator"));

    // lab up on a running lab, exec into a missing pod.
    let out = lab.run(&["lab", "up", "--nodes", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already up"));
    let out = lab.run(&["exec", "nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[test]
fn commands_without_a_lab_fail_clearly() {
    let name = unique_lab();
    for args in [
        vec!["lab", "status"],
        vec!["get", "pods"],
        vec!["exec", "external", "--", "true"],
        vec!["lab", "down"],
    ] {
        let out = Command::new(sarasa_bin())
            .arg("--lab")
            .arg(&name)
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded without a lab");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("lab up") || err.contains("not up"),
            "{args:?}: {err}"
        );
    }
}
