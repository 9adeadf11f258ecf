//! `sarasa clusterset` for the cluster-set tests: running it, its status, and a guard that
//! deletes the test's set when the test ends, passed or not (before the labs go down).

use std::process::{Command, Output};

use serde_json::Value;

use super::{sarasa_bin, TestLab};

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

/// Waits (30 s) until nothing of a cluster set stays on `lab`'s `nodes`: no `proto 84`
/// routes, no cable (`sarasa-cable`, `sarasa-wg`), no route agent's VXLAN (`sarasa-gw`).
pub fn nothing_of_the_set_left(lab: &TestLab, nodes: &[&str]) {
    for node in nodes {
        let ns = format!("sarasa-{}-{node}", lab.name);
        let ip = |args: &[&str]| {
            Command::new("ip")
                .arg("-n")
                .arg(&ns)
                .args(args)
                .output()
                .expect("ip")
        };
        let left = lab.eventually(std::time::Duration::from_secs(30), || {
            let routes = ip(&["route", "show", "proto", "84"]).stdout;
            let devices = ["sarasa-cable", "sarasa-wg", "sarasa-gw"]
                .into_iter()
                .filter(|d| ip(&["link", "show", d]).status.success())
                .collect::<Vec<_>>();
            (routes.is_empty() && devices.is_empty()).then_some(())
        });
        assert!(
            left.is_some(),
            "{node} keeps cluster-set routes, a cable or the route agent's VXLAN"
        );
    }
}

/// A `sarasa/serve` pod `web` on `node` behind a Service `web` (port 80 → 8080, named
/// `http`) and its ServiceExport, applied in `lab`.
pub fn export_web(lab: &TestLab, node: &str) {
    lab.apply(&format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n\
         spec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {{name: web}}\n",
        super::serve_pod("web", node, "web"),
    ));
}

/// The ClusterSetIP of ServiceImport `default/name` in `lab`, once it has one (30 s).
pub fn cluster_set_ip(lab: &TestLab, name: &str) -> Option<String> {
    lab.eventually(std::time::Duration::from_secs(30), || {
        let i = lab.object("serviceimports", "default", name)?;
        i["spec"]["ips"][0].as_str().map(String::from)
    })
}

/// A cluster's global CIDR in `status -o json` (`key`: `globalCidr`, or `globalCidrV6`).
pub fn global_cidr(st: &Value, cluster: &str, key: &str) -> ipnet::IpNet {
    st["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clusterId"] == cluster)
        .and_then(|c| c[key].as_str())
        .unwrap_or_else(|| panic!("{cluster}'s {key} in {st:#}"))
        .parse()
        .unwrap()
}

/// Pod `client` of `lab` probes `target` (30 s) and gets a reply from pod `server`; returns the
/// address the server saw the client at. Panics with the set's status otherwise.
pub fn reached_from(lab: &TestLab, client: &str, target: &str, server: &str, set: &str) -> String {
    let reply = lab
        .eventually(std::time::Duration::from_secs(30), || {
            lab.probe(client, target)
        })
        .unwrap_or_else(|| panic!("{target} from {client}:\n{}", ok(&["status", set])));
    assert_eq!(reply["pod"], server, "{target} from {client}");
    super::client_ip(&reply)
}
