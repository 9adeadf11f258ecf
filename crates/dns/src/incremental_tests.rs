//! An incremental update must yield exactly the snapshot a full build yields for the same
//! objects: random change sequences over a small universe (so addresses, names and PTRs
//! collide between owners), compared after every step with a fresh build.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sarasa_cluster::PodInfo;
use sarasa_model::{
    AddressType, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, Protocol, Service,
    ServicePort, ServiceType,
};

use super::ZoneState;
use crate::config::{PodsMode, ZoneConfig};
use crate::snapshot::{build, ZoneSnapshot};

const NAMESPACES: [&str; 2] = ["ns-a", "ns-b"];
const SERVICES: [&str; 4] = ["web", "db", "pets", "Bad.Name"];
const HOSTS: [&str; 3] = ["pet-0", "pet-1", "x"];

fn pick<'a, T>(rng: &mut StdRng, from: &'a [T]) -> &'a T {
    &from[rng.random_range(0..from.len())]
}

/// A small pool so that two owners often hold the same address (shared PTR names).
fn address(rng: &mut StdRng) -> IpAddr {
    if rng.random_bool(0.2) {
        format!("fd00::{}", rng.random_range(1..4)).parse().unwrap()
    } else {
        format!("10.0.0.{}", rng.random_range(1..7))
            .parse()
            .unwrap()
    }
}

fn random_service(rng: &mut StdRng, ns: &str, name: &str) -> Service {
    let ports = (0..rng.random_range(0..3))
        .map(|i| ServicePort {
            name: ["http", "", "dns"][i].into(),
            protocol: if i == 2 { Protocol::Udp } else { Protocol::Tcp },
            port: 80 + i as u16,
            node_port: None,
            target_port: None,
        })
        .collect();
    let mut svc = Service {
        namespace: ns.into(),
        name: name.into(),
        ports,
        publish_not_ready_addresses: rng.random_bool(0.3),
        ..Service::default()
    };
    match rng.random_range(0..3) {
        0 => svc.cluster_ips = (0..rng.random_range(1..3)).map(|_| address(rng)).collect(),
        1 => svc.headless = true,
        _ => {
            svc.type_ = ServiceType::ExternalName;
            svc.external_name = Some(format!("{}.example.com", pick(rng, &HOSTS)));
        }
    }
    svc
}

fn random_slice(rng: &mut StdRng, ns: &str, name: &str) -> EndpointSlice {
    let endpoints = (0..rng.random_range(0..4))
        .map(|_| Endpoint {
            addresses: vec![address(rng)],
            conditions: EndpointConditions {
                ready: rng.random_bool(0.7),
                serving: true,
                terminating: false,
            },
            node_name: None,
            hostname: rng.random_bool(0.4).then(|| pick(rng, &HOSTS).to_string()),
        })
        .collect();
    EndpointSlice {
        namespace: ns.into(),
        name: name.into(),
        // A slice may move to another Service between updates.
        service_name: pick(rng, &SERVICES).to_string(),
        address_type: AddressType::Ipv4,
        source_cluster: None,
        endpoints,
        ports: vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
    }
}

fn random_pod(rng: &mut StdRng, ns: &str, name: &str) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        pod_ips: (0..rng.random_range(0..3)).map(|_| address(rng)).collect(),
        phase: Some(pick(rng, &["Running", "Pending", "Succeeded"]).to_string()),
        hostname: rng.random_bool(0.7).then(|| pick(rng, &HOSTS).to_string()),
        subdomain: rng
            .random_bool(0.8)
            .then(|| pick(rng, &SERVICES).to_string()),
        ..PodInfo::default()
    }
}

