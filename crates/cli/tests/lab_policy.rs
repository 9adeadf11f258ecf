//! Lab end-to-end: the Kubernetes e2e NetworkPolicy scenarios in a 3-node lab. Namespaces x, y,
//! z each hold pods a (node-1), b (node-2) and c (node-3) serving TCP and UDP on 80 and 81.
//! Every scenario applies policies (or label changes), then runs
//! `sarasa policy matrix -n x,y,z --probe`, which must find the datapath equal to the model
//! (exit 0), AND checks every cell of the model against the Kubernetes semantics written out
//! here per scenario, so a wrong model cannot pass by agreeing with a wrong datapath.
//!
//! A pod always reaches itself (its own address stays on its loopback), so the diagonal is
//! always allowed. Scenarios collect their failures and each test reports all of them at the
//! end, model errors and datapath differences separately.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestLab;
use serde_json::{json, Value};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// One pod of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct P {
    ns: String,
    pod: String,
}

impl P {
    fn is(&self, key: &str) -> bool {
        key.split_once('/') == Some((self.ns.as_str(), self.pod.as_str()))
    }
}

/// The namespace objects; y carries an extra `team: blue` label (for Exists/DoesNotExist).
fn namespace(ns: &str, extra: &[(&str, &str)]) -> Value {
    let mut labels = json!({ "ns": ns });
    if ns == "y" {
        labels["team"] = json!("blue");
    }
    for (k, v) in extra {
        labels[*k] = json!(v);
    }
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})
}

/// Pod `ns/name` pinned to node-1/2/3 for a/b/c. The TCP port named `http` is 80 on a and b
/// but 81 on c, so a named port resolves per destination pod.
fn pod(ns: &str, name: &str, extra: &[(&str, &str)]) -> Value {
    let node = match name {
        "a" => "node-1",
        "b" => "node-2",
        _ => "node-3",
    };
    let (tcp80, tcp81) = if name == "c" {
        ("serve-80-tcp", "http")
    } else {
        ("http", "serve-81-tcp")
    };
    let mut labels = json!({ "pod": name });
    for (k, v) in extra {
        labels[*k] = json!(v);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "serve", "image": "sarasa/serve", "ports": [
            {"name": tcp80, "containerPort": 80, "protocol": "TCP"},
            {"name": "serve-80-udp", "containerPort": 80, "protocol": "UDP"},
            {"name": tcp81, "containerPort": 81, "protocol": "TCP"},
            {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"}
        ]}]}
    })
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec
    })
}

/// JSON documents as one YAML stream (JSON is YAML).
fn yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

struct Suite {
    lab: TestLab,
    /// `ns/pod` → pod IP.
    ips: BTreeMap<String, String>,
    /// node → podCIDR.
    pod_cidrs: BTreeMap<String, String>,
    failures: RefCell<Vec<String>>,
    syncs: RefCell<u32>,
}

impl Suite {
    fn up() -> Suite {
        let lab = TestLab::up(&["--nodes", "3"]);
        let mut docs: Vec<Value> = NAMESPACES.iter().map(|ns| namespace(ns, &[])).collect();
        for ns in NAMESPACES {
            for p in PODS {
                docs.push(pod(ns, p, &[]));
            }
        }
        lab.apply(&yaml(&docs));
        let mut ips = BTreeMap::new();
        for ns in NAMESPACES {
            for item in lab.get_json(&["pods", "-n", ns])["items"]
                .as_array()
                .expect("items")
            {
                let name = item["metadata"]["name"].as_str().unwrap_or_default();
                let node = item["spec"]["nodeName"].as_str().unwrap_or_default();
                let want = match name {
                    "a" => "node-1",
                    "b" => "node-2",
                    _ => "node-3",
                };
                assert_eq!(node, want, "pod {ns}/{name} placement");
                let ip = item["status"]["podIP"].as_str().unwrap_or_default();
                assert!(!ip.is_empty(), "pod {ns}/{name} has no IP");
                ips.insert(format!("{ns}/{name}"), ip.to_string());
            }
        }
        assert_eq!(ips.len(), 9, "{ips:?}");
        let mut pod_cidrs = BTreeMap::new();
        for n in lab.get_json(&["nodes"])["items"].as_array().expect("nodes") {
            pod_cidrs.insert(
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                n["spec"]["podCIDR"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        Suite {
            lab,
            ips,
            pod_cidrs,
            failures: RefCell::new(Vec::new()),
            syncs: RefCell::new(0),
        }
    }

    fn ip(&self, key: &str) -> &str {
        &self.ips[key]
    }

    fn apply(&self, docs: &[Value]) {
        self.lab.apply(&yaml(docs));
    }

    /// Returns once every agent has programmed everything written so far (deletes included):
    /// an `apply --wait` of a throwaway namespace annotation.
    fn sync(&self) {
        let n = {
            let mut s = self.syncs.borrow_mut();
            *s += 1;
            *s
        };
        self.apply(&[json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "sync", "annotations": {"sarasa.test/sync": n.to_string()}}})]);
    }

