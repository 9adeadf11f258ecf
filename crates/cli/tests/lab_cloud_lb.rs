//! Lab end-to-end: the cloud load balancer in the edge namespace (issue 13). The external host
//! reaches LoadBalancer Services in both modes: `instance` targets every node's NodePort (the
//! node's proxy picks the pod and, with the Cluster policy, masquerades), `ip` targets the pods
//! themselves (the pod sees the client's own address and the balancer's rule names the pod);
//! the balancer's health checks keep a dead target out; an invalid mode annotation is reported
//! with an Event and the default kept; pods stay unreachable from outside except through a
//! listener.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{client_ip, TestLab};

const EXTERNAL_IP: &str = "203.0.113.10";
const WAIT: Duration = Duration::from_secs(30);

const OBJECTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: sarasa/serve
        ports:
        - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web-instance
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web-ip
  annotations: {sarasa.io/load-balancer-target: ip}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web-bad
  annotations: {sarasa.io/load-balancer-target: pods}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
"#;

fn ingress(lab: &TestLab, name: &str) -> String {
    lab.eventually(WAIT, || {
        lab.object("services", "default", name)?["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("{name} got no ingress address"))
}

fn balancer(lab: &TestLab) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/sarasa-{}-edge", lab.name))
        .args(["nft", "list", "table", "inet", "sarasa-cloud-lb"])
        .output()
        .expect("nsenter nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cloud_load_balancer_instance_and_ip_targets() {
    let lab = TestLab::up(&["--nodes", "2"]);
    lab.apply(OBJECTS);
    let pods = lab.pods("default", "app", "web");
    let names: BTreeSet<String> = pods.iter().map(|p| p.0.clone()).collect();
    let pod_ips: BTreeSet<String> = pods.iter().map(|p| p.1.clone()).collect();

    // ip: straight to a pod, which sees the client; the balancer's rules name the pods.
    let vip = ingress(&lab, "web-ip");
    let url = format!("tcp://{vip}:80");
    let reply = lab
        .eventually(WAIT, || lab.probe("external", &url))
        .unwrap_or_else(|| panic!("{url} never answered\n{}\n{}", balancer(&lab), lab.logs()));
    assert!(
        names.contains(reply["pod"].as_str().unwrap_or_default()),
        "{reply}"
    );
    assert_eq!(
        client_ip(&reply),
        EXTERNAL_IP,
        "ip mode keeps the client: {reply}"
    );
    let table = balancer(&lab);
    for ip in &pod_ips {
        assert!(
            table.contains(&format!("dnat ip to {ip}:8080")),
            "{ip} not a target:\n{table}"
        );
    }

    // instance: to a node's NodePort; the Cluster policy masquerades on the node.
    let vip = ingress(&lab, "web-instance");
    let node_port = lab
        .object("services", "default", "web-instance")
        .expect("svc")["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("nodePort");
    let reply = lab
        .eventually(WAIT, || lab.probe("external", &format!("tcp://{vip}:80")))
        .expect("instance mode answers");
    assert!(
        names.contains(reply["pod"].as_str().unwrap_or_default()),
        "{reply}"
    );
    assert_ne!(
        client_ip(&reply),
        EXTERNAL_IP,
        "instance mode double hop masquerades: {reply}"
    );
    let table = balancer(&lab);
    for node in ["192.168.33.11", "192.168.33.12"] {
        assert!(
            table.contains(&format!("dnat ip to {node}:{node_port}")),
            "{node}:\n{table}"
        );
    }

    // An invalid mode: reported, the default kept.
    let event = lab
        .eventually(WAIT, || {
            let events = lab.get_json(&["events", "-n", "default"]);
            events["items"]
                .as_array()?
                .iter()
                .find(|e| {
                    e["involvedObject"]["name"] == "web-bad"
                        && e["reason"] == "InvalidLoadBalancerTarget"
                })
                .cloned()
        })
        .expect("an InvalidLoadBalancerTarget event");
    assert!(
        event["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"pods\""),
        "{event}"
    );
    let vip = ingress(&lab, "web-bad");
    lab.eventually(WAIT, || lab.probe("external", &format!("tcp://{vip}:80")))
        .expect("the default mode serves");

    // The balancer's health checks: a dead endpoint never gets a connection.
    let live = pods[0].1.clone();
    lab.apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: ghost
  annotations: {{sarasa.io/load-balancer-target: ip}}
spec:
  type: LoadBalancer
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ghost-1
  labels: {{kubernetes.io/service-name: ghost}}
addressType: IPv4
ports:
- {{name: http, port: 8080, protocol: TCP}}
endpoints:
- addresses: ["{live}"]
  conditions: {{ready: true}}
- addresses: ["10.244.250.9"]
  conditions: {{ready: true}}
"#
    ));
    let vip = ingress(&lab, "ghost");
    let out = lab.eventually(WAIT, || {
        let t = balancer(&lab);
        (t.contains(&format!("dnat ip to {live}:8080")) && !t.contains("10.244.250.9")).then_some(t)
    });
    assert!(
        out.is_some(),
        "the dead target stays in rotation:\n{}",
        balancer(&lab)
    );
    for i in 0..10 {
        let reply = lab
            .probe("external", &format!("tcp://{vip}:80"))
            .unwrap_or_else(|| panic!("probe {i} through ghost failed:\n{}", balancer(&lab)));
        assert_eq!(client_ip(&reply), EXTERNAL_IP);
    }

    // Pods themselves are not reachable from outside.
    let out = lab.probe_outcome("external", &format!("tcp://{live}:8080"), "2s");
    assert!(
        out.reply.is_err(),
        "a pod answered the external host directly: {:?}",
        out.reply
    );
}

fn roll_objects(version: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
spec:
  replicas: {replicas}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  selector:
    matchLabels: {{app: roll}}
  template:
    metadata:
      labels: {{app: roll}}
      annotations: {{version: "{version}"}}
    spec:
      readinessGates:
      - conditionType: sarasa.io/load-balancer-ready
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: sarasa/serve
        ports:
        - {{name: http, containerPort: 8080}}
        lifecycle:
          preStop:
            sleep: {{seconds: 2}}
---
apiVersion: v1
kind: Service
metadata:
  name: roll
  annotations: {{sarasa.io/load-balancer-target: ip}}
spec:
  type: LoadBalancer
  selector: {{app: roll}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
"#
    )
}

/// Pods of `roll` that are Ready, not terminating, with this version.
fn ready_pods(lab: &TestLab, version: &str) -> Vec<serde_json::Value> {
    let list = lab.get_json(&["pods", "-n", "default"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["labels"]["app"] == "roll")
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["metadata"]["annotations"]["version"] == version)
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .cloned()
        .collect()
}

fn roll_pods(lab: &TestLab) -> usize {
    let list = lab.get_json(&["pods", "-n", "default"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["labels"]["app"] == "roll")
        .count()
}

#[test]
fn ip_mode_readiness_gate_scaling_and_rolling_update_drop_no_request() {
    let lab = TestLab::up(&["--nodes", "2"]);
    // `apply --wait` returns once the pods are Ready: only after the balancer opened their gate.
    lab.apply(&roll_objects("1", 2));
    let pods = ready_pods(&lab, "1");
    assert_eq!(pods.len(), 2, "{pods:?}");
    for p in &pods {
        let gate = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "sarasa.io/load-balancer-ready")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            gate["status"], "True",
            "gate of {}: {p}",
            p["metadata"]["name"]
        );
    }
    let vip = ingress(&lab, "roll");
    let url = format!("tcp://{vip}:80");
    lab.eventually(WAIT, || lab.probe("external", &url))
        .expect("the listener answers");

    // A steady client through every change.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (stop, name, url) = (stop.clone(), lab.name.clone(), url.clone());
        std::thread::spawn(move || {
            let lab = TestLab { name };
            let (mut ok, mut failed, mut seen) = (0u32, Vec::new(), BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = lab.probe_outcome("external", &url, "3s");
                match out.reply {
                    Ok(r) => {
                        ok += 1;
                        seen.insert(r["pod"].as_str().unwrap_or_default().to_string());
                    }
                    Err(e) => failed.push(e),
                }
            }
            std::mem::forget(lab); // the test's own TestLab tears the lab down
            (ok, failed, seen)
        })
    };
    let converge = |version: &str, n: usize| {
        lab.eventually(Duration::from_secs(90), || {
            (ready_pods(&lab, version).len() == n && roll_pods(&lab) == n).then_some(())
        })
        .unwrap_or_else(|| panic!("roll never settled at {n} pods of version {version}"));
    };
    lab.apply_nowait(&roll_objects("1", 4));
    converge("1", 4);
    lab.apply_nowait(&roll_objects("1", 2));
    converge("1", 2);
    lab.apply_nowait(&roll_objects("2", 2));
    converge("2", 2);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed, seen) = client.join().expect("client thread");
    eprintln!(
        "steady client: {ok} requests answered, {} failed, by {} pods",
        failed.len(),
        seen.len()
    );
    assert!(ok >= 10, "too few requests to judge: {ok}");
    // The loop ran through the whole change: old and new pods both answered it.
    let first: BTreeSet<String> = pods
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let last: BTreeSet<String> = ready_pods(&lab, "2")
        .iter()
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        !seen.is_disjoint(&first) && !seen.is_disjoint(&last),
        "seen {seen:?}, first {first:?}, last {last:?}"
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
}
