//! The fast UDP path answers exactly what the hickory path answers: over every name of a
//! generated cluster (every record kind of the specification, NXDOMAIN and NODATA, pod and
//! reverse names), every query type, with and without EDNS, with small UDP sizes that force
//! truncation, in mixed case and with RD/CD set, both responses are parsed and compared; any
//! difference fails. Then the cluster changes (Services deleted, created, re-pointed, a pod
//! moved) and the comparison runs again on the cache the change invalidated name by name, so a
//! stale pre-encoded answer fails too.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol as Transport;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use sarasa_cluster::PodInfo;
use sarasa_dns::answer_cache::AnswerCache;
use sarasa_dns::config::ZoneConfig;
use sarasa_dns::fastpath;
use sarasa_dns::handler::DnsHandler;
use sarasa_dns::incremental::ZoneState;
use sarasa_dns::metrics::Metrics;
use sarasa_dns::snapshot::ZoneSnapshot;
use sarasa_model::{
    AddressType, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, Protocol, Service,
    ServicePort, ServiceType,
};

/// Keeps the encoded response.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Captured {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut buf = Vec::new();
        let info = response.destructive_emit(&mut BinEncoder::new(&mut buf))?;
        *self.0.lock().unwrap() = buf;
        Ok(info)
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn port(name: &str, protocol: Protocol, port: u16) -> ServicePort {
    ServicePort {
        name: name.into(),
        protocol,
        port,
        node_port: None,
        target_port: None,
    }
}

fn endpoint(addr: IpAddr, hostname: Option<String>, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![addr],
        conditions: EndpointConditions {
            ready,
            serving: ready,
            terminating: false,
        },
        node_name: None,
        hostname,
    }
}

fn slice(ns: &str, svc: &str, family: AddressType, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        namespace: ns.into(),
        name: format!("{svc}-{family:?}").to_lowercase(),
        service_name: svc.into(),
        address_type: family,
        source_cluster: None,
        endpoints,
        ports: vec![
            EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            },
            EndpointPort {
                name: "dns".into(),
                protocol: Protocol::Udp,
                port: 53,
            },
        ],
    }
}

/// Per namespace: a dual-stack ClusterIP Service with named and unnamed ports, a headless
/// Service with hostnamed, plain, unready and IPv6 endpoints, a headless one with 60 endpoints
/// (its answers exceed 512 and 1232 bytes), an ExternalName, and pods under the headless one.
fn cluster(namespaces: usize) -> (Vec<Service>, Vec<EndpointSlice>, Vec<PodInfo>) {
    let (mut services, mut slices, mut pods) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..namespaces {
        let ns = format!("ns{n}");
        let mut web = Service::cluster_ip(
            &ns,
            "web",
            vec![ip(&format!("10.96.{n}.10")), ip(&format!("fd00:96::{n}:a"))],
        );
        web.ports = vec![
            port("http", Protocol::Tcp, 80),
            port("dns", Protocol::Udp, 53),
            port("", Protocol::Tcp, 8443),
        ];
        let headless = |name: &str| Service {
            namespace: ns.clone(),
            name: name.into(),
            headless: true,
            ports: vec![
                port("http", Protocol::Tcp, 80),
                port("dns", Protocol::Udp, 53),
            ],
            ..Service::default()
        };
        let ext = Service {
            namespace: ns.clone(),
            name: "ext".into(),
            type_: ServiceType::ExternalName,
            external_name: Some("www.example.com".into()),
            ..Service::default()
        };
        services.extend([web, headless("pets"), headless("big"), ext]);
        slices.push(slice(
            &ns,
            "pets",
            AddressType::Ipv4,
            vec![
                endpoint(ip(&format!("10.244.{n}.5")), Some("pet-0".into()), true),
                endpoint(ip(&format!("10.244.{n}.6")), None, true),
                endpoint(ip(&format!("10.244.{n}.7")), Some("sick".into()), false),
            ],
        ));
        slices.push(slice(
            &ns,
            "pets",
            AddressType::Ipv6,
            vec![endpoint(
                ip(&format!("fd00:244::{n}:5")),
                Some("pet-0".into()),
                true,
            )],
        ));
        slices.push(slice(
            &ns,
            "big",
            AddressType::Ipv4,
            (0..60)
                .map(|i| endpoint(ip(&format!("10.245.{n}.{i}")), Some(format!("b-{i}")), true))
                .collect(),
        ));
        pods.push(PodInfo {
            namespace: ns.clone(),
            name: "pet-0".into(),
            pod_ips: vec![
                ip(&format!("10.244.{n}.5")),
                ip(&format!("fd00:244::{n}:5")),
            ],
            phase: Some("Running".into()),
            hostname: Some("pet-0".into()),
            subdomain: Some("pets".into()),
            ..PodInfo::default()
        });
    }
    (services, slices, pods)
}