    /// Deletes every NetworkPolicy of x, y and z and waits for the agents to drop them.
    fn reset(&self) {
        for ns in NAMESPACES {
            let list = self.lab.get_json(&["networkpolicies", "-n", ns]);
            for np in list["items"].as_array().into_iter().flatten() {
                let name = np["metadata"]["name"].as_str().unwrap_or_default();
                self.lab.ok(&["delete", "networkpolicy", name, "-n", ns]);
            }
        }
        self.sync();
    }

    fn fail(&self, msg: String) {
        eprintln!("FAILURE: {msg}");
        self.failures.borrow_mut().push(msg);
    }

    /// Runs the probed matrix for `proto`/`port`; checks every model cell against `expect`
    /// (the diagonal is always allowed) and that the measurement equals the model.
    fn check(&self, scenario: &str, proto: &str, port: u16, expect: impl Fn(&P, &P) -> bool) {
        let started = Instant::now();
        let port_s = port.to_string();
        let out = self.lab.run(&[
            "policy",
            "matrix",
            "-n",
            "x,y,z",
            "--port",
            &port_s,
            "--proto",
            proto,
            "--probe",
            "--timeout",
            "1s",
            "--parallel",
            "16",
            "--retries",
            "2",
            "-o",
            "json",
        ]);
        let what = format!("{scenario} [{proto}/{port}]");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let v: Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                self.fail(format!(
                    "{what}: policy matrix printed no JSON ({e}): {stderr}"
                ));
                return;
            }
        };
        let pods: Vec<P> = v["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str()?.split_once('/'))
            .map(|(ns, pod)| P {
                ns: ns.into(),
                pod: pod.into(),
            })
            .collect();
        if pods.len() != 9 {
            self.fail(format!(
                "{what}: matrix has pods {pods:?}, want x,y,z × a,b,c"
            ));
            return;
        }
        let mut wrong = Vec::new();
        for (i, from) in pods.iter().enumerate() {
            for (j, to) in pods.iter().enumerate() {
                let want = from == to || expect(from, to);
                let got = v["model"][i][j].as_bool();
                if got != Some(want) {
                    let cell = &v["cells"][i][j];
                    wrong.push(format!(
                        "{}/{} -> {}/{}: model {}, Kubernetes says {} (ingress isolated by {}, egress by {})",
                        from.ns, from.pod, to.ns, to.pod,
                        sym(got), sym(Some(want)),
                        cell["ingressIsolatedBy"], cell["egressIsolatedBy"]
                    ));
                }
            }
        }
        if !wrong.is_empty() {
            self.fail(format!(
                "{what}: MODEL differs from the Kubernetes semantics:\n  {}",
                wrong.join("\n  ")
            ));
        }
        if !out.status.success() {
            let diffs: Vec<String> = v["differences"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{} -> {}: model {}, measured {}",
                        d["from"].as_str().unwrap_or_default(),
                        d["to"].as_str().unwrap_or_default(),
                        sym(d["model"].as_bool()),
                        sym(d["measured"].as_bool())
                    )
                })
                .collect();
            self.fail(format!(
                "{what}: DATAPATH differs from the model in {} cells:\n  {}\n  {}",
                diffs.len(),
                diffs.join("\n  "),
                stderr.trim()
            ));
        }
        eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
    }

    /// Panics with every failure collected.
    fn finish(self) {
        let failures = self.failures.borrow().clone();
        assert!(
            failures.is_empty(),
            "{} failed checks:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// `sarasa exec -n NS POD -- sarasa probe --timeout 1s URL` succeeded? (`from` is
    /// `ns/pod` or `node/NAME`.)
    fn probe(&self, from: &str, url: &str) -> bool {
        let (ns, pod) = match from.split_once('/').expect("ns/pod") {
            ("node", _) => ("default", from),
            other => other,
        };
        let bin = common::sarasa_bin();
        self.lab
            .run(&[
                "exec",
                "-n",
                ns,
                pod,
                "--",
                bin.to_str().expect("utf8"),
                "probe",
                "--timeout",
                "1s",
                url,
            ])
            .status
            .success()
    }
}

fn sym(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => ".",
        Some(false) => "X",
        None => "?",
    }
}

