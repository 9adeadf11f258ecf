//! Lab end-to-end, `--ipam vpc`: the fabric plays the cloud VPC. Each node's agent takes VPC
//! addresses from the cloud's allocation API (a warm pool, up to the node's limit), the pods
//! get those addresses, and the VPC routes each address to its node (a /32 in the fabric):
//! - the Nodes carry their addresses and limit, report max pods from the limit, have no
//!   podCIDR and no overlay; the fabric routes each address to its node;
//! - pods on different nodes reach each other with their own addresses and no encapsulation
//!   (a counter in the fabric sees the pod-to-pod packet itself), trace names the VPC route,
//!   and `lab check` finds every node equal to its plan;
//! - the cloud answers nodes only: a pod (masqueraded to its node's address) gets no answer;
//! - an agent restart keeps the node's addresses;
//! - a node at its limit refuses the next pod with a CNI error naming the limit (an Event on
//!   the pod; the Node's VPCAddressesAvailable=False, AddressLimitReached), and addresses
//!   beyond the warm pool go back to the cloud once the pods are gone (routes removed).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::TestLab;
use serde_json::Value;

const LIMIT: usize = 8;
const WARM: usize = 2;

fn node(lab: &TestLab, name: &str) -> Value {
    lab.get_json(&["nodes"])["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|n| n["metadata"]["name"] == name)
                .cloned()
        })
        .expect("node listed")
}

/// The node's VPC addresses as its agent published them.
fn addresses(lab: &TestLab, name: &str) -> BTreeSet<String> {
    node(lab, name)["metadata"]["annotations"]["sarasa.io/vpc-addresses"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

const CONDITION: &str = "VPCAddressesAvailable";

/// The fabric's /32 routes: address → next hop.
fn vpc_routes(lab: &TestLab) -> Vec<(String, String)> {
    lab.exec("fabric", &["ip", "-4", "route", "show", "metric", "1035"])
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let dst = w.next()?.to_string();
            let via = w.skip_while(|x| *x != "via").nth(1)?.to_string();
            Some((dst, via))
        })
        .collect()
}

