//! Lab end-to-end: `sarasa trace` against real packets. A 3-node lab holds pods on every node in
//! two namespaces, Services of every kind (ClusterIP, NodePort with Cluster and Local traffic
//! policy, LoadBalancer, one without endpoints) and NetworkPolicies that allow some flows and
//! deny others. Over 100 flows — pod to pod on one node and across nodes, pod to Service, node
//! to Service and pod, external to NodePort and LoadBalancer, pod to the internet — the verdict
//! trace computes from the node plans must equal what a real probe finds, its endpoints must be
//! the Service's ready endpoints, and every pod a probe reaches through a Service must be one
//! of trace's candidates. Failures are collected and reported together.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestLab;
use serde_json::Value;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {ns: y}}
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: a, labels: {pod: a}}
spec: {nodeName: node-1, containers: [{name: s, image: sarasa/serve, ports: [{containerPort: 80, protocol: TCP}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: b, labels: {pod: b, app: lb}}
spec: {nodeName: node-1, containers: [{name: s, image: sarasa/serve, ports: [{containerPort: 80, protocol: TCP}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: c, labels: {pod: c, app: web}}
spec: {nodeName: node-2, containers: [{name: s, image: sarasa/serve, ports: [{containerPort: 80, protocol: TCP}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: d, labels: {pod: d, app: web}}
spec: {nodeName: node-3, containers: [{name: s, image: sarasa/serve, ports: [{containerPort: 80, protocol: TCP}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: y, name: e, labels: {pod: e, app: echo}}
spec: {nodeName: node-2, containers: [{name: s, image: sarasa/serve, ports: [{containerPort: 80, protocol: TCP}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: y, name: f, labels: {pod: f, app: echo}}
spec: {nodeName: node-3, containers: [{name: s, image: sarasa/serve, ports: [{containerPort: 80, protocol: TCP}, {containerPort: 81, protocol: UDP}]}]}
---
apiVersion: v1
kind: Service
metadata: {namespace: x, name: web}
spec: {type: NodePort, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {namespace: x, name: local}
spec: {type: NodePort, externalTrafficPolicy: Local, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 80, nodePort: 30081}]}
---
apiVersion: v1
kind: Service
metadata: {namespace: x, name: lb}
spec: {type: LoadBalancer, selector: {app: lb}, ports: [{name: http, port: 80, targetPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {namespace: x, name: empty}
spec: {selector: {app: nothing}, ports: [{name: http, port: 80, targetPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {namespace: y, name: echo}
spec: {selector: {app: echo}, ports: [{name: http, port: 80, targetPort: 80}, {name: dns, port: 81, targetPort: 81, protocol: UDP}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: b-from-a}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: y, name: echo-from-x}
spec:
  podSelector: {matchLabels: {app: echo}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}]}]
"#;

const PODS: [(&str, &str); 6] = [
    ("x", "a"),
    ("x", "b"),
    ("x", "c"),
    ("x", "d"),
    ("y", "e"),
    ("y", "f"),
];

/// One flow: trace arguments and the probe that checks them.
#[derive(Debug, Clone)]
struct Flow {
    /// `--from`: `ns/pod`, `node/NAME` or `external`.
    from: String,
    /// `--to`.
    to: String,
    /// The address and port the probe connects to.
    addr: String,
    port: u16,
    udp: bool,
}

fn flow(from: &str, to: &str, addr: &str, port: u16, udp: bool) -> Flow {
    Flow {
        from: from.into(),
        to: to.into(),
        addr: addr.into(),
        port,
        udp,
    }
}

/// Where the probe runs for a trace source (`sarasa exec` takes a pod's name with `-n NS`).
fn exec_target(from: &str) -> String {
    match from.split_once('/') {
        Some(("node", _)) | None => from.to_string(),
        Some((_, pod)) => pod.to_string(),
    }
}

fn probe_args(f: &Flow) -> String {
    let host = if f.addr.contains(':') {
        format!("[{}]", f.addr)
    } else {
        f.addr.clone()
    };
    format!("{}://{host}:{}", if f.udp { "udp" } else { "tcp" }, f.port)
}

/// `sarasa exec [-n NS] TARGET -- sarasa probe --timeout T URL`: Ok(reply) or Err(text).
fn probe(lab: &TestLab, f: &Flow, timeout: &str) -> Result<Value, String> {
    let bin = common::sarasa_bin();
    let mut args: Vec<String> = vec!["exec".into()];
    if let Some((ns, _)) = f.from.split_once('/').filter(|(k, _)| *k != "node") {
        args.extend(["-n".into(), ns.into()]);
    }
    args.push(exec_target(&f.from));
    args.extend([
        "--".into(),
        bin.to_str().expect("utf8").into(),
        "probe".into(),
        "--timeout".into(),
        timeout.into(),
        probe_args(f),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.run(&refs);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        serde_json::from_str(stdout.lines().next().unwrap_or_default())
            .map_err(|e| format!("reply is not JSON ({e}): {stdout}"))
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn trace(lab: &TestLab, f: &Flow) -> Value {
    let port = f.port.to_string();
    let mut args = vec![
        "trace", "--from", &f.from, "--to", &f.to, "--port", &port, "-o", "json",
    ];
    if f.udp {
        args.extend(["--proto", "udp"]);
    }
    let out = lab.run(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "trace {f:?} gave no JSON ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Every ready `address:port` of a Service's EndpointSlices, for each of the slices' ports.
fn ready_endpoints(lab: &TestLab, ns: &str, service: &str) -> BTreeSet<String> {
    let slices = lab.get_json(&["endpointslices", "-n", ns]);
    let mut out = BTreeSet::new();
    for s in slices["items"].as_array().into_iter().flatten() {
        if s["metadata"]["labels"]["kubernetes.io/service-name"] != service {
            continue;
        }
        let ports: Vec<u64> = s["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_u64())
            .collect();
        for e in s["endpoints"].as_array().into_iter().flatten() {
            if e["conditions"]["ready"] == false {
                continue;
            }
            for a in e["addresses"].as_array().into_iter().flatten() {
                for p in &ports {
                    out.insert(format!("{}:{p}", a.as_str().unwrap_or_default()));
                }
            }
        }
    }
    out
}

/// `sarasa trace --live -o json`: the JSON (with its `live` report) and the exit code.
fn trace_live(lab: &TestLab, f: &Flow) -> (Value, Option<i32>) {
    let port = f.port.to_string();
    let mut args = vec![
        "trace", "--live", "--from", &f.from, "--to", &f.to, "--port", &port, "-o", "json",
    ];
    if f.udp {
        args.extend(["--proto", "udp"]);
    }
    let out = lab.run(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "trace --live {f:?} gave no JSON ({e}): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v, out.status.code())
}

#[test]
fn trace_agrees_with_real_probes_over_a_hundred_flows() {
    let lab = TestLab::up(&["--nodes", "3"]);
    lab.apply(MANIFEST);
    let ip_of = |ns: &str, pod: &str| -> String {
        lab.object("pods", ns, pod).expect("pod")["status"]["podIP"]
            .as_str()
            .expect("podIP")
            .to_string()
    };
    let svc_ip = |ns: &str, name: &str| -> String {
        lab.object("services", ns, name).expect("service")["spec"]["clusterIP"]
            .as_str()
            .expect("clusterIP")
            .to_string()
    };
    let lb_ip = lab
        .eventually(Duration::from_secs(30), || {
            lab.object("services", "x", "lb")?["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .map(str::to_string)
        })
        .expect("the LoadBalancer got an address");

    let mut flows = Vec::new();
    // Pod to pod, every pair, TCP 80 and UDP 81 (same node and across nodes).
    for (sns, s) in PODS {
        for (dns, d) in PODS {
            if (sns, s) == (dns, d) {
                continue;
            }
            let from = format!("{sns}/{s}");
            let to = format!("{dns}/{d}");
            let ip = ip_of(dns, d);
            flows.push(flow(&from, &to, &ip, 80, false));
            flows.push(flow(&from, &to, &ip, 81, true));
        }
    }
    // Pod to Service: Cluster policy, policy-protected endpoints, LoadBalancer's ClusterIP,
    // no endpoints, and the echo Service over UDP.
    for (sns, s) in PODS {
        let from = format!("{sns}/{s}");
        flows.push(flow(&from, "svc/web.x", &svc_ip("x", "web"), 80, false));
        flows.push(flow(&from, "svc/echo.y", &svc_ip("y", "echo"), 80, false));
        flows.push(flow(&from, "svc/empty.x", &svc_ip("x", "empty"), 80, false));
        flows.push(flow(&from, "svc/lb.x", &svc_ip("x", "lb"), 80, false));
    }
    flows.push(flow("x/a", "svc/echo.y", &svc_ip("y", "echo"), 81, true));
    flows.push(flow("y/e", "svc/echo.y", &svc_ip("y", "echo"), 81, true));
    // Nodes to Services and pods.
    for n in ["node-1", "node-2", "node-3"] {
        let from = format!("node/{n}");
        flows.push(flow(&from, "svc/web.x", &svc_ip("x", "web"), 80, false));
        flows.push(flow(&from, "x/a", &ip_of("x", "a"), 80, false));
        flows.push(flow(&from, "x/d", &ip_of("x", "d"), 80, false));
    }
    flows.push(flow(
        "node/node-1",
        "svc/echo.y",
        &svc_ip("y", "echo"),
        80,
        false,
    ));
    flows.push(flow(
        "node/node-1",
        "svc/empty.x",
        &svc_ip("x", "empty"),
        80,
        false,
    ));
    // External: NodePort (Cluster and Local policy) on every node, the LoadBalancer, a pod
    // address (not routed), and pods reaching "the internet".
    for (n, addr) in [
        ("node-1", "192.168.33.11"),
        ("node-2", "192.168.33.12"),
        ("node-3", "192.168.33.13"),
    ] {
        let to = format!("node/{n}");
        flows.push(flow("external", &to, addr, 30080, false));
        flows.push(flow("external", &to, addr, 30081, false));
    }
    flows.push(flow("external", &lb_ip, &lb_ip, 80, false));
    flows.push(flow(
        "external",
        &ip_of("x", "c"),
        &ip_of("x", "c"),
        80,
        false,
    ));
    flows.push(flow("x/a", "203.0.113.10", "203.0.113.10", 80, false));
    flows.push(flow("y/f", "203.0.113.10", "203.0.113.10", 80, false));
    assert!(flows.len() >= 100, "{} flows", flows.len());

    let mut failures = Vec::new();
    let mut verdicts = std::collections::BTreeMap::<String, usize>::new();
    for f in &flows {
        let t = trace(&lab, f);
        let verdict = t["verdict"].as_str().unwrap_or_default().to_string();
        *verdicts.entry(verdict.clone()).or_default() += 1;
        // A policy verdict names its policies (`policies`: names, as the issue words it).
        if t["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("NetworkPolicy")
        {
            let names: Vec<&str> = t["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !names
                .iter()
                .any(|n| *n == "x/b-from-a" || *n == "y/echo-from-x")
            {
                failures.push(format!(
                    "{f:?}: policy verdict names no policy: {}",
                    t["policies"]
                ));
            }
        }
        // Every nftables rule trace cites is found at that position in its node's kernel.
        for hop in t["hops"].as_array().into_iter().flatten() {
            let rule = &hop["rule"];
            if rule["index"].is_u64() && !rule["handle"].is_u64() {
                failures.push(format!(
                    "{f:?}: no kernel rule at the position trace cites: {hop}"
                ));
            }
        }
        let endpoints: BTreeSet<String> = t["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect();
        // The Service's endpoints: trace lists exactly the ready ones (all of them for Cluster
        // policy; its candidates are a subset for Local policy).
        if let Some(svc) = f.to.strip_prefix("svc/") {
            let (name, ns) = svc.split_once('.').expect("svc/NAME.NS");
            // Here every Service's targetPort equals its port.
            let want: BTreeSet<String> = ready_endpoints(&lab, ns, name)
                .into_iter()
                .filter(|e| e.ends_with(&format!(":{}", f.port)))
                .collect();
            if endpoints != want {
                failures.push(format!(
                    "{f:?}: trace endpoints {endpoints:?}, ready endpoints {want:?}"
                ));
            }
        }
        // Real packets: one probe, more for a delivered Service to see several endpoints; a
        // probe that fails where trace delivers is retried (a lost first datagram).
        let tries = if verdict == "delivered" && !endpoints.is_empty() {
            6
        } else {
            1
        };
        let timeout = if verdict == "delivered" { "3s" } else { "1s" };
        for _ in 0..tries {
            let mut outcome = probe(&lab, f, timeout);
            if outcome.is_err() && verdict == "delivered" {
                outcome = probe(&lab, f, timeout);
            }
            match (&outcome, verdict.as_str()) {
                (Ok(reply), "delivered") => {
                    if !endpoints.is_empty() {
                        let pod_ip = reply["podIP"].as_str().unwrap_or_default();
                        if !endpoints
                            .iter()
                            .any(|e| e.rsplit_once(':').map(|(ip, _)| ip) == Some(pod_ip))
                        {
                            failures.push(format!("{f:?}: reached {pod_ip}, not one of trace's endpoints {endpoints:?}"));
                        }
                    }
                }
                (Err(e), "rejected") => {
                    if !f.udp && !e.contains("refused") {
                        failures.push(format!(
                            "{f:?}: trace says rejected, the probe was not refused: {e}"
                        ));
                    }
                }
                (Err(e), "dropped") => {
                    if e.contains("refused") {
                        failures.push(format!(
                            "{f:?}: trace says dropped, the probe was refused (rejected): {e}"
                        ));
                    }
                }
                (Ok(reply), v) => failures.push(format!(
                    "{f:?}: trace says {v} ({}), a real probe connected: {reply}",
                    t["reason"]
                )),
                (Err(e), v) => failures.push(format!(
                    "{f:?}: trace says {v}, a real probe failed: {e}\n{}",
                    serde_json::to_string_pretty(&t["hops"]).unwrap_or_default()
                )),
            }
            if outcome.is_err() {
                break;
            }
        }
    }
    // The kernel's own trace of a real packet agrees with the model on every fifth flow.
    let mut live_checked = 0;
    for f in flows.iter().step_by(5) {
        let (v, code) = trace_live(&lab, f);
        live_checked += 1;
        if v["live"]["agrees"] != true || code != Some(0) {
            failures.push(format!(
                "{f:?}: --live disagrees (exit {code:?}): {}",
                serde_json::to_string_pretty(&v["live"]).unwrap_or_default()
            ));
        }
    }
    assert!(live_checked >= 20, "{live_checked} live flows");
    assert!(
        failures.is_empty(),
        "{} of {} flows disagree (verdicts {verdicts:?}):\n{}",
        failures.len(),
        flows.len(),
        failures.join("\n")
    );
    // The scenario is not degenerate: it exercises every verdict.
    for v in ["delivered", "dropped", "rejected"] {
        assert!(
            verdicts.get(v).copied().unwrap_or(0) >= 3,
            "too few {v}: {verdicts:?}"
        );
    }
}

#[test]
fn bad_input_is_named_and_exits_non_zero() {
    let lab = TestLab::up(&["--nodes", "1"]);
    for (args, want) in [
        (
            vec![
                "trace",
                "--from",
                "nopod",
                "--to",
                "10.96.0.1",
                "--port",
                "80",
            ],
            "unknown pod default/nopod",
        ),
        (
            vec![
                "trace",
                "--from",
                "node/node-9",
                "--to",
                "10.96.0.1",
                "--port",
                "80",
            ],
            "unknown node node-9",
        ),
        (
            vec![
                "trace",
                "--from",
                "node/node-1",
                "--to",
                "svc/nosvc",
                "--port",
                "80",
            ],
            "unknown Service default/nosvc",
        ),
        (
            vec![
                "trace",
                "--from",
                "node/node-1",
                "--to",
                "10.96.0.300",
                "--port",
                "80",
            ],
            "not a valid IP address",
        ),
        (
            vec![
                "trace",
                "--from",
                "node/node-1",
                "--to",
                "10.96.0.1",
                "--port",
                "99999",
            ],
            "--port",
        ),
        (
            vec!["trace", "--from", "node/node-1", "--to", "10.96.0.1"],
            "--port is needed",
        ),
    ] {
        let out = lab.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
