//! hostPort through the `portMappings` capability, with real packets: a client outside the
//! node reaches a pod at the node's address and the pod sees the client's own address; the
//! node reaches it too (output hook); a second pod asking for the same port on the node is
//! refused with code 105 and nothing half-configured; DEL, GC and CHECK keep the node's
//! `inet sarasa-hostport` table equal to what the IPAM store records.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;
use sarasa_netns::NetNs;
use serde_json::{json, Value};

const CLIENT_V4: &str = "192.168.201.2";

/// A client namespace wired to the node: 192.168.201.2/24 ↔ 192.168.201.1/24, routed to the
/// node's own address.
fn client(node: &Node) -> Ns {
    let c = Ns::new(&format!("{}-c", node.tag));
    let sh = format!(
        "ip link add hpn type veth peer name hpc netns {c} && \
         ip addr add 192.168.201.1/24 dev hpn && ip link set hpn up && \
         ip -n {c} addr add {CLIENT_V4}/24 dev hpc && ip -n {c} link set hpc up && \
         ip -n {c} link set lo up && \
         ip -n {c} route add {NODE_V4}/32 via 192.168.201.1",
        c = c.name
    );
    let out = Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path()))
        .args(["sh", "-c", &sh])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c
}

fn with_ports(conf: &Value, ports: Value) -> Value {
    let mut c = conf.clone();
    c["capabilities"] = json!({"portMappings": true});
    c["runtimeConfig"] = json!({ "portMappings": ports });
    c
}

/// Connects from `from` to `target`; the pod (listening in `pod` on `listen`) answers with the
/// client address it saw.
fn seen_through(
    from: &NetNs,
    target: SocketAddr,
    pod: &NetNs,
    listen: SocketAddr,
) -> Result<IpAddr, String> {
    let listener: TcpListener = pod
        .run(move || TcpListener::bind(listen))
        .unwrap()
        .map_err(|e| format!("bind {listen}: {e}"))?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, peer) = listener.accept()?;
        s.write_all(peer.ip().to_string().as_bytes())
    });
    let got = from
        .run(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        })
        .unwrap();
    match got {
        Ok(ip) => {
            server.join().unwrap().map_err(|e| e.to_string())?;
            ip.parse().map_err(|e| format!("{ip:?}: {e}"))
        }
        Err(e) => {
            // Unblock the acceptor so the thread ends.
            let _ = pod.run(move || TcpStream::connect_timeout(&listen, Duration::from_secs(1)));
            let _ = server.join();
            Err(format!("connect to {target}: {e}"))
        }
    }
}

fn table(node: &Node) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path()))
        .args(["nft", "list", "table", "inet", "sarasa-hostport"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hostport_in_both_modes(mode: &str, tag: &str) {
    let node = Node::new(tag);
    let ext = client(&node);
    let base = node.conf("1.1.0", mode, true);
    let web = json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]);
    let p1 = node.pod(1);
    let r1 = node
        .add(&with_ports(&base, web.clone()), "c1", &p1, "eth0")
        .ok();
    let pod_v4 = result_ips(&r1)[0];
    let node_addr: SocketAddr = format!("{NODE_V4}:18080").parse().unwrap();
    let pod_listen = SocketAddr::new(pod_v4, 8080);

    // From outside the node: the pod sees the client's own address.
    let seen = seen_through(&ext.ns, node_addr, &p1.ns, pod_listen).unwrap();
    assert_eq!(
        seen,
        CLIENT_V4.parse::<IpAddr>().unwrap(),
        "{mode}: source kept"
    );
    // From the node itself.
    seen_through(&node.ns.ns, node_addr, &p1.ns, pod_listen).unwrap();
    // From another pod of this node (hairpin through the node's address): masqueraded, so the
    // answer comes back through the node.
    let p9 = node.pod(9);
    let r9 = node.add(&base, "c9", &p9, "eth0").ok();
    let seen = seen_through(&p9.ns, node_addr, &p1.ns, pod_listen)
        .unwrap_or_else(|e| panic!("{mode}: hairpin: {e}"));
    assert!(
        !result_ips(&r9).contains(&seen),
        "{mode}: hairpin masqueraded to the node: {seen}"
    );
    node.del(&base, "c9", Some(&p9.path()), "eth0").ok();
    let rules = table(&node);
    assert!(rules.contains("tcp dport 18080 dnat ip to"), "{rules}");
    assert!(
        rules.contains("tcp dport 18080 dnat ip6 to"),
        "dual-stack pod: {rules}"
    );

    // CHECK holds while the table is in place.
    node.check(&with_ports(&base, web.clone()), &r1, "c1", &p1, "eth0")
        .ok();

    // The same port for a second pod on this node: refused, nothing set up.
    let p2 = node.pod(2);
    let veths = node.host_veths();
    let e = node
        .add(&with_ports(&base, web.clone()), "c2", &p2, "eth0")
        .err(105);
    let details = e["details"].as_str().unwrap();
    assert!(
        details.contains("18080/tcp") && details.contains("c1"),
        "{e}"
    );
    assert_eq!(node.host_veths(), veths, "no veth left by the refused ADD");
    let allocs = node.allocations().to_string();
    assert!(
        !allocs.contains("\"c2\""),
        "no address held by the refused ADD: {allocs}"
    );
    // UDP on the same number is another port.
    let dns = json!([{"hostPort": 18080, "containerPort": 53, "protocol": "UDP"}]);
    let r2 = node.add(&with_ports(&base, dns), "c2", &p2, "eth0").ok();
    assert!(table(&node).contains("udp dport 18080"));

    // DEL takes the pod's rules away and frees the port.
    node.del(&base, "c1", Some(&p1.path()), "eth0").ok();
    assert!(!table(&node).contains("tcp dport 18080"));
    let p3 = node.pod(3);
    node.add(&with_ports(&base, web.clone()), "c3", &p3, "eth0")
        .ok();
    assert!(table(&node).contains("tcp dport 18080"));

    // CHECK notices a table that lost its rules; GC of everything removes the table.
    let flush = Command::new("nsenter")
        .arg(format!("--net={}", node.ns.path()))
        .args([
            "nft",
            "flush",
            "chain",
            "inet",
            "sarasa-hostport",
            "hostports",
        ])
        .status()
        .unwrap();
    assert!(flush.success());
    node.check(
        &with_ports(
            &base,
            json!([{"hostPort": 18080, "containerPort": 53, "protocol": "udp"}]),
        ),
        &r2,
        "c2",
        &p2,
        "eth0",
    )
    .err(104);
    node.gc(&base, &[]).ok();
    assert_eq!(table(&node), "", "GC of every attachment removes the table");
}

#[test]
fn hostport_bridge_mode() {
    hostport_in_both_modes("bridge", "hpb");
}

#[test]
fn hostport_routed_mode() {
    hostport_in_both_modes("routed", "hpr");
}

#[test]
fn invalid_port_mappings_name_the_field_and_change_nothing() {
    let node = Node::new("hpx");
    let base = node.conf("1.1.0", "bridge", false);
    let p1 = node.pod(1);
    let bad = json!([{"hostPort": 70000, "containerPort": 80}]);
    let e = node.add(&with_ports(&base, bad), "c1", &p1, "eth0").err(7);
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("runtimeConfig.portMappings[0].hostPort"),
        "{e}"
    );
    assert!(node.host_veths().is_empty());
}
