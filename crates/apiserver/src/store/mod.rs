//! The object store: every object in memory behind one lock, a global resourceVersion counter
//! (as etcd's revision), a bounded history of changes for watches, and persistence.
//!
//! Every write goes through admission (defaulting, validation, allocation) while the lock is held,
//! so uniqueness checks (ClusterIPs, NodePorts, names) cannot race.

pub mod persist;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::admission::{self, Ctx};
use crate::alloc::ServiceIndex;
use crate::config::Config;
use crate::error::{ApiError, Error};
use crate::meta;
use crate::resources::{self, ResId, NAMESPACES, PODS, RESOURCES, SERVICES};

/// A stored object (shared between the table, the history and readers).
pub type Obj = Arc<Value>;

/// Kind of change, as watch events name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change in the history.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub res: ResId,
    pub kind: EventKind,
    /// The new object (for Deleted: its last state, with the deletion's resourceVersion).
    pub obj: Obj,
    /// The previous object (Modified, Deleted).
    pub prev: Option<Obj>,
}

/// Which part of an object an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
}

/// Options of a write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOpts {
    /// Validate only (`dryRun=All`).
    pub dry_run: bool,
    /// A controller inside the server is writing: system-owned fields (a pod's nodeName) may change.
    pub internal: bool,
}

impl WriteOpts {
    pub fn internal() -> Self {
        WriteOpts {
            dry_run: false,
            internal: true,
        }
    }
}

/// Options of a delete (DeleteOptions + query parameters).
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

/// Outcome of a delete.
#[derive(Debug)]
pub enum Deleted {
    /// Removed from the store; the last state.
    Gone(Obj),
    /// Marked for deletion (graceful pod deletion, finalizers, namespace termination).
    Pending(Obj),
}

type Key = (String, String);

/// Everything behind the store lock.
pub struct Inner {
    pub rv: u64,
    tables: Vec<BTreeMap<Key, Obj>>,
    history: VecDeque<Event>,
    /// A watch may resume from any resourceVersion >= floor.
    floor: u64,
    /// resourceVersions skipped after a restart (exclusive bounds, see `persist`): a watch
    /// resuming from inside one relists.
    holes: Vec<(u64, u64)>,
    history_cap: usize,
    log: Option<persist::Log>,
    /// Log size at which the next compaction is tried (pushed back after a failed one).
    compact_at: usize,
    pub services: ServiceIndex,
}

/// The shared store.
pub struct Store {
    inner: Mutex<Inner>,
    /// The durable resourceVersion: watchers see, and requests are answered, only up to it.
    rv_tx: Arc<watch::Sender<u64>>,
    durability: Arc<persist::Durability>,
    closed: AtomicBool,
    pub config: Arc<Config>,
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

fn res_by_qualified(q: &str) -> Option<ResId> {
    RESOURCES.iter().position(|r| r.qualified() == q)
}

impl Inner {
    pub fn get(&self, res: ResId, ns: &str, name: &str) -> Option<&Obj> {
        self.tables[res].get(&key(ns, name))
    }

    /// Objects of a resource, in one namespace or all (`None`), ordered by namespace and name.
    pub fn iter(&self, res: ResId, ns: Option<&str>) -> Box<dyn Iterator<Item = &Obj> + '_> {
        match ns {
            None => Box::new(self.tables[res].values()),
            Some(ns) => {
                let ns_owned = ns.to_string();
                Box::new(
                    self.tables[res]
                        .range(key(ns, "")..)
                        .take_while(move |((n, _), _)| *n == ns_owned)
                        .map(|(_, v)| v),
                )
            }
        }
    }

    pub fn count(&self, res: ResId) -> usize {
        self.tables[res].len()
    }

    fn persist(&mut self, rec: persist::Record) -> Result<(), ApiError> {
        if let Some(log) = &mut self.log {
            log.append(&rec).map_err(|e| match e {
                persist::PersistError::Full { .. } => ApiError::insufficient_storage(format!(
                    "the change was not stored: {e}; reads and watches go on, writes resume once space is freed"
                )),
                _ => ApiError::internal(format!("the change was not stored: {e}")),
            })?;
        }
        Ok(())
    }

