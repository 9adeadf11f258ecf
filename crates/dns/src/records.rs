//! The record sets of one owner: a Service (its ClusterIP names, SRV, PTRs, headless endpoint
//! names), a Pod (its `hostname.subdomain` name), or the zone's fixed names (apex SOA, `svc`,
//! `pod`, `dns-version`). Pure functions of that owner's objects, so a change recomputes only
//! the owners it touches; [`crate::incremental`] merges the sets of all owners into the zone.
//! Existence of ancestors (empty non-terminals) is not recorded here: the merge derives it.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record};
use sarasa_cluster::PodInfo;
use sarasa_model::{AddressType, Endpoint, EndpointSlice, Service, ServiceType};

use crate::config::{PodsMode, ZoneConfig};
use crate::snapshot::{dashed, soa_record, soa_record_of, EntrySets, Rdata, SCHEMA_VERSION};

/// The names one owner puts records at (an entry may be empty: the name exists, no records).
/// A name is made once per owner and shared (`Arc`) by its key and the records pointing at it.
pub(crate) type OwnerSets = HashMap<Arc<Name>, EntrySets>;

/// The zone's fixed parts, computed once per configuration.
#[derive(Debug, Clone)]
pub(crate) struct ZoneNames {
    pub config: ZoneConfig,
    /// `svc.<zone>`: the names of Services sit below it.
    pub svc_zone: Name,
    /// `pod.<zone>`.
    pub pod_zone: Name,
    /// `svc.<cluster set domain>`: the names of ServiceImports sit below it.
    pub clusterset_svc_zone: Name,
}

impl ZoneNames {
    pub fn new(config: &ZoneConfig) -> Self {
        let child = |label: &str, zone: &Name| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(zone))
                .unwrap_or_else(|_| zone.clone())
        };
        ZoneNames {
            config: config.clone(),
            svc_zone: child("svc", &config.domain),
            pod_zone: child("pod", &config.domain),
            clusterset_svc_zone: child("svc", &config.clusterset_domain),
        }
    }

    /// `label.label...<parent>` as a lowercase fully qualified name, or `None` when a label is
    /// not a valid DNS label (the object is then left out of DNS, not the whole zone).
    fn name(&self, labels: &[&str], parent: &Name) -> Option<Arc<Name>> {
        let mut text = String::with_capacity(64);
        for l in labels {
            if l.is_empty() || l.len() > 63 || l.contains('.') {
                return None;
            }
            text.push_str(l);
            text.push('.');
        }
        let name = Name::from_ascii(&text).ok()?.append_domain(parent).ok()?;
        Some(Arc::new(name.to_lowercase()))
    }

    /// `_<port>._<proto>.<service>.<ns>.svc.<zone>` (unnamed ports have none).
    fn srv_owner(&self, port_name: &str, protocol: &str, base: &Name) -> Option<Arc<Name>> {
        if port_name.is_empty() {
            return None;
        }
        self.name(&[&format!("_{port_name}"), &format!("_{protocol}")], base)
    }

    /// `<service>.<ns>.svc.<zone>`.
    fn service_name(&self, namespace: &str, name: &str) -> Option<Arc<Name>> {
        self.name(&[name, namespace], &self.svc_zone)
    }
}

fn push_new(set: &mut Vec<Rdata>, record: Rdata) {
    if !set.contains(&record) {
        set.push(record);
    }
}

/// Collects one owner's records.
struct Sets {
    sets: OwnerSets,
}

impl Sets {
    fn entry(&mut self, name: &Arc<Name>) -> &mut EntrySets {
        self.sets.entry(name.clone()).or_default()
    }

    fn add_address(&mut self, name: &Arc<Name>, ip: IpAddr) {
        let record = Rdata::address(ip);
        let entry = self.entry(name);
        push_new(
            if ip.is_ipv4() {
                &mut entry.a
            } else {
                &mut entry.aaaa
            },
            record,
        );
    }

