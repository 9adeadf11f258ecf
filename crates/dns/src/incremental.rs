//! The zone kept up to date change by change. [`ZoneState`] holds the cluster objects DNS
//! reads, the record sets of every owner (fixed names, each Service, each Pod) and, per name,
//! which owners hold records there and how many owned names sit at or below it. A change
//! recomputes the sets of the owners it touches (a Service with its slices and the pods named
//! under it; a Pod), re-merges only the names those sets cover (and their ancestors' existence),
//! and writes them into the persistent [`Names`] map, so the next snapshot shares every other
//! entry and shard with the previous one. [`crate::snapshot::build`] is this same path applied
//! to every object at once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::Name;
use sarasa_cluster::PodInfo;
use sarasa_model::{EndpointSlice, Service};

use crate::config::ZoneConfig;
use crate::names::Names;
use crate::records::{self, OwnerSets, ZoneNames};
use crate::snapshot::{soa_record, soa_record_of, EntrySets, NameEntry, ZoneSnapshot};

/// Who contributes records: merged in this order (fixed names, Services by `ns/name`, Pods
/// by `ns/name`), so a name's records come out the same however the changes arrived.
/// One pointer (`Arc`, compared by value), held by every name the owner has records at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum OwnerKey {
    Fixed,
    Service(Box<str>),
    Pod(Box<str>),
}

type Owner = Arc<OwnerKey>;

/// The owners with records at a name, sorted, with their records: almost always one, kept
/// inline (a vector per name cost 48 bytes more per name at 10k Services).
#[derive(Debug, Default)]
enum Holders {
    #[default]
    None,
    One(Owner, NameEntry),
    Many(Vec<(Owner, NameEntry)>),
}

impl Holders {
    fn remove(&mut self, owner: &Owner) {
        match self {
            Holders::One(o, _) if o == owner => *self = Holders::None,
            Holders::Many(v) => {
                v.retain(|(o, _)| o != owner);
                if v.len() <= 1 {
                    *self = match v.pop() {
                        Some((o, e)) => Holders::One(o, e),
                        None => Holders::None,
                    };
                }
            }
            _ => {}
        }
    }

    /// Adds `owner`'s records, in owner order.
    fn insert(&mut self, owner: Owner, entry: NameEntry) {
        *self = match std::mem::take(self) {
            Holders::None => Holders::One(owner, entry),
            Holders::One(o, e) => {
                let mut v = vec![(o, e)];
                let at = v.partition_point(|(o, _)| *o < owner);
                v.insert(at, (owner, entry));
                Holders::Many(v)
            }
            Holders::Many(mut v) => {
                let at = v.partition_point(|(o, _)| *o < owner);
                v.insert(at, (owner, entry));
                Holders::Many(v)
            }
        };
    }

    /// The records of the name from all its holders, in owner order, each record once.
    fn merged(&self) -> NameEntry {
        match self {
            Holders::None => NameEntry::default(),
            Holders::One(_, only) => only.clone(),
            Holders::Many(many) => {
                let mut sets = EntrySets::default();
                for (_, e) in many {
                    sets.absorb(e);
                }
                sets.freeze()
            }
        }
    }
}

/// What the zone knows of one name.
#[derive(Debug, Default)]
struct NameRefs {
    /// Owned names at or below this one (the name exists while this is non-zero).
    refs: u32,
    /// The owners with records here.
    holders: Holders,
}

