//! The cluster view → the served snapshot. Watchers (the shared `sarasa-cluster` plumbing)
//! fold Services, EndpointSlices and Pods into their projections; after every wake-up the feed
//! finds which objects changed (by key: the projections are `Arc`s, so an unchanged object is
//! the same pointer; pods compare by value), hands only those to the [`ZoneState`], and swaps
//! in the snapshot it yields. Queries never wait on this: they keep reading the previous
//! generation until the swap. Wake-ups coalesce, so a burst costs one update.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::Api;
use sarasa_cluster::journal::Converted;
use sarasa_cluster::watch::{spawn_watcher, Shared, Watched};
use tokio::task::JoinHandle;

use crate::answer_cache::AnswerCache;
use crate::config::ZoneConfig;
use crate::incremental::ZoneState;
use crate::metrics::Metrics;
use crate::snapshot::{build, ZoneSnapshot};

/// The DNS server's view is complete: Services, EndpointSlices and Pods have all listed.
pub fn synced(w: &Watched) -> bool {
    w.services.synced() && w.cluster.pods.synced
}

/// Builds the zone from what the watchers hold now, from scratch.
pub fn snapshot_of(w: &Watched, config: &ZoneConfig, generation: u64) -> ZoneSnapshot {
    build(
        config,
        generation,
        w.services
            .services()
            .values()
            .filter_map(|s| s.as_deref().ok()),
        w.services
            .slices()
            .values()
            .filter_map(|s| s.as_deref().ok()),
        w.cluster.pods.items().values(),
    )
}

/// Hands `state` the objects that differ between it and the watchers' view (changed, added
/// or gone; an object that failed to convert counts as gone) and returns the next snapshot.
pub fn update(state: &mut ZoneState, w: &Watched, generation: u64) -> ZoneSnapshot {
    let services: Vec<_> = diff_arcs(state.services(), w.services.services());
    for (key, svc) in services {
        state.set_service(&key, svc);
    }
    let slices: Vec<_> = diff_arcs(state.slices(), w.services.slices());
    for (key, slice) in slices {
        state.set_slice(&key, slice);
    }
    let held = state.pods();
    let current = w.cluster.pods.items();
    let mut pods: Vec<(String, Option<Arc<sarasa_cluster::PodInfo>>)> = current
        .iter()
        .filter(|(k, p)| held.get(*k).is_none_or(|h| **h != **p))
        .map(|(k, p)| (k.clone(), Some(Arc::new(p.clone()))))
        .collect();
    pods.extend(
        held.keys()
            .filter(|k| !current.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    for (key, pod) in pods {
        state.set_pod(&key, pod);
    }
    state.snapshot(generation)
}

/// The keys whose object differs between `held` and `current`, with the current object.
fn diff_arcs<T>(
    held: &BTreeMap<String, Arc<T>>,
    current: &BTreeMap<String, Converted<T>>,
) -> Vec<(String, Option<Arc<T>>)> {
    let mut changed: Vec<(String, Option<Arc<T>>)> = current
        .iter()
        .filter_map(|(k, c)| {
            let now = c.as_ref().ok();
            match (held.get(k), now) {
                (Some(h), Some(n)) if Arc::ptr_eq(h, n) => None,
                (None, None) => None,
                _ => Some((k.clone(), now.cloned())),
            }
        })
        .collect();
    changed.extend(
        held.keys()
            .filter(|k| !current.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    changed
}

// Pods only feed the pod projection (not the policy one the agent also keeps).
fn apply_pod(w: &mut Watched, e: watcher::Event<Pod>) -> bool {
    w.cluster.apply_pod_event(e)
}

/// Starts the watchers of the three kinds DNS serves.
pub fn spawn_watchers(client: &kube::Client, shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    vec![
        spawn_watcher(
            Api::<Service>::all(client.clone()),
            shared.clone(),
            Watched::apply_service_event,
        ),
        spawn_watcher(
            Api::<EndpointSlice>::all(client.clone()),
            shared.clone(),
            Watched::apply_endpoint_slice_event,
        ),
        spawn_watcher(Api::<Pod>::all(client.clone()), shared.clone(), apply_pod),
    ]
}

/// Updates and swaps the snapshot after every change, forever. `ready` turns true once the
/// first complete view is served.
pub async fn run(
    shared: Arc<Shared>,
    config: ZoneConfig,
    zone: Arc<ArcSwap<ZoneSnapshot>>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    cache: Option<Arc<AnswerCache>>,
) {
    let mut generation = 0u64;
    let mut state = ZoneState::new(&config);
    loop {
        shared.changed.notified().await;
        let started = Instant::now();
        let snapshot = {
            let w = match shared.state.lock() {
                Ok(w) => w,
                Err(poisoned) => poisoned.into_inner(),
            };
            if !synced(&w) {
                continue;
            }
            generation += 1;
            update(&mut state, &w, generation)
        };
        metrics.snapshot_generation.set(generation as i64);
        metrics.snapshot_records.set(snapshot.record_count as i64);
        zone.store(Arc::new(snapshot));
        if let Some(cache) = &cache {
            // After the swap (see answer_cache's races): only the names this change wrote.
            cache.invalidate(state.changed_names().iter().map(|n| &**n));
        }
        metrics
            .snapshot_build_seconds
            .observe(started.elapsed().as_secs_f64());
        if !ready.swap(true, Ordering::SeqCst) {
            metrics.ready.set(1);
            tracing::info!(generation, "first full sync served");
        }
    }
}
