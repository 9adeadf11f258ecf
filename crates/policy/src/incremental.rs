//! The compiler as a long-lived object: it holds the state and the compiled table, applies one
//! object change at a time touching only what that change can affect, and hands out the nft
//! transaction of everything touched since the last call.
//!
//! What a change can affect (the reason this is cheap):
//! - a pod: its own chains and map entries (its selection), and its address in the shared
//!   sets (every set is re-checked for that pod's keys only);
//! - a namespace: the shared sets, for that namespace's pods only (no chain depends on
//!   namespace labels: policies select pods of their own namespace);
//! - a policy: the chains of the pods of its namespace.
//!
//! Sets are reference-counted by the chains that use them and removed with the last one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use sarasa_nft::{diff, Key, MapValue, Table, Transaction, Verdict};

use crate::compile::{
    base_table, chain_name, families, map_name, Bodies, ChainBuilder, CompileOptions,
};
use crate::sets::SetSpec;
use crate::state::PolicyState;
use crate::PolicyError;
use crate::{Direction, NetworkPolicy, PodKey, PolicyKey, PolicyNamespace, PolicyPod};

/// A shared set and how many chains use it.
struct SetUse {
    spec: SetSpec,
    v6: bool,
    users: usize,
}

/// State + compiled table, updated incrementally.
pub struct PolicyCompiler {
    state: PolicyState,
    opts: CompileOptions,
    table: Table,
    builder: ChainBuilder,
    bodies: Bodies,
    sets: BTreeMap<String, SetUse>,
    /// Chain name → the shared sets it uses.
    chain_sets: HashMap<String, Vec<String>>,
    by_ip: HashMap<IpAddr, BTreeSet<PodKey>>,
    /// Old versions of what was touched since the last transaction.
    old: Table,
    touched_chains: BTreeSet<String>,
    touched_sets: BTreeSet<String>,
    recording: bool,
}

impl PolicyCompiler {
    /// Compiles `state` in full.
    pub fn new(state: PolicyState, opts: CompileOptions) -> Self {
        let table = base_table(&opts);
        let mut c = PolicyCompiler {
            old: Table::new(table.family, table.name.clone()),
            table,
            opts,
            builder: ChainBuilder::default(),
            bodies: Bodies::new(),
            sets: BTreeMap::new(),
            chain_sets: HashMap::new(),
            by_ip: HashMap::new(),
            touched_chains: BTreeSet::new(),
            touched_sets: BTreeSet::new(),
            recording: false,
            state: PolicyState::new(),
        };
        for pod in state.pods() {
            c.index(pod, true);
        }
        c.state = state;
        let keys: Vec<(PodKey, Vec<IpAddr>)> =
            c.state.pods().map(|p| (p.key(), p.ips.clone())).collect();
        for (key, ips) in keys {
            c.refresh_pod(&key, &ips);
        }
        c.bodies.clear();
        c.recording = true;
        c
    }

    pub fn state(&self) -> &PolicyState {
        &self.state
    }

    pub fn options(&self) -> &CompileOptions {
        &self.opts
    }

    /// The compiled table (what the kernel should hold).
    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn into_table(self) -> Table {
        self.table
    }

    /// The transaction from the table as of the previous call (or [`PolicyCompiler::new`]) to
    /// now: only the touched chains, sets and elements.
    pub fn take_transaction(&mut self) -> Transaction {
        let mut new = Table::new(self.table.family, self.table.name.clone());
        for name in &self.touched_chains {
            if let Some(c) = self.table.chains.get(name) {
                new.chains.insert(name.clone(), c.clone());
            }
        }
        for name in &self.touched_sets {
            if let Some(s) = self.table.sets.get(name) {
                new.sets.insert(name.clone(), s.clone());
            }
        }
        let tx = diff(&self.old, &new);
        self.old = Table::new(self.table.family, self.table.name.clone());
        self.touched_chains.clear();
        self.touched_sets.clear();
        tx
    }

    /// Adds or replaces a pod.
    pub fn apply_pod(&mut self, pod: PolicyPod) {
        let key = pod.key();
        let old = self.state.pod(&key).cloned();
        if old.as_ref() == Some(&pod) {
            return;
        }
        if let Some(o) = &old {
            self.index(o, false);
        }
        self.index(&pod, true);
        let mut addrs: Vec<IpAddr> = pod.ips.clone();
        if let Some(o) = &old {
            addrs.extend(o.ips.iter().copied());
        }
        self.state.apply_pod(pod);
        self.fix_pod_in_sets(old.as_ref(), &key);
        self.refresh_pod(&key, &addrs);
    }

