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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
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

/// The data of one record of the zone, without what its records share: the owner (the name
/// of the [`NameEntry`] holding it), the class (IN) and the TTL (the zone's `ttl`). The names
/// it points at are `Arc`s shared with the zone's own keys (an SRV or PTR target is the name
/// of the Service or endpoint that holds it). Hickory's [`Record`] (272 bytes, with its own
/// owner and target names) is made per answer instead: 24 bytes here.
#[derive(Debug, Clone, PartialEq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Priority and weight are [`SRV_PRIORITY`] and [`SRV_WEIGHT`].
    Srv {
        port: u16,
        target: Arc<Name>,
    },
    Ptr(Arc<Name>),
    Cname(Arc<Name>),
    /// The zone's few other records (the apex SOA, the `dns-version` TXT), whole.
    Other(Box<Record>),
}

impl Rdata {
    /// An A or AAAA record's data.
    pub fn address(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Rdata::A(v4),
            IpAddr::V6(v6) => Rdata::Aaaa(v6),
        }
    }

    /// The record at `owner` with `ttl` (an [`Rdata::Other`] keeps its own owner and TTL).
    pub fn to_record(&self, owner: &Name, ttl: u32) -> Record {
        let data = match self {
            Rdata::A(v4) => RData::A(A(*v4)),
            Rdata::Aaaa(v6) => RData::AAAA(AAAA(*v6)),
            Rdata::Srv { port, target } => RData::SRV(SRV::new(
                SRV_PRIORITY,
                SRV_WEIGHT,
                *port,
                Name::clone(target),
            )),
            Rdata::Ptr(target) => RData::PTR(PTR(Name::clone(target))),
            Rdata::Cname(target) => RData::CNAME(CNAME(Name::clone(target))),
            Rdata::Other(record) => return Record::clone(record),
        };
        Record::from_rdata(owner.clone(), ttl, data)
    }

    /// The SRV target, if this is an SRV record.
    pub fn srv_target(&self) -> Option<&Name> {
        match self {
            Rdata::Srv { target, .. } => Some(target),
            _ => None,
        }
    }

    /// The same data with its target names replaced by `intern`'s (the zone's shared keys).
    fn interned(self, intern: &impl Fn(Arc<Name>) -> Arc<Name>) -> Self {
        match self {
            Rdata::Srv { port, target } => Rdata::Srv {
                port,
                target: intern(target),
            },
            Rdata::Ptr(target) => Rdata::Ptr(intern(target)),
            other => other,
        }
    }
}

/// The records of one owner name, by type, in one shared allocation (cloning an entry is a
/// reference count): the sets lie back to back in the order of [`Rdata::kind`], so a set is
/// found by two binary searches over the (few) records. An entry with no records is an empty
/// non-terminal. (An SRV answer's Additional section is read from its targets' own entries,
/// not stored twice.)
#[derive(Debug, Clone, PartialEq)]
pub struct NameEntry(Arc<[Rdata]>);

impl Default for NameEntry {
    fn default() -> Self {
        NameEntry(Arc::new([]))
    }
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

impl Rdata {
    /// The set this record belongs to, in an entry's storage order.
    fn kind(&self) -> usize {
        match self {
            Rdata::Cname(_) => CNAME_AT,
            Rdata::Other(r) if r.record_type() == RecordType::SOA => SOA_AT,
            Rdata::A(_) => A_AT,
            Rdata::Aaaa(_) => AAAA_AT,
            Rdata::Srv { .. } => SRV_AT,
            Rdata::Ptr(_) => PTR_AT,
            Rdata::Other(_) => TXT_AT,
        }
    }
}

impl NameEntry {
    fn set(&self, kind: usize) -> &[Rdata] {
        let start = self.0.partition_point(|r| r.kind() < kind);
        let end = start + self.0[start..].partition_point(|r| r.kind() == kind);
        &self.0[start..end]
    }

    /// The records of `rtype` (ANY: none here, see [`NameEntry::all`]).
    pub fn of_type(&self, rtype: RecordType) -> &[Rdata] {
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

    /// The records of `rtype` as hickory records at `owner` (this entry's name) with `ttl`.
    pub fn records(&self, owner: &Name, ttl: u32, rtype: RecordType) -> Vec<Record> {
        to_records(self.of_type(rtype), owner, ttl)
    }

    /// The CNAME of an ExternalName Service (empty otherwise).
    pub fn cname(&self) -> &[Rdata] {
        self.set(CNAME_AT)
    }

    /// Every record of the name (a query of type ANY).
    pub fn all(&self) -> &[Rdata] {
        &self.0
    }

    pub(crate) fn record_count(&self) -> usize {
        self.0.len()
    }

    /// Whether `other` is this very entry (shared, not only equal).
    pub fn shares(&self, other: &NameEntry) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Heap bytes of this entry's own allocation (target names are the zone's shared keys,
    /// counted with the names), for the memory accounting of [`crate::incremental`].
    pub fn heap_bytes(&self) -> usize {
        2 * std::mem::size_of::<usize>()
            + std::mem::size_of_val::<[Rdata]>(&self.0)
            + self
                .0
                .iter()
                .map(|r| match r {
                    Rdata::Other(_) => std::mem::size_of::<Record>(),
                    _ => 0,
                })
                .sum::<usize>()
    }
}

/// `data` as hickory records at `owner` with `ttl`.
pub fn to_records(data: &[Rdata], owner: &Name, ttl: u32) -> Vec<Record> {
    data.iter().map(|d| d.to_record(owner, ttl)).collect()
}

/// The records of one owner name while they are collected (one growable set per type).
#[derive(Debug, Default, Clone)]
pub(crate) struct EntrySets {
    pub a: Vec<Rdata>,
    pub aaaa: Vec<Rdata>,
    pub srv: Vec<Rdata>,
    pub ptr: Vec<Rdata>,
    pub txt: Vec<Rdata>,
    pub soa: Vec<Rdata>,
    pub cname: Vec<Rdata>,
}

impl EntrySets {
    fn in_order(self) -> [Vec<Rdata>; KINDS] {
        [
            self.cname, self.soa, self.a, self.aaaa, self.srv, self.ptr, self.txt,
        ]
    }

    /// The compact, immutable form, with target names replaced by `intern`'s.
    pub(crate) fn freeze_with(self, intern: &impl Fn(Arc<Name>) -> Arc<Name>) -> NameEntry {
        let sets = self.in_order();
        let mut records = Vec::with_capacity(sets.iter().map(Vec::len).sum());
        for set in sets {
            records.extend(set.into_iter().map(|r| r.interned(intern)));
        }
        NameEntry(records.into())
    }

    /// The compact, immutable form.
    pub(crate) fn freeze(self) -> NameEntry {
        self.freeze_with(&|n| n)
    }

    /// Adds `other`'s records that these sets lack, type by type.
    pub(crate) fn absorb(&mut self, other: &NameEntry) {
        fn add(into: &mut Vec<Rdata>, from: &[Rdata]) {
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
    /// The cluster set zone's SOA (negative answers under `clusterset.local`).
    pub clusterset_soa: Record,
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
    soa_record_of(&config.domain, config, generation)
}

/// The SOA record of `zone` (the cluster domain or the cluster set's) for a generation.
pub fn soa_record_of(zone: &Name, config: &ZoneConfig, generation: u64) -> Record {
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
