//! The proxy's state: cluster objects in, the main and shard nftables tables out, updated
//! per object.
//!
//! Only the objects are kept, shared with the caller (`Arc<Service>`, `Arc<EndpointSlice>`); a
//! Service's chains and elements are recompiled from them when needed (microseconds), so
//! memory stays near the size of the objects instead of a full rule tree per Service.

use std::collections::{btree_map, BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use sarasa_model::hash::fnv1a64_parts;
use sarasa_model::{EndpointSlice, NodeInfo, Service, ServiceRef};
use sarasa_nft::{diff, Table, Transaction};

use crate::base::{
    firewall_chains, main_base_table, main_sets, shard_base_table, shard_hooks, shard_sets,
};
use crate::config::ProxyConfig;
use crate::service::{compile_service, Fragment, HealthCheck, Part, UdpDest};
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

impl StaleUdp {
    /// Arguments for `conntrack` (conntrack-tools) deleting these entries, e.g.
    /// `-D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.1.5`.
    /// `conntrack` exits 1 when nothing matched; that is not an error here.
    pub fn conntrack_args(&self) -> Vec<String> {
        let family = |v6: bool| if v6 { "ipv6" } else { "ipv4" };
        let mut args: Vec<String> = vec!["-D".into(), "-f".into()];
        match self.dest {
            UdpDest::Ip { addr, port } => {
                args.push(family(addr.is_ipv6()).into());
                args.extend([
                    "-p".into(),
                    "udp".into(),
                    "--orig-dst".into(),
                    addr.to_string(),
                ]);
                args.extend(["--orig-port-dst".into(), port.to_string()]);
            }
            UdpDest::NodePort { port, family: f } => {
                args.push(family(f == sarasa_model::IpFamily::V6).into());
                args.extend([
                    "-p".into(),
                    "udp".into(),
                    "--orig-port-dst".into(),
                    port.to_string(),
                ]);
            }
        }
        if let Some(ep) = self.endpoint {
            args.extend(["--reply-src".into(), ep.to_string()]);
        }
        args
    }
}

/// What one change does: per table, the transaction to apply, and the conntrack cleanup that
/// follows. Apply all transactions as one atomic batch (they never refer across tables, so
/// their order does not matter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Table name → that table's part of the change; only tables the change touches.
    pub transactions: BTreeMap<String, Transaction>,
    pub stale_udp: Vec<StaleUdp>,
    /// A health-check node port appeared, went, or changed its local endpoint count: the
    /// agent refreshes what it serves ([`ProxyState::health_checks`]).
    pub health_checks_changed: bool,
}

impl Update {
    /// True when there is nothing to apply and nothing to clean up.
    pub fn is_empty(&self) -> bool {
        self.transactions.values().all(Transaction::is_empty) && self.stale_udp.is_empty()
    }

    /// Commands over all tables.
    pub fn ops(&self) -> usize {
        self.transactions.values().map(|t| t.commands.len()).sum()
    }

    /// Chains written, as `table/chain`.
    pub fn chains_written(&self) -> Vec<String> {
        self.transactions
            .iter()
            .flat_map(|(table, tx)| {
                tx.chains_written
                    .iter()
                    .map(move |c| format!("{table}/{c}"))
            })
            .collect()
    }

    /// Appends a later update (all run as one batch).
    pub fn append(&mut self, other: Update) {
        for (table, tx) in other.transactions {
            self.add(table, tx);
        }
        self.stale_udp.extend(other.stale_udp);
        self.health_checks_changed |= other.health_checks_changed;
    }

    fn add(&mut self, table: String, tx: Transaction) {
        if tx.is_empty() {
            return;
        }
        match self.transactions.entry(table) {
            btree_map::Entry::Occupied(mut e) => e.get_mut().append(tx),
            btree_map::Entry::Vacant(e) => {
                e.insert(tx);
            }
        }
    }
}

/// One Service key's objects (either may be missing while the other is known).
#[derive(Debug, Clone, Default)]
struct Entry {
    service: Option<Arc<Service>>,
    /// Sorted by name. (A Vec: most Services have one slice, and a map node per Service would
    /// cost kilobytes at 100k Services.)
    slices: Vec<Arc<EndpointSlice>>,
}

