//! Where the DNS server's memory goes, structure by structure (no asserts): the benchmark's
//! cluster (`scripts/bench-dns.sh`: SERVICES Services in one namespace, every tenth headless,
//! two named ports, one EndpointSlice of EPS ready endpoints each, headless endpoints with
//! hostnames) fed through the watcher projections the server uses, the zone state and its
//! snapshot, then the fast path's answer cache filled with the benchmark's query mix. Bytes
//! are counted by a counting allocator (bytes asked for, live), not read from RSS, so the
//! figures are exact and repeatable; the allocator's own overhead comes on top.
//!
//! `cargo run --release -p sarasa-dns --example zone_memory [SERVICES] [EPS]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use sarasa_cluster::watch::Watched;
use sarasa_dns::answer_cache::{wire_key, AnswerCache};
use sarasa_dns::config::ZoneConfig;
use sarasa_dns::fastpath;
use sarasa_dns::feed;
use sarasa_dns::incremental::ZoneState;
use serde_json::json;

/// Live bytes asked for through the global allocator.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        PEAK.fetch_max(now + layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

const NAMESPACE: &str = "bench";

fn headless(i: usize) -> bool {
    i % 10 == 9
}

fn cluster_ip(i: usize) -> String {
    format!("10.96.{}.{}", i / 250, i % 250 + 1)
}

fn endpoint_ip(i: usize, k: usize, eps: usize) -> std::net::Ipv4Addr {
    let n = (i * eps + k) as u32;
    std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 128, 0, 1)) + n)
}

const PORTS: [(&str, &str, u16); 2] = [("http", "TCP", 80), ("dns", "UDP", 53)];

fn service(i: usize) -> Service {
    let ip = if headless(i) {
        "None".to_string()
    } else {
        cluster_ip(i)
    };
    let ports: Vec<_> = PORTS
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "port": port}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": NAMESPACE, "name": format!("svc-{i}"),
                     "resourceVersion": (i + 1).to_string()},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": ports}
    }))
    .expect("service")
}

fn slice(i: usize, eps: usize) -> EndpointSlice {
    let endpoints: Vec<_> = (0..eps)
        .map(|k| {
            let mut ep = json!({"addresses": [endpoint_ip(i, k, eps).to_string()],
                                "conditions": {"ready": true}});
            if headless(i) {
                ep["hostname"] = json!(format!("ep-{k}"));
            }
            ep
        })
        .collect();
    let ports: Vec<_> = PORTS
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "port": port}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": NAMESPACE, "name": format!("svc-{i}-1"),
                     "resourceVersion": (i + 1).to_string(),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports
    }))
    .expect("slice")
}

/// The benchmark's query mix (crates/dnsbench queries.rs), as (name, type) pairs.
fn query_mix(services: usize, eps: usize, count: usize) -> Vec<(String, u16)> {
    let cips: Vec<usize> = (0..services).filter(|i| !headless(*i)).collect();
    let hls: Vec<usize> = (0..services).filter(|i| headless(*i)).collect();
    let name = |i: usize| format!("svc-{i}.{NAMESPACE}.svc.cluster.local");
    let rev = |ip: std::net::Ipv4Addr| {
        let o = ip.octets();
        format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
    };
    (0..count)
        .map(|i| {
            let r = i / 10 + i % 10;
            let c = cips[(r * 7919) % cips.len()];
            let h = hls[(r * 7919) % hls.len()];
            match i % 10 {
                0..=2 => (name(c), 1),
                3 => (name(h), 1),
                4 => (format!("_http._tcp.{}", name(c)), 33),
                5 => (format!("_dns._udp.{}", name(h)), 33),
                6 => (rev(cluster_ip(c).parse().expect("ip")), 12),
                7 => (rev(endpoint_ip(h, (i / 10) % eps.max(1), eps)), 12),
                _ => (format!("missing-{i}.{NAMESPACE}.svc.cluster.local"), 1),
            }
        })
        .collect()
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    p.extend(wire_key(&Name::from_ascii(name).expect("name")));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(10_000);
    let eps = args.get(1).copied().unwrap_or(5);
    let config = ZoneConfig::new("cluster.local").expect("zone");
    println!(
        "{services} Services ({} headless), {} endpoints, 2 named ports each",
        services / 10,
        services * eps
    );
    println!(
        "sizes: Name {} B, Record {} B, Rdata {} B, NameEntry {} B",
        std::mem::size_of::<Name>(),
        std::mem::size_of::<hickory_proto::rr::Record>(),
        std::mem::size_of::<sarasa_dns::snapshot::Rdata>(),
        std::mem::size_of::<sarasa_dns::snapshot::NameEntry>(),
    );

    let start = live();
    let mut w = Watched::default();
    w.apply_service_event(Event::Init);
    w.apply_endpoint_slice_event(Event::Init);
    for i in 0..services {
        w.apply_service_event(Event::InitApply(service(i)));
        w.apply_endpoint_slice_event(Event::InitApply(slice(i, eps)));
    }
    w.apply_service_event(Event::InitDone);
    w.apply_endpoint_slice_event(Event::InitDone);
    w.apply_pod_event(Event::Init);
    w.apply_pod_event(Event::InitDone);
    feed::keep_journals(&mut w);
    let projections = live() - start;

    let before = live();
    let mut state = ZoneState::new(&config);
    let changes = feed::take_changes(&mut w, true);
    let snap = feed::apply(&mut state, changes, 1);
    let (names, records) = (snap.names.len(), snap.record_count);
    let zone = Arc::new(ArcSwap::from_pointee(snap));
    let zone_bytes = live() - before;
    let zone_peak = PEAK.load(Ordering::Relaxed) - before;
    let entry_bytes: usize = zone
        .load()
        .names
        .iter()
        .map(|(_, e)| std::mem::size_of::<sarasa_dns::snapshot::NameEntry>() + e.heap_bytes())
        .sum();

    let mix = query_mix(services, eps, 100_000);
    let packets: Vec<Vec<u8>> = mix.iter().map(|(n, t)| query(n, *t)).collect();
    let before = live();
    let cache = AnswerCache::new(zone.clone(), true);
    for packet in &packets {
        let q = fastpath::parse(packet).expect("a fast-path query");
        assert!(cache.get(&q).is_some(), "not cached: {q:?}");
    }
    let cache_bytes = live() - before;
    println!(
        "watcher projections (Services, EndpointSlices): {:.1} MiB",
        mib(projections)
    );
    println!(
        "zone state + snapshot: {:.1} MiB for {names} names, {records} records ({:.0} B/record; entries {:.1} MiB)",
        mib(zone_bytes),
        zone_bytes as f64 / records as f64,
        mib(entry_bytes as isize)
    );
    println!(
        "  peak while building the first snapshot: {:.1} MiB above the projections",
        mib(zone_peak)
    );
    println!(
        "answer cache after the query mix: {:.1} MiB, {} answers ({:.0} B/answer)",
        mib(cache_bytes),
        cache.len(),
        cache_bytes as f64 / cache.len().max(1) as f64
    );
    println!("total: {:.1} MiB", mib(live() - start));
    let before = live();
    drop(state);
    println!(
        "  of it the zone state's bookkeeping (not served): {:.1} MiB",
        mib(before - live())
    );
    drop(w);
}