/// Pods on `node` holding a VPC address (not host-network ones), in every namespace.
fn pods_with_addresses(lab: &TestLab, name: &str) -> usize {
    lab.get_json(&["pods", "-A"])["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["spec"]["nodeName"] == name)
        .filter(|p| p["spec"]["hostNetwork"] != true)
        .filter(|p| {
            p["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty())
        })
        .count()
}

#[test]
fn pods_take_vpc_addresses_routed_by_the_vpc_up_to_the_node_limit() {
    let limit = LIMIT.to_string();
    let warm = WARM.to_string();
    let lab = TestLab::up(&[
        "--nodes",
        "2",
        "--ipam",
        "vpc",
        "--vpc-address-limit",
        &limit,
        "--vpc-warm-addresses",
        &warm,
    ]);
    let ips = [("node-1", "192.168.33.11"), ("node-2", "192.168.33.12")];
    for (name, ip) in ips {
        let n = node(&lab, name);
        assert!(n["spec"]["podCIDR"].is_null(), "{name} has a podCIDR: {n}");
        assert_eq!(
            n["status"]["capacity"]["pods"],
            (LIMIT + 1).to_string(),
            "{n}"
        );
        assert_eq!(
            n["metadata"]["annotations"]["sarasa.io/vpc-address-limit"],
            limit
        );
        assert_eq!(n["metadata"]["annotations"]["sarasa.io/backend"], "vpc");
        let held = lab
            .eventually(Duration::from_secs(20), || {
                let a = addresses(&lab, name);
                (a.len() >= WARM).then_some(a)
            })
            .unwrap_or_else(|| panic!("{name} holds no warm pool: {n}"));
        assert!(held.iter().all(|a| a.starts_with("10.244.")), "{held:?}");
        // The VPC routes each address to its node.
        let routes = lab
            .eventually(Duration::from_secs(10), || {
                let r = vpc_routes(&lab);
                held.iter()
                    .all(|a| r.contains(&(a.clone(), ip.to_string())))
                    .then_some(r)
            })
            .unwrap_or_else(|| panic!("fabric routes {:?} miss {held:?}", vpc_routes(&lab)));
        assert!(!routes.is_empty());
        let links = lab.exec(&format!("node/{name}"), &["ip", "-d", "link"]);
        assert!(
            !links.contains("vxlan"),
            "{name} has a VXLAN device: {links}"
        );
        let (status, reason, _) =
            lab.wait_condition_status(name, CONDITION, "True", Duration::from_secs(10));
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "WarmPoolReady")
        );
    }

    let status = lab.ok(&["lab", "status"]);
    assert!(
        status
            .lines()
            .filter(|l| l.starts_with("node-"))
            .all(|l| l.contains("vpc: ") && l.contains(&format!(" of {LIMIT}"))),
        "{status}"
    );

    // Two pods on two nodes: VPC addresses of their nodes, reaching each other directly.
    lab.apply(&common::serve_pod("vpc-a", "node-1", "vpc"));
    lab.apply(&common::serve_pod("vpc-b", "node-2", "vpc"));
    let (a, b) = (lab.pod_ip("vpc-a"), lab.pod_ip("vpc-b"));
    assert!(
        addresses(&lab, "node-1").contains(&a),
        "{a} is no address of node-1"
    );
    assert!(
        addresses(&lab, "node-2").contains(&b),
        "{b} is no address of node-2"
    );
    // A counter in the VPC (the fabric) for the pod-to-pod packets themselves.
    lab.exec("fabric", &["nft", "add", "table", "ip", "vpctest"]);
    lab.exec(
        "fabric",
        &[
            "nft",
            "add chain ip vpctest counted { type filter hook forward priority 0; }",
        ],
    );
    let rule = format!("add rule ip vpctest counted ip saddr {a} ip daddr {b} counter");
    lab.exec("fabric", &["nft", &rule]);
    let reach = |from: &str, to: &str, who: &str| {
        let url = format!("http://{to}:8080/");
        let reply = lab
            .eventually(Duration::from_secs(20), || lab.probe(from, &url))
            .unwrap_or_else(|| panic!("{from} cannot reach {to}\n{}", lab.logs()));
        assert_eq!(reply["pod"], who, "{reply}");
        reply
    };
    let reply = reach("vpc-a", &b, "vpc-b");
    assert_eq!(common::client_ip(&reply), a, "no NAT between pods: {reply}");
    reach("vpc-b", &a, "vpc-a");
    let counted = lab.exec("fabric", &["nft", "list", "table", "ip", "vpctest"]);
    let packets: u64 = counted
        .split("packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(packets > 0, "the VPC never saw {a} → {b}: {counted}");
    let route = lab.exec("node/node-1", &["ip", "route", "get", &b]);
    assert!(
        route.contains("via 192.168.33.1"),
        "node-1 routes {b} not to the VPC: {route}"
    );
    let trace = lab.ok(&[
        "trace", "--from", "vpc-a", "--to", "vpc-b", "--port", "8080",
    ]);
    assert!(
        trace.contains(&format!("the VPC routes {b}/32 to node-2")),
        "{trace}"
    );
    lab.check_equal();
    // `lab check` compares the VPC's routes with the Nodes' addresses too: a route deleted
    // behind the cloud's back is named, and the cloud puts it back.
    lab.exec(
        "fabric",
        &["ip", "route", "del", &format!("{b}/32"), "metric", "1035"],
    );
    let named = lab.run(&["lab", "check"]);
    let text = String::from_utf8_lossy(&named.stdout);
    assert!(
        !named.status.success()
            && text.contains(&format!("missing route {b}/32 via 192.168.33.12")),
        "{text}"
    );
    lab.eventually(Duration::from_secs(10), || {
        lab.run(&["lab", "check"]).status.success().then_some(())
    })
    .expect("the cloud never put the route back");

    // The cloud answers a node, but not a pod acting as its node (masqueraded to the node's
    // address): its answers carry a hop limit of 1, as IMDSv2's do.
    let cloud = "http://192.168.33.1:8775/v1/instance/addresses";
    let own = lab
        .probe("node/node-1", cloud)
        .unwrap_or_else(|| panic!("node-1 cannot reach the cloud\n{}", lab.logs()));
    assert_eq!(own["node"], "node-1", "{own}");
    assert_eq!(own["limit"], LIMIT, "{own}");
    // Bad requests name the field; a caller that is no node is refused; neither changes
    // what node-1 holds.
    let held = addresses(&lab, "node-1");
    let bad = lab.exec(
        "node/node-1",
        &["curl", "-s", "-XPOST", "-d", r#"{"cnt":1}"#, cloud],
    );
    assert!(
        bad.contains("InvalidParameterValue") && bad.contains("cnt"),
        "{bad}"
    );
    let stranger = lab.exec("fabric", &["curl", "-s", cloud]);
    assert!(stranger.contains("UnauthorizedOperation"), "{stranger}");
    let too_many = lab.exec(
        "node/node-1",
        &["curl", "-s", "-XPOST", "-d", r#"{"count":99}"#, cloud],
    );
    assert!(too_many.contains("AddressLimitExceeded"), "{too_many}");
    assert_eq!(addresses(&lab, "node-1"), held);
    let from_pod = lab.probe_outcome("vpc-a", cloud, "2s");
    assert!(
        from_pod.reply.is_err(),
        "a pod reached the cloud: {from_pod:?}"
    );

    // The cloud load balancer in ip mode sends to the pods' VPC addresses: they see the
    // external client's own address.
    lab.apply(&common::ip_target_service("vpc-lb", "vpc"));
    let vip = lab.ingress_ip("vpc-lb");
    let url = format!("tcp://{vip}:80");
    let reply = lab
        .eventually(Duration::from_secs(30), || lab.probe("external", &url))
        .unwrap_or_else(|| panic!("{url} never answered\n{}", lab.logs()));
    assert!(
        ["vpc-a", "vpc-b"].contains(&reply["pod"].as_str().unwrap_or_default()),
        "{reply}"
    );
    assert_eq!(common::client_ip(&reply), "203.0.113.10", "{reply}");
    // Inside the cluster the same Service by name (cluster DNS on VPC addresses, then the
    // ClusterIP) reaches the pod on the other node.
    lab.eventually(Duration::from_secs(20), || {
        let r = lab.probe("vpc-a", "http://vpc-lb.default.svc.cluster.local/")?;
        (r["pod"] == "vpc-b").then_some(())
    })
    .unwrap_or_else(|| panic!("vpc-a never reached vpc-b through vpc-lb\n{}", lab.logs()));
    lab.ok(&["delete", "service", "vpc-lb"]);

    // An agent restart keeps the node's addresses (the cloud is the record).
    let before = addresses(&lab, "node-1");
    lab.ok(&["lab", "agent", "restart", "node-1"]);
    reach("vpc-b", &a, "vpc-a");
    assert!(addresses(&lab, "node-1").contains(&a));
    assert!(
        addresses(&lab, "node-1").is_superset(&before) || addresses(&lab, "node-1").len() >= WARM,
        "{before:?} → {:?}",
        addresses(&lab, "node-1")
    );

    // Fill node-1 to its limit; the next pod is refused with the limit named.
    let used = pods_with_addresses(&lab, "node-1");
    let fill: Vec<String> = (0..LIMIT - used).map(|i| format!("fill-{i}")).collect();
    for f in &fill {
        lab.apply_nowait(&common::serve_pod(f, "node-1", "vpc"));
    }
    for f in &fill {
        lab.pod_ip(f);
    }
    assert_eq!(addresses(&lab, "node-1").len(), LIMIT);
    lab.apply_nowait(&common::serve_pod("over", "node-1", "vpc"));
    let event = lab.wait_event("default", "over", "FailedCreatePodSandBox", "limit");
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("node at its VPC address limit")
            && message.contains(&format!("{LIMIT} is the most the cloud gives it")),
        "{event}"
    );
    let over = lab.object("pods", "default", "over").expect("pod over");
    assert!(
        over["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{over}"
    );
    let (status, reason, _) =
        lab.wait_condition_status("node-1", CONDITION, "False", Duration::from_secs(10));
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "AddressLimitReached")
    );

    // The pods gone, what exceeds the warm pool goes back to the cloud and out of its routes.
    let full = addresses(&lab, "node-1");
    lab.ok(&["delete", "pod", "over"]);
    for f in &fill {
        lab.ok(&["delete", "pod", f]);
    }
    let kept = lab
        .eventually(Duration::from_secs(30), || {
            let a = addresses(&lab, "node-1");
            (a.len() <= pods_with_addresses(&lab, "node-1") + 2 * WARM && a.len() < LIMIT)
                .then_some(a)
        })
        .unwrap_or_else(|| panic!("nothing given back: {:?}", addresses(&lab, "node-1")));
    let returned: Vec<&String> = full.difference(&kept).collect();
    assert!(!returned.is_empty());
    lab.eventually(Duration::from_secs(10), || {
        let r = vpc_routes(&lab);
        returned
            .iter()
            .all(|a| !r.iter().any(|(d, _)| d == *a))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("routes of {returned:?} stay: {:?}", vpc_routes(&lab)));
    assert!(kept.contains(&a), "vpc-a's address stays with node-1");
    reach("vpc-b", &a, "vpc-a");
    assert_eq!(
        lab.wait_condition_status("node-1", CONDITION, "True", Duration::from_secs(10))
            .1,
        "WarmPoolReady"
    );

    // Max pods follows from the limit: a Deployment larger than the nodes' addresses fills
    // them and the rest waits Unschedulable ("Too many pods"): the scheduler stops them, not
    // the plugin's limit. (A burst larger than the warm pool may see the plugin's "try again"
    // while the agent takes more addresses; the kubelet retries.)
    // The deleted pods gone first (a terminating pod still holds its address).
    lab.eventually(Duration::from_secs(30), || {
        let pods = lab.get_json(&["pods", "-A"]);
        pods["items"]
            .as_array()?
            .iter()
            .all(|p| p["metadata"]["deletionTimestamp"].is_null())
            .then_some(())
    })
    .expect("the deleted pods never went away");
    let room: usize = ["node-1", "node-2"]
        .iter()
        .map(|n| LIMIT - pods_with_addresses(&lab, n))
        .sum();
    lab.apply_nowait(&deployment("many", room + 2));
    let pending = lab
        .eventually(Duration::from_secs(60), || {
            let pods = lab.pods("default", "app", "many");
            let running = pods.iter().filter(|p| !p.1.is_empty()).count();
            let waiting: Vec<String> = pods
                .iter()
                .filter(|p| p.2.is_empty())
                .filter_map(|p| {
                    let o = lab.object("pods", "default", &p.0)?;
                    let c = o["status"]["conditions"]
                        .as_array()?
                        .iter()
                        .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")?
                        .clone();
                    Some(c["message"].as_str()?.to_string())
                })
                .collect();
            (running == room && waiting.len() == 2).then_some(waiting)
        })
        .unwrap_or_else(|| panic!("{:?}\n{}", lab.pods("default", "app", "many"), lab.logs()));
    assert!(
        pending.iter().all(|m| m.ends_with("Too many pods.")),
        "{pending:?}"
    );
    let events = lab.get_json(&["events", "-n", "default"]);
    let failed: Vec<&Value> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| {
            e["reason"] == "FailedCreatePodSandBox"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("node at its VPC address limit"))
                && e["involvedObject"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("many-"))
        })
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

fn deployment(name: &str, replicas: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec:\n      containers:\n      - {{name: web, image: sarasa/serve, ports: [{{containerPort: 8080}}]}}\n"
    )
}

#[test]
fn ipam_vpc_refuses_an_overlay_or_bridge_naming_the_flag() {
    for (extra, flag) in [
        (["--backend", "vxlan"], "--backend vxlan"),
        (["--mode", "bridge"], "--mode bridge"),
    ] {
        let lab = common::unique_lab();
        let out = Command::new(common::sarasa_bin())
            .args(["--lab", &lab, "lab", "up", "--ipam", "vpc"])
            .args(extra)
            .output()
            .expect("sarasa runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(flag), "{flag}: {err}");
        assert!(
            !std::path::Path::new(&format!("/run/netns/sarasa-{lab}-fabric")).exists(),
            "a refused lab made namespaces"
        );
    }
    let out = Command::new(common::sarasa_bin())
        .args([
            "--lab",
            &common::unique_lab(),
            "lab",
            "up",
            "--ipam",
            "vpc",
            "--vpc-warm-addresses",
            "9",
            "--vpc-address-limit",
            "4",
        ])
        .output()
        .expect("sarasa runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--vpc-warm-addresses"),
        "{err}"
    );
}