/// Every name with every record, type by type in served order, and the pod-name sets.
fn canonical(s: &ZoneSnapshot) -> String {
    let names: BTreeMap<String, Vec<String>> = s
        .names
        .iter()
        .map(|(name, e)| {
            let sections = [
                RecordType::A,
                RecordType::AAAA,
                RecordType::SRV,
                RecordType::PTR,
                RecordType::TXT,
                RecordType::SOA,
                RecordType::CNAME,
            ]
            .map(|t| e.records(name, s.config.ttl, t));
            let records = sections
                .iter()
                .map(|set| {
                    set.iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .collect();
            (name.to_string(), records)
        })
        .collect();
    let mut pods: Vec<_> = s.pod_addresses.iter().collect();
    pods.sort();
    let mut namespaces: Vec<_> = s.pod_namespaces.iter().collect();
    namespaces.sort();
    format!(
        "{names:#?}\n{pods:?}\n{namespaces:?}\nrecords={} names={} soa={}",
        s.record_count,
        s.names.len(),
        s.soa
    )
}

/// One random change sequence; the test's own maps are the truth the full build reads.
fn run(seed: u64, mode: PodsMode) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut config = ZoneConfig::new("cluster.local").unwrap();
    config.pods = mode;
    let mut state = ZoneState::new(&config);
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut pods: BTreeMap<String, PodInfo> = BTreeMap::new();
    let mut names_seen = 0;
    for generation in 1..=150u64 {
        for _ in 0..rng.random_range(1..4) {
            let ns = *pick(&mut rng, &NAMESPACES);
            let remove = rng.random_bool(0.25);
            match rng.random_range(0..3) {
                0 => {
                    let name = *pick(&mut rng, &SERVICES);
                    let key = format!("{ns}/{name}");
                    let svc = (!remove).then(|| random_service(&mut rng, ns, name));
                    state.set_service(&key, svc.clone().map(Arc::new));
                    match svc {
                        Some(s) => services.insert(key, s),
                        None => services.remove(&key),
                    };
                }
                1 => {
                    let name = format!("slice-{}", rng.random_range(0..4));
                    let key = format!("{ns}/{name}");
                    let slice = (!remove).then(|| random_slice(&mut rng, ns, &name));
                    state.set_slice(&key, slice.clone().map(Arc::new));
                    match slice {
                        Some(s) => slices.insert(key, s),
                        None => slices.remove(&key),
                    };
                }
                _ => {
                    let name = format!("pod-{}", rng.random_range(0..4));
                    let key = format!("{ns}/{name}");
                    let pod = (!remove).then(|| random_pod(&mut rng, ns, &name));
                    state.set_pod(&key, pod.clone().map(Arc::new));
                    match pod {
                        Some(p) => pods.insert(key, p),
                        None => pods.remove(&key),
                    };
                }
            }
        }
        let incremental = state.snapshot(generation);
        let full = build(
            &config,
            generation,
            services.values(),
            slices.values(),
            pods.values(),
        );
        assert_eq!(
            canonical(&incremental),
            canonical(&full),
            "seed {seed}, generation {generation}"
        );
        names_seen = names_seen.max(full.names.len());
    }
    // The sequence reached a zone with more than the fixed names.
    assert!(names_seen > 10, "seed {seed}: only {names_seen} names");
}

#[test]
fn incremental_updates_equal_a_full_build() {
    for seed in 0..12 {
        run(seed, PodsMode::Verified);
    }
    run(100, PodsMode::Disabled);
    run(101, PodsMode::Insecure);
}

#[test]
fn unchanged_entries_are_shared_between_generations() {
    let config = ZoneConfig::new("cluster.local").unwrap();
    let mut state = ZoneState::new(&config);
    for i in 0..50 {
        let ip: IpAddr = format!("10.96.0.{}", i + 1).parse().unwrap();
        let svc = Service::cluster_ip("default", &format!("s{i}"), vec![ip]);
        state.set_service(&format!("default/s{i}"), Some(Arc::new(svc)));
    }
    let first = state.snapshot(1);
    let moved = Service::cluster_ip("default", "s0", vec!["10.96.1.1".parse().unwrap()]);
    state.set_service("default/s0", Some(Arc::new(moved)));
    let second = state.snapshot(2);
    let name = |s: &str| hickory_proto::rr::Name::from_ascii(s).unwrap();
    let same = |n: &str| {
        first
            .names
            .get(&name(n))
            .unwrap()
            .shares(second.names.get(&name(n)).unwrap())
    };
    assert!(same("s7.default.svc.cluster.local."));
    assert!(!same("s0.default.svc.cluster.local."));
    assert!(second.names.get(&name("1.0.96.10.in-addr.arpa.")).is_none());
    assert!(second.names.get(&name("1.1.96.10.in-addr.arpa.")).is_some());
    // The first generation still answers as it was.
    assert!(first.names.get(&name("1.0.96.10.in-addr.arpa.")).is_some());
}
