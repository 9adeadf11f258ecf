//! Limits in a running lab: `apply --wait` returns at once when the change asks nothing of the
//! agents (a Deployment at 0 replicas, an unchanged re-apply), and a Deployment asking for
//! `replicas: 2147483647` is refused naming the field, with no pod made.

mod common;

use std::time::{Duration, Instant};

use common::TestLab;

const ZERO: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: idle}
spec:
  replicas: 0
  selector: {matchLabels: {app: idle}}
  template:
    metadata: {labels: {app: idle}}
    spec: {containers: [{name: c, image: sarasa}]}
";

const HUGE: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: huge}
spec:
  replicas: 2147483647
  selector: {matchLabels: {app: huge}}
  template:
    metadata: {labels: {app: huge}}
    spec: {containers: [{name: c, image: sarasa}]}
";

fn apply_wait(lab: &TestLab, yaml: &str, timeout: &str) -> (std::process::Output, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, yaml).expect("write manifest");
    let t = Instant::now();
    let out = lab.run(&[
        "apply",
        "-f",
        f.to_str().expect("utf8"),
        "--wait",
        "--timeout",
        timeout,
    ]);
    (out, t.elapsed())
}

#[test]
fn apply_wait_returns_when_agents_have_nothing_to_do_and_huge_replicas_are_refused() {
    let lab = TestLab::up(&["--nodes", "1"]);
    // Created at 0 replicas: no pod to wait for and nothing an agent programs.
    let (out, took) = apply_wait(&lab, ZERO, "30s");
    assert!(
        out.status.success(),
        "apply --wait of a 0-replica Deployment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // Unchanged: the same again returns at once too.
    let (out, took) = apply_wait(&lab, ZERO, "30s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchanged"));
    assert!(took < Duration::from_secs(20), "took {took:?}");

    let (out, _) = apply_wait(&lab, HUGE, "10s");
    assert!(!out.status.success(), "replicas 2147483647 was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.replicas") && err.contains("1000"),
        "the refusal names the field and the bound: {err}"
    );
    assert!(lab.pods("default", "app", "huge").is_empty());
}
