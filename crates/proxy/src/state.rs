//! The proxy's state: cluster objects in, one nftables table out, updated per object.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use sarasa_model::{EndpointSlice, NodeInfo, Service, ServiceRef};
use sarasa_nft::{diff, Key, Table, Transaction};

use crate::base::{base_table, global_sets};
use crate::config::ProxyConfig;
use crate::service::{compile_service, Fragment, HealthCheck, UdpDest};
use crate::ProxyError;

/// UDP conntrack entries the agent should delete after applying a change: replies would
/// otherwise keep flowing to (or from) a backend that is gone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StaleUdp {
    /// Where the client sent its packets.
    pub dest: UdpDest,
    /// `Some(ip)`: entries DNATed to this removed endpoint. `None`: every entry to `dest`
    /// (the Service had no endpoints before, so its entries were never DNATed).
    pub endpoint: Option<IpAddr>,
}

/// What one change does: the transaction to apply and the conntrack cleanup that follows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub transaction: Transaction,
    pub stale_udp: Vec<StaleUdp>,
}

impl Update {
    /// Appends a later update (both run as one transaction).
    pub fn append(&mut self, other: Update) {
        self.transaction.append(other.transaction);
        self.stale_udp.extend(other.stale_udp);
    }
}

/// Services, EndpointSlices and the node, compiled into the `inet <table>` ruleset.
///
/// Each `upsert_*`/`delete_*` recompiles only the Service concerned and returns the minimal
/// transaction from the previous ruleset to the new one; [`ProxyState::table`] is always the
/// whole desired ruleset (for the first program and the diff against the kernel at start).
#[derive(Debug, Clone)]
pub struct ProxyState {
    config: ProxyConfig,
    node: NodeInfo,
    services: HashMap<ServiceRef, Service>,
    /// EndpointSlices per Service, by slice name.
    slices: HashMap<ServiceRef, BTreeMap<String, EndpointSlice>>,
    /// Slice (namespace, name) → the Service it was filed under.
    slice_owner: HashMap<(String, String), ServiceRef>,
    fragments: HashMap<ServiceRef, FragIndex>,
    /// Global sets' declarations without per-Service elements (for per-change diffs).
    skeleton: Table,
    table: Table,
}

impl ProxyState {
    /// An empty proxy (fixed chains and maps only).
    pub fn new(config: ProxyConfig, node: NodeInfo) -> Result<ProxyState, ProxyError> {
        config.validate()?;
        let table = base_table(&config);
        let mut skeleton = Table::new(table.family, &table.name);
        for mut s in global_sets(&config) {
            s.elements.clear();
            skeleton.add_set(s);
        }
        Ok(ProxyState {
            config,
            node,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            fragments: HashMap::new(),
            skeleton,
            table,
        })
    }

    /// The whole desired ruleset.
    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Health-check NodePorts the agent must serve (`externalTrafficPolicy: Local`).
    pub fn health_checks(&self) -> Vec<HealthCheck> {
        let mut v: Vec<HealthCheck> = self
            .fragments
            .values()
            .filter_map(|f| f.health_check.clone())
            .collect();
        v.sort_by(|a, b| a.service.cmp(&b.service));
        v
    }

    /// Number of Services known (proxied or not).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, svc: Service) -> Update {
        let key = svc.key();
        self.services.insert(key.clone(), svc);
        self.recompile(&key)
    }

    /// Removes a Service (its slices stay filed until they are deleted too).
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> Update {
        let key = ServiceRef::new(namespace, name);
        self.services.remove(&key);
        self.recompile(&key)
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_endpoint_slice(&mut self, slice: EndpointSlice) -> Update {
        let id = (slice.namespace.clone(), slice.name.clone());
        let owner = slice.service();
        let mut update = Update::default();
        // The service-name label may have changed: unfile from the old owner first.
        if let Some(old_owner) = self.slice_owner.get(&id).cloned() {
            if old_owner != owner {
                if let Some(m) = self.slices.get_mut(&old_owner) {
                    m.remove(&slice.name);
                }
                update.append(self.recompile(&old_owner));
            }
        }
        self.slice_owner.insert(id, owner.clone());
        self.slices
            .entry(owner.clone())
            .or_default()
            .insert(slice.name.clone(), slice);
        update.append(self.recompile(&owner));
        update
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) -> Update {
        let Some(owner) = self
            .slice_owner
            .remove(&(namespace.to_string(), name.to_string()))
        else {
            return Update::default();
        };
        if let Some(m) = self.slices.get_mut(&owner) {
            m.remove(name);
            if m.is_empty() {
                self.slices.remove(&owner);
            }
        }
        self.recompile(&owner)
    }

    fn recompile(&mut self, key: &ServiceRef) -> Update {
        let new = match self.services.get(key) {
            Some(svc) => {
                let slices = self.slices.get(key);
                compile_service(
                    svc,
                    slices.into_iter().flat_map(|m| m.values()),
                    &self.node,
                    &self.config,
                )
            }
            None => Fragment::default(),
        };
        let old = self.fragments.remove(key).unwrap_or_default();
        let old_mini = self.mini_from_table(&old);
        let new_index = FragIndex::of(&new);
        let mut new_mini = self.skeleton.clone();
        add_fragment(&mut new_mini, new);
        let transaction = diff(&old_mini, &new_mini);
        let stale_udp = stale_udp(&old.udp, &new_index.udp);
        remove_fragment(&mut self.table, &old);
        // Move the new objects over from the mini table (no second copy).
        for name in &new_index.chains {
            if let Some(c) = new_mini.chains.remove(name) {
                self.table.add_chain(c);
            }
        }
        for name in &new_index.sets {
            if let Some(s) = new_mini.sets.remove(name) {
                self.table.add_set(s);
            }
        }
        for (set, key) in &new_index.elements {
            let elem = new_mini
                .sets
                .get_mut(*set)
                .and_then(|s| s.elements.remove(key));
            if let (Some(elem), Some(s)) = (elem, self.table.sets.get_mut(*set)) {
                s.elements.insert(key.clone(), elem);
            }
        }
        if !new_index.is_empty() {
            self.fragments.insert(key.clone(), new_index);
        }
        Update {
            transaction,
            stale_udp,
        }
    }

    /// A table holding only the objects of `idx`, as the full table has them now.
    fn mini_from_table(&self, idx: &FragIndex) -> Table {
        let mut t = self.skeleton.clone();
        for name in &idx.chains {
            if let Some(c) = self.table.chains.get(name) {
                t.add_chain(c.clone());
            }
        }
        for name in &idx.sets {
            if let Some(s) = self.table.sets.get(name) {
                t.add_set(s.clone());
            }
        }
        for (set, key) in &idx.elements {
            let elem = self.table.sets.get(*set).and_then(|s| s.elements.get(key));
            if let (Some(elem), Some(s)) = (elem, t.sets.get_mut(*set)) {
                s.elements.insert(key.clone(), elem.clone());
            }
        }
        t
    }
}

