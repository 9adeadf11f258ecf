//! Stale UDP cleanup over netlink against real conntrack entries (root): a client pod sends
//! datagrams through a node namespace that DNATs a ClusterIP to an endpoint pod; the agent's
//! `delete_stale`, driving the node namespace by path, deletes exactly the entries each
//! [`StaleUdp`] names and leaves the others.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use sarasa_agent::conntrack::delete_stale;
use sarasa_agent::netns::NetnsTarget;
use sarasa_conntrack::wire::Family;
use sarasa_conntrack::Conntrack;
use sarasa_model::IpFamily;
use sarasa_proxy::{StaleUdp, UdpDest};

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Original destinations (address, port) of the node's UDP entries from the client.
fn entries(node: &str) -> Vec<(IpAddr, u16, IpAddr)> {
    let mut ct = Conntrack::open(Some(&netns_path(node))).unwrap();
    let mut out: Vec<_> = ct
        .list(Family::V4)
        .unwrap()
        .into_iter()
        .filter(|e| e.orig.proto == 17 && e.orig.src == addr("10.244.2.2"))
        .map(|e| (e.orig.dst, e.orig.dst_port.unwrap_or(0), e.reply.src))
        .collect();
    out.sort();
    out
}

#[test]
fn stale_udp_entries_are_deleted_over_netlink() {
    let (mut topo, nodes) = Topology::new("ct", 1);
    let node = &nodes[0];
    let client = topo.add_pod(node, "client", "10.244.2.2");
    let ep = topo.add_pod(node, "ep", "10.244.1.5");
    ip(&[
        "netns",
        "exec",
        &node.ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    // The ClusterIP 10.96.0.53:53 DNATed to the endpoint, as the proxy's tables do.
    ip(&[
        "netns",
        "exec",
        &node.ns,
        "nft",
        "add table ip t; add chain ip t pre { type nat hook prerouting priority -100; }; \
         add rule ip t pre ip daddr 10.96.0.53 udp dport 53 dnat to 10.244.1.5:5353",
    ]);
    let _servers: Vec<UdpSocket> = in_ns(&ep, || {
        [5353, 5354]
            .map(|p| UdpSocket::bind(("10.244.1.5", p)).unwrap())
            .into()
    });
    in_ns(&client, || {
        let s = UdpSocket::bind("10.244.2.2:0").unwrap();
        s.send_to(b"q", "10.96.0.53:53").unwrap();
        s.send_to(b"q", "10.244.1.5:5354").unwrap();
    });
    let dnat = (addr("10.96.0.53"), 53, addr("10.244.1.5"));
    let direct = (addr("10.244.1.5"), 5354, addr("10.244.1.5"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while entries(&node.ns) != vec![dnat, direct] {
        assert!(
            Instant::now() < deadline,
            "entries: {:?}",
            entries(&node.ns)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let target = NetnsTarget::Path(netns_path(&node.ns));
    let cluster_ip = |endpoint: &str| StaleUdp {
        dest: UdpDest::Ip {
            addr: addr("10.96.0.53"),
            port: 53,
        },
        endpoint: Some(addr(endpoint)),
    };
    // Another endpoint went: this entry is not its.
    let r = delete_stale(&target, &[cluster_ip("10.244.1.6")]);
    assert_eq!((r.ran, r.deleted, r.errors.len()), (1, 0, 0), "{r:?}");
    assert_eq!(entries(&node.ns), vec![dnat, direct]);
    // The endpoint behind it went: its entry goes, the unrelated one stays.
    let r = delete_stale(&target, &[cluster_ip("10.244.1.5")]);
    assert_eq!((r.ran, r.deleted, r.errors.len()), (1, 1, 0), "{r:?}");
    assert_eq!(entries(&node.ns), vec![direct]);
    // A NodePort-style destination: that port on any address.
    let np = StaleUdp {
        dest: UdpDest::NodePort {
            port: 5354,
            family: IpFamily::V4,
        },
        endpoint: None,
    };
    let r = delete_stale(&target, &[np]);
    assert_eq!((r.ran, r.deleted, r.errors.len()), (1, 1, 0), "{r:?}");
    assert_eq!(entries(&node.ns), vec![]);
}