    fn record(&mut self, ev: Event) {
        self.history.push_back(ev);
        while self.history.len() > self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
    }

    /// Stores `obj` (new or replacing), giving it the next resourceVersion.
    fn put(&mut self, res: ResId, mut obj: Value) -> Result<Obj, ApiError> {
        let rv = self.rv + 1;
        meta::metadata_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        meta::metadata_mut(&mut obj).remove("managedFields");
        self.persist(persist::Record::Put {
            rv,
            res: RESOURCES[res].qualified(),
            obj: obj.clone(),
        })?;
        self.rv = rv;
        let k = key(meta::namespace(&obj), meta::name(&obj));
        let obj = Arc::new(obj);
        let prev = self.tables[res].insert(k, obj.clone());
        if res == SERVICES {
            if let Some(p) = &prev {
                self.services.remove(p);
            }
            self.services.add(&obj);
        }
        let kind = if prev.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.record(Event {
            rv,
            res,
            kind,
            obj: obj.clone(),
            prev,
        });
        self.maybe_compact();
        Ok(obj)
    }

    /// Removes an object; the returned last state carries the deletion's resourceVersion.
    fn remove(&mut self, res: ResId, ns: &str, name: &str) -> Result<Obj, ApiError> {
        let Some(prev) = self.tables[res].get(&key(ns, name)).cloned() else {
            return Err(ApiError::not_found(res, name));
        };
        let rv = self.rv + 1;
        self.persist(persist::Record::Delete {
            rv,
            res: RESOURCES[res].qualified(),
            ns: ns.to_string(),
            name: name.to_string(),
        })?;
        self.rv = rv;
        self.tables[res].remove(&key(ns, name));
        if res == SERVICES {
            self.services.remove(&prev);
        }
        let mut last = (*prev).clone();
        meta::metadata_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
        let last = Arc::new(last);
        self.record(Event {
            rv,
            res,
            kind: EventKind::Deleted,
            obj: last.clone(),
            prev: Some(prev),
        });
        self.maybe_compact();
        Ok(last)
    }

    fn maybe_compact(&mut self) {
        let total: usize = self.tables.iter().map(BTreeMap::len).sum();
        let Some(log) = &self.log else { return };
        if log.records < self.compact_at.max(10_000 + 2 * total) {
            return;
        }
        self.force_compact();
    }

    /// Writes a snapshot of everything and starts an empty log.
    fn force_compact(&mut self) {
        let Some(log) = &mut self.log else { return };
        let rv = self.rv;
        let names: Vec<String> = RESOURCES.iter().map(|r| r.qualified()).collect();
        let objects = self
            .tables
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.values().map(move |o| (i, o)))
            .map(|(i, o)| (names[i].as_str(), o.as_ref()));
        match log.compact(rv, objects) {
            Ok(()) => self.compact_at = 0,
            Err(e) => {
                // Not on every write of a full disk: try again after as many records again.
                self.compact_at = log.records * 2;
                tracing::warn!(
                    "compacting the API server state failed (the log keeps growing): {e}"
                );
            }
        }
    }
}

