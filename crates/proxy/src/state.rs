//! The proxy's state: cluster objects in, one nftables table out, updated per object.
//!
//! Only the objects are kept (Services, EndpointSlices); a Service's chains and elements are
//! recompiled from them when needed (microseconds), so memory stays near the size of the
//! objects instead of a full rule tree per Service.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use sarasa_model::{EndpointSlice, NodeInfo, Service, ServiceRef};
use sarasa_nft::{diff, Table, Transaction};

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
/// transaction from the previous ruleset to the new one; [`ProxyState::table`] builds the whole
/// desired ruleset (for the first program and the diff against the kernel at start).
#[derive(Debug, Clone)]
pub struct ProxyState {
    config: ProxyConfig,
    node: NodeInfo,
    services: HashMap<ServiceRef, Service>,
    /// EndpointSlices per Service, by slice name.
    /// (A Vec sorted by name: most Services have one slice, and a map node per Service would
    /// cost kilobytes at 100k Services.)
    slices: HashMap<ServiceRef, Vec<EndpointSlice>>,
    /// Slice (namespace, name) → the Service it was filed under.
    slice_owner: HashMap<(String, String), ServiceRef>,
    /// Global sets' declarations without per-Service elements (for per-change diffs).
    skeleton: Table,
}

impl ProxyState {
    /// An empty proxy (fixed chains and maps only).
    pub fn new(config: ProxyConfig, node: NodeInfo) -> Result<ProxyState, ProxyError> {
        config.validate()?;
        let mut skeleton = Table::new(sarasa_nft::Family::Inet, &config.table);
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
            skeleton,
        })
    }

    /// The whole desired ruleset, built from the objects (O(Services); use it at start and in
    /// tests, not per change).
    pub fn table(&self) -> Table {
        let mut t = base_table(&self.config);
        // Sorted, so that a key two Services claim resolves the same way every time.
        let mut keys: Vec<&ServiceRef> = self.services.keys().collect();
        keys.sort();
        for key in keys {
            add_fragment(&mut t, self.fragment(key));
        }
        t
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
            .services
            .iter()
            .filter(|(_, s)| s.health_check_node_port.is_some())
            .filter_map(|(k, _)| self.fragment(k).health_check)
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
        self.change(vec![key.clone()], |st| {
            st.services.insert(key, svc);
        })
    }

    /// Removes a Service (its slices stay filed until they are deleted too).
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> Update {
        let key = ServiceRef::new(namespace, name);
        self.change(vec![key.clone()], |st| {
            st.services.remove(&key);
        })
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_endpoint_slice(&mut self, slice: EndpointSlice) -> Update {
        let id = (slice.namespace.clone(), slice.name.clone());
        let owner = slice.service();
        // The service-name label may have changed: the old owner changes too.
        let mut affected = vec![owner.clone()];
        let old_owner = self.slice_owner.get(&id).cloned();
        if let Some(o) = &old_owner {
            if *o != owner {
                affected.push(o.clone());
            }
        }
        self.change(affected, |st| {
            if let Some(o) = old_owner {
                st.unfile(&o, &slice.name);
            }
            st.slice_owner.insert(id, owner.clone());
            st.file(owner, slice);
        })
    }

    /// Removes an EndpointSlice.
    pub fn delete_endpoint_slice(&mut self, namespace: &str, name: &str) -> Update {
        let Some(owner) = self
            .slice_owner
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
        else {
            return Update::default();
        };
        self.change(vec![owner.clone()], |st| {
            st.slice_owner
                .remove(&(namespace.to_string(), name.to_string()));
            st.unfile(&owner, name);
        })
    }

    fn file(&mut self, owner: ServiceRef, slice: EndpointSlice) {
        let v = self.slices.entry(owner).or_default();
        match v.binary_search_by(|s| s.name.cmp(&slice.name)) {
            Ok(i) => v[i] = slice,
            Err(i) => v.insert(i, slice),
        }
    }

    fn unfile(&mut self, owner: &ServiceRef, slice: &str) {
        if let Some(v) = self.slices.get_mut(owner) {
            v.retain(|s| s.name != slice);
            if v.is_empty() {
                self.slices.remove(owner);
            }
        }
    }

    /// The objects one Service contributes, compiled from the current state.
    fn fragment(&self, key: &ServiceRef) -> Fragment {
        match self.services.get(key) {
            Some(svc) => compile_service(
                svc,
                self.slices.get(key).into_iter().flatten(),
                &self.node,
                &self.config,
            ),
            None => Fragment::default(),
        }
    }

    /// Runs `mutate` and returns the transaction for the Services in `affected`.
    fn change(&mut self, affected: Vec<ServiceRef>, mutate: impl FnOnce(&mut Self)) -> Update {
        let old: Vec<Fragment> = affected.iter().map(|k| self.fragment(k)).collect();
        mutate(self);
        let mut update = Update::default();
        for (key, old) in affected.iter().zip(old) {
            let new = self.fragment(key);
            if new == old {
                continue;
            }
            let stale_udp = stale_udp(&old.udp, &new.udp);
            let mut old_mini = self.skeleton.clone();
            add_fragment(&mut old_mini, old);
            let mut new_mini = self.skeleton.clone();
            add_fragment(&mut new_mini, new);
            update.append(Update {
                transaction: diff(&old_mini, &new_mini),
                stale_udp,
            });
        }
        update
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

/// Files all objects at once; [`ProxyState::table`] then gives the ruleset.
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
        st.file(s.service(), s.clone());
    }
    for svc in services {
        st.services.insert(svc.key(), svc.clone());
    }
    Ok(st)
}
