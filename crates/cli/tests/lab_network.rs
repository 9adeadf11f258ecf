//! Lab end-to-end: the Kubernetes network model across nodes, for both backends and both CNI
//! modes — every pod reaches every pod, every node reaches every pod, and each receiver sees
//! the sender's own address.

mod common;

use std::collections::BTreeSet;

use common::{client_ip, TestLab};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 6
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
        - containerPort: 8080
"#;

/// A node's addresses (any of them is "the node's own address").
fn node_addrs(lab: &TestLab, node: &str) -> BTreeSet<String> {
    let out = lab.ok(&["exec", &format!("node/{node}"), "--", "ip", "-j", "addr"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["local"].as_str().map(str::to_string))
        .collect()
}

fn network_model(flags: &[&str]) {
    let lab = TestLab::up(flags);
    lab.apply(DEPLOYMENT);
    let pods = lab.pods("default", "app", "web");
    assert_eq!(pods.len(), 6, "{pods:?}");
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(
        nodes.len(),
        3,
        "6 replicas spread over the 3 nodes: {pods:?}"
    );

    for (src, src_ip, _) in &pods {
        for (dst, dst_ip, dst_node) in &pods {
            let reply = lab
                .probe(src, &format!("tcp://{dst_ip}:8080"))
                .unwrap_or_else(|| panic!("{src} -> {dst} ({dst_ip} on {dst_node}) failed"));
            assert_eq!(reply["pod"], dst.as_str());
            assert_eq!(
                &client_ip(&reply),
                src_ip,
                "{dst} saw {src} as {} (NAT?)",
                reply["client"]
            );
        }
    }
    for node in ["node-1", "node-2", "node-3"] {
        let own = node_addrs(&lab, node);
        for (dst, dst_ip, _) in &pods {
            let reply = lab
                .probe(&format!("node/{node}"), &format!("tcp://{dst_ip}:8080"))
                .unwrap_or_else(|| panic!("{node} -> {dst} failed"));
            let seen = client_ip(&reply);
            assert!(
                own.contains(&seen),
                "{dst} saw {node} as {seen}, not one of {own:?}"
            );
        }
    }
    // The pods' connections are tracked; the VXLAN underlay that carried them is not.
    if flags.contains(&"vxlan") {
        for node in ["node-1", "node-2", "node-3"] {
            assert!(
                !lab.conntrack(node, "tcp", 8080).is_empty(),
                "{node} tracks no pod connection"
            );
            let vxlan = lab.conntrack(node, "udp", 8472);
            assert!(
                vxlan.is_empty(),
                "{node} tracks its VXLAN underlay: {vxlan:?}"
            );
        }
    }
}

#[test]
fn pods_and_nodes_reach_every_pod_vxlan_bridge() {
    network_model(&["--nodes", "3", "--backend", "vxlan", "--mode", "bridge"]);
}

#[test]
fn pods_and_nodes_reach_every_pod_vxlan_routed() {
    network_model(&["--nodes", "3", "--backend", "vxlan", "--mode", "routed"]);
}

#[test]
fn pods_and_nodes_reach_every_pod_hostgw_bridge() {
    network_model(&["--nodes", "3", "--backend", "host-gw", "--mode", "bridge"]);
}

#[test]
fn pods_and_nodes_reach_every_pod_hostgw_routed() {
    network_model(&["--nodes", "3", "--backend", "host-gw", "--mode", "routed"]);
}

#[test]
fn egress_is_masqueraded_and_pods_are_not_reachable_from_outside() {
    let lab = TestLab::up(&["--nodes", "2"]);
    lab.apply(DEPLOYMENT);
    let pods = lab.pods("default", "app", "web");
    let status = lab.get_json(&["nodes"]);
    for (pod, ip, node) in &pods {
        let reply = lab
            .probe(pod, "tcp://203.0.113.10:80")
            .unwrap_or_else(|| panic!("{pod} cannot reach the external server"));
        let node_ip = status["items"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["metadata"]["name"] == node.as_str())
            .and_then(|n| {
                n["status"]["addresses"]
                    .as_array()?
                    .iter()
                    .find(|a| a["type"] == "InternalIP")?["address"]
                    .as_str()
                    .map(str::to_string)
            })
            .expect("node InternalIP");
        assert_eq!(client_ip(&reply), node_ip, "{pod} ({ip}) not masqueraded");
        assert!(
            lab.probe("external", &format!("tcp://{ip}:8080")).is_none(),
            "the external host reached pod {pod} at {ip} directly"
        );
    }
}
