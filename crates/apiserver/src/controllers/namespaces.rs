//! Namespace termination: a deleted Namespace has its contents deleted, then goes away.
//! (The `kubernetes.io/metadata.name` label is set by admission on every write.)

use std::time::Duration;

use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, ALL, NAMESPACES, RESOURCES};
use crate::store::{DeleteOpts, Event, Store};

pub struct Namespaces;

impl Controller for Namespaces {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    fn watches(&self) -> &'static [ResId] {
        ALL
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        let (terminating, _) = store.list(NAMESPACES, None, meta::is_deleting);
        if terminating.is_empty() {
            return None;
        }
        // Only namespace changes and changes inside terminating namespaces matter.
        if let Some(evs) = events {
            let relevant = evs.iter().any(|e| {
                e.res == NAMESPACES
                    || terminating
                        .iter()
                        .any(|n| meta::name(n) == meta::namespace(&e.obj))
            });
            if !relevant {
                return None;
            }
        }
        for ns in &terminating {
            let ns = meta::name(ns);
            let mut remaining = 0;
            for (res, r) in RESOURCES.iter().enumerate() {
                if !r.namespaced {
                    continue;
                }
                let (objs, _) = store.list(res, Some(ns), |_| true);
                remaining += objs.len();
                for o in objs.iter().filter(|o| !meta::is_deleting(o)) {
                    if let Err(e) = store.delete(res, ns, meta::name(o), &DeleteOpts::default()) {
                        if e.code != 404 {
                            tracing::warn!(
                                "namespace {ns}: deleting {} {}: {e}",
                                r.plural,
                                meta::name(o)
                            );
                        }
                    }
                }
            }
            if remaining == 0 {
                if let Err(e) = store.remove_now(NAMESPACES, "", ns) {
                    tracing::warn!("finalizing namespace {ns}: {e}");
                }
            }
        }
        Some(Duration::from_secs(1))
    }
}
