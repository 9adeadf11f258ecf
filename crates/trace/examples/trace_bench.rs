//! How long one `sarasa trace` takes with 10,000 Services and 1,000 NetworkPolicies present
//! (3 nodes, 2,000 pods): the node plans are compiled once (the CLI does it per call, so that
//! time is printed too), then each kind of trace is timed over many runs; medians and p99.
//!
//! `cargo run --release -p sarasa-trace --example trace_bench [SERVICES] [POLICIES]`

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sarasa_model::{
    AddressType, Backend, CniMode, Endpoint, EndpointPort, EndpointSlice, MacAddr, Protocol,
    Service, ServicePort, ServiceType,
};
use sarasa_plan::{build, LocalNode, NodeInputs, PeerNode, PolicyInputs};
use sarasa_policy::{
    LabelSelector, NetworkPolicy, Peer, PolicyNamespace, PolicyPod, PolicyPort, PolicyRule,
    PolicyState, PortRef,
};
use sarasa_proxy::ProxyConfig;
use sarasa_trace::{
    trace, Destination, ExternalView, FabricView, NodeView, PodView, Proto, Query, Source, World,
};

const NODES: u8 = 3;
const PODS_PER_NS: usize = 20;
const POLICIES_PER_NS: usize = 10;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("generated address")
}

