//! The cluster zone as one immutable value: Services, EndpointSlices and Pods turned into the
//! record sets of the Kubernetes DNS-Based Service Discovery specification (schema 1.1.0),
//! indexed by owner name. Pure: no I/O, no clock. The server swaps a new snapshot in whole on
//! every change, so a query always reads one consistent generation.
//!
//! Every name that exists is a key of [`ZoneSnapshot::names`], records or not: the ancestors
//! of every owner name inside the zone are inserted as empty entries (empty non-terminals such
//! as `ns.svc.zone`), which is what separates NODATA from NXDOMAIN. Reverse names
//! (`in-addr.arpa`, `ip6.arpa`) are keys only for the addresses the cluster owns; other reverse
//! names are not ours and go upstream.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use sarasa_cluster::PodInfo;
use sarasa_model::{AddressType, EndpointSlice, Service, ServiceType};

use crate::config::{PodsMode, ZoneConfig};

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

    fn record_count(&self) -> usize {
        self.all().count()
    }
}

/// One generation of the cluster zone.
#[derive(Debug)]
pub struct ZoneSnapshot {
    pub config: ZoneConfig,
    pub generation: u64,
    /// Every existing name in the zone (with its records) and the cluster's reverse names.
    pub names: HashMap<Name, NameEntry>,
    /// `(namespace, address)` of every pod with an address (`--pods verified`).
    pub pod_addresses: HashSet<(String, IpAddr)>,
    /// Namespaces with at least one such pod (`ns.pod.zone` exists).
    pub pod_namespaces: HashSet<String>,
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

fn address_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(name.clone(), ttl, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6))),
    }
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

/// Accumulates records and the existence of names while a snapshot is built.
struct Builder<'c> {
    config: &'c ZoneConfig,
    names: HashMap<Name, NameEntry>,
    /// `svc.<zone>`: the names of Services sit below it.
    svc_zone: Name,
}

impl<'c> Builder<'c> {
    /// `label.label...<parent>` as a lowercase fully qualified name, or `None` when a label is
    /// not a valid DNS label (the object is then left out of DNS, not the whole zone).
    fn name(&self, labels: &[&str], parent: &Name) -> Option<Name> {
        let mut text = String::with_capacity(64);
        for l in labels {
            if l.is_empty() || l.len() > 63 || l.contains('.') {
                return None;
            }
            text.push_str(l);
            text.push('.');
        }
        let name = Name::from_ascii(&text).ok()?.append_domain(parent).ok()?;
        Some(name.to_lowercase())
    }

    /// The entry of `name`, creating it and its ancestors up to the zone apex (empty
    /// non-terminals) when it is inside the zone.
    fn entry(&mut self, name: &Name) -> &mut NameEntry {
        if !self.names.contains_key(name) && self.config.domain.zone_of(name) {
            let mut parent = name.base_name();
            while self.config.domain.zone_of(&parent) && !self.names.contains_key(&parent) {
                self.names.insert(parent.clone(), NameEntry::default());
                parent = parent.base_name();
            }
        }
        self.names.entry(name.clone()).or_default()
    }

    fn add_address(&mut self, name: &Name, ip: IpAddr) {
        let ttl = self.config.ttl;
        let record = address_record(name, ttl, ip);
        let entry = self.entry(name);
        let set = if ip.is_ipv4() {
            &mut entry.a
        } else {
            &mut entry.aaaa
        };
        if !set.contains(&record) {
            set.push(record);
        }
    }

    fn add_ptr(&mut self, ip: IpAddr, target: &Name) {
        let owner = Name::from(ip);
        let record = Record::from_rdata(
            owner.clone(),
            self.config.ttl,
            RData::PTR(PTR(target.clone())),
        );
        let entry = self.names.entry(owner).or_default();
        if !entry.ptr.contains(&record) {
            entry.ptr.push(record);
        }
    }

    fn add_srv(&mut self, owner: &Name, port: u16, target: &Name, target_ips: &[IpAddr]) {
        let ttl = self.config.ttl;
        let srv = Record::from_rdata(
            owner.clone(),
            ttl,
            RData::SRV(SRV::new(SRV_PRIORITY, SRV_WEIGHT, port, target.clone())),
        );
        let additional: Vec<Record> = target_ips
            .iter()
            .map(|ip| address_record(target, ttl, *ip))
            .collect();
        let entry = self.entry(owner);
        if !entry.srv.contains(&srv) {
            entry.srv.push(srv);
        }
        for r in additional {
            if !entry.srv_additional.contains(&r) {
                entry.srv_additional.push(r);
            }
        }
    }

    /// `_<port>._<proto>.<service>.<ns>.svc.<zone>` (unnamed ports have none).
    fn srv_owner(&self, port_name: &str, protocol: &str, base: &Name) -> Option<Name> {
        if port_name.is_empty() {
            return None;
        }
        self.name(&[&format!("_{port_name}"), &format!("_{protocol}")], base)
    }
}

/// The Service's endpoints DNS publishes: ready ones, or all with `publishNotReadyAddresses`.
fn published_endpoints<'s>(
    svc: &'s Service,
    slices: &'s [&'s EndpointSlice],
) -> impl Iterator<Item = (&'s EndpointSlice, &'s sarasa_model::Endpoint)> + 's {
    slices
        .iter()
        .filter(|s| s.address_type != AddressType::Fqdn)
        .flat_map(|s| s.endpoints.iter().map(move |e| (*s, e)))
        .filter(move |(_, e)| e.conditions.ready || svc.publish_not_ready_addresses)
}

