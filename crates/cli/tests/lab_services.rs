//! Lab end-to-end: every Service behaviour of the proxy (issue 4) with real connections from
//! pods, nodes and the external host in a 3-node lab — which endpoint answered and which source
//! address it saw come from `sarasa serve`'s JSON replies.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::{client_ip, sarasa_bin, TestLab};
use serde_json::Value;

const EXTERNAL_IP: &str = "203.0.113.10";
const WAIT: Duration = Duration::from_secs(30);

fn lab3() -> TestLab {
    TestLab::up(&["--nodes", "3"])
}

/// A Deployment of `sarasa serve` with named ports http (8080/TCP), dns (5353/UDP), alt (9090).
fn deployment(name: &str, labels: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{{labels}}}
  template:
    metadata:
      labels: {{{labels}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: sarasa/serve
        ports:
        - {{name: http, containerPort: 8080}}
        - {{name: dns, containerPort: 5353, protocol: UDP}}
        - {{name: alt, containerPort: 9090}}
"#
    )
}

/// A bare pod serving 8080 on a given node.
fn pod_on(name: &str, labels: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: sarasa/serve
    ports:
    - {{name: http, containerPort: 8080}}
"#
    )
}

/// A Service from the `spec` body (YAML, indented by 2).
fn service(name: &str, spec: &str) -> String {
    format!("\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}\n")
}