/// A query in wire form.
fn query(name: &Name, qtype: RecordType, variant: usize) -> Vec<u8> {
    let mixed = variant % 2 == 1;
    let mut p = vec![
        0x12,
        (variant as u8).wrapping_mul(37),
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    if !variant.is_multiple_of(3) {
        p[2] |= 0x01; // RD
    }
    if variant % 4 == 3 {
        p[3] |= 0x10 | 0x20; // CD, AD (dig's default)
    }
    for label in name.iter() {
        p.push(label.len() as u8);
        p.extend(label.iter().enumerate().map(|(i, b)| {
            if mixed && i % 2 == 0 {
                b.to_ascii_uppercase()
            } else {
                *b
            }
        }));
    }
    p.push(0);
    p.extend_from_slice(&u16::from(qtype).to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    // EDNS: none, 4096, 1232, 512 with DO, 700 with a cookie option.
    let edns: Option<(u16, bool, &[u8])> = match variant % 5 {
        0 => None,
        1 => Some((4096, false, &[])),
        2 => Some((1232, false, &[])),
        3 => Some((512, true, &[])),
        _ => Some((700, false, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])),
    };
    if let Some((size, dnssec_ok, options)) = edns {
        p[11] = 1;
        p.extend_from_slice(&[0, 0, 41]);
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
        p.extend_from_slice(&(options.len() as u16).to_be_bytes());
        p.extend_from_slice(options);
    }
    p
}

const TYPES: [RecordType; 10] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::TXT,
    RecordType::SOA,
    RecordType::CNAME,
    RecordType::NS,
    RecordType::MX,
    RecordType::ANY,
];

/// What the comparison covered.
#[derive(Debug, Default)]
struct Covered {
    fast: usize,
    slow: usize,
    positive: usize,
    nodata: usize,
    nxdomain: usize,
    truncated: usize,
    edns: usize,
    identical_bytes: usize,
}

/// Every name of `zone` (and a missing child of each, and pod names) × every type × the
/// query variants: fast-path and hickory-path responses compared.
async fn compare_all(handler: &DnsHandler, cache: &AnswerCache, zone: &ZoneSnapshot) -> Covered {
    let mut names: Vec<Name> = zone.names.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let missing: Vec<Name> = names
        .iter()
        .filter(|n| zone.config.domain.zone_of(n))
        .filter_map(|n| Name::from_ascii("nope").ok()?.append_domain(n).ok())
        .collect();
    names.extend(missing);
    names.push(Name::from_ascii("10-244-0-5.ns0.pod.cluster.local.").unwrap());
    names.push(Name::from_ascii("www.example.com.").unwrap());
    let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let mut covered = Covered::default();
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (t, qtype) in TYPES.iter().enumerate() {
            // Each (name, type) in three of the ten variants, rotating, so every variant
            // meets every kind of answer without 10x the run time.
            for k in 0..3 {
                let variant = (i + t * 3 + k * 4) % 10;
                let q = query(name, *qtype, variant);
                let captured = Captured::default();
                let request = Request::from_bytes(q.clone(), src, Transport::Udp).unwrap();
                handler
                    .handle_request::<_, TokioTime>(&request, captured.clone())
                    .await;
                let slow_bytes = captured.0.lock().unwrap().clone();
                let slow = Message::from_vec(&slow_bytes).unwrap();
                let Some(question) = fastpath::parse(&q) else {
                    covered.slow += 1;
                    continue;
                };
                let Some((answer, serial)) = cache.get(&question) else {
                    covered.slow += 1;
                    continue;
                };
                fastpath::respond(&question, &answer, serial, &mut out);
                let fast = Message::from_vec(&out)
                    .unwrap_or_else(|e| panic!("{name} {qtype} v{variant}: unparsable: {e}"));
                assert_eq!(
                    fast, slow,
                    "{name} {qtype} variant {variant}: fast path differs from hickory"
                );
                // The asker's spelling of the name comes back (0x20).
                assert_eq!(&out[12..12 + question.qname.len()], question.qname);
                covered.fast += 1;
                covered.identical_bytes += usize::from(out == slow_bytes);
                covered.edns += usize::from(slow.edns.is_some());
                if slow.metadata.truncation {
                    covered.truncated += 1;
                } else if slow.metadata.response_code == ResponseCode::NXDomain {
                    covered.nxdomain += 1;
                } else if slow.answers.is_empty() {
                    covered.nodata += 1;
                } else {
                    covered.positive += 1;
                }
            }
        }
    }
    covered
}