    /// Removes a pod.
    pub fn delete_pod(&mut self, key: &PodKey) {
        let Some(old) = self.state.delete_pod(key) else {
            return;
        };
        self.index(&old, false);
        self.fix_pod_in_sets(Some(&old), key);
        self.refresh_pod(key, &old.ips);
    }

    /// Adds or replaces a namespace (its labels feed namespaceSelectors).
    pub fn apply_namespace(&mut self, ns: PolicyNamespace) {
        let name = ns.name.clone();
        self.state.apply_namespace(ns);
        self.fix_namespace(&name);
    }

    pub fn delete_namespace(&mut self, name: &str) {
        self.state.delete_namespace(name);
        self.fix_namespace(name);
    }

    /// Adds or replaces a policy. An invalid policy is rejected (the error names the field)
    /// and changes nothing: the others, and the previous version of this one, stay in force.
    pub fn apply_policy(&mut self, policy: NetworkPolicy) -> Result<(), PolicyError> {
        let ns = policy.namespace.clone();
        self.state.apply_policy(policy)?;
        self.refresh_namespace_chains(&ns);
        Ok(())
    }

    pub fn delete_policy(&mut self, key: &PolicyKey) {
        if self.state.delete_policy(key).is_some() {
            self.refresh_namespace_chains(&key.namespace);
        }
    }

    /// Sets a node's addresses (used by the evaluator; the datapath needs no entry, see the
    /// crate docs).
    pub fn apply_node(&mut self, name: &str, addresses: Vec<IpAddr>) {
        self.state.apply_node(name, addresses);
    }

    pub fn delete_node(&mut self, name: &str) {
        self.state.delete_node(name);
    }

