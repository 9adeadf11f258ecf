//! Real packets in both modes: a pod reaches its node and another pod on the same node, the
//! node reaches the pod, and every peer sees the pod's own address (no NAT), for IPv4 and
//! IPv6 (dual-stack ranges).

mod common;

use std::net::IpAddr;

use common::*;

fn exercise(mode: &str, tag: &str) {
    let node = Node::new(tag);
    let conf = node.conf("1.1.0", mode, true);
    let p1 = node.pod(1);
    let p2 = node.pod(2);
    let r1 = node.add(&conf, "c1", &p1, "eth0").ok();
    let r2 = node.add(&conf, "c2", &p2, "eth0").ok();
    let ips1 = result_ips(&r1);
    let ips2 = result_ips(&r2);
    assert_eq!(ips1.len(), 2);
    let node_ips: [IpAddr; 2] = [NODE_V4.parse().unwrap(), NODE_V6.parse().unwrap()];
    for fam in 0..2 {
        let (a, b) = (ips1[fam], ips2[fam]);
        // pod -> pod: the peer sees the pod's own address
        let seen =
            peer_seen(&p1.ns, &p2.ns, b).unwrap_or_else(|e| panic!("{mode} p1->p2 {b}: {e}"));
        assert_eq!(seen, a, "{mode}: p2 must see p1's address");
        let seen =
            peer_seen(&p2.ns, &p1.ns, a).unwrap_or_else(|e| panic!("{mode} p2->p1 {a}: {e}"));
        assert_eq!(seen, b);
        // pod -> node
        let seen = peer_seen(&p1.ns, &node.ns.ns, node_ips[fam])
            .unwrap_or_else(|e| panic!("{mode} p1->node {}: {e}", node_ips[fam]));
        assert_eq!(seen, a, "{mode}: the node must see the pod's address");
        // node -> pod
        let seen = peer_seen(&node.ns.ns, &p1.ns, a)
            .unwrap_or_else(|e| panic!("{mode} node->p1 {a}: {e}"));
        assert_eq!(seen.is_ipv4(), a.is_ipv4());
    }
    // the pod's gateway answers too (bridge: the bridge address; routed: proxied, so the
    // gateway address itself is not a host — reach the node instead, done above)
    if mode == "bridge" {
        let gw: IpAddr = r1["ips"][0]["gateway"].as_str().unwrap().parse().unwrap();
        let seen = peer_seen(&p1.ns, &node.ns.ns, gw).unwrap();
        assert_eq!(seen, ips1[0]);
    }
}

#[test]
fn bridge_mode_dual_stack() {
    exercise("bridge", "cbr");
}

#[test]
fn routed_mode_dual_stack() {
    exercise("routed", "crt");
}

#[test]
fn routed_mode_programs_host_routes_and_proxies() {
    let node = Node::new("crp");
    let conf = node.conf("1.1.0", "routed", true);
    let p1 = node.pod(1);
    let r = node.add(&conf, "c1", &p1, "eth0").ok();
    let host = r["interfaces"][0]["name"].as_str().unwrap();
    assert_eq!(r["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(r["ips"][1]["gateway"], "fe80::1");
    assert!(r["ips"][0]["address"].as_str().unwrap().ends_with("/32"));
    assert!(r["ips"][1]["address"].as_str().unwrap().ends_with("/128"));
    let routes = node.ns.netlink().routes(None).unwrap();
    let hidx = node.ns.netlink().link(host).unwrap().index;
    for ip in result_ips(&r) {
        assert!(
            routes.iter().any(|rt| rt.dst.addr() == ip
                && rt.dst.prefix_len() == rt.dst.max_prefix_len()
                && rt.oif == Some(hidx)),
            "host route for {ip}"
        );
    }
    assert_eq!(
        node.ns
            .ns
            .sysctl_read(&format!("net/ipv4/conf/{host}/proxy_arp"))
            .unwrap(),
        "1"
    );
    assert_eq!(
        node.ns
            .ns
            .sysctl_read(&format!("net/ipv6/conf/{host}/proxy_ndp"))
            .unwrap(),
        "1"
    );
    let proxies = node
        .ns
        .netlink()
        .neighs(Some(sarasa_netns::Family::V6), true)
        .unwrap();
    assert!(proxies
        .iter()
        .any(|n| n.ip.to_string() == "fe80::1" && n.index == hidx));
    // no bridge in routed mode
    assert!(node.ns.netlink().link_by_name("sarasa0").unwrap().is_none());
}

#[test]
fn ipv6_only_both_modes() {
    for (mode, tag) in [("bridge", "c6b"), ("routed", "c6r")] {
        let node = Node::new(tag);
        let mut conf = node.conf("1.1.0", mode, true);
        conf["ipam"]["ranges"] = serde_json::json!([[{"subnet": "fd00:10:244:8::/64"}]]);
        let (p1, p2) = (node.pod(1), node.pod(2));
        let r1 = node.add(&conf, "c1", &p1, "eth0").ok();
        let r2 = node.add(&conf, "c2", &p2, "eth0").ok();
        let (a, b) = (result_ips(&r1), result_ips(&r2));
        assert_eq!(a.len(), 1);
        assert!(a[0].is_ipv6());
        assert_eq!(peer_seen(&p1.ns, &p2.ns, b[0]).unwrap(), a[0], "{mode}");
        let node_v6: IpAddr = NODE_V6.parse().unwrap();
        assert_eq!(
            peer_seen(&p1.ns, &node.ns.ns, node_v6).unwrap(),
            a[0],
            "{mode}"
        );
        node.del(&conf, "c1", Some(&p1.path()), "eth0").ok();
        node.del(&conf, "c2", Some(&p2.path()), "eth0").ok();
        assert!(node.host_veths().is_empty());
    }
}

#[test]
fn bridge_ports_have_hairpin_on() {
    // A pod reaching itself through a Service is DNATed back to its own address: the frame
    // must be allowed out of the port it came in on.
    let node = Node::new("hp");
    let conf = node.conf("1.1.0", "bridge", false);
    let p1 = node.pod(1);
    let r = node.add(&conf, "c1", &p1, "eth0").ok();
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path()))
        .args(["ip", "-d", "-j", "link", "show", &host])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v[0]["linkinfo"]["info_slave_data"]["hairpin"],
        true,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