impl Entry {
    /// May the Service put anything in its shard's dispatch? Only a proxied Service with an
    /// EndpointSlice does (without endpoints its traffic is rejected from the main table).
    /// Cheap, so kept as a count per shard; `change` checks it never misses a dispatch.
    fn dispatches(&self) -> bool {
        self.service.as_ref().is_some_and(|s| s.is_proxied()) && !self.slices.is_empty()
    }

    /// May the Service have a firewall (`firewall-ips` elements)? Those of a proxied Service
    /// with loadBalancerSourceRanges (and LoadBalancer IPs).
    fn firewalls(&self) -> bool {
        self.service
            .as_ref()
            .is_some_and(|s| s.is_proxied() && !s.load_balancer_source_ranges.is_empty())
    }
}

/// Services, EndpointSlices and the node, compiled into the main table `inet <table>` and the
/// shard tables `inet <table>-svcNN` (see the crate docs for what goes where).
///
/// Each `upsert_*`/`delete_*` recompiles only the Service concerned and returns the minimal
/// transactions from the previous rulesets to the new ones; [`ProxyState::main_table`] and
/// [`ProxyState::shard_table`] build whole desired tables (for the first program and the diff
/// against the kernel at start).
#[derive(Debug, Clone)]
pub struct ProxyState {
    config: ProxyConfig,
    node: NodeInfo,
    /// Per shard, its Service keys' objects, sorted by key: building a shard visits only its
    /// own Services, and a key two Services claim resolves the same way every time.
    /// `config.shards` long, so `shards[shard_of(..)]` is always in range.
    shards: Vec<BTreeMap<Arc<ServiceRef>, Entry>>,
    /// `namespace/name` of an EndpointSlice → the Service it was filed under (the key shared
    /// with `shards`).
    slice_owner: HashMap<Box<str>, Arc<ServiceRef>>,
    /// Services with a health-check node port (few), so listing them scans no others.
    health_keys: BTreeSet<Arc<ServiceRef>>,
    service_count: usize,
    /// Per shard, how many of its Services may dispatch ([`Entry::dispatches`]): a shard with
    /// none has no base chains ([`shard_base_table`]).
    dispatching: Vec<usize>,
    /// How many Services may have a firewall ([`Entry::firewalls`]): with none, the main
    /// table has no `filter-prerouting` ([`firewall_chains`]).
    firewalled: usize,
    /// Global sets' declarations without per-Service elements (for per-change diffs).
    main_skeleton: Table,
    /// The same for a shard table (renamed per shard when used).
    shard_skeleton: Table,
}