/// The zone's inputs, owner sets and served names, updated in place per change.
#[derive(Debug)]
pub struct ZoneState {
    zone: ZoneNames,
    services: BTreeMap<String, Arc<Service>>,
    slices: BTreeMap<String, Arc<EndpointSlice>>,
    /// Service key → the keys of its EndpointSlices.
    slices_of: HashMap<String, Keys>,
    pods: BTreeMap<String, Arc<PodInfo>>,
    /// `ns/subdomain` → pods with that subdomain (their records follow that Service).
    pods_under: HashMap<String, Keys>,
    /// Owner → the names it holds records at.
    owned: HashMap<Owner, Vec<Arc<Name>>>,
    refs: HashMap<Arc<Name>, NameRefs>,
    names: Names,
    record_count: usize,
    /// `(namespace, address)` of live pods, counted (two pods may share an address).
    pod_addresses: HashMap<(String, IpAddr), u32>,
    pod_addresses_view: Arc<HashSet<(String, IpAddr)>>,
    pod_namespaces_view: Arc<HashSet<String>>,
    pods_changed: bool,
    dirty_services: BTreeSet<String>,
    dirty_pods: BTreeSet<String>,
    /// The names the last [`ZoneState::snapshot`] wrote (changed, added or removed).
    changed: Vec<Arc<Name>>,
}

/// A small sorted set of object keys: a Service has one EndpointSlice or a few, so a vector
/// (one allocation of a few pointers) rather than a B-tree node of eleven slots per Service.
#[derive(Debug, Default)]
struct Keys(Vec<String>);

impl Keys {
    fn insert(&mut self, key: &str) {
        if let Err(at) = self.0.binary_search_by(|k| k.as_str().cmp(key)) {
            self.0.insert(at, key.to_string());
            self.0.shrink_to_fit();
        }
    }

