//! Time of the fabric plan with conflict checks (`compile_trusted`) for N nodes, first plan
//! (no history) and steady state (every node an incumbent): p50 of 20 runs.
//!
//!   cargo run --release -p sarasa-plan --example fabric_bench -- 1000 5000

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use sarasa_model::{Backend, MacAddr};
use sarasa_plan::fabric::{compile_trusted, LocalNode, PeerNode};

fn nodes(n: u32) -> Vec<PeerNode> {
    (0..n)
        .map(|i| PeerNode {
            name: format!("node-{i:05}"),
            pod_cidrs: vec![format!("10.{}.{}.0/24", 64 + i / 256, i % 256)
                .parse()
                .unwrap()],
            underlay_ip: Some(IpAddr::V4(Ipv4Addr::from(0xac10_0000 + i + 1))),
            vtep_mac: Some(MacAddr([
                2,
                0,
                0,
                (i >> 16) as u8,
                (i >> 8) as u8,
                i as u8 + 1,
            ])),
            vpc_address_limit: None,
        })
        .collect()
}

fn p50(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..20)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let sizes: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a node count"))
        .collect();
    for n in if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    } {
        let peers = nodes(n);
        let local = LocalNode {
            name: "node-00000".into(),
            backend: Backend::Vxlan,
            underlay_ip: peers[0].underlay_ip.unwrap(),
            uplink: "eth0".into(),
            uplink_mtu: 1500,
            vtep_mac: peers[0].vtep_mac,
            cluster_cidrs: vec!["10.64.0.0/10".parse().unwrap()],
            remote_cluster_cidrs: Vec::new(),
            global_egress: Vec::new(),
        };
        let first = compile_trusted(&peers, &local, &BTreeMap::new()).unwrap();
        assert_eq!(first.remote_nodes as u32, n - 1);
        let cold = p50(|| {
            compile_trusted(&peers, &local, &BTreeMap::new()).unwrap();
        });
        let warm = p50(|| {
            compile_trusted(&peers, &local, &first.accepted).unwrap();
        });
        println!("{n} nodes: first plan {cold:.2} ms, steady {warm:.2} ms (p50 of 20)");
    }
}