fn slice_id(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

impl ProxyState {
    /// An empty proxy (fixed chains and maps only).
    pub fn new(config: ProxyConfig, node: NodeInfo) -> Result<ProxyState, ProxyError> {
        config.validate()?;
        let skeleton = |name: String, sets: Vec<sarasa_nft::Set>| {
            let mut t = Table::new(sarasa_nft::Family::Inet, name);
            for mut s in sets {
                s.elements.clear();
                t.add_set(s);
            }
            t
        };
        Ok(ProxyState {
            main_skeleton: skeleton(config.table.clone(), main_sets(&config)),
            shard_skeleton: skeleton(config.shard_table(0), shard_sets(&config)),
            shards: vec![BTreeMap::new(); config.shards],
            dispatching: vec![0; config.shards],
            firewalled: 0,
            slice_owner: HashMap::new(),
            health_keys: BTreeSet::new(),
            service_count: 0,
            config,
            node,
        })
    }

    /// The shard whose table holds `key`'s DNAT path (its EndpointSlices follow it):
    /// FNV-1a 64 of `namespace/name` modulo the shard count, the same in every process.
    pub fn shard_of(&self, key: &ServiceRef) -> usize {
        let h = fnv1a64_parts([key.namespace.as_bytes(), b"/", key.name.as_bytes()]);
        // The remainder is below `shards` (at most 64), so it fits any usize.
        (h % self.config.shards as u64) as usize
    }

    /// The whole desired main table, built from all Services (O(Services); use it at start
    /// and in tests, not per change).
    pub fn main_table(&self) -> Table {
        let mut t = main_base_table(&self.config, self.firewalled > 0);
        // Sorted over all shards, so that a key two Services claim resolves the same way
        // every time.
        let mut entries: Vec<(&Arc<ServiceRef>, &Entry)> =
            self.shards.iter().flat_map(|s| s.iter()).collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, entry) in entries {
            if let Some(frag) = self.compile(key, entry) {
                add_part(&mut t, frag.main);
            }
        }
        t
    }

    /// The whole desired shard table `i` (empty of Services when `i` is out of range), built
    /// from that shard's Services only.
    pub fn shard_table(&self, i: usize) -> Table {
        let mut t = shard_base_table(&self.config, i, self.is_hooked(i));
        for (key, entry) in self.shards.get(i).into_iter().flatten() {
            if let Some(frag) = self.compile(key, entry) {
                add_part(&mut t, frag.shard);
            }
        }
        t
    }

    /// All tables: the main table, then the shards in order (names as
    /// [`ProxyConfig::table_names`]).
    pub fn tables(&self) -> Vec<Table> {
        std::iter::once(self.main_table())
            .chain((0..self.config.shards).map(|i| self.shard_table(i)))
            .collect()
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
            .health_keys
            .iter()
            .filter_map(|k| {
                let e = self.shards[self.shard_of(k)].get(k)?;
                self.compile(k, e)?.health_check
            })
            .collect();
        v.sort_by(|a, b| a.service.cmp(&b.service));
        v
    }

    /// Number of Services known (proxied or not).
    pub fn service_count(&self) -> usize {
        self.service_count
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, svc: impl Into<Arc<Service>>) -> Update {
        let svc = svc.into();
        let key = svc.key();
        self.change(vec![key.clone()], |st| st.set_service(svc))
    }

    /// Removes a Service (its slices stay filed until they are deleted too).
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> Update {
        let key = ServiceRef::new(namespace, name);
        self.change(vec![key.clone()], |st| {
            let i = st.shard_of(&key);
            if let Some(e) = st.shards[i].get_mut(&key) {
                if e.service.take().is_some() {
                    st.service_count -= 1;
                }
                st.health_keys.remove(&key);
                if e.slices.is_empty() {
                    st.shards[i].remove(&key);
                }
            }
        })
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_endpoint_slice(&mut self, slice: impl Into<Arc<EndpointSlice>>) -> Update {
        let slice = slice.into();
        let id = slice_id(&slice.namespace, &slice.name);
        let owner = slice.service();
        // The service-name label may have changed: the old owner changes too.
        let mut affected = vec![owner.clone()];
        let old_owner = self.slice_owner.get(&id).cloned();
        if let Some(o) = &old_owner {
            if **o != owner {
                affected.push(ServiceRef::clone(o));
            }
        }
        self.change(affected, |st| {
            if let Some(o) = old_owner {
                st.unfile(&o, &slice.name);
            }
            let key = st.file(&owner, slice);
            st.slice_owner.insert(id, key);
        })
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) -> Update {
        let id = slice_id(namespace, name);
        let Some(owner) = self.slice_owner.get(&id).cloned() else {
            return Update::default();
        };
        self.change(vec![ServiceRef::clone(&owner)], |st| {
            st.slice_owner.remove(&id);
            st.unfile(&owner, name);
        })
    }

    /// Files a Service (new or replacing its previous version).
    fn set_service(&mut self, svc: Arc<Service>) {
        let has_health_check = svc.health_check_node_port.is_some();
        let (key, entry) = self.entry_mut(&svc.key());
        if entry.service.replace(svc).is_none() {
            self.service_count += 1;
        }
        if has_health_check {
            self.health_keys.insert(key);
        } else {
            self.health_keys.remove(&key);
        }
    }

    /// The entry of `key`, created if missing; with the key stored in the map.
    fn entry_mut(&mut self, key: &ServiceRef) -> (Arc<ServiceRef>, &mut Entry) {
        let i = self.shard_of(key);
        match self.shards[i].entry(Arc::new(key.clone())) {
            btree_map::Entry::Occupied(e) => (e.key().clone(), e.into_mut()),
            btree_map::Entry::Vacant(e) => (e.key().clone(), e.insert(Entry::default())),
        }
    }

    /// Files `slice` under `owner`; returns the stored key.
    fn file(&mut self, owner: &ServiceRef, slice: Arc<EndpointSlice>) -> Arc<ServiceRef> {
        let (key, entry) = self.entry_mut(owner);
        let v = &mut entry.slices;
        match v.binary_search_by(|s| s.name.cmp(&slice.name)) {
            Ok(i) => v[i] = slice,
            Err(i) => v.insert(i, slice),
        }
        key
    }

    fn unfile(&mut self, owner: &ServiceRef, slice: &str) {
        let i = self.shard_of(owner);
        if let Some(e) = self.shards[i].get_mut(owner) {
            e.slices.retain(|s| s.name != slice);
            if e.slices.is_empty() && e.service.is_none() {
                self.shards[i].remove(owner);
            }
        }
    }

    /// The objects one Service contributes (None without a Service object).
    fn compile(&self, key: &ServiceRef, entry: &Entry) -> Option<Fragment> {
        let svc = entry.service.as_ref()?;
        Some(compile_service(
            svc,
            entry.slices.iter().map(|s| &**s),
            key,
            &self.node,
            &self.config,
        ))
    }

    /// The objects one Service contributes, compiled from the current state.
    fn fragment(&self, key: &ServiceRef) -> Fragment {
        self.shards[self.shard_of(key)]
            .get(key)
            .and_then(|e| self.compile(key, e))
            .unwrap_or_default()
    }

    /// Does shard `i` have its base chains ([`shard_base_table`]): may one of its Services
    /// dispatch?
    fn is_hooked(&self, i: usize) -> bool {
        self.dispatching.get(i).is_some_and(|n| *n > 0)
    }

    fn entry(&self, key: &ServiceRef) -> Option<&Entry> {
        self.shards[self.shard_of(key)].get(key)
    }

    fn dispatches(&self, key: &ServiceRef) -> bool {
        self.entry(key).is_some_and(Entry::dispatches)
    }

    fn firewalls(&self, key: &ServiceRef) -> bool {
        self.entry(key).is_some_and(Entry::firewalls)
    }

    /// Counts every shard's dispatching Services and the firewalled ones again (after a bulk
    /// [`Self::load`]).
    fn recount(&mut self) {
        for (n, shard) in self.dispatching.iter_mut().zip(&self.shards) {
            *n = shard.values().filter(|e| e.dispatches()).count();
        }
        self.firewalled = self
            .shards
            .iter()
            .flat_map(|s| s.values())
            .filter(|e| e.firewalls())
            .count();
    }

    /// Runs `mutate` and returns the transactions for the Services in `affected`.
    fn change(&mut self, affected: Vec<ServiceRef>, mutate: impl FnOnce(&mut Self)) -> Update {
        let old: Vec<Fragment> = affected.iter().map(|k| self.fragment(k)).collect();
        let was: Vec<(bool, bool)> = affected
            .iter()
            .map(|k| (self.dispatches(k), self.firewalls(k)))
            .collect();
        let shards: BTreeSet<usize> = affected.iter().map(|k| self.shard_of(k)).collect();
        let hooked: BTreeMap<usize, bool> =
            shards.iter().map(|&i| (i, self.is_hooked(i))).collect();
        let firewall_was = self.firewalled > 0;
        mutate(self);
        for (key, (dispatched, firewalled)) in affected.iter().zip(was) {
            let i = self.shard_of(key);
            let now = self.dispatches(key);
            self.dispatching[i] = self.dispatching[i] + usize::from(now) - usize::from(dispatched);
            self.firewalled =
                self.firewalled + usize::from(self.firewalls(key)) - usize::from(firewalled);
        }
        // The main table's firewall chains come and go with the first and last Service that
        // may have a firewall, in the transaction of that Service's main-table objects.
        let firewall_now = self.firewalled > 0;
        let mut firewall = (firewall_was != firewall_now).then_some((firewall_was, firewall_now));
        // A shard whose first Service may dispatch gains its base chains; one whose last goes
        // loses them, in the same transaction as that Service's own objects.
        let mut hooks: BTreeMap<usize, (bool, bool)> = hooked
            .into_iter()
            .map(|(i, was)| (i, (was, self.is_hooked(i))))
            .filter(|(_, (was, now))| was != now)
            .collect();
        let mut update = Update::default();
        for (key, old) in affected.iter().zip(old) {
            let new = self.fragment(key);
            let i = self.shard_of(key);
            let hooks = hooks.remove(&i);
            debug_assert!(
                new.shard.is_empty() || self.is_hooked(i),
                "{key:?} dispatches from shard {i}, which has no base chains"
            );
            debug_assert!(
                firewall_now
                    || !new
                        .main
                        .elements
                        .iter()
                        .any(|(set, ..)| set.starts_with("firewall-ips")),
                "{key:?} has a firewall, and the main table no filter-prerouting"
            );
            let firewall = firewall.take();
            if new == old && hooks.is_none() && firewall.is_none() {
                continue;
            }
            update.stale_udp.extend(stale_udp(&old.udp, &new.udp));
            update.health_checks_changed |= old.health_check != new.health_check;
            if old.main != new.main || firewall.is_some() {
                let skeleton = |fw: Option<bool>| {
                    let mut t = self.main_skeleton.clone();
                    for c in fw.map(firewall_chains).into_iter().flatten() {
                        t.add_chain(c);
                    }
                    t
                };
                let (was, now) = firewall.map_or((None, None), |(w, n)| (Some(w), Some(n)));
                let tx = part_diff(&skeleton(was), old.main, &skeleton(now), new.main);
                update.add(self.config.table.clone(), tx);
            }
            if old.shard != new.shard || hooks.is_some() {
                // Without a transition the base chains are the same on both sides: leave
                // them out of the diff (this is the per-change path).
                let (was, now) = hooks.unwrap_or((false, false));
                let skeleton = |hooked: bool| {
                    let mut t = self.shard_skeleton.clone();
                    t.name = self.config.shard_table(i);
                    if hooked {
                        for c in shard_hooks() {
                            t.add_chain(c);
                        }
                    }
                    t
                };
                let tx = part_diff(&skeleton(was), old.shard, &skeleton(now), new.shard);
                update.add(self.config.shard_table(i), tx);
            }
        }
        update
    }
}

/// The transaction from `old` on top of `before` to `new` on top of `after`.
fn part_diff(before: &Table, old: Part, after: &Table, new: Part) -> Transaction {
    let mut old_mini = before.clone();
    add_part(&mut old_mini, old);
    let mut new_mini = after.clone();
    add_part(&mut new_mini, new);
    diff(&old_mini, &new_mini)
}

fn add_part(t: &mut Table, part: Part) {
    for c in part.chains {
        t.add_chain(c);
    }
    for s in part.sets {
        t.add_set(s);
    }
    for (set, key, elem) in part.elements {
        if let Some(s) = t.sets.get_mut(set) {
            s.elements.insert(key, elem);
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

/// Files all objects at once (cloning them into `Arc`s); [`ProxyState::tables`] then gives
/// the rulesets.
pub fn compile<'a>(
    config: ProxyConfig,
    node: NodeInfo,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Result<ProxyState, ProxyError> {
    let mut st = ProxyState::new(config, node)?;
    st.load(
        services.into_iter().map(|s| Arc::new(s.clone())),
        slices.into_iter().map(|s| Arc::new(s.clone())),
    );
    Ok(st)
}

impl ProxyState {
    /// Files many objects at once without computing transactions (a first build: the tables
    /// are then built whole and diffed against the kernel). Same result as upserting each.
    pub fn load(
        &mut self,
        services: impl IntoIterator<Item = Arc<Service>>,
        slices: impl IntoIterator<Item = Arc<EndpointSlice>>,
    ) {
        for s in slices {
            let id = slice_id(&s.namespace, &s.name);
            if let Some(old) = self.slice_owner.get(&id).cloned() {
                self.unfile(&old, &s.name);
            }
            let key = self.file(&s.service(), s);
            self.slice_owner.insert(id, key);
        }
        for svc in services {
            self.set_service(svc);
        }
        self.recount();
    }
}