fn in_ns(ns: &str) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"ns": ns}}})
}

fn pod_sel(pod: &str) -> Value {
    json!({"podSelector": {"matchLabels": {"pod": pod}}})
}

#[test]
fn ingress_policies() {
    let s = Suite::up();

    s.check("no policies", "tcp", 80, |_, _| true);
    s.check("no policies", "udp", 81, |_, _| true);

    // should support a 'default-deny-ingress' policy
    let deny = policy(
        "x",
        "deny-ingress",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    s.apply(std::slice::from_ref(&deny));
    s.check("default-deny-ingress", "tcp", 80, |_, t| t.ns != "x");
    s.check("default-deny-ingress", "udp", 80, |_, t| t.ns != "x");
    // a pod's own node always reaches it; another node is policed like any other source
    let url = format!("tcp://{}:80", s.ip("x/a"));
    assert!(
        s.probe("node/node-1", &url),
        "node-1 -> x/a (its own pod) must be allowed under default-deny-ingress"
    );
    assert!(
        !s.probe("node/node-2", &url),
        "node-2 -> x/a must be denied by default-deny-ingress"
    );
    // several policies select one pod: the union of their rules (allow-all wins)
    s.apply(&[policy(
        "x",
        "allow-all-ingress",
        json!({"podSelector": {}, "ingress": [{}]}),
    )]);
    s.check("deny + allow-all ingress (union)", "tcp", 80, |_, _| true);
    s.reset();

    // should enforce policy to allow traffic from pods within server namespace
    s.apply(&[policy(
        "x",
        "allow-same-ns",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )]);
    s.check("allow from same namespace", "tcp", 80, |f, t| {
        t.ns != "x" || f.ns == "x"
    });
    s.reset();

    // allow traffic only from a different namespace, by namespaceSelector (custom label and the
    // automatic kubernetes.io/metadata.name label)
    s.apply(&[
        policy(
            "x",
            "a-from-y",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [in_ns("y")]}]}),
        ),
        policy(
            "x",
            "b-from-z",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]}),
        ),
    ]);
    s.check("allow from other namespace", "tcp", 80, |f, t| {
        (!t.is("x/a") || f.ns == "y") && (!t.is("x/b") || f.ns == "z")
    });
    s.reset();

    // podSelector AND namespaceSelector in one peer
    let not_x = json!({"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]});
    s.apply(&[policy(
        "x",
        "and",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": not_x, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    s.check("podSelector AND namespaceSelector", "tcp", 80, |f, t| {
        !t.is("x/a") || (f.ns != "x" && f.pod == "b")
    });
    // ... versus two peers (OR); an update of the same policy
    s.apply(&[policy(
        "x",
        "and",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": not_x}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    s.check("podSelector OR namespaceSelector", "tcp", 80, |f, t| {
        !t.is("x/a") || f.ns != "x" || f.pod == "b"
    });
    s.reset();

    // matchExpressions In / NotIn / Exists / DoesNotExist
    s.apply(&[policy(
        "x",
        "expressions",
        json!({
            "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]},
            "ingress": [{"from": [
                {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
                 "podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["c"]}]}},
                {"namespaceSelector": {"matchExpressions": [
                    {"key": "team", "operator": "DoesNotExist"},
                    {"key": "ns", "operator": "In", "values": ["z"]}]},
                 "podSelector": {"matchLabels": {"pod": "c"}}}
            ]}]
        }),
    )]);
    s.check("matchExpressions", "tcp", 80, |f, t| {
        let selected = t.ns == "x" && (t.pod == "a" || t.pod == "b");
        !selected || (f.ns == "y" && f.pod != "c") || (f.ns == "z" && f.pod == "c")
    });
    s.reset();

    // several policies select one pod: union; a default deny for the others
    s.apply(&[
        deny,
        pod_policy_from("x", "a-from-b", "a", vec![pod_sel("b")]),
        pod_policy_from("x", "a-from-z", "a", vec![in_ns("z")]),
    ]);
    s.check("several policies union", "tcp", 80, |f, t| {
        t.ns != "x" || (t.is("x/a") && (f.is("x/b") || f.ns == "z"))
    });
    s.reset();
    s.finish();
}

/// A policy selecting pod `pod` of `ns` for ingress from `peers`.
fn pod_policy_from(ns: &str, name: &str, pod: &str, peers: Vec<Value>) -> Value {
    policy(
        ns,
        name,
        json!({"podSelector": {"matchLabels": {"pod": pod}}, "ingress": [{"from": peers}]}),
    )
}

#[test]
fn egress_policies() {
    let s = Suite::up();

    // default deny egress, plus an allowed "DNS-like" UDP port
    s.apply(&[policy(
        "x",
        "deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )]);
    s.check("default-deny-egress", "tcp", 80, |f, _| f.ns != "x");
    s.apply(&[policy(
        "x",
        "allow-udp-81",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"protocol": "UDP", "port": 81}]}]}),
    )]);
    s.check("deny egress + DNS-like udp/81", "udp", 81, |_, _| true);
    s.check("deny egress + DNS-like udp/81", "tcp", 81, |f, _| {
        f.ns != "x"
    });
    s.check("deny egress + DNS-like udp/81", "udp", 80, |f, _| {
        f.ns != "x"
    });
    // allow all egress
    s.apply(&[policy(
        "x",
        "allow-all-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
    )]);
    s.check("allow-all egress", "tcp", 80, |_, _| true);
    s.reset();

    // default deny all (both directions)
    s.apply(&[policy(
        "x",
        "deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    s.check("default-deny-all", "tcp", 80, |f, t| {
        f.ns != "x" && t.ns != "x"
    });
    s.reset();

    // egress to a pod in another namespace (AND peer)
    s.apply(&[policy(
        "x",
        "a-to-y-b",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                   "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    s.check("egress to other namespace's pod", "tcp", 80, |f, t| {
        !f.is("x/a") || t.is("y/b")
    });
    s.reset();

    // egress and ingress together on one pod; replies of allowed connections pass
    s.apply(&[policy(
        "x",
        "both",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"],
               "ingress": [{"from": [pod_sel("b")]}],
               "egress": [{"to": [in_ns("y")]}]}),
    )]);
    s.check("ingress and egress together", "tcp", 80, |f, t| {
        (!t.is("x/a") || f.is("x/b")) && (!f.is("x/a") || t.ns == "y")
    });
    s.check("ingress and egress together", "udp", 80, |f, t| {
        (!t.is("x/a") || f.is("x/b")) && (!f.is("x/a") || t.ns == "y")
    });
    s.reset();

    // ipBlock with except (pod addresses), ipBlock by a node's podCIDR, and the node underlay
    let cluster = {
        let ip = s.ip("x/a");
        let o: Vec<&str> = ip.split('.').collect();
        format!("{}.{}.0.0/16", o[0], o[1])
    };
    let node2 = s.pod_cidrs["node-2"].clone();
    assert!(!node2.is_empty(), "node-2 has no podCIDR");
    s.apply(&[
        policy(
            "x",
            "a-egress-cidr-except",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": cluster,
                                                   "except": [format!("{}/32", s.ip("y/b"))]}}]}]}),
        ),
        pod_policy_from(
            "x",
            "c-from-node-2-pods",
            "c",
            vec![json!({"ipBlock": {"cidr": node2}})],
        ),
        pod_policy_from(
            "x",
            "b-from-underlay",
            "b",
            vec![json!({"ipBlock": {"cidr": "192.168.33.0/24"}})],
        ),
    ]);
    s.check("ipBlock with except", "tcp", 80, |f, t| {
        (!f.is("x/a") || !t.is("y/b")) && (!t.is("x/c") || f.pod == "b") && !t.is("x/b")
    });
    s.reset();
    s.finish();
}