    fn index(&mut self, pod: &PolicyPod, add: bool) {
        for ip in &pod.ips {
            let e = self.by_ip.entry(*ip).or_default();
            if add {
                e.insert(pod.key());
            } else {
                e.remove(&pod.key());
                if e.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
    }

    fn touch_chain(&mut self, name: &str) {
        if self.recording && self.touched_chains.insert(name.to_string()) {
            if let Some(c) = self.table.chains.get(name) {
                self.old.chains.insert(name.to_string(), c.clone());
            }
        }
    }

    fn touch_set(&mut self, name: &str) {
        if self.recording && self.touched_sets.insert(name.to_string()) {
            if let Some(s) = self.table.sets.get(name) {
                self.old.sets.insert(name.to_string(), s.clone());
            }
        }
    }

    /// Re-checks the keys of one pod (old and new version) in every pod-based set.
    fn fix_pod_in_sets(&mut self, old: Option<&PolicyPod>, key: &PodKey) {
        let mut work: Vec<(String, Key)> = Vec::new();
        for (name, u) in &self.sets {
            if !u.spec.has_pods() {
                continue;
            }
            let mut keys = Vec::new();
            if let Some(o) = old {
                keys.extend(u.spec.candidates(o, u.v6));
            }
            if let Some(p) = self.state.pod(key) {
                keys.extend(u.spec.candidates(p, u.v6));
            }
            keys.sort();
            keys.dedup();
            work.extend(keys.into_iter().map(|k| (name.clone(), k)));
        }
        for (name, k) in work {
            self.fix_key(&name, &k);
        }
    }

    /// Re-checks every pod of namespace `ns` in every pod-based set.
    fn fix_namespace(&mut self, ns: &str) {
        let mut work: Vec<(String, Key)> = Vec::new();
        for (name, u) in &self.sets {
            if !u.spec.has_pods() {
                continue;
            }
            for pod in self.state.pods_in(ns) {
                work.extend(
                    u.spec
                        .candidates(pod, u.v6)
                        .into_iter()
                        .map(|k| (name.clone(), k)),
                );
            }
        }
        for (name, k) in work {
            self.fix_key(&name, &k);
        }
    }

    /// Makes set `name` hold `key` exactly when some pod with that address contributes it.
    fn fix_key(&mut self, name: &str, key: &Key) {
        let Some(u) = self.sets.get(name) else {
            return;
        };
        let Some(sarasa_nft::Value::Addr(addr)) = key.0.first().cloned() else {
            return;
        };
        let want = self.by_ip.get(&addr).is_some_and(|pods| {
            pods.iter().filter_map(|k| self.state.pod(k)).any(|p| {
                u.spec.selects(&self.state, p, addr) && u.spec.candidates(p, u.v6).contains(key)
            })
        });
        let have = self
            .table
            .sets
            .get(name)
            .is_some_and(|s| s.elements.contains_key(key));
        if want != have {
            self.touch_set(name);
            if let Some(s) = self.table.sets.get_mut(name) {
                if want {
                    s.insert(key.clone());
                } else {
                    s.elements.remove(key);
                }
            }
        }
    }

    /// Rebuilds the chains of every pod of namespace `ns` (after a policy change there).
    fn refresh_namespace_chains(&mut self, ns: &str) {
        self.bodies.clear();
        let keys: Vec<(PodKey, Vec<IpAddr>)> = self
            .state
            .pods_in(ns)
            .map(|p| (p.key(), p.ips.clone()))
            .collect();
        for (key, ips) in keys {
            self.refresh_pod(&key, &ips);
        }
        self.bodies.clear();
    }

    /// Rebuilds one pod's chains and the map entries of `addrs`.
    fn refresh_pod(&mut self, key: &PodKey, addrs: &[IpAddr]) {
        for dir in [Direction::Ingress, Direction::Egress] {
            self.refresh_chain(key, dir);
            for addr in addrs {
                self.fix_map(dir, *addr);
            }
        }
    }

    fn is_local(&self, pod: &PolicyPod) -> bool {
        !pod.ips.is_empty() && (self.opts.node.is_none() || pod.node == self.opts.node)
    }

    fn refresh_chain(&mut self, key: &PodKey, dir: Direction) {
        let name = chain_name(dir, key);
        let built = match self.state.pod(key) {
            Some(pod) if self.is_local(pod) => {
                self.builder
                    .pod_chain(&self.state, &self.opts, pod, dir, &mut self.bodies)
            }
            _ => None,
        };
        let mut new_refs = Vec::new();
        let new_chain = built.map(|b| {
            for set in b.sets {
                if !self.sets.contains_key(&set) {
                    let Some((spec, v6)) = self.builder.spec(&set).cloned() else {
                        continue;
                    };
                    self.touch_set(&set);
                    self.table.add_set(spec.build(&self.state, &set, v6));
                    self.sets.insert(set.clone(), SetUse { spec, v6, users: 0 });
                }
                if let Some(u) = self.sets.get_mut(&set) {
                    u.users += 1;
                }
                new_refs.push(set);
            }
            b.chain
        });
        if self.table.chains.get(&name) != new_chain.as_ref() {
            self.touch_chain(&name);
            match new_chain {
                Some(c) => self.table.add_chain(c),
                None => {
                    self.table.chains.remove(&name);
                }
            }
        }
        let old_refs = if new_refs.is_empty() {
            self.chain_sets.remove(&name)
        } else {
            self.chain_sets.insert(name, new_refs)
        };
        for set in old_refs.into_iter().flatten() {
            let gone = match self.sets.get_mut(&set) {
                Some(u) => {
                    u.users = u.users.saturating_sub(1);
                    u.users == 0
                }
                None => false,
            };
            if gone {
                self.touch_set(&set);
                self.sets.remove(&set);
                self.table.sets.remove(&set);
            }
        }
    }

    /// Makes map `dir` send `addr` to the chain of the pod that owns it (the last by key when
    /// several claim it), or not at all.
    fn fix_map(&mut self, dir: Direction, addr: IpAddr) {
        let v6 = addr.is_ipv6();
        if !families(&self.opts).contains(&v6) {
            return;
        }
        let want = self.by_ip.get(&addr).and_then(|pods| {
            pods.iter()
                .rev()
                .map(|k| chain_name(dir, k))
                .find(|c| self.table.chains.contains_key(c))
        });
        let map = map_name(dir, v6);
        let key = Key::one(addr);
        let have = self
            .table
            .sets
            .get(map)
            .and_then(|m| m.elements.get(&key))
            .and_then(|e| match &e.value {
                Some(MapValue::Verdict(Verdict::Jump(c))) => Some(c.clone()),
                _ => None,
            });
        if want != have {
            self.touch_set(map);
            if let Some(m) = self.table.sets.get_mut(map) {
                match want {
                    Some(c) => m.insert_verdict(key, Verdict::Jump(c)),
                    None => {
                        m.elements.remove(&key);
                    }
                }
            }
        }
    }
}