impl Store {
    /// Loads the persisted state of `config.state_dir` (or starts empty).
    pub fn open(config: Arc<Config>) -> Result<Arc<Store>, Error> {
        let mut loaded = persist::load(&config.state_dir)?;
        let mut tables: Vec<BTreeMap<Key, Obj>> =
            RESOURCES.iter().map(|_| BTreeMap::new()).collect();
        // The log's changes also refill the watch history, so a watcher resumes across a
        // restart from any resourceVersion since the snapshot.
        let history_cap = config.watch_history.max(1);
        let mut history = VecDeque::new();
        let mut floor = loaded.snap_rv;
        for rec in std::mem::take(&mut loaded.records) {
            match rec {
                persist::Record::Put { rv, res, obj } => {
                    let Some(r) = res_by_qualified(&res) else {
                        tracing::warn!("dropping stored object of unknown resource {res}");
                        continue;
                    };
                    let k = key(meta::namespace(&obj), meta::name(&obj));
                    let obj = Arc::new(obj);
                    let prev = tables[r].insert(k, obj.clone());
                    if rv > loaded.snap_rv {
                        let kind = if prev.is_some() {
                            EventKind::Modified
                        } else {
                            EventKind::Added
                        };
                        history.push_back(Event {
                            rv,
                            res: r,
                            kind,
                            obj,
                            prev,
                        });
                    }
                }
                persist::Record::Delete {
                    rv, res, ns, name, ..
                } => {
                    let Some(r) = res_by_qualified(&res) else {
                        continue;
                    };
                    if let Some(prev) = tables[r].remove(&key(&ns, &name)) {
                        let mut last = (*prev).clone();
                        meta::metadata_mut(&mut last)
                            .insert("resourceVersion".into(), json!(rv.to_string()));
                        history.push_back(Event {
                            rv,
                            res: r,
                            kind: EventKind::Deleted,
                            obj: Arc::new(last),
                            prev: Some(prev),
                        });
                    }
                }
            }
            while history.len() > history_cap {
                if let Some(old) = history.pop_front() {
                    floor = old.rv;
                }
            }
        }
        // Continue above every resourceVersion handed out before, even if the log's tail that
        // held them is gone; a watcher that saw one of those must relist.
        let start_rv = loaded.start_rv();
        let mut holes = std::mem::take(&mut loaded.holes);
        if start_rv > loaded.rv {
            tracing::info!(
                "the log ends at resourceVersion {} and at most {} were handed out: continuing from {start_rv}",
                loaded.rv,
                loaded.reserved
            );
            holes.push((loaded.rv, start_rv));
        }
        let (rv_tx, _) = watch::channel(start_rv);
        let rv_tx = Arc::new(rv_tx);
        // Writes nothing for an existing store, so it opens on a full disk.
        let log = persist::Log::open(&config.state_dir, &loaded, rv_tx.clone())?;
        let durability = log.durability().clone();
        let mut services = ServiceIndex::default();
        for s in tables[SERVICES].values() {
            services.add(s);
        }
        let mut inner = Inner {
            rv: start_rv,
            tables,
            history,
            floor,
            holes,
            history_cap,
            log: Some(log),
            compact_at: 0,
            services,
        };
        if !loaded.fresh && !loaded.current {
            // An older format: rewrite it (snapshot and log with headers) when there is space.
            inner.force_compact();
        }
        Ok(Arc::new(Store {
            inner: Mutex::new(inner),
            rv_tx,
            durability,
            closed: AtomicBool::new(false),
            config,
        }))
    }

    /// Stops the store: the log is flushed and closed, later writes fail with 503, and watches
    /// end. Another store may then open the same state directory.
    pub fn close(&self) {
        let mut inner = self.lock();
        self.closed.store(true, Ordering::SeqCst);
        inner.log = None;
        drop(inner);
        self.rv_tx.send_modify(|_| {});
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn writable(&self, inner: &MutexGuard<'_, Inner>) -> Result<(), ApiError> {
        let _ = inner;
        if self.is_closed() {
            return Err(ApiError::unavailable("the API server is shutting down"));
        }
        Ok(())
    }

    /// Removes an object at once, skipping graceful deletion and finalizers (controllers that
    /// finish a deletion: namespaces, pods on nodes that are gone).
    pub fn remove_now(&self, res: ResId, ns: &str, name: &str) -> Result<Obj, ApiError> {
        let mut inner = self.lock();
        self.writable(&inner)?;
        let out = inner.remove(res, ns, name);
        drop(inner);
        out
    }

    /// Locks the store (a panic while locked does not make the data unusable).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every write made so far is durable (a request is answered only then).
    /// Fails when the log could not be synced (writes stop until the server restarts).
    pub async fn durable(&self) -> Result<(), ApiError> {
        let target = self.durability.written();
        let mut rx = self.rv_tx.subscribe();
        loop {
            if *rx.borrow_and_update() >= target {
                return Ok(());
            }
            if let Some(f) = self.durability.failed() {
                return Err(ApiError::internal(format!(
                    "the change may not be durable: {f}; the API server refuses writes until restarted"
                )));
            }
            if rx.changed().await.is_err() {
                return Err(ApiError::unavailable("the API server is shutting down"));
            }
        }
    }

    /// Blocks until every write made so far is durable (tests and tools).
    pub fn sync(&self) -> Result<(), String> {
        self.durability.wait(self.durability.written())
    }

    /// The highest durable resourceVersion.
    pub fn durable_rv(&self) -> u64 {
        *self.rv_tx.borrow()
    }

    /// A receiver that changes whenever the durable resourceVersion moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rv_tx.subscribe()
    }