#[test]
fn port_policies() {
    let s = Suite::up();

    // numeric port (protocol defaults to TCP)
    s.apply(&[policy(
        "x",
        "port-81",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}),
    )]);
    s.check("ingress on port 81", "tcp", 80, |_, t| t.ns != "x");
    s.check("ingress on port 81", "tcp", 81, |_, _| true);
    s.check("ingress on port 81", "udp", 81, |_, t| t.ns != "x");
    s.reset();

    // UDP port
    s.apply(&[policy(
        "x",
        "udp-80",
        json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 80}]}]}),
    )]);
    s.check("ingress on udp/80", "udp", 80, |_, _| true);
    s.check("ingress on udp/80", "tcp", 80, |_, t| t.ns != "x");
    s.reset();

    // named port, resolved per destination pod ("http" is 80 on a and b, 81 on c)
    s.apply(&[policy(
        "x",
        "named-http",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}),
    )]);
    s.check("ingress on named port", "tcp", 80, |_, t| {
        t.ns != "x" || t.pod != "c"
    });
    s.check("ingress on named port", "tcp", 81, |_, t| {
        t.ns != "x" || t.pod == "c"
    });
    s.reset();
    s.apply(&[policy(
        "y",
        "egress-named-http",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]}),
    )]);
    s.check("egress on named port", "tcp", 80, |f, t| {
        f.ns != "y" || t.pod != "c"
    });
    s.check("egress on named port", "tcp", 81, |f, t| {
        f.ns != "y" || t.pod == "c"
    });
    s.reset();

    // port + endPort ranges, and an update of the range
    s.apply(&[policy(
        "x",
        "range",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81, "endPort": 90}]}]}),
    )]);
    s.check("port range 81-90", "tcp", 80, |_, t| t.ns != "x");
    s.check("port range 81-90", "tcp", 81, |_, _| true);
    s.apply(&[policy(
        "x",
        "range",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 70, "endPort": 80}]}]}),
    )]);
    s.check("port range 70-80", "tcp", 80, |_, _| true);
    s.check("port range 70-80", "tcp", 81, |_, t| t.ns != "x");
    s.reset();
    s.finish();
}

