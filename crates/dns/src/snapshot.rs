//! The cluster zone as one immutable value: Services, EndpointSlices and Pods turned into the
//! record sets of the Kubernetes DNS-Based Service Discovery specification (schema 1.1.0),
//! indexed by owner name. Pure: no I/O, no clock. The server swaps a new snapshot in on every
//! change, so a query always reads one consistent generation; consecutive generations share
//! their unchanged entries (see [`crate::incremental`], which builds them, and
//! [`crate::records`], which holds the per-owner record rules).
//!
//! Every name that exists is a key of [`ZoneSnapshot::names`], records or not: the ancestors
//! of every owner name inside the zone are inserted as empty entries (empty non-terminals such
//! as `ns.svc.zone`), which is what separates NODATA from NXDOMAIN. Reverse names
//! (`in-addr.arpa`, `ip6.arpa`) are keys only for the addresses the cluster owns; other reverse
//! names are not ours and go upstream.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use sarasa_cluster::PodInfo;
use sarasa_model::{EndpointSlice, Service};

use crate::config::ZoneConfig;
use crate::incremental::ZoneState;
use crate::names::Names;

/// The schema version the `dns-version` TXT record announces.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// SRV priority and weight: one tier, equal weight (the specification leaves them open).
pub const SRV_PRIORITY: u16 = 0;
pub const SRV_WEIGHT: u16 = 100;

/// The records of one owner name, by type. An entry with no records is an empty non-terminal.
#[derive(Debug, Default, Clone)]
pub struct NameEntry {
    pub a: Vec<Record>,
    pub aaaa: Vec<Record>,
    pub srv: Vec<Record>,
    /// The A/AAAA records of the SRV targets (the Additional section of an SRV answer).
    pub srv_additional: Vec<Record>,
    pub ptr: Vec<Record>,
    pub txt: Vec<Record>,
    pub soa: Vec<Record>,
    pub cname: Vec<Record>,
}

impl NameEntry {
    /// The records of `rtype` (ANY: none here, see [`NameEntry::all`]).
    pub fn of_type(&self, rtype: RecordType) -> &[Record] {
        match rtype {
            RecordType::A => &self.a,
            RecordType::AAAA => &self.aaaa,
            RecordType::SRV => &self.srv,
            RecordType::PTR => &self.ptr,
            RecordType::TXT => &self.txt,
            RecordType::SOA => &self.soa,
            RecordType::CNAME => &self.cname,
            _ => &[],
        }
    }

    /// Every record of the name (a query of type ANY).
    pub fn all(&self) -> impl Iterator<Item = &Record> {
        self.cname
            .iter()
            .chain(&self.soa)
            .chain(&self.a)
            .chain(&self.aaaa)
            .chain(&self.srv)
            .chain(&self.ptr)
            .chain(&self.txt)
    }

    pub(crate) fn record_count(&self) -> usize {
        self.all().count()
    }

    /// Drops spare capacity (a set of one record would otherwise hold room for four).
    pub(crate) fn shrink(&mut self) {
        for set in [
            &mut self.a,
            &mut self.aaaa,
            &mut self.srv,
            &mut self.srv_additional,
            &mut self.ptr,
            &mut self.txt,
            &mut self.soa,
            &mut self.cname,
        ] {
            set.shrink_to_fit();
        }
    }

    /// Adds `other`'s records that this entry lacks, type by type.
    pub(crate) fn absorb(&mut self, other: &NameEntry) {
        fn add(into: &mut Vec<Record>, from: &[Record]) {
            for r in from {
                if !into.contains(r) {
                    into.push(r.clone());
                }
            }
        }
        add(&mut self.a, &other.a);
        add(&mut self.aaaa, &other.aaaa);
        add(&mut self.srv, &other.srv);
        add(&mut self.srv_additional, &other.srv_additional);
        add(&mut self.ptr, &other.ptr);
        add(&mut self.txt, &other.txt);
        add(&mut self.soa, &other.soa);
        add(&mut self.cname, &other.cname);
    }
}

/// One generation of the cluster zone.
#[derive(Debug)]
pub struct ZoneSnapshot {
    pub config: ZoneConfig,
    pub generation: u64,
    /// Every existing name in the zone (with its records) and the cluster's reverse names,
    /// sharing unchanged entries with the previous generation.
    pub names: Names,
    /// `(namespace, address)` of every pod with an address (`--pods verified`).
    pub pod_addresses: Arc<HashSet<(String, IpAddr)>>,
    /// Namespaces with at least one such pod (`ns.pod.zone` exists).
    pub pod_namespaces: Arc<HashSet<String>>,
    /// The zone's SOA (the Authority section of negative answers).
    pub soa: Record,
    /// `pod.<zone>`.
    pub pod_zone: Name,
    pub record_count: usize,
}

/// An IP address as a DNS label: `10-244-1-5`, or the IPv6 text with `:` as `-`
/// (`fd00-10-244-1--5`), as kube-dns and CoreDNS spell pod and endpoint names.
pub fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// Parses a dashed address label back (the inverse of [`dashed`]; IPv4 needs all four parts).
pub fn undashed(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 && !label.contains("--") {
        if let Ok(ip) = label.replace('-', ".").parse::<std::net::Ipv4Addr>() {
            return Some(IpAddr::V4(ip));
        }
    }
    label
        .replace('-', ":")
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The SOA record of a zone generation; its minimum (and its TTL) is the negative TTL
/// (RFC 2308: resolvers cache a negative answer for min(SOA TTL, SOA minimum)).
pub fn soa_record(config: &ZoneConfig, generation: u64) -> Record {
    let zone = &config.domain;
    let mname = Name::from_ascii("ns.dns")
        .and_then(|n| n.append_domain(zone))
        .unwrap_or_else(|_| zone.clone());
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(zone))
        .unwrap_or_else(|_| zone.clone());
    Record::from_rdata(
        zone.clone(),
        config.negative_ttl,
        RData::SOA(SOA::new(
            mname,
            rname,
            // The serial follows the generation (wrapping, as RFC 1982 serial arithmetic does).
            generation as u32,
            7200,
            1800,
            86400,
            config.negative_ttl,
        )),
    )
}

/// Builds one generation of the zone from the cluster's objects at once (the same path as
/// the incremental updates of [`ZoneState`], applied to every object).
pub fn build<'a>(
    config: &ZoneConfig,
    generation: u64,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    pods: impl IntoIterator<Item = &'a PodInfo>,
) -> ZoneSnapshot {
    let mut state = ZoneState::new(config);
    for svc in services {
        let key = format!("{}/{}", svc.namespace, svc.name);
        state.set_service(&key, Some(Arc::new(svc.clone())));
    }
    for slice in slices {
        let key = format!("{}/{}", slice.namespace, slice.name);
        state.set_slice(&key, Some(Arc::new(slice.clone())));
    }
    for pod in pods {
        let key = format!("{}/{}", pod.namespace, pod.name);
        state.set_pod(&key, Some(Arc::new(pod.clone())));
    }
    state.snapshot(generation)
}

impl ZoneSnapshot {
    /// An empty zone (before the first sync): only the apex, `svc`, `pod` and `dns-version`.
    pub fn empty(config: &ZoneConfig) -> Self {
        build(config, 0, [], [], [])
    }
}