/// Builds one generation of the zone from the cluster's objects.
pub fn build<'a>(
    config: &ZoneConfig,
    generation: u64,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    pods: impl IntoIterator<Item = &'a PodInfo>,
) -> ZoneSnapshot {
    let zone = config.domain.clone();
    let svc_zone = Name::from_ascii("svc")
        .and_then(|n| n.append_domain(&zone))
        .unwrap_or_else(|_| zone.clone());
    let pod_zone = Name::from_ascii("pod")
        .and_then(|n| n.append_domain(&zone))
        .unwrap_or_else(|_| zone.clone());
    let mut b = Builder {
        config,
        names: HashMap::new(),
        svc_zone: svc_zone.clone(),
    };
    let soa = soa_record(config, generation);
    b.entry(&zone).soa.push(soa.clone());
    b.entry(&svc_zone);
    if config.pods != PodsMode::Disabled {
        b.entry(&pod_zone);
    }
    if let Some(version) = b.name(&["dns-version"], &zone) {
        let txt = Record::from_rdata(
            version.clone(),
            config.ttl,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        );
        b.entry(&version).txt.push(txt);
    }

    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for s in slices {
        slices_of
            .entry((s.namespace.as_str(), s.service_name.as_str()))
            .or_default()
            .push(s);
    }
    let pods: Vec<&PodInfo> = pods.into_iter().collect();
    let mut headless: HashMap<(&str, &str), &Service> = HashMap::new();

    for svc in services {
        let svc_zone = b.svc_zone.clone();
        let Some(base) = b.name(&[&svc.name, &svc.namespace], &svc_zone) else {
            continue;
        };
        let no_slices = Vec::new();
        let slices = slices_of
            .get(&(svc.namespace.as_str(), svc.name.as_str()))
            .unwrap_or(&no_slices);
        if svc.type_ == ServiceType::ExternalName {
            let Some(target) = svc
                .external_name
                .as_deref()
                .and_then(|n| Name::from_ascii(n.trim_end_matches('.')).ok())
                .map(|mut n| {
                    n.set_fqdn(true);
                    n
                })
            else {
                continue;
            };
            let record = Record::from_rdata(base.clone(), config.ttl, RData::CNAME(CNAME(target)));
            b.entry(&base).cname.push(record);
        } else if svc.headless || svc.cluster_ips.is_empty() {
            headless.insert((svc.namespace.as_str(), svc.name.as_str()), svc);
            b.entry(&base);
            for (slice, ep) in published_endpoints(svc, slices) {
                let Some(first) = ep.addresses.first() else {
                    continue;
                };
                let label = ep.hostname.clone().unwrap_or_else(|| dashed(first));
                let Some(host) = b.name(&[&label], &base) else {
                    continue;
                };
                for ip in &ep.addresses {
                    b.add_address(&base, *ip);
                    b.add_address(&host, *ip);
                    b.add_ptr(*ip, &host);
                }
                for port in &slice.ports {
                    if let Some(owner) = b.srv_owner(&port.name, port.protocol.lowercase(), &base) {
                        b.add_srv(&owner, port.port, &host, &ep.addresses);
                    }
                }
            }
        } else {
            for ip in &svc.cluster_ips {
                b.add_address(&base, *ip);
                b.add_ptr(*ip, &base);
            }
            for port in &svc.ports {
                if let Some(owner) = b.srv_owner(&port.name, port.protocol.lowercase(), &base) {
                    b.add_srv(&owner, port.port, &base, &svc.cluster_ips);
                }
            }
        }
    }

    // `hostname.subdomain.ns.svc.zone` for pods whose subdomain names a headless Service in
    // their namespace, with the pod's addresses, when the Service publishes the pod (one of
    // its published endpoints has the pod's address).
    let mut pod_addresses = HashSet::new();
    for pod in &pods {
        let finished = matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed"));
        if finished {
            continue;
        }
        for ip in &pod.pod_ips {
            pod_addresses.insert((pod.namespace.to_ascii_lowercase(), *ip));
        }
        let (Some(host), Some(sub)) = (pod.hostname.as_deref(), pod.subdomain.as_deref()) else {
            continue;
        };
        let Some(svc) = headless.get(&(pod.namespace.as_str(), sub)) else {
            continue;
        };
        let no_slices = Vec::new();
        let slices = slices_of
            .get(&(pod.namespace.as_str(), sub))
            .unwrap_or(&no_slices);
        let published: HashSet<IpAddr> = published_endpoints(svc, slices)
            .flat_map(|(_, e)| e.addresses.iter().copied())
            .collect();
        let svc_zone = b.svc_zone.clone();
        let Some(name) = b.name(&[host, sub, &pod.namespace], &svc_zone) else {
            continue;
        };
        for ip in pod.pod_ips.iter().filter(|ip| published.contains(ip)) {
            b.add_address(&name, *ip);
        }
    }

    let pod_namespaces = pod_addresses.iter().map(|(ns, _)| ns.clone()).collect();
    let record_count = b.names.values().map(NameEntry::record_count).sum();
    ZoneSnapshot {
        config: config.clone(),
        generation,
        names: b.names,
        pod_addresses,
        pod_namespaces,
        soa,
        pod_zone,
        record_count,
    }
}

impl ZoneSnapshot {
    /// An empty zone (before the first sync): only the apex, `svc`, `pod` and `dns-version`.
    pub fn empty(config: &ZoneConfig) -> Self {
        build(config, 0, [], [], [])
    }
}
