//! Garbage collection: objects whose every owner is gone are deleted (Deployment → Pods,
//! Service → EndpointSlices), as the background propagation policy does.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, ALL, RESOURCES};
use crate::store::{DeleteOpts, Event, EventKind, Store, Sub, WriteOpts, FOREGROUND_FINALIZER};

pub struct GarbageCollector;

fn owner_uids(o: &Value) -> Vec<&str> {
    meta::metadata(o)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid")?.as_str()).collect())
        .unwrap_or_default()
}

impl GarbageCollector {
    /// Owners deleted with `propagationPolicy: Foreground`: delete their dependents, and drop the
    /// `foregroundDeletion` finalizer once none is left (the store then removes the owner).
    fn finish_foreground(&self, store: &Store) {
        for (res, r) in RESOURCES.iter().enumerate() {
            let (owners, _) = store.list(res, None, |o| {
                meta::is_deleting(o)
                    && meta::metadata(o)
                        .get("finalizers")
                        .and_then(Value::as_array)
                        .is_some_and(|f| f.iter().any(|x| x == FOREGROUND_FINALIZER))
            });
            for owner in owners {
                let uid = meta::uid(&owner).to_string();
                let ns = meta::namespace(&owner);
                let scope = if ns.is_empty() { None } else { Some(ns) };
                let mut remaining = 0;
                for (dres, d) in RESOURCES.iter().enumerate().filter(|(_, d)| d.namespaced) {
                    let (deps, _) = store.list(dres, scope, |o| meta::owned_by(o, &uid));
                    remaining += deps.len();
                    for dep in deps.iter().filter(|o| !meta::is_deleting(o)) {
                        let opts = DeleteOpts {
                            propagation_policy: Some("Foreground".into()),
                            ..Default::default()
                        };
                        if let Err(e) =
                            store.delete(dres, meta::namespace(dep), meta::name(dep), &opts)
                        {
                            if e.code != 404 {
                                tracing::warn!(
                                    "foreground deletion of {} {}: {e}",
                                    d.plural,
                                    meta::name(dep)
                                );
                            }
                        }
                    }
                }
                if remaining == 0 {
                    let r2 = store.modify(
                        res,
                        ns,
                        meta::name(&owner),
                        Sub::Main,
                        WriteOpts::internal(),
                        |cur| {
                            let mut new = cur.clone();
                            if let Some(Value::Array(f)) =
                                meta::metadata_mut(&mut new).get_mut("finalizers")
                            {
                                f.retain(|x| x != FOREGROUND_FINALIZER);
                            }
                            Ok(new)
                        },
                    );
                    if let Err(e) = r2 {
                        if e.code != 404 {
                            tracing::warn!(
                                "finishing foreground deletion of {} {}: {e}",
                                r.plural,
                                meta::name(&owner)
                            );
                        }
                    }
                }
            }
        }
    }
}

impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    fn watches(&self) -> &'static [ResId] {
        ALL
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        let gone: Option<Vec<(String, String)>> = events.map(|evs| {
            evs.iter()
                .filter(|e| e.kind == EventKind::Deleted)
                .map(|e| {
                    (
                        meta::namespace(&e.obj).to_string(),
                        meta::uid(&e.obj).to_string(),
                    )
                })
                .collect()
        });
        let foreground_possible = events.is_none_or(|evs| {
            evs.iter().any(|e| {
                e.kind == EventKind::Deleted
                    || meta::metadata(&e.obj)
                        .get("finalizers")
                        .and_then(Value::as_array)
                        .is_some_and(|f| f.iter().any(|x| x == FOREGROUND_FINALIZER))
            })
        });
        if foreground_possible {
            self.finish_foreground(store);
        }
        if gone.as_ref().is_some_and(Vec::is_empty) {
            return None;
        }
        let mut alive: Option<HashSet<String>> = None;
        for (res, r) in RESOURCES.iter().enumerate() {
            if !r.namespaced {
                continue;
            }
            let candidates = match &gone {
                None => {
                    let alive = alive.get_or_insert_with(|| {
                        // Full pass: every uid that exists, to tell dangling owner references.
                        let mut alive: HashSet<String> = HashSet::new();
                        for res in 0..RESOURCES.len() {
                            let (objs, _) = store.list(res, None, |_| true);
                            alive.extend(objs.iter().map(|o| meta::uid(o).to_string()));
                        }
                        alive
                    });
                    store
                        .list(res, None, |o| {
                            let owners = owner_uids(o);
                            !owners.is_empty()
                                && owners.iter().all(|u| !alive.contains(*u))
                                && !meta::is_deleting(o)
                        })
                        .0
                }
                Some(gone) => {
                    let uids: HashSet<&str> = gone.iter().map(|(_, u)| u.as_str()).collect();
                    let namespaces: HashSet<&str> =
                        gone.iter().map(|(ns, _)| ns.as_str()).collect();
                    let mut out = Vec::new();
                    for ns in namespaces {
                        // Cluster-scoped owners ("" namespace) can own objects anywhere.
                        let scope = if ns.is_empty() { None } else { Some(ns) };
                        out.extend(
                            store
                                .list(res, scope, |o| {
                                    let owners = owner_uids(o);
                                    !owners.is_empty()
                                        && owners.iter().all(|u| uids.contains(u))
                                        && !meta::is_deleting(o)
                                })
                                .0,
                        );
                    }
                    out
                }
            };
            for o in candidates {
                if let Err(e) = store.delete(
                    res,
                    meta::namespace(&o),
                    meta::name(&o),
                    &DeleteOpts::default(),
                ) {
                    if e.code != 404 {
                        tracing::warn!(
                            "garbage collecting {} {}/{}: {e}",
                            r.plural,
                            meta::namespace(&o),
                            meta::name(&o)
                        );
                    }
                }
            }
        }
        None
    }
}
