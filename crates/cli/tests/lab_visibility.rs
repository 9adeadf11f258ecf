//! Lab end-to-end: what `sarasa lab graph` and `sarasa drops` show of a real 3-node lab.
//! Namespace `vis` holds web-1 (node-1) and web-2 (node-2) behind Service `web`, and a client
//! (node-3); NetworkPolicy `web-from-frontend` lets only `role=frontend` pods reach the web
//! pods, so the client is denied. The graph must show every node, pod and the Service with
//! their addresses in all three forms; a denied connection must appear in `drops -o json`
//! (right pods, port, direction, policy, node), and `drops --follow` must print a new one.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestLab;
use serde_json::{json, Value};

const NS: &str = "vis";
const POLICY: &str = "web-from-frontend";

fn pod(name: &str, node: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": NS, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "serve", "image": "sarasa/serve",
            "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}]}
    })
}

fn manifests() -> String {
    [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        pod("web-1", "node-1", json!({"app": "web"})),
        pod("web-2", "node-2", json!({"app": "web"})),
        pod("client", "node-3", json!({"role": "client"})),
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": NS, "name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": NS, "name": POLICY},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}]}}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n---\n")
}

/// What the lab's API says: pods (name → IP, node), nodes (name → podCIDR, InternalIP), the
/// Service's ClusterIP.
struct Facts {
    pods: Vec<(String, String, String)>,
    nodes: Vec<(String, String, String)>,
    cluster_ip: String,
}