/// What one Service put into the table, by name (the objects live in the table only).
#[derive(Debug, Clone, Default)]
struct FragIndex {
    chains: Vec<String>,
    sets: Vec<String>,
    elements: Vec<(&'static str, Key)>,
    health_check: Option<HealthCheck>,
    udp: BTreeMap<UdpDest, BTreeSet<IpAddr>>,
}

impl FragIndex {
    fn of(f: &Fragment) -> FragIndex {
        FragIndex {
            chains: f.chains.iter().map(|c| c.name.clone()).collect(),
            sets: f.sets.iter().map(|s| s.name.clone()).collect(),
            elements: f.elements.iter().map(|(s, k, _)| (*s, k.clone())).collect(),
            health_check: f.health_check.clone(),
            udp: f.udp.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        self.chains.is_empty()
            && self.sets.is_empty()
            && self.elements.is_empty()
            && self.health_check.is_none()
    }
}

fn add_fragment(t: &mut Table, frag: Fragment) {
    for c in frag.chains {
        t.add_chain(c);
    }
    for s in frag.sets {
        t.add_set(s);
    }
    for (set, key, elem) in frag.elements {
        if let Some(s) = t.sets.get_mut(set) {
            s.elements.insert(key, elem);
        }
    }
}

fn remove_fragment(t: &mut Table, idx: &FragIndex) {
    for c in &idx.chains {
        t.chains.remove(c);
    }
    for s in &idx.sets {
        t.sets.remove(s);
    }
    for (set, key) in &idx.elements {
        if let Some(s) = t.sets.get_mut(*set) {
            s.elements.remove(key);
        }
    }
}

fn stale_udp(
    old: &BTreeMap<UdpDest, BTreeSet<IpAddr>>,
    new: &BTreeMap<UdpDest, BTreeSet<IpAddr>>,
) -> Vec<StaleUdp> {
    let mut out = BTreeSet::new();
    for (dest, old_eps) in old {
        let new_eps = new.get(dest);
        for ep in old_eps {
            if !new_eps.is_some_and(|n| n.contains(ep)) {
                out.insert(StaleUdp {
                    dest: *dest,
                    endpoint: Some(*ep),
                });
            }
        }
    }
    for (dest, new_eps) in new {
        let had = old.get(dest).is_some_and(|o| !o.is_empty());
        if !had && !new_eps.is_empty() {
            out.insert(StaleUdp {
                dest: *dest,
                endpoint: None,
            });
        }
    }
    out.into_iter().collect()
}

/// Compiles everything at once: the state whose [`ProxyState::table`] is the ruleset.
pub fn compile<'a>(
    config: ProxyConfig,
    node: NodeInfo,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Result<ProxyState, ProxyError> {
    let mut st = ProxyState::new(config, node)?;
    for s in slices {
        st.slice_owner
            .insert((s.namespace.clone(), s.name.clone()), s.service());
        st.slices
            .entry(s.service())
            .or_default()
            .insert(s.name.clone(), s.clone());
    }
    for svc in services {
        st.services.insert(svc.key(), svc.clone());
    }
    // Sorted, so that a key two Services claim resolves the same way every time.
    let mut keys: Vec<ServiceRef> = st.services.keys().cloned().collect();
    keys.sort();
    for key in keys {
        let svc = &st.services[&key];
        let frag = compile_service(
            svc,
            st.slices.get(&key).into_iter().flat_map(|m| m.values()),
            &st.node,
            &st.config,
        );
        let idx = FragIndex::of(&frag);
        add_fragment(&mut st.table, frag);
        if !idx.is_empty() {
            st.fragments.insert(key, idx);
        }
    }
    Ok(st)
}