    pub fn rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, res: ResId, ns: &str, name: &str) -> Result<Obj, ApiError> {
        self.lock()
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Objects (of one namespace or all) passing `keep`, and the resourceVersion of the list.
    pub fn list(
        &self,
        res: ResId,
        ns: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Obj>, u64) {
        let inner = self.lock();
        let items = inner.iter(res, ns).filter(|o| keep(o)).cloned().collect();
        (items, inner.rv)
    }

    /// One page of a list: up to `limit` objects (0: all) after the key `after`, and whether more
    /// follow. Walks the ordered table from `after`, so paging through a big list stays linear.
    pub fn list_page(
        &self,
        res: ResId,
        ns: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Obj>, u64, bool) {
        use std::ops::Bound;
        let inner = self.lock();
        let table = &inner.tables[res];
        let start = match (after, ns) {
            (Some((a_ns, a_name)), _) => Bound::Excluded(key(a_ns, a_name)),
            (None, Some(ns)) => Bound::Included(key(ns, "")),
            (None, None) => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut more = false;
        for ((n, _), o) in table.range((start, Bound::Unbounded)) {
            if ns.is_some_and(|ns| ns != n) {
                if ns.is_some_and(|ns| n.as_str() > ns) {
                    break;
                }
                continue;
            }
            if !keep(o) {
                continue;
            }
            if limit > 0 && out.len() == limit {
                more = true;
                break;
            }
            out.push(o.clone());
        }
        (out, inner.rv, more)
    }

    /// Changes after `since` that pass `keep`, and the resourceVersion they bring a watcher to;
    /// `Err(floor)` when `since` is older than the history.
    pub fn changes_since(
        &self,
        since: u64,
        mut keep: impl FnMut(&Event) -> bool,
    ) -> Result<(Vec<Event>, u64), u64> {
        let inner = self.lock();
        if since < inner.floor {
            return Err(inner.floor);
        }
        if let Some(&(_, hi)) = inner
            .holes
            .iter()
            .find(|(lo, hi)| *lo < since && since < *hi)
        {
            return Err(hi);
        }
        // Only durable changes: a watcher never sees one a crash could take back.
        let durable = self.durable_rv().min(inner.rv);
        let start = inner.history.partition_point(|e| e.rv <= since);
        let events = inner
            .history
            .range(start..)
            .take_while(|e| e.rv <= durable)
            .filter(|e| keep(e))
            .cloned()
            .collect();
        Ok((events, durable.max(since)))
    }

    /// Creates an object in `ns` ("" for cluster-scoped resources).
    pub fn create(
        &self,
        res: ResId,
        ns: &str,
        obj: Value,
        opts: WriteOpts,
    ) -> Result<Obj, ApiError> {
        let mut inner = self.lock();
        self.writable(&inner)?;
        let out = self.create_locked(&mut inner, res, ns, obj, opts);
        drop(inner);
        out
    }

    fn create_locked(
        &self,
        inner: &mut Inner,
        res: ResId,
        ns: &str,
        obj: Value,
        opts: WriteOpts,
    ) -> Result<Obj, ApiError> {
        let r = &RESOURCES[res];
        let mut obj = prepare_body(res, obj)?;
        // Namespace from the path; the body may repeat it but not contradict it.
        let body_ns = meta::namespace(&obj).to_string();
        if r.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta::metadata_mut(&mut obj).insert("namespace".into(), json!(ns));
        } else {
            meta::metadata_mut(&mut obj).remove("namespace");
        }
        let generate = meta::name(&obj).is_empty()
            && meta::metadata(&obj)
                .get("generateName")
                .and_then(Value::as_str)
                .is_some_and(|g| !g.is_empty());
        if generate {
            let base = meta::metadata(&obj)
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let base: String = base.chars().take(meta::MAX_GENERATED_BASE).collect();
            let mut name = format!("{base}{}", meta::random_suffix(5));
            for _ in 0..8 {
                if inner.get(res, ns, &name).is_none() {
                    break;
                }
                name = format!("{base}{}", meta::random_suffix(5));
            }
            meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
        }
        let mut obj = normalize(res, obj)?;
        {
            let m = meta::metadata_mut(&mut obj);
            m.insert("uid".into(), json!(meta::new_uid()));
            m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                m.remove(f);
            }
            if has_generation(res) {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        if r.namespaced {
            match inner.get(NAMESPACES, "", ns) {
                None => return Err(ApiError::not_found(NAMESPACES, ns)),
                Some(n) if meta::is_deleting(n) => {
                    return Err(ApiError::forbidden(
                        res,
                        meta::name(&obj),
                        &format!("unable to create new content in namespace {ns} because it is being terminated"),
                    ))
                }
                Some(_) => {}
            }
        }
        let ctx = Ctx {
            inner: &*inner,
            config: &self.config,
            internal: opts.internal,
        };
        admission::on_create(&ctx, res, &mut obj)?;
        let name = meta::name(&obj).to_string();
        if inner.get(res, ns, &name).is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        if opts.dry_run {
            return Ok(Arc::new(obj));
        }
        inner.put(res, obj)
    }

    /// Replaces an object (PUT). Creates it for kinds that allow create-on-update.
    pub fn update(
        &self,
        res: ResId,
        ns: &str,
        name: &str,
        obj: Value,
        sub: Sub,
        opts: WriteOpts,
    ) -> Result<(Obj, bool), ApiError> {
        let mut inner = self.lock();
        self.writable(&inner)?;
        let out = if inner.get(res, ns, name).is_none()
            && RESOURCES[res].create_on_update
            && sub == Sub::Main
        {
            let obj = prepare_body(res, obj)?;
            check_name(res, &obj, name)?;
            self.create_locked(&mut inner, res, ns, obj, opts)
                .map(|o| (o, true))
        } else {
            self.update_locked(&mut inner, res, ns, name, obj, sub, opts)
                .map(|o| (o, false))
        };
        drop(inner);
        out
    }

    /// Read-modify-write under the lock: `f` turns the current object into the desired one
    /// (patches, controllers). A resourceVersion `f` leaves in place is checked as a precondition.
    pub fn modify(
        &self,
        res: ResId,
        ns: &str,
        name: &str,
        sub: Sub,
        opts: WriteOpts,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Obj, ApiError> {
        let mut inner = self.lock();
        self.writable(&inner)?;
        let cur = inner
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let out =
            f(&cur).and_then(|new| self.update_locked(&mut inner, res, ns, name, new, sub, opts));
        drop(inner);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn update_locked(
        &self,
        inner: &mut Inner,
        res: ResId,
        ns: &str,
        name: &str,
        obj: Value,
        sub: Sub,
        opts: WriteOpts,
    ) -> Result<Obj, ApiError> {
        let old = inner
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let obj = prepare_body(res, obj)?;
        check_name(res, &obj, name)?;
        let body_ns = meta::namespace(&obj);
        if RESOURCES[res].namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let want_rv = meta::resource_version(&obj);
        if !want_rv.is_empty() && want_rv != meta::resource_version(&old) {
            return Err(ApiError::modified(res, name));
        }
        let want_uid = meta::uid(&obj);
        if !want_uid.is_empty() && want_uid != meta::uid(&old) {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want_uid}, UID in object meta: {}",
                    meta::uid(&old)
                ),
            ));
        }
        let mut new = normalize(res, obj)?;
        if sub == Sub::Status {
            // Status writes change only status (metadata and spec stay as stored).
            let status = new.get("status").cloned();
            new = (*old).clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        } else {
            // Status is written through /status; controllers inside the server write both at
            // once (they start from the stored object).
            if RESOURCES[res].status && !opts.internal {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            let om = meta::metadata(&old).clone();
            let m = meta::metadata_mut(&mut new);
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match om.get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            m.insert("namespace".into(), json!(ns));
            if !RESOURCES[res].namespaced {
                m.remove("namespace");
            }
            m.insert("name".into(), json!(name));
            m.remove("managedFields");
            m.remove("selfLink");
        }
        let ctx = Ctx {
            inner: &*inner,
            config: &self.config,
            internal: opts.internal,
        };
        admission::on_update(&ctx, res, &mut new, &old, sub)?;
        if has_generation(res) && spec_changed(&old, &new) {
            let g = meta::metadata(&old)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta::metadata_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        meta::metadata_mut(&mut new).insert(
            "resourceVersion".into(),
            json!(meta::resource_version(&old)),
        );
        if new == *old {
            // A no-op update does not move the resourceVersion (as kube-apiserver).
            return Ok(old);
        }
        if opts.dry_run {
            return Ok(Arc::new(new));
        }
        // The last finalizer of an object being deleted went away: delete it now.
        let finalizers_empty = meta::metadata(&new)
            .get("finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if meta::is_deleting(&new) && finalizers_empty && res != PODS && res != NAMESPACES {
            inner.put(res, new)?;
            return inner.remove(res, ns, name);
        }
        inner.put(res, new)
    }

    /// Deletes an object: pods on a node go through graceful deletion, objects with finalizers
    /// and namespaces are marked first.
    pub fn delete(
        &self,
        res: ResId,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let mut inner = self.lock();
        self.writable(&inner)?;
        let out = self.delete_locked(&mut inner, res, ns, name, opts);
        drop(inner);
        out
    }

    fn delete_locked(
        &self,
        inner: &mut Inner,
        res: ResId,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let old = inner
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        if let Some(uid) = opts.precondition_uid.as_deref() {
            if uid != meta::uid(&old) {
                return Err(ApiError::conflict(
                    res,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&old)
                    ),
                ));
            }
        }
        if let Some(rv) = opts.precondition_rv.as_deref() {
            if rv != meta::resource_version(&old) {
                return Err(ApiError::conflict(
                    res,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta::resource_version(&old)
                    ),
                ));
            }
        }
        if let Some(g) = opts.grace_period_seconds {
            if g < 0 {
                return Err(ApiError::bad_request(format!(
                    "DeleteOptions.gracePeriodSeconds must be >= 0 (got {g})"
                )));
            }
        }
        if res == NAMESPACES {
            if matches!(name, "default" | "kube-system" | "kube-public") {
                return Err(ApiError::forbidden(
                    res,
                    name,
                    "this namespace may not be deleted",
                ));
            }
            if opts.dry_run {
                return Ok(Deleted::Pending(old));
            }
            if meta::is_deleting(&old) {
                return Ok(Deleted::Pending(old));
            }
            let mut new = (*old).clone();
            meta::metadata_mut(&mut new)
                .insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
            new["status"] = json!({"phase": "Terminating"});
            return inner.put(res, new).map(Deleted::Pending);
        }
        if res == PODS {
            let node = meta::path_str(&old, "spec.nodeName").unwrap_or("");
            let phase = meta::path_str(&old, "status.phase").unwrap_or("");
            let grace = opts
                .grace_period_seconds
                .or_else(|| {
                    meta::path(&old, "spec.terminationGracePeriodSeconds").and_then(Value::as_i64)
                })
                .unwrap_or(30);
            let terminal = phase == "Succeeded" || phase == "Failed";
            if !node.is_empty() && grace > 0 && !terminal {
                if opts.dry_run {
                    return Ok(Deleted::Pending(old));
                }
                let now = meta::now_secs();
                let deadline = now + grace;
                let current = meta::metadata(&old)
                    .get("deletionTimestamp")
                    .and_then(Value::as_str)
                    .and_then(meta::parse_ts);
                if current.is_some_and(|c| c <= deadline) {
                    // Already terminating with an earlier or equal deadline.
                    return Ok(Deleted::Pending(old));
                }
                let mut new = (*old).clone();
                let m = meta::metadata_mut(&mut new);
                m.insert("deletionTimestamp".into(), json!(meta::format_ts(deadline)));
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                return inner.put(res, new).map(Deleted::Pending);
            }
        }
        let has_finalizers = meta::metadata(&old)
            .get("finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let foreground = opts.propagation_policy.as_deref() == Some("Foreground");
        if foreground
            && res != PODS
            && !meta::is_deleting(&old)
            && has_dependents(inner, meta::uid(&old), ns)
        {
            // Foreground: the object stays (deletionTimestamp + foregroundDeletion finalizer)
            // until the garbage collector has removed its dependents.
            if opts.dry_run {
                return Ok(Deleted::Pending(old));
            }
            let mut new = (*old).clone();
            let m = meta::metadata_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            let f = m.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = f.as_array_mut() {
                if !list.iter().any(|x| x == FOREGROUND_FINALIZER) {
                    list.push(json!(FOREGROUND_FINALIZER));
                }
            }
            return inner.put(res, new).map(Deleted::Pending);
        }
        if has_finalizers && res != PODS {
            if opts.dry_run || meta::is_deleting(&old) {
                return Ok(Deleted::Pending(old));
            }
            let mut new = (*old).clone();
            let m = meta::metadata_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            return inner.put(res, new).map(Deleted::Pending);
        }
        if opts.dry_run {
            return Ok(Deleted::Gone(old));
        }
        if opts.propagation_policy.as_deref() == Some("Orphan") {
            orphan_dependents(inner, meta::uid(&old).to_string(), ns)?;
        }
        inner.remove(res, ns, name).map(Deleted::Gone)
    }
}