fn check(covered: &Covered) {
    println!("{covered:?}");
    assert!(covered.fast > 1000, "{covered:?}");
    assert!(
        covered.slow > 100,
        "pod, alias, ANY and upstream names take hickory: {covered:?}"
    );
    for (what, n) in [
        ("positive", covered.positive),
        ("NODATA", covered.nodata),
        ("NXDOMAIN", covered.nxdomain),
        ("truncated", covered.truncated),
        ("EDNS", covered.edns),
    ] {
        assert!(n > 20, "too few {what} answers compared: {covered:?}");
    }
}

#[tokio::test]
async fn fast_path_answers_equal_the_hickory_path_before_and_after_changes() {
    let config = ZoneConfig::new("cluster.local").unwrap();
    let (services, slices, pods) = cluster(4);
    let mut state = ZoneState::new(&config);
    for s in &services {
        state.set_service(
            &format!("{}/{}", s.namespace, s.name),
            Some(Arc::new(s.clone())),
        );
    }
    for s in &slices {
        state.set_slice(
            &format!("{}/{}", s.namespace, s.name),
            Some(Arc::new(s.clone())),
        );
    }
    for p in &pods {
        state.set_pod(
            &format!("{}/{}", p.namespace, p.name),
            Some(Arc::new(p.clone())),
        );
    }
    let zone = Arc::new(ArcSwap::from_pointee(state.snapshot(1)));
    let handler = DnsHandler {
        zone: zone.clone(),
        forwarder: None,
        metrics: Arc::new(Metrics::default()),
    };
    let cache = AnswerCache::new(zone.clone(), false);
    check(&compare_all(&handler, &cache, &zone.load()).await);
    let cached = cache.len();
    assert!(cached > 100, "answers were cached: {cached}");

    // Changes: a Service deleted, one created, a ClusterIP re-pointed, the big headless
    // Service's endpoints renamed, a pod's hostname moved (its SRV targets' addresses change).
    state.set_service("ns1/web", None);
    let mut fresh = Service::cluster_ip("ns2", "fresh", vec![ip("10.96.9.9")]);
    fresh.ports = vec![port("http", Protocol::Tcp, 80)];
    state.set_service("ns2/fresh", Some(Arc::new(fresh)));
    let mut moved = Service::cluster_ip("ns0", "web", vec![ip("10.96.0.99")]);
    moved.ports = vec![port("http", Protocol::Tcp, 80)];
    state.set_service("ns0/web", Some(Arc::new(moved)));
    let mut big = slices
        .iter()
        .find(|s| s.namespace == "ns3" && s.name == "big-ipv4")
        .unwrap()
        .clone();
    for (i, e) in big.endpoints.iter_mut().enumerate() {
        e.hostname = Some(format!("c-{i}"));
    }
    state.set_slice("ns3/big-ipv4", Some(Arc::new(big)));
    let mut pet = pods[2].clone();
    pet.pod_ips = vec![ip("10.244.2.77")];
    state.set_pod("ns2/pet-0", Some(Arc::new(pet)));
    zone.store(Arc::new(state.snapshot(2)));
    let changed = state.changed_names();
    let written: std::collections::HashSet<&Name> = changed.iter().map(|n| &**n).collect();
    assert!(
        written.len() < zone.load().names.len() / 2,
        "a change writes only its names: {} of {}",
        written.len(),
        zone.load().names.len()
    );
    cache.invalidate(changed.iter().map(|n| &**n));
    assert!(
        cache.len() < cached && cache.len() > cached / 2,
        "{} of {cached} kept",
        cache.len()
    );
    check(&compare_all(&handler, &cache, &zone.load()).await);
}