    fn add_ptr(&mut self, ip: IpAddr, target: &Arc<Name>) {
        let owner = Arc::new(Name::from(ip));
        push_new(&mut self.entry(&owner).ptr, Rdata::Ptr(target.clone()));
    }

    fn add_srv(&mut self, owner: &Arc<Name>, port: u16, target: &Arc<Name>) {
        let srv = Rdata::Srv {
            port,
            target: target.clone(),
        };
        push_new(&mut self.entry(owner).srv, srv);
    }
}

/// The Service's endpoints DNS publishes: ready ones, or all with `publishNotReadyAddresses`.
pub(crate) fn published_endpoints<'s>(
    svc: &'s Service,
    slices: &'s [&'s EndpointSlice],
) -> impl Iterator<Item = (&'s EndpointSlice, &'s Endpoint)> + 's {
    slices
        .iter()
        .filter(|s| s.address_type != AddressType::Fqdn)
        .flat_map(|s| s.endpoints.iter().map(move |e| (*s, e)))
        .filter(move |(_, e)| e.conditions.ready || svc.publish_not_ready_addresses)
}

/// A Service whose endpoints DNS names one by one (`clusterIP: None`), the kind a pod's
/// `subdomain` refers to.
pub(crate) fn is_headless(svc: &Service) -> bool {
    svc.type_ != ServiceType::ExternalName && (svc.headless || svc.cluster_ips.is_empty())
}

/// The zone's fixed names: the apex with this generation's SOA, `svc`, `pod` (unless pod
/// records are disabled) and the `dns-version` TXT record.
pub(crate) fn fixed_sets(zone: &ZoneNames, generation: u64) -> OwnerSets {
    let config = &zone.config;
    let mut s = Sets {
        sets: OwnerSets::new(),
    };
    s.entry(&Arc::new(config.domain.clone()))
        .soa
        .push(Rdata::Other(Box::new(soa_record(config, generation))));
    s.entry(&Arc::new(zone.svc_zone.clone()));
    s.entry(&Arc::new(config.clusterset_domain.clone()))
        .soa
        .push(Rdata::Other(Box::new(soa_record_of(
            &config.clusterset_domain,
            config,
            generation,
        ))));
    s.entry(&Arc::new(zone.clusterset_svc_zone.clone()));
    if config.pods != PodsMode::Disabled {
        s.entry(&Arc::new(zone.pod_zone.clone()));
    }
    if let Some(version) = zone.name(&["dns-version"], &config.domain) {
        let txt = Record::from_rdata(
            Name::clone(&version),
            config.ttl,
            RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
        );
        s.entry(&version).txt.push(Rdata::Other(Box::new(txt)));
    }
    s.sets
}

/// The records of one Service given its EndpointSlices.
pub(crate) fn service_sets(
    zone: &ZoneNames,
    svc: &Service,
    slices: &[&EndpointSlice],
) -> OwnerSets {
    let mut s = Sets {
        sets: OwnerSets::new(),
    };
    let Some(base) = zone.service_name(&svc.namespace, &svc.name) else {
        return s.sets;
    };
    if svc.type_ == ServiceType::ExternalName {
        let target = svc
            .external_name
            .as_deref()
            .and_then(|n| Name::from_ascii(n.trim_end_matches('.')).ok())
            .map(|mut n| {
                n.set_fqdn(true);
                n
            });
        if let Some(target) = target {
            s.entry(&base).cname.push(Rdata::Cname(Arc::new(target)));
        }
    } else if is_headless(svc) {
        s.entry(&base);
        for (slice, ep) in published_endpoints(svc, slices) {
            let Some(first) = ep.addresses.first() else {
                continue;
            };
            let label = ep.hostname.clone().unwrap_or_else(|| dashed(first));
            let Some(host) = zone.name(&[&label], &base) else {
                continue;
            };
            for ip in &ep.addresses {
                s.add_address(&base, *ip);
                s.add_address(&host, *ip);
                s.add_ptr(*ip, &host);
            }
            for port in &slice.ports {
                if let Some(owner) = zone.srv_owner(&port.name, port.protocol.lowercase(), &base) {
                    s.add_srv(&owner, port.port, &host);
                }
            }
        }
    } else {
        for ip in &svc.cluster_ips {
            s.add_address(&base, *ip);
            s.add_ptr(*ip, &base);
        }
        for port in &svc.ports {
            if let Some(owner) = zone.srv_owner(&port.name, port.protocol.lowercase(), &base) {
                s.add_srv(&owner, port.port, &base);
            }
        }
    }
    if let Some(import) = &svc.mcs_import {
        clusterset_sets(&mut s, zone, svc, import, slices);
    }
    s.sets
}

