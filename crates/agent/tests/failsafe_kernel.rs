//! The failsafe isolation table (`agent/src/failsafe.rs`, issue 14: policy fails closed when
//! the kernel refuses the policy table) in a real kernel: the kernel takes it, new
//! connections to an ingress-isolated pod are dropped, and that pod's own connections out
//! (and their replies) still pass. Two pods routed through one node namespace. Requires root.

mod common;

use std::time::Duration;

use common::{ip, listen, netns_path, nft_out, Topology};
use sarasa_agent::failsafe::{self, Isolated};
use sarasa_agent::netns::NetnsTarget;

fn reaches(from: &str, to: &str) -> bool {
    let to: std::net::SocketAddr = to.parse().unwrap();
    common::in_ns(from, || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok()
    })
}

fn serve(ns: &str, addr: &str) {
    let l = listen(ns, addr);
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
}

#[test]
fn the_failsafe_table_isolates_the_selected_pods_in_the_kernel() {
    let (mut topo, nodes) = Topology::new("failsafe", 1);
    let node = &nodes[0];
    ip(&[
        "netns",
        "exec",
        &node.ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let open = topo.add_pod(node, "fsa", "10.244.1.10");
    let isolated = topo.add_pod(node, "fsb", "10.244.3.10");
    serve(&open, "0.0.0.0:7000");
    serve(&isolated, "0.0.0.0:7000");
    assert!(reaches(&open, "10.244.3.10:7000"), "open before");
    assert!(reaches(&isolated, "10.244.1.10:7000"), "open before");

    let table = failsafe::table(&Isolated {
        ingress: vec!["10.244.3.10".parse().unwrap()],
        egress: vec![],
    });
    let mut nft = sarasa_agent::nftables::open(&NetnsTarget::Path(netns_path(&node.ns)))
        .expect("nf_tables socket");
    sarasa_agent::nftables::reconcile(&mut nft, &table).expect("the kernel takes the table");
    let listed = nft_out(&node.ns, &["list", "table", "inet", failsafe::TABLE]);
    assert!(
        listed.contains("10.244.3.10") && listed.contains("drop"),
        "{listed}"
    );

    assert!(
        !reaches(&open, "10.244.3.10:7000"),
        "a new connection to the isolated pod passed"
    );
    assert!(
        reaches(&isolated, "10.244.1.10:7000"),
        "the isolated pod's own connection out (and its replies) must pass"
    );
}
