//! `sarasa clusterset` for the cluster-set tests: running it, its status, and a guard that
//! deletes the test's set when the test ends, passed or not (before the labs go down).

use std::process::{Command, Output};

use serde_json::Value;

use super::sarasa_bin;

pub fn clusterset(args: &[&str]) -> Output {
    Command::new(sarasa_bin())
        .arg("clusterset")
        .args(args)
        .output()
        .expect("run sarasa clusterset")
}

/// Its stdout (panics when it fails).
pub fn ok(args: &[&str]) -> String {
    let out = clusterset(args);
    assert!(
        out.status.success(),
        "clusterset {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Its stderr (panics when it succeeds).
pub fn refused(args: &[&str]) -> String {
    let out = clusterset(args);
    assert!(!out.status.success(), "clusterset {args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `status SET -o json`.
pub fn status(set: &str) -> Value {
    serde_json::from_str(&ok(&["status", set, "-o", "json"])).expect("status JSON")
}

/// The node holding `cluster`'s gateway Lease, per `status`.
pub fn active_gateway(st: &Value, cluster: &str) -> Option<String> {
    st["gateways"]
        .as_array()?
        .iter()
        .find(|g| g["clusterId"] == cluster && g["role"] == "active")
        .map(|g| g["node"].as_str().unwrap_or_default().to_string())
}

pub struct SetGuard(pub String);

impl Drop for SetGuard {
    fn drop(&mut self) {
        let _ = clusterset(&["delete", &self.0]);
    }
}

pub fn wan_exists(set: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(&format!("sarasa-wan-{set}")))
}
