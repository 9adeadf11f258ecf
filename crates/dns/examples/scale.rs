//! Scale figures (no asserts): 10k Services (half ClusterIP with two named ports, half
//! headless) and 50k endpoints in 10k EndpointSlices, fed through the same watcher projections
//! the server uses; then one Service change → incremental update → the changed answer, the
//! path the server's feed takes. Prints the first build's time, the change-to-answer time and
//! the process's resident memory (watcher projections, zone state and served snapshot).
//!
//! `cargo run --release -p sarasa-dns --example scale [SERVICES] [ENDPOINTS]`

use std::time::Instant;

use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use sarasa_cluster::watch::Watched;
use sarasa_dns::answer::{answer, Outcome};
use sarasa_dns::config::ZoneConfig;
use sarasa_dns::feed;
use sarasa_dns::incremental::ZoneState;
use serde_json::json;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn service(i: usize, rv: usize, headless: bool) -> Service {
    let ip = if headless {
        "None".to_string()
    } else {
        format!("10.96.{}.{}", i / 250, i % 250 + 1)
    };
    serde_json::from_value(json!({
        "metadata": {"namespace": format!("ns-{}", i % 100), "name": format!("svc-{i}"),
                     "resourceVersion": rv.to_string()},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "protocol": "TCP"}]}
    }))
    .expect("service")
}

fn slice(i: usize, endpoints: usize, rv: usize) -> EndpointSlice {
    let eps: Vec<_> = (0..endpoints)
        .map(|e| {
            let n = i * endpoints + e;
            json!({"addresses": [format!("10.{}.{}.{}", 128 + n / 65536, (n / 256) % 256, n % 256)],
                   "conditions": {"ready": true}})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": format!("ns-{}", i % 100), "name": format!("svc-{i}-1"),
                     "resourceVersion": rv.to_string(),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4", "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "metrics", "port": 9090, "protocol": "TCP"}]
    }))
    .expect("slice")
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(10_000);
    let endpoints = args.get(1).copied().unwrap_or(50_000);
    let per_slice = endpoints.div_ceil(services).max(1);
    let config = ZoneConfig::new("cluster.local").expect("zone");
    let base = rss_mib();

    let mut w = Watched::default();
    let t = Instant::now();
    w.apply_service_event(Event::Init);
    w.apply_endpoint_slice_event(Event::Init);
    for i in 0..services {
        w.apply_service_event(Event::InitApply(service(i, i + 1, i % 2 == 1)));
        w.apply_endpoint_slice_event(Event::InitApply(slice(i, per_slice, i + 1)));
    }
    w.apply_service_event(Event::InitDone);
    w.apply_endpoint_slice_event(Event::InitDone);
    w.apply_pod_event(Event::Init);
    w.apply_pod_event(Event::InitDone);
    let fed = t.elapsed();
    let fed_rss = rss_mib();

    let t = Instant::now();
    let mut state = ZoneState::new(&config);
    let snap = feed::update(&mut state, &w, 1);
    let build = t.elapsed();
    let records = snap.record_count;
    let names = snap.names.len();
    let current = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(snap));
    let rss = rss_mib();

    // One change: svc-0 gets a new clusterIP; time from the watch event to the new answer.
    let name = Name::from_ascii("svc-0.ns-0.svc.cluster.local.").expect("name");
    let mut changes = Vec::new();
    for round in 0..5 {
        let ip = format!("10.97.0.{}", round + 1);
        let mut svc = service(0, services + 10 + round, false);
        if let Some(spec) = svc.spec.as_mut() {
            spec.cluster_ip = Some(ip.clone());
            spec.cluster_ips = Some(vec![ip.clone()]);
        }
        let t = Instant::now();
        w.apply_service_event(Event::Apply(svc));
        current.store(std::sync::Arc::new(feed::update(
            &mut state,
            &w,
            2 + round as u64,
        )));
        let zone = current.load();
        let ok = match answer(&zone, &name, RecordType::A) {
            Outcome::Authoritative(a) => {
                a.answers.records().iter().any(|r| r.data.to_string() == ip)
            }
            Outcome::NotOurs => false,
        };
        changes.push(t.elapsed());
        assert!(ok, "the changed answer");
    }
    changes.sort();

    println!(
        "services={services} endpoints={} (slices of {per_slice})",
        services * per_slice
    );
    println!("feed (watch events → projections): {fed:?}");
    println!("first snapshot (every object): {build:?}; {names} names, {records} records");
    println!(
        "service change → correct answer: median {:?}, max {:?} (5 changes)",
        changes[changes.len() / 2],
        changes[changes.len() - 1]
    );
    println!(
        "resident memory: {rss:.1} MiB (process start {base:.1} MiB, watcher projections alone {fed_rss:.1} MiB)"
    );
}