/// The MCS DNS specification's names of a derived Service's import (no PTRs: an address's
/// reverse name stays the cluster one):
/// - ClusterSetIP: `<import>.<ns>.svc.<clusterset>` A/AAAA the ClusterSetIPs, and SRV
///   `_<port>._<proto>.<import>...` to it;
/// - Headless: `<import>.<ns>.svc.<clusterset>` the ready endpoints of every cluster, and
///   `<hostname>.<clusterid>.<import>.<ns>.svc.<clusterset>` each (its address dashed when it
///   has no hostname), with SRV records to those names.
fn clusterset_sets(
    s: &mut Sets,
    zone: &ZoneNames,
    svc: &Service,
    import: &str,
    slices: &[&EndpointSlice],
) {
    let Some(base) = zone.name(&[import, &svc.namespace], &zone.clusterset_svc_zone) else {
        return;
    };
    s.entry(&base);
    if !is_headless(svc) {
        for ip in &svc.cluster_ips {
            s.add_address(&base, *ip);
        }
        for port in &svc.ports {
            if let Some(owner) = zone.srv_owner(&port.name, port.protocol.lowercase(), &base) {
                s.add_srv(&owner, port.port, &base);
            }
        }
        return;
    }
    for (slice, ep) in published_endpoints(svc, slices) {
        let (Some(first), Some(cluster)) = (ep.addresses.first(), &slice.source_cluster) else {
            continue;
        };
        let label = ep.hostname.clone().unwrap_or_else(|| dashed(first));
        let Some(host) = zone.name(&[&label, cluster], &base) else {
            continue;
        };
        for ip in &ep.addresses {
            s.add_address(&base, *ip);
            s.add_address(&host, *ip);
        }
        for port in &slice.ports {
            if let Some(owner) = zone.srv_owner(&port.name, port.protocol.lowercase(), &base) {
                s.add_srv(&owner, port.port, &host);
            }
        }
    }
}

/// A pod that still runs (finished pods have no records and no pod name).
pub(crate) fn is_live(pod: &PodInfo) -> bool {
    !matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed"))
}

/// `hostname.subdomain.ns.svc.zone` for a pod whose subdomain names a headless Service in its
/// namespace (`headless`, with its slices), with the pod's addresses that the Service publishes
/// (one of its published endpoints has the address).
pub(crate) fn pod_sets(
    zone: &ZoneNames,
    pod: &PodInfo,
    headless: Option<(&Service, &[&EndpointSlice])>,
) -> OwnerSets {
    let mut s = Sets {
        sets: OwnerSets::new(),
    };
    let (Some(host), Some(sub), Some((svc, slices))) =
        (pod.hostname.as_deref(), pod.subdomain.as_deref(), headless)
    else {
        return s.sets;
    };
    if !is_live(pod) || !is_headless(svc) {
        return s.sets;
    }
    let published: HashSet<IpAddr> = published_endpoints(svc, slices)
        .flat_map(|(_, e)| e.addresses.iter().copied())
        .collect();
    let Some(name) = zone.name(&[host, sub, &pod.namespace], &zone.svc_zone) else {
        return s.sets;
    };
    for ip in pod.pod_ips.iter().filter(|ip| published.contains(ip)) {
        s.add_address(&name, *ip);
    }
    s.sets
}