/// The finalizer of foreground cascading deletion.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Whether any namespaced object in `ns` (any namespace for cluster-scoped owners) names
/// `owner_uid` as an owner.
pub fn has_dependents(inner: &Inner, owner_uid: &str, ns: &str) -> bool {
    let scope = if ns.is_empty() { None } else { Some(ns) };
    RESOURCES
        .iter()
        .enumerate()
        .filter(|(_, r)| r.namespaced)
        .any(|(res, _)| inner.iter(res, scope).any(|o| meta::owned_by(o, owner_uid)))
}

/// Removes the ownerReferences pointing at `owner_uid` from objects in `ns`, so the garbage
/// collector leaves them.
fn orphan_dependents(inner: &mut Inner, owner_uid: String, ns: &str) -> Result<(), ApiError> {
    for (res, r) in RESOURCES.iter().enumerate() {
        if !r.namespaced {
            continue;
        }
        let deps: Vec<Obj> = inner
            .iter(res, Some(ns))
            .filter(|o| meta::owned_by(o, &owner_uid))
            .cloned()
            .collect();
        for d in deps {
            let mut new = (*d).clone();
            let m = meta::metadata_mut(&mut new);
            if let Some(Value::Array(refs)) = m.get_mut("ownerReferences") {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid.as_str()));
                if refs.is_empty() {
                    m.remove("ownerReferences");
                }
            }
            inner.put(res, new)?;
        }
    }
    Ok(())
}

