//! The specification's rules, one test per rule, on a snapshot built from model objects.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};
use sarasa_cluster::PodInfo;
use sarasa_model::{
    AddressType, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, Protocol, Service,
    ServicePort, ServiceType,
};

use super::*;
use crate::config::{PodsMode, ZoneConfig};
use crate::snapshot::{build, ZoneSnapshot};

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

fn endpoint(addr: &str, hostname: Option<&str>, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip(addr)],
        conditions: EndpointConditions {
            ready,
            serving: ready,
            terminating: false,
        },
        node_name: None,
        hostname: hostname.map(str::to_string),
    }
}

fn slice(ns: &str, svc: &str, family: AddressType, eps: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        namespace: ns.into(),
        name: format!("{svc}-{family:?}"),
        service_name: svc.into(),
        address_type: family,
        source_cluster: None,
        endpoints: eps,
        ports: vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
    }
}

fn headless(ns: &str, name: &str) -> Service {
    Service {
        namespace: ns.into(),
        name: name.into(),
        headless: true,
        ports: vec![port("http", Protocol::Tcp, 80)],
        ..Service::default()
    }
}

fn zone_with(mode: PodsMode) -> ZoneSnapshot {
    let mut web = Service::cluster_ip("default", "web", vec![ip("10.96.0.10"), ip("fd00:96::a")]);
    web.ports = vec![
        port("http", Protocol::Tcp, 80),
        port("dns", Protocol::Udp, 53),
        port("", Protocol::Tcp, 8443),
    ];
    let ext = Service {
        namespace: "default".into(),
        name: "ext".into(),
        type_: ServiceType::ExternalName,
        external_name: Some("www.example.com".into()),
        ..Service::default()
    };
    let mut late = headless("default", "late");
    late.publish_not_ready_addresses = true;
    let services = vec![
        web,
        ext,
        headless("db", "pets"),
        headless("db", "empty"),
        late,
    ];
    let slices = vec![
        slice(
            "db",
            "pets",
            AddressType::Ipv4,
            vec![
                endpoint("10.244.1.5", Some("pet-0"), true),
                endpoint("10.244.2.6", None, true),
                endpoint("10.244.3.7", Some("sick"), false),
            ],
        ),
        slice(
            "db",
            "pets",
            AddressType::Ipv6,
            vec![endpoint("fd00:244::5", Some("pet-0"), true)],
        ),
        slice(
            "db",
            "empty",
            AddressType::Ipv4,
            vec![endpoint("10.244.1.9", None, false)],
        ),
        slice(
            "default",
            "late",
            AddressType::Ipv4,
            vec![endpoint("10.244.4.4", None, false)],
        ),
    ];
    let pods = vec![
        PodInfo {
            namespace: "db".into(),
            name: "pet-0".into(),
            pod_ips: vec![ip("10.244.1.5"), ip("fd00:244::5")],
            phase: Some("Running".into()),
            hostname: Some("pet-0".into()),
            subdomain: Some("pets".into()),
            ..PodInfo::default()
        },
        PodInfo {
            namespace: "db".into(),
            name: "sick".into(),
            pod_ips: vec![ip("10.244.3.7")],
            phase: Some("Running".into()),
            hostname: Some("sick".into()),
            subdomain: Some("pets".into()),
            ..PodInfo::default()
        },
    ];
    let mut config = ZoneConfig::new("cluster.local").unwrap();
    config.pods = mode;
    build(&config, 7, &services, &slices, &pods)
}

fn zone() -> ZoneSnapshot {
    zone_with(PodsMode::Verified)
}

fn ask<'s>(z: &'s ZoneSnapshot, name: &str, t: RecordType) -> Answer<'s> {
    match answer(z, &Name::from_ascii(name).unwrap(), t) {
        Outcome::Authoritative(a) => a,
        Outcome::NotOurs => panic!("{name} {t} went upstream"),
    }
}