fn cluster_ip(lab: &TestLab, name: &str) -> String {
    lab.object("services", "default", name)
        .and_then(|s| s["spec"]["clusterIP"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("service {name} has no clusterIP"))
}

fn pod_names(lab: &TestLab, key: &str, value: &str) -> BTreeSet<String> {
    lab.pods("default", key, value)
        .into_iter()
        .map(|p| p.0)
        .collect()
}

/// The reply of the first successful probe within WAIT (the datapath may lag the API).
fn probe_eventually(lab: &TestLab, from: &str, url: &str) -> Value {
    lab.eventually(WAIT, || lab.probe(from, url))
        .unwrap_or_else(|| panic!("{from} -> {url} never answered\n{}", lab.logs()))
}

/// Which pods answered `n` probes (each probe a new connection).
fn answered_by(lab: &TestLab, from: &str, url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let reply = lab
            .probe(from, url)
            .unwrap_or_else(|| panic!("{from} -> {url} failed"));
        *seen
            .entry(reply["pod"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    seen
}

/// Which pods answered `n` probes, or None if any probe failed.
fn try_answered_by(
    lab: &TestLab,
    from: &str,
    url: &str,
    n: usize,
) -> Option<BTreeMap<String, usize>> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let reply = lab.probe(from, url)?;
        *seen
            .entry(reply["pod"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    Some(seen)
}

/// Polls until the pods answering `n` probes are exactly `want`. While endpoints change, a
/// connection may still reach an endpoint whose process just exited (the EndpointSlice and the
/// datapath follow the pod's removal a moment later, as in Kubernetes): such a round is
/// retried, not counted as an answer.
fn wait_answered_set(lab: &TestLab, from: &str, url: &str, want: &BTreeSet<String>) {
    let mut last = BTreeMap::new();
    let ok = lab.eventually(WAIT, || {
        last = try_answered_by(lab, from, url, 3 * want.len().max(1) + 6)?;
        (last.keys().cloned().collect::<BTreeSet<_>>() == *want).then_some(())
    });
    assert!(
        ok.is_some(),
        "{from} -> {url}: answered by {last:?}, want {want:?}"
    );
}

fn node_ip(n: u32) -> String {
    format!("192.168.33.{}", 10 + n)
}

fn ruleset(lab: &TestLab, node: &str) -> String {
    lab.ok(&[
        "exec",
        &format!("node/{node}"),
        "--",
        "nft",
        "list",
        "ruleset",
    ])
}

/// `ip` appears in `text` as a whole address (not as the prefix of a longer one).
fn mentions_ip(text: &str, ip: &str) -> bool {
    text.match_indices(ip).any(|(i, _)| {
        let before = text[..i].chars().last();
        let after = text[i + ip.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// Fabric routes for Service addresses: destination → next hop.
fn fabric_routes(lab: &TestLab) -> BTreeMap<String, String> {
    let out = Command::new("ip")
        .args(["-n", &lab.fabric_netns(), "-j", "route", "show"])
        .output()
        .expect("ip route");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j route");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r["dst"].as_str()?.to_string(),
                r["gateway"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn lb_ingress(lab: &TestLab, name: &str) -> String {
    lab.eventually(WAIT, || {
        lab.object("services", "default", name)?["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("service {name} got no status.loadBalancer.ingress"))
}

#[test]
fn cluster_ip_tcp_udp_several_ports_named_target_ports_and_spread() {
    let lab = lab3();
    let spec = "  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: dns, port: 53, protocol: UDP, targetPort: dns}\n  - {name: alt, port: 9000, targetPort: alt}";
    lab.apply(&format!(
        "{}{}---{}",
        deployment("web", "app: web", 3),
        service("web", spec),
        pod_on("client", "app: client", "node-1")
    ));
    let web = pod_names(&lab, "app", "web");
    let cip = cluster_ip(&lab, "web");
    for url in [
        format!("tcp://{cip}:80"),
        format!("udp://{cip}:53"),
        format!("tcp://{cip}:9000"),
    ] {
        let reply = probe_eventually(&lab, "client", &url);
        assert!(
            web.contains(reply["pod"].as_str().unwrap_or_default()),
            "{url} answered by {reply}, not one of {web:?}"
        );
    }
    // New connections spread over every endpoint.
    let seen = answered_by(&lab, "client", &format!("tcp://{cip}:80"), 45);
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        web,
        "45 connections: {seen:?}"
    );
    let seen = answered_by(&lab, "client", &format!("udp://{cip}:53"), 45);
    assert_eq!(seen.len(), 3, "45 UDP flows: {seen:?}");
}

#[test]
fn source_addresses_pod_not_masqueraded_node_and_hairpin_masqueraded() {
    let lab = lab3();
    lab.apply(&format!(
        "{}{}---{}",
        deployment("web", "app: web", 3),
        service(
            "web",
            "  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}"
        ),
        pod_on("client", "app: client", "node-2")
    ));
    let cip = cluster_ip(&lab, "web");
    let url = format!("tcp://{cip}:80");
    let client = lab.pods("default", "app", "client");
    let reply = probe_eventually(&lab, "client", &url);
    assert_eq!(
        client_ip(&reply),
        client[0].1,
        "pod -> ClusterIP must keep the pod's address: {reply}"
    );
    let nodes = lab.all_node_addrs();
    for n in ["node-1", "node-2", "node-3"] {
        let reply = probe_eventually(&lab, &format!("node/{n}"), &url);
        assert!(
            nodes.contains(&client_ip(&reply)),
            "{n} -> ClusterIP: backend saw {}, not a node address",
            reply["client"]
        );
    }
    // Hairpin: a backend reaching itself through its Service sees a masqueraded source; reaching
    // another backend it keeps its own address.
    for (pod, ip, _) in lab.pods("default", "app", "web") {
        let mut hit_self = false;
        for _ in 0..40 {
            let reply = probe_eventually(&lab, &pod, &url);
            if reply["pod"] == pod.as_str() {
                hit_self = true;
                assert_ne!(client_ip(&reply), ip, "hairpin to {pod} not masqueraded");
                assert!(nodes.contains(&client_ip(&reply)), "hairpin source {reply}");
            } else {
                assert_eq!(client_ip(&reply), ip, "{pod} -> other backend: {reply}");
            }
            if hit_self {
                break;
            }
        }
        assert!(hit_self, "{pod} never reached itself in 40 connections");
    }
}

#[test]
fn session_affinity_client_ip_sticks_over_many_connections() {
    let lab = lab3();
    lab.apply(&format!(
        "{}{}---{}---{}",
        deployment("web", "app: web", 3),
        service(
            "sticky",
            "  selector: {app: web}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports:\n  - {port: 80, targetPort: 8080}"
        ),
        pod_on("client-a", "app: client", "node-1"),
        pod_on("client-b", "app: client", "node-3")
    ));
    let url = format!("tcp://{}:80", cluster_ip(&lab, "sticky"));
    for client in ["client-a", "client-b"] {
        probe_eventually(&lab, client, &url);
        let seen = answered_by(&lab, client, &url, 30);
        assert_eq!(
            seen.len(),
            1,
            "{client}: 30 connections not sticky: {seen:?}"
        );
    }
}

#[test]
fn no_endpoints_refused_at_once_unallocated_dropped_headless_not_proxied() {
    let lab = lab3();
    lab.apply(&format!(
        "{}{}{}{}---{}---{}",
        deployment("web", "app: web", 2),
        service(
            "web",
            "  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}"
        ),
        service(
            "empty",
            "  selector: {app: nothing}\n  ports:\n  - {port: 80, targetPort: 8080}"
        ),
        service(
            "solo",
            "  clusterIP: None\n  selector: {app: solo}\n  ports:\n  - {port: 8080}"
        ),
        pod_on("solo", "app: solo", "node-2"),
        pod_on("client", "app: client", "node-1")
    ));
    let web_url = format!("tcp://{}:80", cluster_ip(&lab, "web"));
    probe_eventually(&lab, "client", &web_url);

    let empty = cluster_ip(&lab, "empty");
    let out = lab.probe_outcome("client", &format!("tcp://{empty}:80"), "5s");
    let err = out.reply.expect_err("a Service without endpoints answered");
    assert!(err.contains("refused"), "not refused: {err}");
    assert!(
        out.elapsed < Duration::from_secs(2),
        "refusal took {:?} (timeout 5s)",
        out.elapsed
    );

    // An address of the service CIDR no Service holds: dropped, so the probe times out.
    let services = lab.get_json(&["services", "-A"]);
    let taken: BTreeSet<&str> = services["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["spec"]["clusterIP"].as_str())
        .collect();
    let unallocated = "10.111.222.33";
    assert!(!taken.contains(unallocated));
    let out = lab.probe_outcome("client", &format!("tcp://{unallocated}:80"), "2s");
    let err = out
        .reply
        .expect_err("an unallocated service address answered");
    assert!(err.contains("no reply within"), "not dropped: {err}");
    assert!(
        out.elapsed >= Duration::from_millis(1900),
        "{:?}",
        out.elapsed
    );

    // Headless: its endpoints exist, but no node programs them.
    let solo_ip = lab.pods("default", "app", "solo")[0].1.clone();
    let web_ip = lab.pods("default", "app", "web")[0].1.clone();
    let slices = lab.get_json(&["endpointslices"]).to_string();
    assert!(
        mentions_ip(&slices, &solo_ip),
        "headless Service has no EndpointSlice"
    );
    for n in ["node-1", "node-2", "node-3"] {
        let rules = ruleset(&lab, n);
        assert!(
            mentions_ip(&rules, &web_ip),
            "{n} never programmed {web_ip}"
        );
        assert!(
            !mentions_ip(&rules, &solo_ip),
            "{n} programmed the headless Service's endpoint {solo_ip}"
        );
    }
}

#[test]
fn node_port_from_external_and_nodes_cluster_policy_masquerades() {
    let lab = lab3();
    lab.apply(&format!(
        "{}{}",
        deployment("web", "app: web", 3),
        service(
            "web",
            "  type: NodePort\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: http, nodePort: 30080}"
        )
    ));
    let web = pod_names(&lab, "app", "web");
    let nodes = lab.all_node_addrs();
    for n in 1..=3 {
        let url = format!("tcp://{}:30080", node_ip(n));
        let reply = probe_eventually(&lab, "external", &url);
        assert!(
            web.contains(reply["pod"].as_str().unwrap_or_default()),
            "{reply}"
        );
        let seen = client_ip(&reply);
        assert_ne!(seen, EXTERNAL_IP, "Cluster policy must masquerade: {reply}");
        assert!(
            nodes.contains(&seen),
            "backend saw {seen}, not a node address"
        );
        for from in ["node-1", "node-3"] {
            let reply = probe_eventually(&lab, &format!("node/{from}"), &url);
            assert!(
                web.contains(reply["pod"].as_str().unwrap_or_default()),
                "{reply}"
            );
        }
    }
}

#[test]
fn load_balancer_ingress_source_ranges_and_external_ips_from_external() {
    let lab = lab3();
    lab.apply(&format!(
        "{}{}{}{}{}",
        deployment("web", "app: web", 3),
        service(
            "lb",
            "  type: LoadBalancer\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}"
        ),
        service(
            "lb-allowed",
            "  type: LoadBalancer\n  loadBalancerSourceRanges: [203.0.113.10/32]\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}"
        ),
        service(
            "lb-denied",
            "  type: LoadBalancer\n  loadBalancerSourceRanges: [10.0.0.0/8]\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}"
        ),
        service(
            "ext",
            "  externalIPs: [192.0.2.50]\n  selector: {app: web}\n  ports:\n  - {port: 8081, targetPort: 8080}"
        )
    ));
    let web = pod_names(&lab, "app", "web");
    let lb = lb_ingress(&lab, "lb");
    assert!(
        lb.starts_with("198.51.100."),
        "ingress {lb} not from the pool"
    );
    let allowed = lb_ingress(&lab, "lb-allowed");
    let denied = lb_ingress(&lab, "lb-denied");
    // The fabric routes each address to a node.
    let node_ips: BTreeSet<String> = (1..=3).map(node_ip).collect();
    let routes = lab
        .eventually(WAIT, || {
            let r = fabric_routes(&lab);
            [&lb, &allowed, &denied, &"192.0.2.50".to_string()]
                .iter()
                .all(|ip| r.get(ip.as_str()).is_some_and(|gw| node_ips.contains(gw)))
                .then_some(r)
        })
        .unwrap_or_else(|| panic!("fabric routes missing: {:?}", fabric_routes(&lab)));

    let reply = probe_eventually(&lab, "external", &format!("tcp://{lb}:80"));
    assert!(
        web.contains(reply["pod"].as_str().unwrap_or_default()),
        "{reply}"
    );
    assert_ne!(
        client_ip(&reply),
        EXTERNAL_IP,
        "Cluster policy masquerades: {reply}"
    );
    probe_eventually(&lab, "external", &format!("tcp://{allowed}:80"));
    let out = lab.probe_outcome("external", &format!("tcp://{denied}:80"), "2s");
    assert!(
        out.reply.is_err(),
        "loadBalancerSourceRanges [10.0.0.0/8] let {EXTERNAL_IP} in: {:?}",
        out.reply
    );
    let reply = probe_eventually(&lab, "external", "tcp://192.0.2.50:8081");
    assert!(
        web.contains(reply["pod"].as_str().unwrap_or_default()),
        "{reply}"
    );

    // Deleting a Service removes its route; the others stay.
    lab.ok(&["delete", "service", "lb"]);
    let gone = lab.eventually(WAIT, || {
        let r = fabric_routes(&lab);
        (!r.contains_key(&lb) && r.contains_key(&allowed)).then_some(())
    });
    assert!(gone.is_some(), "route of deleted {lb} stays: {routes:?}");
}

#[test]
fn external_traffic_policy_local_keeps_source_uses_local_endpoints_and_health_checks() {
    let lab = lab3();
    lab.apply(&format!(
        "{}{}",
        pod_on("local-a", "app: local", "node-2"),
        service(
            "local",
            "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {app: local}\n  ports:\n  - {port: 80, targetPort: 8080}"
        )
    ));
    let svc = lab.object("services", "default", "local").expect("service");
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("nodePort");
    let hc = svc["spec"]["healthCheckNodePort"]
        .as_u64()
        .expect("healthCheckNodePort");
    let lb = lb_ingress(&lab, "local");
    // The fabric sends the LB address only to the node with the endpoint.
    let hop = lab.eventually(WAIT, || fabric_routes(&lab).get(&lb).cloned());
    assert_eq!(
        hop.as_deref(),
        Some(node_ip(2).as_str()),
        "{:?}",
        fabric_routes(&lab)
    );

    for url in [
        format!("tcp://{lb}:80"),
        format!("tcp://{}:{node_port}", node_ip(2)),
    ] {
        let reply = probe_eventually(&lab, "external", &url);
        assert_eq!(reply["pod"], "local-a");
        assert_eq!(
            client_ip(&reply),
            EXTERNAL_IP,
            "source not preserved: {reply}"
        );
    }
    for n in [1, 3] {
        let out = lab.probe_outcome(
            "external",
            &format!("tcp://{}:{node_port}", node_ip(n)),
            "2s",
        );
        let err = out
            .reply
            .expect_err("a node without local endpoints answered");
        assert!(err.contains("no reply within"), "not dropped: {err}");
    }
    let health = |n: u32| -> Value {
        let url = format!("http://{}:{hc}/healthz", node_ip(n));
        lab.eventually(WAIT, || {
            let out = lab.probe_outcome("external", &url, "3s");
            out.reply.ok().filter(|v| v["localEndpoints"].is_number())
        })
        .unwrap_or_else(|| panic!("no health check answer at {url}"))
    };
    assert_eq!(health(2)["localEndpoints"], 1);
    assert_eq!(health(1)["localEndpoints"], 0);
    assert_eq!(health(3)["localEndpoints"], 0);
}

#[test]
fn internal_traffic_policy_local_uses_only_the_clients_node() {
    let lab = lab3();
    lab.apply(&format!(
        "{}---{}---{}---{}---{}{}",
        pod_on("itp-a", "app: itp", "node-1"),
        pod_on("itp-b", "app: itp", "node-2"),
        pod_on("client-1", "app: client", "node-1"),
        pod_on("client-2", "app: client", "node-2"),
        pod_on("client-3", "app: client", "node-3"),
        service(
            "itp",
            "  internalTrafficPolicy: Local\n  selector: {app: itp}\n  ports:\n  - {port: 80, targetPort: 8080}"
        )
    ));
    let url = format!("tcp://{}:80", cluster_ip(&lab, "itp"));
    for (client, want) in [("client-1", "itp-a"), ("client-2", "itp-b")] {
        probe_eventually(&lab, client, &url);
        let seen = answered_by(&lab, client, &url, 12);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            [want],
            "{client}: answered by {seen:?}"
        );
    }
    let out = lab.probe_outcome("client-3", &url, "2s");
    assert!(
        out.reply.is_err(),
        "node-3 has no local endpoint, yet: {:?}",
        out.reply
    );
}

fn pod_ready(lab: &TestLab, name: &str) -> Option<bool> {
    let p = lab.object("pods", "default", name)?;
    let conds = p["status"]["conditions"].as_array()?;
    let ready = conds.iter().find(|c| c["type"] == "Ready")?;
    Some(ready["status"] == "True")
}

/// Endpoint conditions of a Service's slices: address → (ready, serving, terminating).
fn endpoint_conditions(lab: &TestLab, svc: &str) -> BTreeMap<String, (bool, bool, bool)> {
    let slices = lab.get_json(&["endpointslices"]);
    let mut out = BTreeMap::new();
    for s in slices["items"].as_array().into_iter().flatten() {
        if s["metadata"]["labels"]["kubernetes.io/service-name"] != svc {
            continue;
        }
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let c = &e["conditions"];
            let flag = |k: &str, d: bool| c[k].as_bool().unwrap_or(d);
            for a in e["addresses"].as_array().into_iter().flatten() {
                out.insert(
                    a.as_str().unwrap_or_default().to_string(),
                    (
                        flag("ready", true),
                        flag("serving", true),
                        flag("terminating", false),
                    ),
                );
            }
        }
    }
    out
}

#[test]
fn readiness_probes_gate_endpoints() {
    let lab = lab3();
    let flag = format!("/tmp/sarasa-{}-ready", lab.name);
    let _ = std::fs::remove_file(&flag);
    let probed = |name: &str, node: &str, probe: &str| {
        format!(
            r#"
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: probed}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: sarasa/serve
    ports:
    - {{name: http, containerPort: 8080}}
    readinessProbe:
      periodSeconds: 1
      failureThreshold: 1
      {probe}
"#
        )
    };
    lab.apply_nowait(&format!(
        "{}{}{}{}{}---{}",
        probed(
            "exec-probe",
            "node-1",
            &format!("exec: {{command: [test, -e, {flag}]}}")
        ),
        probed("tcp-probe", "node-2", "tcpSocket: {port: http}"),
        probed("tcp-bad", "node-3", "tcpSocket: {port: 9999}"),
        probed(
            "http-probe",
            "node-1",
            "httpGet: {port: 8080, path: /healthz}"
        ),
        service(
            "probed",
            "  selector: {app: probed}\n  ports:\n  - {port: 80, targetPort: 8080}"
        ),
        pod_on("client", "app: client", "node-3")
    ));
    let want = [
        ("exec-probe", false),
        ("tcp-probe", true),
        ("tcp-bad", false),
        ("http-probe", true),
    ];
    let states = lab.eventually(WAIT, || {
        let got: Vec<(&str, Option<bool>)> =
            want.iter().map(|(n, _)| (*n, pod_ready(&lab, n))).collect();
        got.iter()
            .zip(want)
            .all(|((_, g), (_, w))| *g == Some(w))
            .then_some(())
    });
    assert!(
        states.is_some(),
        "pod readiness: {:?}",
        want.iter()
            .map(|(n, _)| (*n, pod_ready(&lab, n)))
            .collect::<Vec<_>>()
    );
    let ip_of = |n: &str| {
        lab.object("pods", "default", n).expect("pod")["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let eps = lab
        .eventually(WAIT, || {
            let c = endpoint_conditions(&lab, "probed");
            want.iter()
                .all(|(n, r)| c.get(&ip_of(n)).is_some_and(|e| e.0 == *r))
                .then_some(c)
        })
        .unwrap_or_else(|| panic!("endpoints: {:?}", endpoint_conditions(&lab, "probed")));
    assert_eq!(eps.len(), 4, "{eps:?}");
    let url = format!("tcp://{}:80", cluster_ip(&lab, "probed"));
    let ready: BTreeSet<String> = ["tcp-probe", "http-probe"].map(String::from).into();
    wait_answered_set(&lab, "client", &url, &ready);

    // The exec probe follows the file: ready once it exists, not ready once it is gone.
    std::fs::write(&flag, "").expect("flag file");
    let became = lab.eventually(WAIT, || pod_ready(&lab, "exec-probe").filter(|r| *r));
    let _ = std::fs::remove_file(&flag);
    assert!(became.is_some(), "exec-probe never became Ready");
    let back = lab.eventually(WAIT, || pod_ready(&lab, "exec-probe").filter(|r| !*r));
    assert!(
        back.is_some(),
        "exec-probe stayed Ready after its file went away"
    );
}

#[test]
fn terminating_endpoints_serve_only_when_no_ready_ones() {
    let lab = lab3();
    let bin = sarasa_bin();
    let bin = bin.display();
    lab.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: stubborn
  labels: {{app: term}}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: 30
  containers:
  - name: web
    image: sarasa/serve
    command: [/bin/sh, -c, "trap '' TERM; {bin} serve --port 8080 & wait; wait"]
    ports:
    - {{containerPort: 8080}}
    readinessProbe:
      periodSeconds: 1
      tcpSocket: {{port: 8080}}
---
{}{}---{}"#,
        pod_on("quick", "app: term", "node-2"),
        service(
            "term",
            "  selector: {app: term}\n  ports:\n  - {port: 80, targetPort: 8080}"
        ),
        pod_on("client", "app: client", "node-3")
    ));
    let url = format!("tcp://{}:80", cluster_ip(&lab, "term"));
    let both: BTreeSet<String> = ["stubborn", "quick"].map(String::from).into();
    wait_answered_set(&lab, "client", &url, &both);
    let stubborn_ip = lab
        .pods("default", "app", "term")
        .into_iter()
        .find(|p| p.0 == "stubborn")
        .expect("stubborn")
        .1;

    // stubborn ignores SIGTERM: it keeps running, Ready from its probe, for the grace period.
    lab.ok(&["delete", "pod", "stubborn"]);
    let c = lab.eventually(WAIT, || {
        let c = endpoint_conditions(&lab, "term");
        c.get(&stubborn_ip)
            .copied()
            .filter(|e| *e == (false, true, true))
    });
    assert!(
        c.is_some(),
        "terminating stubborn not serving/terminating: {:?}",
        endpoint_conditions(&lab, "term")
    );
    assert_eq!(
        pod_ready(&lab, "stubborn"),
        Some(true),
        "probes stop during termination"
    );
    let quick: BTreeSet<String> = ["quick".to_string()].into();
    wait_answered_set(&lab, "client", &url, &quick);

    // With no ready endpoint left, the terminating one serves.
    lab.ok(&["delete", "pod", "quick"]);
    let stubborn: BTreeSet<String> = ["stubborn".to_string()].into();
    wait_answered_set(&lab, "client", &url, &stubborn);
}

#[test]
fn scaling_deleting_and_selector_changes_keep_established_connections() {
    let lab = lab3();
    let svc = |selector: &str| {
        service(
            "web",
            &format!("  selector: {{{selector}}}\n  ports:\n  - {{port: 80, targetPort: 8080}}"),
        )
    };
    lab.apply(&format!(
        "{}---{}---{}{}",
        deployment("stable", "app: web, track: stable", 1),
        deployment("canary", "app: web, track: canary", 0),
        pod_on("client", "app: client", "node-1"),
        svc("app: web")
    ));
    let cip = cluster_ip(&lab, "web");
    let url = format!("tcp://{cip}:80");
    let stable = pod_names(&lab, "track", "stable");
    probe_eventually(&lab, "client", &url);
    wait_answered_set(&lab, "client", &url, &stable);

    // A connection held open to the only endpoint, the stable pod, through every change below.
    let bin = sarasa_bin();
    let hold = Command::new(&bin)
        .args(["--lab", &lab.name, "exec", "client", "--"])
        .arg(&bin)
        .args(["probe", "--hold", "40s", "--timeout", "3s", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start hold");

    // Scale up: new connections reach the new pods.
    lab.apply(&deployment("canary", "app: web, track: canary", 2));
    let canary = pod_names(&lab, "track", "canary");
    assert_eq!(canary.len(), 2);
    let all: BTreeSet<String> = stable.union(&canary).cloned().collect();
    wait_answered_set(&lab, "client", &url, &all);

    // Deleting a pod (its Deployment replaces it) and scaling down.
    let victim = canary.iter().next().expect("canary pod").clone();
    lab.ok(&["delete", "pod", &victim]);
    lab.apply(&deployment("canary", "app: web, track: canary", 1));
    let canary = lab
        .eventually(WAIT, || {
            let c = pod_names(&lab, "track", "canary");
            (c.len() == 1 && !c.contains(&victim)).then_some(c)
        })
        .expect("canary scaled to 1");
    let all: BTreeSet<String> = stable.union(&canary).cloned().collect();
    wait_answered_set(&lab, "client", &url, &all);

    // Selector change: only the stable track is an endpoint now.
    lab.apply(&svc("app: web, track: stable"));
    wait_answered_set(&lab, "client", &url, &stable);

    let out = hold.wait_with_output().expect("hold");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the held connection broke: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Value =
        serde_json::from_str(stdout.lines().next().unwrap_or_default()).expect("hold reply JSON");
    assert!(
        stable.contains(first["pod"].as_str().unwrap_or_default()),
        "{first}"
    );
    assert!(stdout.contains("none missing"), "{stdout}");
}

#[test]
fn bad_services_are_rejected_with_clear_messages_and_others_untouched() {
    let lab = lab3();
    lab.apply(&format!(
        "{}{}",
        deployment("web", "app: web", 2),
        service(
            "web",
            "  type: NodePort\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080, nodePort: 30090}"
        )
    ));
    let before = lab.object("services", "default", "web").expect("web");
    let cip = before["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let url = format!("tcp://{cip}:80");
    probe_eventually(&lab, "node/node-1", &url);

    let cases = [
        (
            "duplicate clusterIP",
            format!("  clusterIP: {cip}\n  selector: {{app: web}}\n  ports:\n  - {{port: 80}}"),
            "clusterIP",
        ),
        (
            "clusterIP out of the service CIDR",
            "  clusterIP: 10.0.0.1\n  selector: {app: web}\n  ports:\n  - {port: 80}".into(),
            "clusterIP",
        ),
        (
            "port out of range",
            "  selector: {app: web}\n  ports:\n  - {port: 70000}".into(),
            "port",
        ),
        (
            "nodePort collision",
            "  type: NodePort\n  selector: {app: web}\n  ports:\n  - {port: 81, nodePort: 30090}"
                .into(),
            "nodePort",
        ),
        (
            "nodePort out of range",
            "  type: NodePort\n  selector: {app: web}\n  ports:\n  - {port: 81, nodePort: 80}"
                .into(),
            "nodePort",
        ),
        (
            "invalid ipFamilies",
            "  ipFamilies: [IPv5]\n  selector: {app: web}\n  ports:\n  - {port: 80}".into(),
            "ipFamilies",
        ),
        (
            "bad selector",
            "  selector: {'app': 'not a label value!'}\n  ports:\n  - {port: 80}".into(),
            "selector",
        ),
    ];
    for (what, spec, field) in cases {
        let err = lab.apply_err(&service("bad", &spec));
        assert!(
            err.contains(field),
            "{what}: message does not name {field}: {err}"
        );
        assert!(
            lab.object("services", "default", "bad").is_none(),
            "{what}: the bad Service was stored"
        );
    }
    let after = lab.object("services", "default", "web").expect("web");
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "web changed"
    );
    assert_eq!(before["spec"], after["spec"]);
    probe_eventually(&lab, "node/node-1", &url);
    probe_eventually(&lab, "external", &format!("tcp://{}:30090", node_ip(1)));
}