/// Checks the body is an object of the right kind, filling apiVersion/kind when missing.
fn prepare_body(res: ResId, mut obj: Value) -> Result<Value, ApiError> {
    let r = &RESOURCES[res];
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a {} object",
            r.kind
        )));
    };
    let api_version = r.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(r.kind));
        }
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )))
        }
    }
    Ok(obj)
}

fn check_name(res: ResId, obj: &Value, name: &str) -> Result<(), ApiError> {
    let body_name = meta::name(obj);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let _ = res;
    Ok(())
}

/// Decodes into the typed form and back (type errors → 400, unknown fields dropped).
fn normalize(res: ResId, obj: Value) -> Result<Value, ApiError> {
    let r = &RESOURCES[res];
    (r.normalize)(obj).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version {v:?} cannot be handled as a {kind}: {e}",
            kind = r.kind,
            v = r.version
        ))
    })
}

fn has_generation(res: ResId) -> bool {
    !matches!(
        res,
        resources::EVENTS | resources::EVENTS_V1 | resources::LEASES
    )
}

/// Whether anything but metadata and status differs.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let skip = |k: &String| k != "metadata" && k != "status";
    match (old.as_object(), new.as_object()) {
        (Some(o), Some(n)) => {
            let ok = o.iter().filter(|(k, _)| skip(k));
            let nk = n.iter().filter(|(k, _)| skip(k));
            ok.count() != nk.count()
                || o.iter()
                    .filter(|(k, _)| skip(k))
                    .any(|(k, v)| n.get(k) != Some(v))
        }
        _ => old != new,
    }
}