/// The answer's rdata as text, sorted.
fn data(a: &Answer) -> Vec<String> {
    let mut v: Vec<String> = a
        .answers
        .records()
        .iter()
        .map(|r| r.data.to_string())
        .collect();
    v.sort();
    v
}

fn assert_nodata(a: &Answer, what: &str) {
    assert!(a.is_nodata(), "{what}: {a:?}");
    let soa = a.authority.unwrap_or_else(|| panic!("{what}: no SOA"));
    assert_eq!(soa.record_type(), RecordType::SOA);
}

fn assert_nxdomain(a: &Answer, what: &str) {
    assert_eq!(a.rcode, ResponseCode::NXDomain, "{what}");
    assert!(a.answers.records().is_empty(), "{what}");
    assert!(a.authority.is_some(), "{what}: NXDOMAIN carries the SOA");
}

#[test]
fn dns_version_txt() {
    let z = zone();
    let a = ask(&z, "dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(data(&a), ["1.1.0"]);
    assert_eq!(a.answers.records()[0].ttl, 30);
}

#[test]
fn cluster_ip_service_answers_a_and_aaaa_case_insensitively() {
    let z = zone();
    assert_eq!(
        data(&ask(&z, "web.default.svc.cluster.local.", RecordType::A)),
        ["10.96.0.10"]
    );
    assert_eq!(
        data(&ask(&z, "WEB.Default.SVC.cluster.LOCAL.", RecordType::AAAA)),
        ["fd00:96::a"]
    );
    let any = ask(&z, "web.default.svc.cluster.local.", RecordType::ANY);
    assert_eq!(any.answers.records().len(), 2);
    // A name with records of other types: NODATA, not NXDOMAIN.
    assert_nodata(
        &ask(&z, "web.default.svc.cluster.local.", RecordType::MX),
        "MX",
    );
    assert_nodata(
        &ask(
            &z,
            "web.default.svc.cluster.local.",
            RecordType::Unknown(65280),
        ),
        "unknown type",
    );
}

#[test]
fn srv_for_named_ports_with_the_service_address_as_additional() {
    let z = zone();
    let a = ask(
        &z,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(data(&a), ["0 100 80 web.default.svc.cluster.local."]);
    let mut extra: Vec<String> = a
        .additional
        .records()
        .iter()
        .map(|r| r.data.to_string())
        .collect();
    extra.sort();
    assert_eq!(extra, ["10.96.0.10", "fd00:96::a"]);
    assert_eq!(
        data(&ask(
            &z,
            "_dns._udp.web.default.svc.cluster.local.",
            RecordType::SRV
        )),
        ["0 100 53 web.default.svc.cluster.local."]
    );
    // The protocol is part of the name; unnamed ports have no SRV.
    assert_nxdomain(
        &ask(
            &z,
            "_dns._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        ),
        "wrong proto",
    );
    // `_tcp.web...` exists (an empty non-terminal).
    assert_nodata(
        &ask(&z, "_tcp.web.default.svc.cluster.local.", RecordType::SRV),
        "ENT",
    );
}

#[test]
fn ptr_for_cluster_ips_and_endpoints_v4_and_v6() {
    let z = zone();
    assert_eq!(
        data(&ask(&z, "10.0.96.10.in-addr.arpa.", RecordType::PTR)),
        ["web.default.svc.cluster.local."]
    );
    let v6: Name = ip("fd00:96::a").into();
    assert_eq!(
        data(&ask(&z, &v6.to_ascii(), RecordType::PTR)),
        ["web.default.svc.cluster.local."]
    );
    assert_eq!(
        data(&ask(&z, "5.1.244.10.in-addr.arpa.", RecordType::PTR)),
        ["pet-0.pets.db.svc.cluster.local."]
    );
    assert_eq!(
        data(&ask(&z, "6.2.244.10.in-addr.arpa.", RecordType::PTR)),
        ["10-244-2-6.pets.db.svc.cluster.local."]
    );
    // An address the cluster does not hold is not ours.
    let other = answer(
        &z,
        &Name::from_ascii("9.9.9.9.in-addr.arpa.").unwrap(),
        RecordType::PTR,
    );
    assert_eq!(other, Outcome::NotOurs);
    // A not-ready endpoint has no PTR.
    let sick = answer(
        &z,
        &Name::from_ascii("7.3.244.10.in-addr.arpa.").unwrap(),
        RecordType::PTR,
    );
    assert_eq!(sick, Outcome::NotOurs);
}

#[test]
fn headless_service_answers_ready_endpoints_only() {
    let z = zone();
    let a = ask(&z, "pets.db.svc.cluster.local.", RecordType::A);
    assert_eq!(data(&a), ["10.244.1.5", "10.244.2.6"]);
    assert_eq!(
        data(&ask(&z, "pets.db.svc.cluster.local.", RecordType::AAAA)),
        ["fd00:244::5"]
    );
    assert_eq!(
        data(&ask(&z, "pet-0.pets.db.svc.cluster.local.", RecordType::A)),
        ["10.244.1.5"]
    );
    assert_eq!(
        data(&ask(
            &z,
            "pet-0.pets.db.svc.cluster.local.",
            RecordType::AAAA
        )),
        ["fd00:244::5"]
    );
    assert_eq!(
        data(&ask(
            &z,
            "10-244-2-6.pets.db.svc.cluster.local.",
            RecordType::A
        )),
        ["10.244.2.6"]
    );
    assert_nxdomain(
        &ask(&z, "sick.pets.db.svc.cluster.local.", RecordType::A),
        "not ready",
    );
    // Exists without ready endpoints: NODATA. Does not exist: NXDOMAIN.
    assert_nodata(
        &ask(&z, "empty.db.svc.cluster.local.", RecordType::A),
        "no ready endpoints",
    );
    assert_nxdomain(
        &ask(&z, "nope.db.svc.cluster.local.", RecordType::A),
        "no such service",
    );
}

#[test]
fn headless_srv_per_endpoint_and_port_with_endpoint_addresses() {
    let z = zone();
    let a = ask(&z, "_http._tcp.pets.db.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        data(&a),
        [
            "0 100 8080 10-244-2-6.pets.db.svc.cluster.local.",
            "0 100 8080 pet-0.pets.db.svc.cluster.local.",
        ]
    );
    let mut extra: Vec<String> = a
        .additional
        .records()
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    extra.sort();
    assert_eq!(
        extra,
        [
            "10-244-2-6.pets.db.svc.cluster.local. 10.244.2.6",
            "pet-0.pets.db.svc.cluster.local. 10.244.1.5",
            "pet-0.pets.db.svc.cluster.local. fd00:244::5",
        ]
    );
}

#[test]
fn publish_not_ready_addresses_publishes_unready_endpoints() {
    let z = zone();
    assert_eq!(
        data(&ask(&z, "late.default.svc.cluster.local.", RecordType::A)),
        ["10.244.4.4"]
    );
}

#[test]
fn external_name_is_a_cname_for_every_type() {
    let z = zone();
    for t in [
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::TXT,
    ] {
        let a = ask(&z, "ext.default.svc.cluster.local.", t);
        assert_eq!(data(&a), ["www.example.com."], "{t}");
        assert_eq!(a.cname_target().unwrap().to_ascii(), "www.example.com.");
    }
}

#[test]
fn pod_hostname_under_its_headless_subdomain() {
    let z = zone();
    // The endpoint's hostname and the pod's hostname.subdomain are the same name.
    assert_eq!(
        data(&ask(&z, "pet-0.pets.db.svc.cluster.local.", RecordType::A)),
        ["10.244.1.5"]
    );
    // A pod the Service does not publish (not ready) has none.
    assert_nxdomain(
        &ask(&z, "sick.pets.db.svc.cluster.local.", RecordType::A),
        "unready pod",
    );
}

#[test]
fn pod_records_by_mode() {
    let z = zone();
    assert_eq!(
        data(&ask(&z, "10-244-1-5.db.pod.cluster.local.", RecordType::A)),
        ["10.244.1.5"]
    );
    assert_eq!(
        data(&ask(
            &z,
            "fd00-244--5.db.pod.cluster.local.",
            RecordType::AAAA
        )),
        ["fd00:244::5"]
    );
    assert_nodata(
        &ask(&z, "10-244-1-5.db.pod.cluster.local.", RecordType::AAAA),
        "v4 pod AAAA",
    );
    // verified: the pod must exist in that namespace.
    assert_nxdomain(
        &ask(&z, "10-244-1-5.default.pod.cluster.local.", RecordType::A),
        "other ns",
    );
    assert_nxdomain(
        &ask(&z, "1-2-3-4.db.pod.cluster.local.", RecordType::A),
        "no such pod",
    );
    assert_nodata(
        &ask(&z, "db.pod.cluster.local.", RecordType::A),
        "pod namespace ENT",
    );
    let z = zone_with(PodsMode::Insecure);
    assert_eq!(
        data(&ask(&z, "1-2-3-4.any.pod.cluster.local.", RecordType::A)),
        ["1.2.3.4"]
    );
    assert_nxdomain(
        &ask(&z, "1-2-3.any.pod.cluster.local.", RecordType::A),
        "not an address",
    );
    let z = zone_with(PodsMode::Disabled);
    assert_nxdomain(
        &ask(&z, "10-244-1-5.db.pod.cluster.local.", RecordType::A),
        "disabled",
    );
    assert_nxdomain(
        &ask(&z, "pod.cluster.local.", RecordType::A),
        "disabled pod zone",
    );
}

#[test]
fn empty_non_terminals_and_apex_are_nodata() {
    let z = zone();
    for name in [
        "db.svc.cluster.local.",
        "svc.cluster.local.",
        "pod.cluster.local.",
        "cluster.local.",
    ] {
        assert_nodata(&ask(&z, name, RecordType::A), name);
    }
    let soa = ask(&z, "cluster.local.", RecordType::SOA);
    assert_eq!(soa.answers.records().len(), 1);
    match &soa.answers.records()[0].data {
        RData::SOA(s) => {
            assert_eq!(s.minimum, 30, "SOA minimum is the negative TTL");
            assert_eq!(s.serial, 7);
        }
        other => panic!("{other:?}"),
    }
    assert_nxdomain(
        &ask(&z, "nsx.svc.cluster.local.", RecordType::A),
        "no such namespace",
    );
    assert_nxdomain(&ask(&z, "x.cluster.local.", RecordType::A), "no such name");
}

#[test]
fn names_outside_the_zone_are_not_ours() {
    let z = zone();
    for n in ["example.com.", "local.", "cluster.local.example.", "."] {
        assert_eq!(
            answer(&z, &Name::from_ascii(n).unwrap(), RecordType::A),
            Outcome::NotOurs,
            "{n}"
        );
    }
}

/// A cluster set: `web` exported by two clusters and imported here (derived Service with a
/// ClusterSetIP), and the headless `db` exported by east and west.
fn clusterset_zone() -> ZoneSnapshot {
    let mut web = Service::cluster_ip("shop", "derived-1", vec![ip("10.96.0.50")]);
    web.ports = vec![port("http", Protocol::Tcp, 80)];
    web.mcs_import = Some("web".into());
    let mut db = headless("shop", "derived-2");
    db.mcs_import = Some("db".into());
    let mut east = slice(
        "shop",
        "derived-2",
        AddressType::Ipv4,
        vec![
            endpoint("10.245.1.5", Some("db-0"), true),
            endpoint("10.245.1.6", None, true),
            endpoint("10.245.1.7", Some("sick"), false),
        ],
    );
    east.name = "db-east".into();
    east.source_cluster = Some("east".into());
    let mut west = slice(
        "shop",
        "derived-2",
        AddressType::Ipv4,
        vec![endpoint("10.244.1.5", Some("db-0"), true)],
    );
    west.name = "db-west".into();
    west.source_cluster = Some("west".into());
    let config = ZoneConfig::new("cluster.local").unwrap();
    build(&config, 3, &[web, db], &[east, west], &[])
}

#[test]
fn clusterset_ip_import_answers_under_clusterset_local() {
    let z = clusterset_zone();
    assert_eq!(
        data(&ask(&z, "web.shop.svc.clusterset.local.", RecordType::A)),
        ["10.96.0.50"]
    );
    assert_eq!(
        data(&ask(
            &z,
            "_http._tcp.web.shop.svc.clusterset.local.",
            RecordType::SRV
        )),
        ["0 100 80 web.shop.svc.clusterset.local."]
    );
    // The derived Service keeps its cluster name; the address's PTR stays that one.
    assert_eq!(
        data(&ask(&z, "derived-1.shop.svc.cluster.local.", RecordType::A)),
        ["10.96.0.50"]
    );
    assert_eq!(
        data(&ask(&z, "50.0.96.10.in-addr.arpa.", RecordType::PTR)),
        ["derived-1.shop.svc.cluster.local."]
    );
    // The cluster set zone is ours: unknown names are NXDOMAIN with its SOA, the names above
    // a service exist (NODATA).
    let a = ask(&z, "nope.shop.svc.clusterset.local.", RecordType::A);
    assert_nxdomain(&a, "unknown import");
    assert_eq!(
        a.authority.unwrap().name.to_ascii(),
        "clusterset.local.",
        "the cluster set's SOA"
    );
    assert_nodata(
        &ask(&z, "shop.svc.clusterset.local.", RecordType::A),
        "namespace",
    );
    assert_eq!(
        data(&ask(&z, "clusterset.local.", RecordType::SOA)).len(),
        1,
        "the apex has an SOA"
    );
    assert!(
        data(&ask(&z, "web.shop.svc.cluster.local.", RecordType::A)).is_empty(),
        "an import is not a cluster.local Service"
    );
}

#[test]
fn headless_import_names_each_clusters_endpoints() {
    let z = clusterset_zone();
    assert_eq!(
        data(&ask(&z, "db.shop.svc.clusterset.local.", RecordType::A)),
        ["10.244.1.5", "10.245.1.5", "10.245.1.6"],
        "ready endpoints of every cluster"
    );
    assert_eq!(
        data(&ask(
            &z,
            "db-0.east.db.shop.svc.clusterset.local.",
            RecordType::A
        )),
        ["10.245.1.5"]
    );
    assert_eq!(
        data(&ask(
            &z,
            "db-0.west.db.shop.svc.clusterset.local.",
            RecordType::A
        )),
        ["10.244.1.5"]
    );
    assert_eq!(
        data(&ask(
            &z,
            "10-245-1-6.east.db.shop.svc.clusterset.local.",
            RecordType::A
        )),
        ["10.245.1.6"],
        "no hostname: the dashed address"
    );
    assert_nxdomain(
        &ask(&z, "sick.east.db.shop.svc.clusterset.local.", RecordType::A),
        "a not-ready endpoint",
    );
    assert_nodata(
        &ask(&z, "east.db.shop.svc.clusterset.local.", RecordType::A),
        "the cluster's name exists",
    );
    let mut srv = data(&ask(
        &z,
        "_http._tcp.db.shop.svc.clusterset.local.",
        RecordType::SRV,
    ));
    srv.sort();
    assert_eq!(
        srv,
        [
            "0 100 8080 10-245-1-6.east.db.shop.svc.clusterset.local.",
            "0 100 8080 db-0.east.db.shop.svc.clusterset.local.",
            "0 100 8080 db-0.west.db.shop.svc.clusterset.local.",
        ]
    );
}