#[test]
fn updates_take_effect() {
    let s = Suite::up();

    // policy update and delete
    s.apply(&[pod_policy_from("x", "a-from", "a", vec![pod_sel("b")])]);
    s.check("policy created", "tcp", 80, |f, t| {
        !t.is("x/a") || f.is("x/b")
    });
    s.apply(&[pod_policy_from("x", "a-from", "a", vec![pod_sel("c")])]);
    s.check("policy updated", "tcp", 80, |f, t| {
        !t.is("x/a") || f.is("x/c")
    });
    s.lab.ok(&["delete", "networkpolicy", "a-from", "-n", "x"]);
    s.sync();
    s.check("policy deleted", "tcp", 80, |_, _| true);

    // pod label changes: a peer gains the label the policy allows; a pod gains the label a
    // policy isolates, then loses it
    s.apply(&[
        pod_policy_from(
            "x",
            "a-from-clients",
            "a",
            vec![json!({"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}})],
        ),
        policy(
            "y",
            "isolate-targets",
            json!({"podSelector": {"matchLabels": {"target": "yes"}}, "policyTypes": ["Ingress"]}),
        ),
    ]);
    s.check("before pod label change", "tcp", 80, |_, t| !t.is("x/a"));
    s.apply(&[
        pod("z", "c", &[("role", "client")]),
        pod("y", "b", &[("target", "yes")]),
    ]);
    s.check("after pod label change", "tcp", 80, |f, t| {
        (!t.is("x/a") || f.is("z/c")) && !t.is("y/b")
    });
    s.apply(&[pod("z", "c", &[]), pod("y", "b", &[])]);
    s.check("after pod labels removed", "tcp", 80, |_, t| !t.is("x/a"));
    s.reset();

    // namespace label changes
    s.apply(&[pod_policy_from(
        "x",
        "c-from-red",
        "c",
        vec![json!({"namespaceSelector": {"matchLabels": {"team": "red"}}})],
    )]);
    s.check("before namespace label change", "tcp", 80, |_, t| {
        !t.is("x/c")
    });
    s.apply(&[namespace("z", &[("team", "red")])]);
    s.check("namespace z labelled team=red", "tcp", 80, |f, t| {
        !t.is("x/c") || f.ns == "z"
    });
    s.apply(&[namespace("z", &[]), namespace("y", &[("team", "red")])]);
    s.check("label moved from z to y", "tcp", 80, |f, t| {
        !t.is("x/c") || f.ns == "y"
    });
    s.apply(&[namespace("y", &[])]);
    s.reset();
    s.finish();
}

/// The policy drop events in a node agent's log: lines `policy-drop {JSON}` (see the agent's
/// `droplog` module).
fn drop_events(s: &Suite, node: &str) -> Vec<Value> {
    s.lab
        .agent_log(node)
        .lines()
        .filter_map(|l| serde_json::from_str(l.split_once("policy-drop ")?.1).ok())
        .collect()
}

/// Probes `from` → `to` on tcp/80 (must be denied) until the agent log of `node` has the drop
/// event for it: dropped at `pod` in `direction`, naming exactly `policies`; 15 s at most.
fn expect_drop_event(
    s: &Suite,
    node: &str,
    (from, to): (&str, &str),
    direction: &str,
    pod: &str,
    policies: &[&str],
) {
    let url = format!("tcp://{}:80", s.ip(to));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut want: Vec<&str> = policies.to_vec();
    want.sort_unstable();
    loop {
        assert!(!s.probe(from, &url), "{from} -> {to} must be denied");
        let events = drop_events(s, node);
        let ours: Vec<&Value> = events
            .iter()
            .filter(|e| e["src"]["pod"] == from && e["dst"]["pod"] == to)
            .collect();
        let matches = |e: &&Value| {
            let mut got: Vec<&str> = e["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            got.sort_unstable();
            e["direction"] == direction
                && e["pod"] == pod
                && e["port"] == 80
                && e["protocol"]
                    .as_str()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                    == Some("tcp")
                && got == want
        };
        if ours.iter().any(matches) {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "no {direction} drop event at {pod} naming {want:?} for {from} -> {to} in the \
                 agent log of {node}; events for this flow: {ours:?}; all events: {}",
                events.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn drop_events_name_the_isolating_policy() {
    let s = Suite::up();
    s.apply(&[
        policy(
            "x",
            "deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
        policy(
            "x",
            "b-from-z",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{"from": [in_ns("z")]}]}),
        ),
        policy(
            "y",
            "deny-egress",
            json!({"podSelector": {"matchLabels": {"pod": "c"}}, "policyTypes": ["Egress"]}),
        ),
    ]);
    // ingress: dropped at the destination's node (x/b on node-2), naming both policies that
    // select x/b for ingress (and not y's egress policy)
    expect_drop_event(
        &s,
        "node-2",
        ("y/a", "x/b"),
        "ingress",
        "x/b",
        &["x/deny-ingress", "x/b-from-z"],
    );
    // egress: dropped at the source's node (y/c on node-3)
    expect_drop_event(
        &s,
        "node-3",
        ("y/c", "z/a"),
        "egress",
        "y/c",
        &["y/deny-egress"],
    );
}

#[test]
fn bad_input_is_rejected_and_policies_stay_enforced() {
    let s = Suite::up();
    let good = pod_policy_from("x", "a-from-b", "a", vec![pod_sel("b")]);
    s.apply(&[
        policy(
            "x",
            "deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
        good,
    ]);
    let expect = |f: &P, t: &P| t.ns != "x" || (t.is("x/a") && f.is("x/b"));
    s.check("before bad input", "tcp", 80, expect);

    let bad = [
        (
            json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Near", "values": ["a"]}]}}),
            "spec.podSelector.matchExpressions[0].operator",
        ),
        (
            json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In"}]}}),
            "spec.podSelector.matchExpressions[0].values",
        ),
        (
            json!({"podSelector": {"matchLabels": {"pod": "bad value!"}}}),
            "spec.podSelector.matchLabels",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]}),
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.245.0.0/24"]}}]}]}),
            "spec.egress[0].to[0].ipBlock.except[0]",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 81}]}]}),
            "spec.ingress[0].ports[0].endPort",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP", "port": 80}]}]}),
            "spec.ingress[0].ports[0].protocol",
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    let file = file.to_str().expect("utf8");
    // new invalid policies, and an invalid update of an existing one
    for (name, (spec, field)) in ["bad", "a-from-b"]
        .iter()
        .flat_map(|n| bad.iter().map(move |b| (*n, b)))
    {
        std::fs::write(file, yaml(&[policy("x", name, spec.clone())])).expect("write");
        let out = s.lab.run(&["apply", "-f", file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "apply of {name} with {spec} was accepted"
        );
        assert!(
            stderr.contains(field) && stderr.contains("invalid"),
            "the rejection of {spec} does not name {field}: {stderr}"
        );
    }
    let names: Vec<String> = s.lab.get_json(&["networkpolicies", "-n", "x"])["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(names.len(), 2, "only the valid policies exist: {names:?}");
    s.sync();
    s.check("after bad input", "tcp", 80, expect);
    s.finish();
}

#[test]
fn service_traffic_is_judged_on_pod_addresses() {
    let s = Suite::up();
    s.apply(&[
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"namespace": "x", "name": "web"},
               "spec": {"selector": {"pod": "b"}, "ports": [{"port": 8080, "targetPort": 80, "protocol": "TCP"}]}}),
        // x/b: only y/a may connect
        pod_policy_from(
            "x",
            "b-from-y-a",
            "b",
            vec![json!({"namespaceSelector": {"matchLabels": {"ns": "y"}},
                        "podSelector": {"matchLabels": {"pod": "a"}}})],
        ),
        // z/b: egress only to pods of x (the Service address is no pod: judged after DNAT)
        policy(
            "z",
            "b-to-x",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [in_ns("x")]}]}),
        ),
    ]);
    let svc = s.lab.get_json(&["services", "web", "-n", "x"]);
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let url = format!("tcp://{cluster_ip}:8080");
    let reached = s.lab.eventually(Duration::from_secs(15), || {
        s.probe("y/a", &url).then_some(())
    });
    assert!(
        reached.is_some(),
        "y/a -> Service {url} -> x/b is allowed but failed"
    );
    assert!(
        !s.probe("z/a", &url),
        "z/a -> Service -> x/b must be denied"
    );
    assert!(
        !s.probe("x/c", &url),
        "x/c -> Service -> x/b must be denied"
    );
    // z/b's egress allows x's pods: via the Service it is judged on x/b, whose ingress only
    // allows y/a, so denied at ingress; its egress to y is denied
    assert!(
        !s.probe("z/b", &url),
        "z/b -> Service -> x/b denied by x/b-from-y-a"
    );
    s.check("service policies, pod to pod", "tcp", 80, |f, t| {
        (!t.is("x/b") || f.is("y/a")) && (!f.is("z/b") || t.ns == "x")
    });
    // now allow z/b at x/b's ingress: through the Service it passes both ends
    s.apply(&[pod_policy_from(
        "x",
        "b-from-z-b",
        "b",
        vec![json!({"namespaceSelector": {"matchLabels": {"ns": "z"}},
                    "podSelector": {"matchLabels": {"pod": "b"}}})],
    )]);
    assert!(
        s.probe("z/b", &url),
        "z/b -> Service -> x/b is allowed at both ends (egress judged on x/b's address)"
    );
    s.finish();
}