/// Pod `i` of the cluster: node `i % 3`, address in that node's /20.
fn pod_ip(i: usize) -> IpAddr {
    let node = i % NODES as usize;
    let n = i / NODES as usize + 2;
    ip(&format!("10.244.{}.{}", node * 16 + n / 256, n % 256))
}

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn objects(
    services: usize,
    policies: usize,
) -> (Vec<Service>, Vec<EndpointSlice>, PolicyState, Vec<PodView>) {
    let namespaces = policies.div_ceil(POLICIES_PER_NS).max(1);
    let mut st = PolicyState::new();
    let mut pods = Vec::new();
    for ns in 0..namespaces {
        st.apply_namespace(PolicyNamespace::new(format!("ns-{ns}"), Default::default()));
        for j in 0..PODS_PER_NS {
            let i = ns * PODS_PER_NS + j;
            let pod = PolicyPod {
                namespace: format!("ns-{ns}"),
                name: format!("pod-{j}"),
                labels: labels(&[("app", format!("app-{}", j % 10))]),
                ips: vec![pod_ip(i)],
                ports: vec![],
                node: Some(format!("node-{}", i % NODES as usize + 1)),
            };
            pods.push(PodView {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                node: pod.node.clone(),
                ips: pod.ips.clone(),
                host_network: false,
            });
            st.apply_pod(pod);
        }
        for k in 0..POLICIES_PER_NS.min(policies - ns * POLICIES_PER_NS) {
            let sel = |app: String| LabelSelector {
                match_labels: labels(&[("app", app)]),
                ..LabelSelector::default()
            };
            st.apply_policy(NetworkPolicy {
                namespace: format!("ns-{ns}"),
                name: format!("np-{k}"),
                pod_selector: sel(format!("app-{k}")),
                policy_types: vec![sarasa_policy::Direction::Ingress],
                ingress: vec![PolicyRule {
                    peers: vec![Peer::Pods {
                        pod_selector: Some(sel(format!("app-{}", (k + 1) % 10))),
                        namespace_selector: None,
                    }],
                    ports: vec![PolicyPort {
                        protocol: sarasa_policy::Protocol::Tcp,
                        port: Some(PortRef::Number(8080)),
                        end_port: None,
                    }],
                }],
                egress: vec![],
            })
            .expect("valid policy");
        }
    }
    let mut svcs = Vec::with_capacity(services);
    let mut slices = Vec::with_capacity(services);
    for i in 0..services {
        let name = format!("s{i}");
        svcs.push(Service {
            ports: vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30000 + (i % 2000) as u16),
                target_port: None,
            }],
            type_: if i < 2000 {
                ServiceType::NodePort
            } else {
                ServiceType::ClusterIP
            },
            ..Service::cluster_ip(
                "ns-0",
                &name,
                vec![ip(&format!("10.96.{}.{}", i / 250, i % 250 + 1))],
            )
        });
        let eps = [(i * 7) % pods.len(), (i * 13 + 1) % pods.len()];
        slices.push(EndpointSlice {
            namespace: "ns-0".into(),
            name: format!("{name}-1"),
            service_name: name,
            address_type: AddressType::Ipv4,
            source_cluster: None,
            endpoints: eps
                .iter()
                .map(|&p| Endpoint::ready(pods[p].ips[0], pods[p].node.as_deref()))
                .collect(),
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        });
    }
    for n in 1..=NODES {
        st.apply_node(format!("node-{n}"), vec![ip(&format!("192.168.33.1{n}"))]);
    }
    (svcs, slices, st, pods)
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("nproc={nproc}, CPU: {cpu}")
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let services: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let policies: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    println!("sarasa-trace bench on {}", machine());
    let (svcs, slices, policy, pods) = objects(services, policies);
    println!(
        "{services} Services, {policies} NetworkPolicies, {} pods, {NODES} nodes",
        pods.len()
    );

    let peers: Vec<PeerNode> = (1..=NODES)
        .map(|i| PeerNode {
            name: format!("node-{i}"),
            pod_cidrs: vec![format!("10.244.{}.0/20", (i - 1) * 16)
                .parse()
                .expect("cidr")],
            underlay_ip: Some(ip(&format!("192.168.33.1{i}"))),
            vtep_mac: Some(MacAddr([2, 0, 0, 0, 0, i])),
            vpc_address_limit: None,
        })
        .collect();
    let started = Instant::now();
    let nodes: Vec<NodeView> = peers
        .iter()
        .map(|p| {
            let local = LocalNode {
                name: p.name.clone(),
                backend: Backend::Vxlan,
                underlay_ip: p.underlay_ip.expect("set"),
                uplink: "eth0".into(),
                uplink_mtu: 1500,
                vtep_mac: p.vtep_mac,
                cluster_cidrs: vec!["10.244.0.0/16".parse().expect("cidr")],
                remote_cluster_cidrs: Vec::new(),
                global_egress: Vec::new(),
            };
            let plan = build(&NodeInputs {
                local: &local,
                nodes: &peers,
                node_addresses: vec![local.underlay_ip],
                services: &svcs,
                endpoint_slices: &slices,
                proxy: Some(ProxyConfig::default()),
                policy: Some(PolicyInputs {
                    state: &policy,
                    log_group: 100,
                }),
                cni_mode: CniMode::Bridge,
                ipam_data_dir: Path::new("/var/lib/sarasa/ipam"),
            })
            .expect("plan");
            NodeView {
                name: p.name.clone(),
                underlay_ip: local.underlay_ip,
                uplink: "eth0".into(),
                plan,
            }
        })
        .collect();
    println!(
        "compile {NODES} node plans (once per `sarasa trace` call): {}",
        ms(started.elapsed())
    );
    let world = World {
        nodes,
        pods,
        services: svcs.into_iter().map(Arc::new).collect(),
        fabric: FabricView {
            name: "fabric".into(),
            underlay: "192.168.33.0/24".parse().expect("cidr"),
            address: ip("192.168.33.1"),
            external: Some(ExternalView {
                name: "external".into(),
                ip: ip("203.0.113.10"),
                subnet: "203.0.113.0/24".parse().expect("cidr"),
            }),
            service_routes: BTreeMap::new(),
        },
        policy,
        cluster_set: None,
    };
    let pod = |ns: usize, j: usize| Source::Pod {
        namespace: format!("ns-{ns}"),
        name: format!("pod-{j}"),
    };
    let cases = [
        (
            "pod → Service (2 endpoints, cross-node, policy)",
            pod(0, 1),
            Destination::Service {
                namespace: "ns-0".into(),
                name: format!("s{}", services / 2),
            },
            None,
        ),
        (
            "pod → pod, denied by policy",
            pod(3, 4),
            Destination::Pod {
                namespace: "ns-5".into(),
                name: "pod-3".into(),
            },
            Some(8080),
        ),
        (
            "external → NodePort",
            Source::External,
            Destination::Node("node-2".into()),
            Some(30007),
        ),
    ];
    println!(
        "{:<50} {:>10} {:>10} {:>9}",
        "trace", "p50", "p99", "verdict"
    );
    for (what, from, to, port) in cases {
        let q = Query {
            from,
            to,
            port,
            proto: Proto::Tcp,
        };
        let mut times = Vec::new();
        let mut verdict = String::new();
        for _ in 0..50 {
            let t = Instant::now();
            let r = trace(&world, &q).expect("trace");
            times.push(t.elapsed());
            verdict = r.verdict.as_str().to_string();
        }
        times.sort();
        println!(
            "{what:<50} {:>10} {:>10} {verdict:>9}",
            ms(times[times.len() / 2]),
            ms(times[times.len() * 99 / 100])
        );
    }
}