fn facts(lab: &TestLab) -> Facts {
    let pods = ["web-1", "web-2", "client"]
        .iter()
        .map(|name| {
            let p = lab.object("pods", NS, name).expect("pod exists");
            let ip = p["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(!ip.is_empty(), "pod {name} has no IP");
            let node = p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (name.to_string(), ip, node)
        })
        .collect();
    let nodes = lab.get_json(&["nodes"])["items"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let addr = n["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
                .unwrap_or_default()
                .to_string();
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                n["spec"]["podCIDR"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                addr,
            )
        })
        .collect();
    let svc = lab.object("services", NS, "web").expect("service exists");
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Facts {
        pods,
        nodes,
        cluster_ip,
    }
}

/// The checks every form of the graph must pass: every node with its address and podCIDR,
/// every pod with its address, the Service with its ClusterIP.
fn assert_shows_everything(form: &str, text: &str, f: &Facts) {
    assert_eq!(f.nodes.len(), 3);
    for (name, cidr, addr) in &f.nodes {
        for want in [name, cidr, addr] {
            assert!(
                !want.is_empty() && text.contains(want.as_str()),
                "graph -o {form} lacks {want:?} of node {name}:\n{text}"
            );
        }
    }
    for (name, ip, _) in &f.pods {
        for want in [format!("{NS}/{name}"), ip.clone()] {
            assert!(
                text.contains(&want),
                "graph -o {form} lacks {want:?}:\n{text}"
            );
        }
    }
    for want in [
        format!("svc {NS}/web"),
        f.cluster_ip.clone(),
        "203.0.113.10".into(),
    ] {
        assert!(
            text.contains(&want),
            "graph -o {form} lacks {want:?}:\n{text}"
        );
    }
}

/// Every text node and attribute of an SVG document, joined (titles carry full names).
fn svg_text(svg: &str) -> String {
    let doc = roxmltree::Document::parse(svg).expect("graph -o svg is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The drop events `sarasa drops ARGS -o json` prints.
fn drops(lab: &TestLab, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["drops", "-o", "json"];
    a.extend_from_slice(args);
    lab.ok(&a)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

/// The event of `client` → `to` on tcp/80, dropped at ingress on `node` by our policy.
fn is_our_drop(e: &Value, to: &str, to_ip: &str, client_ip: &str, node: &str) -> bool {
    e["src"]["pod"] == format!("{NS}/client")
        && e["src"]["ip"] == client_ip
        && e["dst"]["pod"] == format!("{NS}/{to}")
        && e["dst"]["ip"] == to_ip
        && e["pod"] == format!("{NS}/{to}")
        && e["direction"] == "ingress"
        && e["port"] == 80
        && e["protocol"] == "tcp"
        && e["node"] == node
        && e["policies"] == json!([format!("{NS}/{POLICY}")])
        && e["time"].as_str().is_some_and(|t| t.ends_with('Z'))
}

fn denied_probe(lab: &TestLab, ip: &str) {
    let bin = common::sarasa_bin();
    let out = lab.run(&[
        "exec",
        "-n",
        NS,
        "client",
        "--",
        bin.to_str().expect("utf8"),
        "probe",
        "--timeout",
        "1s",
        &format!("tcp://{ip}:80"),
    ]);
    assert!(!out.status.success(), "client -> {ip}:80 must be denied");
}

#[test]
fn graph_shows_the_lab_and_drops_name_the_policy() {
    let lab = TestLab::up(&["--nodes", "3"]);
    lab.apply(&manifests());
    let f = facts(&lab);
    let ip = |name: &str| {
        f.pods
            .iter()
            .find(|p| p.0 == name)
            .map(|p| p.1.clone())
            .expect("known pod")
    };
    assert_eq!(
        f.pods.iter().map(|p| p.2.as_str()).collect::<Vec<_>>(),
        ["node-1", "node-2", "node-3"]
    );

    // text: everything, and the Service's endpoints once the EndpointSlice has both pods.
    let text = lab
        .eventually(Duration::from_secs(30), || {
            let t = lab.ok(&["lab", "graph"]);
            let both = ["web-1", "web-2"]
                .iter()
                .all(|p| t.contains(&format!("-> {}:80  {NS}/{p}  ready", ip(p))));
            both.then_some(t)
        })
        .unwrap_or_else(|| {
            panic!(
                "graph never listed both endpoints of {NS}/web:\n{}",
                lab.ok(&["lab", "graph"])
            )
        });
    assert_shows_everything("text", &text, &f);
    assert!(text.contains("vtep sarasa.1 vni 1 mac "), "{text}");
    assert!(text.contains("node-1 <-> node-3  vxlan vni 1"), "{text}");

    let dot = lab.ok(&["lab", "graph", "-o", "dot"]);
    assert!(dot.starts_with("digraph "), "{dot}");
    assert_shows_everything("dot", &dot, &f);
    assert!(dot.contains(&format!("\"svc/{NS}/web\" -> \"pod/{NS}/web-1\"")));
    assert!(dot.contains(&format!("\"svc/{NS}/web\" -> \"pod/{NS}/web-2\"")));

    let svg = lab.ok(&["lab", "graph", "-o", "svg"]);
    assert_shows_everything("svg", &svg_text(&svg), &f);

    // A denied connection to web-1 (node-1) is reported by node-1's agent.
    let client_ip = ip("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        denied_probe(&lab, &ip("web-1"));
        let events = drops(&lab, &["-n", NS]);
        if events
            .iter()
            .any(|e| is_our_drop(e, "web-1", &ip("web-1"), &client_ip, "node-1"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no drop event for client -> web-1 naming {POLICY}; drops -n {NS} gave {events:#?}"
        );
    }
    // -n filters by namespace; text names the same facts on one line.
    assert!(drops(&lab, &["-n", "kube-system"]).is_empty());
    let line = lab
        .ok(&["drops"])
        .lines()
        .find(|l| l.contains(&format!("-> {NS}/web-1 ")))
        .map(str::to_string)
        .expect("a text line for the drop");
    for want in [
        "node-1",
        "ingress",
        &format!("{NS}/client ({client_ip})"),
        &format!("{NS}/web-1 ({}:80/tcp)", ip("web-1")),
        &format!("by {NS}/{POLICY}"),
    ] {
        assert!(line.contains(want), "{want:?} missing from {line:?}");
    }

    // --follow prints a new drop (client -> web-2, on node-2) as it happens.
    let mut child = Command::new(common::sarasa_bin())
        .args([
            "--lab", &lab.name, "drops", "--follow", "-o", "json", "-n", NS,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting drops --follow");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let found = loop {
        denied_probe(&lab, &ip("web-2"));
        let mut hit = false;
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            let e: Value = serde_json::from_str(&line).expect("one JSON object per line");
            hit |= is_our_drop(&e, "web-2", &ip("web-2"), &client_ip, "node-2");
            seen.push(e);
        }
        if hit || Instant::now() >= deadline {
            break hit;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    assert!(
        found,
        "drops --follow never printed client -> web-2: {seen:#?}"
    );
}
