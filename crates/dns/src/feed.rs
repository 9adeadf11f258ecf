//! The cluster view → the served snapshot. Watchers (the shared `sarasa-cluster` plumbing)
//! fold Services, EndpointSlices and Pods into their projections; after every wake-up the feed
//! builds a new [`ZoneSnapshot`] from them and swaps it in atomically. Queries never wait on
//! this: they keep reading the previous generation until the swap.
//!
//! Every change rebuilds the whole snapshot (wake-ups coalesce, so a burst costs one build).
//! Measured with `examples/scale.rs` (release, loaded 2-core machine): 10k Services + 50k
//! endpoints build in ~1.7 s, so a change takes ~1.4 s to be answered, and the process holds
//! ~206 MiB — both over the 100 ms / 100 MB targets. Next step: rebuild only the record sets
//! of the Services a change touches (the cluster journal already names them) and share
//! unchanged sets between generations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::Api;
use sarasa_cluster::watch::{spawn_watcher, Shared, Watched};
use tokio::task::JoinHandle;

use crate::config::ZoneConfig;
use crate::metrics::Metrics;
use crate::snapshot::{build, ZoneSnapshot};

/// The DNS server's view is complete: Services, EndpointSlices and Pods have all listed.
pub fn synced(w: &Watched) -> bool {
    w.services.synced() && w.cluster.pods.synced
}

/// Builds the zone from what the watchers hold now.
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

/// Rebuilds and swaps the snapshot after every change, forever. `ready` turns true once the
/// first complete view is served.
pub async fn run(
    shared: Arc<Shared>,
    config: ZoneConfig,
    zone: Arc<ArcSwap<ZoneSnapshot>>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let mut generation = 0u64;
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
            snapshot_of(&w, &config, generation)
        };
        metrics.snapshot_generation.set(generation as i64);
        metrics.snapshot_records.set(snapshot.record_count as i64);
        zone.store(Arc::new(snapshot));
        metrics
            .snapshot_build_seconds
            .observe(started.elapsed().as_secs_f64());
        if !ready.swap(true, Ordering::SeqCst) {
            metrics.ready.set(1);
            tracing::info!(generation, "first full sync served");
        }
    }
}
