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

/// The records of one owner name, by type, in one allocation: the sets lie back to back in the
/// order of [`NameEntry::all`]. An entry with no records is an empty non-terminal. (An SRV
/// answer's Additional section is read from its targets' own entries, not stored twice.)
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NameEntry {
    records: Box<[Record]>,
    /// Where each set ends in `records`, in [`KINDS`] order.
    ends: [u32; KINDS],
}

/// The sets of an entry, in storage order.
const KINDS: usize = 7;
const CNAME_AT: usize = 0;
const SOA_AT: usize = 1;
const A_AT: usize = 2;
const AAAA_AT: usize = 3;
const SRV_AT: usize = 4;
const PTR_AT: usize = 5;
const TXT_AT: usize = 6;

impl NameEntry {
    fn set(&self, kind: usize) -> &[Record] {
        let start = if kind == 0 {
            0
        } else {
            self.ends[kind - 1] as usize
        };
        &self.records[start..self.ends[kind] as usize]
    }

    /// The records of `rtype` (ANY: none here, see [`NameEntry::all`]).
    pub fn of_type(&self, rtype: RecordType) -> &[Record] {
        match rtype {
            RecordType::A => self.set(A_AT),
            RecordType::AAAA => self.set(AAAA_AT),
            RecordType::SRV => self.set(SRV_AT),
            RecordType::PTR => self.set(PTR_AT),
            RecordType::TXT => self.set(TXT_AT),
            RecordType::SOA => self.set(SOA_AT),
            RecordType::CNAME => self.set(CNAME_AT),
            _ => &[],
        }
    }

    /// The CNAME of an ExternalName Service (empty otherwise).
    pub fn cname(&self) -> &[Record] {
        self.set(CNAME_AT)
    }

    /// Every record of the name (a query of type ANY).
    pub fn all(&self) -> impl Iterator<Item = &Record> {
        self.records[..self.ends[TXT_AT] as usize].iter()
    }

    pub(crate) fn record_count(&self) -> usize {
        self.ends[TXT_AT] as usize
    }
}

/// The records of one owner name while they are collected (one growable set per type).
#[derive(Debug, Default, Clone)]
pub(crate) struct EntrySets {
    pub a: Vec<Record>,
    pub aaaa: Vec<Record>,
    pub srv: Vec<Record>,
    pub ptr: Vec<Record>,
    pub txt: Vec<Record>,
    pub soa: Vec<Record>,
    pub cname: Vec<Record>,
}

impl EntrySets {
    fn in_order(&self) -> [&Vec<Record>; KINDS] {
        [
            &self.cname,
            &self.soa,
            &self.a,
            &self.aaaa,
            &self.srv,
            &self.ptr,
            &self.txt,
        ]
    }

    /// The compact, immutable form.
    pub(crate) fn freeze(self) -> NameEntry {
        let sets = self.in_order();
        let mut records = Vec::with_capacity(sets.iter().map(|s| s.len()).sum());
        let mut ends = [0u32; KINDS];
        for (kind, set) in sets.into_iter().enumerate() {
            records.extend(set.iter().cloned());
            ends[kind] = records.len() as u32;
        }
        NameEntry {
            records: records.into_boxed_slice(),
            ends,
        }
    }

    /// Adds `other`'s records that these sets lack, type by type.
    pub(crate) fn absorb(&mut self, other: &NameEntry) {
        fn add(into: &mut Vec<Record>, from: &[Record]) {
            for r in from {
                if !into.contains(r) {
                    into.push(r.clone());
                }
            }
        }
        add(&mut self.cname, other.set(CNAME_AT));
        add(&mut self.soa, other.set(SOA_AT));
        add(&mut self.a, other.set(A_AT));
        add(&mut self.aaaa, other.set(AAAA_AT));
        add(&mut self.srv, other.set(SRV_AT));
        add(&mut self.ptr, other.set(PTR_AT));
        add(&mut self.txt, other.set(TXT_AT));
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