    fn remove(&mut self, key: &str) {
        if let Ok(at) = self.0.binary_search_by(|k| k.as_str().cmp(key)) {
            self.0.remove(at);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'k> IntoIterator for &'k Keys {
    type Item = &'k String;
    type IntoIter = std::slice::Iter<'k, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

fn service_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn pod_subdomain_key(pod: &PodInfo) -> Option<String> {
    pod.subdomain
        .as_deref()
        .map(|sub| service_key(&pod.namespace, sub))
}

impl ZoneState {
    pub fn new(config: &ZoneConfig) -> Self {
        ZoneState {
            zone: ZoneNames::new(config),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_of: HashMap::new(),
            pods: BTreeMap::new(),
            pods_under: HashMap::new(),
            owned: HashMap::new(),
            refs: HashMap::new(),
            names: Names::default(),
            record_count: 0,
            pod_addresses: HashMap::new(),
            pod_addresses_view: Arc::default(),
            pod_namespaces_view: Arc::default(),
            pods_changed: false,
            dirty_services: BTreeSet::new(),
            dirty_pods: BTreeSet::new(),
            changed: Vec::new(),
        }
    }

    /// The Services held, by `namespace/name`.
    pub fn services(&self) -> &BTreeMap<String, Arc<Service>> {
        &self.services
    }

    /// The EndpointSlices held, by `namespace/name`.
    pub fn slices(&self) -> &BTreeMap<String, Arc<EndpointSlice>> {
        &self.slices
    }

    /// The pods held, by `namespace/name`.
    pub fn pods(&self) -> &BTreeMap<String, Arc<PodInfo>> {
        &self.pods
    }

    /// Sets (or with `None` removes) the Service at `key`, which must be `namespace/name` (the
    /// key its EndpointSlices and pods refer to it by).
    pub fn set_service(&mut self, key: &str, svc: Option<Arc<Service>>) {
        self.services.remove(key);
        if let Some(svc) = svc {
            self.services.insert(key.to_string(), svc);
        }
        self.dirty_services.insert(key.to_string());
    }

    /// Sets (or removes) the EndpointSlice at `key` (`namespace/name`).
    pub fn set_slice(&mut self, key: &str, slice: Option<Arc<EndpointSlice>>) {
        if let Some(old) = self.slices.remove(key) {
            let owner = service_key(&old.namespace, &old.service_name);
            if let Some(set) = self.slices_of.get_mut(&owner) {
                set.remove(key);
                if set.is_empty() {
                    self.slices_of.remove(&owner);
                }
            }
            self.dirty_services.insert(owner);
        }
        if let Some(slice) = slice {
            let owner = service_key(&slice.namespace, &slice.service_name);
            self.slices_of.entry(owner.clone()).or_default().insert(key);
            self.slices.insert(key.to_string(), slice);
            self.dirty_services.insert(owner);
        }
    }

    /// Sets (or removes) the pod at `key` (`namespace/name`).
    pub fn set_pod(&mut self, key: &str, pod: Option<Arc<PodInfo>>) {
        if let Some(old) = self.pods.remove(key) {
            self.count_pod_addresses(&old, false);
            if let Some(sub) = pod_subdomain_key(&old) {
                if let Some(set) = self.pods_under.get_mut(&sub) {
                    set.remove(key);
                    if set.is_empty() {
                        self.pods_under.remove(&sub);
                    }
                }
            }
        }
        if let Some(pod) = pod {
            self.count_pod_addresses(&pod, true);
            if let Some(sub) = pod_subdomain_key(&pod) {
                self.pods_under.entry(sub).or_default().insert(key);
            }
            self.pods.insert(key.to_string(), pod);
        }
        self.dirty_pods.insert(key.to_string());
    }

    fn count_pod_addresses(&mut self, pod: &PodInfo, add: bool) {
        if !records::is_live(pod) {
            return;
        }
        for ip in &pod.pod_ips {
            let key = (pod.namespace.to_ascii_lowercase(), *ip);
            if add {
                *self.pod_addresses.entry(key).or_default() += 1;
                self.pods_changed = true;
            } else if let Some(n) = self.pod_addresses.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.pod_addresses.remove(&key);
                }
                self.pods_changed = true;
            }
        }
    }

    /// The slices of the Service at `svc_key`, in key order.
    fn slices_for(&self, svc_key: &str) -> Vec<&EndpointSlice> {
        self.slices_of
            .get(svc_key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k).map(|s| &**s))
            .collect()
    }

    /// Recomputes every owner the changes since the last snapshot touched, and the fixed
    /// names with this generation's SOA; returns the new snapshot (sharing what is unchanged).
    pub fn snapshot(&mut self, generation: u64) -> ZoneSnapshot {
        self.changed.clear();
        let fixed = records::fixed_sets(&self.zone, generation);
        self.replace(Arc::new(OwnerKey::Fixed), fixed);

        let services = std::mem::take(&mut self.dirty_services);
        let mut pods = std::mem::take(&mut self.dirty_pods);
        for key in &services {
            let sets = match self.services.get(key) {
                Some(svc) => records::service_sets(&self.zone, svc, &self.slices_for(key)),
                None => OwnerSets::new(),
            };
            self.replace(Arc::new(OwnerKey::Service(key.as_str().into())), sets);
            pods.extend(self.pods_under.get(key).into_iter().flatten().cloned());
        }
        for key in &pods {
            let sets = match self.pods.get(key) {
                Some(pod) => {
                    let sub = pod_subdomain_key(pod);
                    let svc = sub.as_deref().and_then(|k| self.services.get(k));
                    let slices = sub
                        .as_deref()
                        .map(|k| self.slices_for(k))
                        .unwrap_or_default();
                    records::pod_sets(&self.zone, pod, svc.map(|s| (&**s, &slices[..])))
                }
                None => OwnerSets::new(),
            };
            self.replace(Arc::new(OwnerKey::Pod(key.as_str().into())), sets);
        }

        if std::mem::take(&mut self.pods_changed) {
            self.pod_addresses_view = Arc::new(self.pod_addresses.keys().cloned().collect());
            self.pod_namespaces_view = Arc::new(
                self.pod_addresses
                    .keys()
                    .map(|(ns, _)| ns.clone())
                    .collect(),
            );
        }
        let config = &self.zone.config;
        ZoneSnapshot {
            config: config.clone(),
            generation,
            names: self.names.clone(),
            pod_addresses: self.pod_addresses_view.clone(),
            pod_namespaces: self.pod_namespaces_view.clone(),
            soa: soa_record(config, generation),
            clusterset_soa: soa_record_of(&config.clusterset_domain, config, generation),
            pod_zone: self.zone.pod_zone.clone(),
            record_count: self.record_count,
        }
    }

    /// The names at and above `name` that exist because of it: itself, and its ancestors up
    /// to the apex when it is inside the zone or the cluster set's (empty non-terminals).
    fn with_ancestors(&self, name: &Name) -> Vec<Name> {
        let config = &self.zone.config;
        let domain = [&config.domain, &config.clusterset_domain]
            .into_iter()
            .find(|d| d.zone_of(name));
        let mut out = vec![name.clone()];
        if let Some(domain) = domain {
            let mut parent = name.base_name();
            while domain.zone_of(&parent) {
                let next = parent.base_name();
                out.push(parent);
                parent = next;
            }
        }
        out
    }

    /// Swaps `owner`'s record sets for `sets` and re-merges the names either covers.
    fn replace(&mut self, owner: Owner, sets: OwnerSets) {
        let mut touched: Vec<Arc<Name>> = Vec::new();
        for name in self.owned.remove(&owner).unwrap_or_default() {
            for n in self.with_ancestors(&name) {
                let Some(key) = self.refs.get_key_value(&n).map(|(k, _)| k.clone()) else {
                    continue;
                };
                if let Some(r) = self.refs.get_mut(&n) {
                    r.refs = r.refs.saturating_sub(1);
                    if n == *name {
                        r.holders.remove(&owner);
                    }
                }
                touched.push(key);
            }
        }
        let mut owned = Vec::with_capacity(sets.len());
        let mut entries = Vec::with_capacity(sets.len());
        for (name, entry) in sets {
            // One Arc per name across the zone: an existing key is reused.
            let name = match self.refs.get_key_value(&*name) {
                Some((k, _)) => k.clone(),
                None => name,
            };
            for n in self.with_ancestors(&name) {
                let key = match self.refs.get_key_value(&n) {
                    Some((k, _)) => k.clone(),
                    None if n == *name => name.clone(),
                    None => Arc::new(n),
                };
                self.refs.entry(key.clone()).or_default().refs += 1;
                touched.push(key);
            }
            entries.push((name.clone(), entry));
            owned.push(name);
        }
        // Every name of the owner is a key now: its records point at the keys (SRV and PTR
        // targets are names of the same owner), so a name is held once however many records
        // name it.
        for (name, entry) in entries {
            let refs = &self.refs;
            let intern = |t: Arc<Name>| match refs.get_key_value(&*t) {
                Some((k, _)) => k.clone(),
                None => t,
            };
            let frozen = entry.freeze_with(&intern);
            if let Some(r) = self.refs.get_mut(&*name) {
                r.holders.insert(owner.clone(), frozen);
            }
        }
        if !owned.is_empty() {
            owned.shrink_to_fit();
            self.owned.insert(owner, owned);
        }
        touched.sort_unstable();
        touched.dedup();
        for name in touched {
            self.merge(name);
        }
    }

    /// The names the last [`ZoneState::snapshot`] call wrote: what a cache of answers must
    /// drop (every other name's entry is the previous generation's).
    pub fn changed_names(&self) -> &[Arc<Name>] {
        &self.changed
    }

    /// Lets go of the list [`ZoneState::changed_names`] reads, once the cache dropped them
    /// (after the first sync it names every name of the zone).
    pub fn forget_changed_names(&mut self) {
        self.changed = Vec::new();
    }

    /// Writes the merged entry of `name` (or its removal) into the served names.
    fn merge(&mut self, name: Arc<Name>) {
        self.changed.push(name.clone());
        let old = match self.refs.get(&name) {
            Some(r) if r.refs > 0 => {
                let entry = r.holders.merged();
                self.record_count += entry.record_count();
                self.names.insert(name, entry)
            }
            _ => {
                self.refs.remove(&name);
                self.names.remove(&name)
            }
        };
        if let Some(old) = old {
            self.record_count -= old.record_count();
        }
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
