//! Memory per record, counted, not sampled: a counting allocator (per thread, so other tests'
//! threads do not blur it) measures the bytes the zone state and its snapshot hold for a
//! cluster shaped like the benchmark's (every tenth Service headless, two named ports, five
//! endpoints each), and the bytes the fast path's answer cache holds for every name of it.
//! The counts are exact and the same on every run, so a structure that grows (hickory
//! `Record`s back in the zone: 764 B/record; answers cached as key + whole message: 265
//! B/answer) fails here rather than as a larger RSS in a benchmark nobody reruns.
//! `examples/zone_memory.rs` prints the same figures for the benchmark's full size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use sarasa_dns::answer_cache::{wire_key, AnswerCache};
use sarasa_dns::config::ZoneConfig;
use sarasa_dns::fastpath;
use sarasa_dns::incremental::ZoneState;
use sarasa_dns::snapshot::{NameEntry, Rdata};
use sarasa_model::{
    AddressType, Endpoint, EndpointPort, EndpointSlice, Protocol, Service, ServicePort,
};

struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // try_with: a thread being torn down has no counter left; its frees are not ours.
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
}

// SAFETY: every call goes to the system allocator unchanged; a thread-local counter (const
// initialised, no destructor, so touching it never allocates) is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        count(new as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

const SERVICES: usize = 3000;
const EPS: usize = 5;

fn headless(i: usize) -> bool {
    i % 10 == 9
}

fn cluster_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn endpoint_ip(i: usize, k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 128, 0, 1)) + (i * EPS + k) as u32,
    ))
}

fn service(i: usize) -> Service {
    let mut svc = if headless(i) {
        Service {
            namespace: "bench".into(),
            name: format!("svc-{i}"),
            headless: true,
            ..Service::default()
        }
    } else {
        Service::cluster_ip("bench", &format!("svc-{i}"), vec![cluster_ip(i)])
    };
    svc.ports = [("http", Protocol::Tcp, 80), ("dns", Protocol::Udp, 53)]
        .into_iter()
        .map(|(name, protocol, port)| ServicePort {
            name: name.into(),
            protocol,
            port,
            node_port: None,
            target_port: None,
        })
        .collect();
    svc
}

fn slice(i: usize) -> EndpointSlice {
    EndpointSlice {
        namespace: "bench".into(),
        name: format!("svc-{i}-1"),
        service_name: format!("svc-{i}"),
        address_type: AddressType::Ipv4,
        source_cluster: None,
        endpoints: (0..EPS)
            .map(|k| Endpoint {
                hostname: headless(i).then(|| format!("ep-{k}")),
                ..Endpoint::ready(endpoint_ip(i, k), None)
            })
            .collect(),
        ports: [("http", Protocol::Tcp, 80), ("dns", Protocol::Udp, 53)]
            .into_iter()
            .map(|(name, protocol, port)| EndpointPort {
                name: name.into(),
                protocol,
                port,
            })
            .collect(),
    }
}

/// Every answer name of the zone once per type the benchmark asks, and as many names that do
/// not exist (NXDOMAIN).
fn questions() -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for i in 0..SERVICES {
        let base = format!("svc-{i}.bench.svc.cluster.local.");
        out.push((base.clone(), 1));
        let proto = if headless(i) {
            "_dns._udp"
        } else {
            "_http._tcp"
        };
        out.push((format!("{proto}.{base}"), 33));
        let addresses = if headless(i) {
            (0..EPS).map(|k| endpoint_ip(i, k)).collect()
        } else {
            vec![cluster_ip(i)]
        };
        for ip in addresses {
            out.push((Name::from(ip).to_ascii(), 12));
        }
        out.push((format!("missing-{i}.bench.svc.cluster.local."), 1));
    }
    out
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut p = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    p.extend(wire_key(&Name::from_ascii(name).unwrap()));
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p
}

#[test]
fn bytes_per_record_and_per_cached_answer_stay_bounded() {
    // The compact forms themselves.
    assert!(std::mem::size_of::<Rdata>() <= 24, "Rdata grew");
    assert!(std::mem::size_of::<NameEntry>() <= 16, "NameEntry grew");

    let config = ZoneConfig::new("cluster.local").unwrap();
    let services: Vec<Arc<Service>> = (0..SERVICES).map(|i| Arc::new(service(i))).collect();
    let slices: Vec<Arc<EndpointSlice>> = (0..SERVICES).map(|i| Arc::new(slice(i))).collect();
    let questions = questions();
    let packets: Vec<Vec<u8>> = questions.iter().map(|(n, t)| query(n, *t)).collect();

    // The objects are the watchers' (shared, not counted): what the zone adds is counted.
    let before = live();
    let mut state = ZoneState::new(&config);
    for (svc, slice) in services.iter().zip(&slices) {
        state.set_service(&format!("bench/{}", svc.name), Some(svc.clone()));
        state.set_slice(&format!("bench/{}", slice.name), Some(slice.clone()));
    }
    let snapshot = state.snapshot(1);
    state.forget_changed_names();
    let records = snapshot.record_count;
    let zone = Arc::new(ArcSwap::from_pointee(snapshot));
    let zone_bytes = live() - before;
    let per_record = zone_bytes as f64 / records as f64;
    eprintln!("zone: {zone_bytes} B, {records} records, {per_record:.0} B/record");
    // 3000 Services: 18.3k records, 366 B/record (as hickory Records: over 700).
    assert!(records > 18_000, "{records} records");
    assert!(
        per_record < 460.0,
        "the zone holds {zone_bytes} B for {records} records: {per_record:.0} B/record"
    );

    let before = live();
    let cache = AnswerCache::new(zone.clone(), true);
    for packet in &packets {
        let q = fastpath::parse(packet).unwrap();
        assert!(cache.get(&q).is_some(), "{q:?} is not cached");
    }
    let cache_bytes = live() - before;
    let per_answer = cache_bytes as f64 / cache.len() as f64;
    eprintln!(
        "cache: {cache_bytes} B, {} answers, {per_answer:.0} B/answer",
        cache.len()
    );
    assert_eq!(cache.len(), packets.len());
    // 223 B/answer: key + message without its question in one allocation, the sets' slots,
    // the SRV targets' index (a map of boxed key -> whole message: over 260).
    assert!(
        per_answer < 250.0,
        "the answer cache holds {cache_bytes} B for {} answers: {per_answer:.0} B/answer",
        cache.len()
    );
    assert!(
        cache.bytes() as isize <= cache_bytes,
        "the cache's own count ({}) is within what it holds ({cache_bytes})",
        cache.bytes()
    );
}
