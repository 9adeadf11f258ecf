//! Cost of interpreting one packet (`sarasa_nft::interp`) over a node's compiled service
//! tables (main + every shard): what `sarasa trace` pays per hook. Prints figures; asserts
//! nothing.
//!
//! ```text
//! cargo run --release -p sarasa-proxy --example interp_bench            # 10k Services
//! cargo run --release -p sarasa-proxy --example interp_bench -- 100000
//! ```

use std::net::IpAddr;
use std::time::Instant;

use sarasa_model::{
    AddressType, Endpoint, EndpointPort, EndpointSlice, NodeInfo, Protocol, Service, ServicePort,
    ServiceType,
};
use sarasa_nft::interp::{run_hook, Env, Packet, Ruleset};
use sarasa_nft::{Hook, L4Proto, Table};
use sarasa_proxy::{compile, ProxyConfig};

const NODE: [u8; 4] = [192, 168, 33, 11];

struct Node;

impl Env for Node {
    fn is_local(&self, addr: IpAddr) -> bool {
        addr == IpAddr::from(NODE)
    }
    fn masquerade_source(&self, _: Option<&str>, _: IpAddr) -> Option<IpAddr> {
        Some(IpAddr::from(NODE))
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("generated IP")
}

/// `n` Services, one in five a NodePort, each with three endpoints.
fn objects(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let (hi, mid, lo) = ((i / 250) / 256, (i / 250) % 256, i % 250 + 1);
        let name = format!("s{i}");
        services.push(Service {
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30000 + (i % 2000) as u16),
                target_port: None,
            }],
            type_: if i % 5 == 0 {
                ServiceType::NodePort
            } else {
                ServiceType::ClusterIP
            },
            ..Service::cluster_ip(
                "default",
                &name,
                vec![ip(&format!("10.{}.{mid}.{lo}", 96 + hi))],
            )
        });
        slices.push(EndpointSlice {
            namespace: "default".into(),
            name: format!("{name}-1"),
            service_name: name,
            address_type: AddressType::Ipv4,
            source_cluster: None,
            endpoints: (0..3)
                .map(|e| Endpoint::ready(ip(&format!("10.{}.{mid}.{lo}", 200 + e)), Some("node-1")))
                .collect(),
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        });
    }
    (services, slices)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("number of Services"))
        .unwrap_or(10_000);
    let (services, slices) = objects(n);
    let node = NodeInfo {
        name: "node-1".into(),
        addresses: vec![IpAddr::from(NODE)],
        pod_cidrs: vec!["10.244.1.0/24".parse().expect("CIDR")],
    };
    let config = ProxyConfig {
        cluster_cidrs: vec!["10.244.0.0/16".parse().expect("CIDR")],
        ..ProxyConfig::default()
    };
    let t = Instant::now();
    let st = compile(config, node, &services, &slices).expect("compile");
    let compiled = t.elapsed();
    let t = Instant::now();
    let tables = st.tables();
    let built = t.elapsed();
    let refs: Vec<&Table> = tables.iter().collect();
    println!(
        "{n} Services, {} tables: compile {compiled:.1?}, ProxyState::tables() {built:.1?}",
        tables.len()
    );
    let t = Instant::now();
    let ruleset = Ruleset::new(&refs);
    println!(
        "Ruleset::new (find and order the base chains): {:.1?}",
        t.elapsed()
    );

    let pod = IpAddr::from([10, 244, 1, 7]);
    let mid = n / 2;
    let hit = ip(&format!("10.96.{}.{}", (mid / 250) % 256, mid % 250 + 1));
    let cases = [
        (
            "pod -> ClusterIP (prerouting)",
            Hook::Prerouting,
            Packet::new(pod, hit, L4Proto::Tcp, 40000, 80),
        ),
        (
            "pod -> no Service (prerouting)",
            Hook::Prerouting,
            Packet::new(pod, ip("10.250.0.1"), L4Proto::Tcp, 40000, 80),
        ),
        (
            "outside -> NodePort (prerouting)",
            Hook::Prerouting,
            Packet::new(
                ip("203.0.113.7"),
                IpAddr::from(NODE),
                L4Proto::Tcp,
                40000,
                30000,
            ),
        ),
        (
            "node -> ClusterIP (output)",
            Hook::Output,
            Packet::new(IpAddr::from(NODE), hit, L4Proto::Tcp, 40000, 80),
        ),
    ];
    let runs = 50;
    for (what, hook, packet) in cases {
        let t = Instant::now();
        let mut paths = 0;
        for _ in 0..runs {
            paths = ruleset
                .run_hook(hook, &packet, &Node)
                .expect("interpret")
                .len();
        }
        let indexed = t.elapsed() / runs;
        let t = Instant::now();
        for _ in 0..runs {
            run_hook(&refs, hook, &packet, &Node).expect("interpret");
        }
        println!(
            "{what}: {indexed:.1?} per Ruleset::run_hook, {:.1?} per run_hook ({paths} paths)",
            t.elapsed() / runs
        );
    }
}
