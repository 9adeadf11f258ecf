//! The cluster view → the served snapshot. Watchers (the shared `sarasa-cluster` plumbing)
//! fold Services, EndpointSlices and Pods into their projections, whose stores journal the
//! keys that changed; after every wake-up the feed takes those keys ([`take_changes`]: the
//! Service kinds' journal, the pod store's), hands only those objects to the [`ZoneState`],
//! and swaps in the snapshot it yields — a change costs its own records, not a scan of the
//! cluster. ([`update`], the diff of a whole view against the state, stays for rebuilds and
//! the scale example.) Queries never wait on this: they keep reading the previous
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

/// One wake-up's worth of changes, taken from the watchers' journals under their lock (Arc
/// clones only) and applied to the [`ZoneState`] after it is released.
#[derive(Debug, Default)]
pub struct Changes {
    pub services: Vec<(String, Option<Arc<sarasa_model::Service>>)>,
    pub slices: Vec<(String, Option<Arc<sarasa_model::EndpointSlice>>)>,
    pub pods: Vec<(String, Option<Arc<sarasa_cluster::PodInfo>>)>,
}

impl Changes {
    /// Objects changed.
    pub fn len(&self) -> usize {
        self.services.len() + self.slices.len() + self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An object that failed conversion counts as gone (its previous version must not stay).
fn converted<T>(items: Vec<sarasa_cluster::DeltaItem<T>>) -> Vec<(String, Option<Arc<T>>)> {
    items
        .into_iter()
        .map(|(k, v)| (k, v.and_then(Result::ok)))
        .collect()
}

/// Starts the pod journal the feed reads (the Service kinds journal already; pods are kept
/// whole for the agent, so their journal is switched on by the consumer that wants it).
pub fn keep_journals(w: &mut Watched) {
    w.cluster.pods.keep_journal();
}

/// The changes since the last take: everything on the `first` take (the journals start after
/// the first complete list), else only the journaled keys — O(changes), never a scan of the
/// cluster.
pub fn take_changes(w: &mut Watched, first: bool) -> Changes {
    let services = if first {
        w.services.take_all()
    } else {
        w.services.take_changed()
    };
    let pod_keys = w.cluster.pods.take_changed();
    let items = w.cluster.pods.items();
    let pods = if first {
        items
            .iter()
            .map(|(k, p)| (k.clone(), Some(Arc::new(p.clone()))))
            .collect()
    } else {
        pod_keys
            .into_iter()
            .map(|k| {
                let p = items.get(&k).map(|p| Arc::new(p.clone()));
                (k, p)
            })
            .collect()
    };
    Changes {
        services: converted(services.services.items),
        slices: converted(services.slices.items),
        pods,
    }
}

/// Hands `changes` to `state` and returns the next snapshot.
pub fn apply(state: &mut ZoneState, changes: Changes, generation: u64) -> ZoneSnapshot {
    for (key, svc) in changes.services {
        state.set_service(&key, svc);
    }
    for (key, slice) in changes.slices {
        state.set_slice(&key, slice);
    }
    for (key, pod) in changes.pods {
        state.set_pod(&key, pod);
    }
    state.snapshot(generation)
}

/// Updates and swaps the snapshot after every change, forever: each wake-up takes the
/// journaled changes (O(changes)), applies them outside the watchers' lock, swaps the
/// snapshot in and drops the cached answers of the names it wrote. `ready` turns true once
/// the first complete view is served.
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
    {
        let mut w = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        keep_journals(&mut w);
    }
    loop {
        shared.changed.notified().await;
        let started = Instant::now();
        let changes = {
            let mut w = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if !synced(&w) {
                continue;
            }
            take_changes(&mut w, generation == 0)
        };
        if generation > 0 && changes.is_empty() {
            continue;
        }
        generation += 1;
        let snapshot = apply(&mut state, changes, generation);
        metrics.snapshot_generation.set(generation as i64);
        metrics.snapshot_records.set(snapshot.record_count as i64);
        zone.store(Arc::new(snapshot));
        if let Some(cache) = &cache {
            // After the swap (see answer_cache's races): only the names this change wrote.
            cache.invalidate(state.changed_names().iter().map(|n| &**n));
        }
        state.forget_changed_names();
        metrics
            .snapshot_build_seconds
            .observe(started.elapsed().as_secs_f64());
        if !ready.swap(true, Ordering::SeqCst) {
            metrics.ready.set(1);
            tracing::info!(generation, "first full sync served");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listed<K>(
        w: &mut Watched,
        apply: fn(&mut Watched, watcher::Event<K>) -> bool,
        objs: Vec<K>,
    ) {
        apply(w, watcher::Event::Init);
        for o in objs {
            apply(w, watcher::Event::InitApply(o));
        }
        apply(w, watcher::Event::InitDone);
    }

    fn service(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name, "resourceVersion": "1"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }))
        .unwrap()
    }

    fn slice(service: &str, ips: &[&str]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": format!("{service}-x"),
                         "resourceVersion": "1",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "hostname": format!("h{}", ip.len()),
                                                     "conditions": {"ready": true}})).collect::<Vec<_>>(),
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap()
    }

    fn pod(name: &str, ip: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name, "resourceVersion": "1"},
            "spec": {"containers": [], "hostname": name, "subdomain": "db"},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        }))
        .unwrap()
    }

    /// The served names and records, comparable.
    fn served(z: &ZoneSnapshot) -> Vec<(String, crate::snapshot::NameEntry)> {
        let mut v: Vec<_> = z
            .names
            .iter()
            .map(|(n, e)| (n.to_ascii(), e.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn journaled_changes_build_what_a_full_rebuild_builds() {
        let config = ZoneConfig::new("cluster.local").unwrap();
        let mut w = Watched::default();
        keep_journals(&mut w);
        let services: Vec<Service> = (0..50)
            .map(|i| service(&format!("s{i}"), &format!("10.96.0.{i}")))
            .chain([service("db", "None")])
            .collect();
        listed(&mut w, Watched::apply_service_event, services);
        listed(
            &mut w,
            Watched::apply_endpoint_slice_event,
            vec![
                slice("db", &["10.244.0.1", "10.244.0.22"]),
                slice("s1", &["10.244.1.1"]),
            ],
        );
        listed(&mut w, apply_pod, vec![pod("p0", "10.244.0.1")]);
        assert!(synced(&w));

        let mut state = ZoneState::new(&config);
        let first = take_changes(&mut w, true);
        assert_eq!(first.len(), 51 + 2 + 1, "the first take is everything");
        let z = apply(&mut state, first, 1);
        assert_eq!(served(&z), served(&snapshot_of(&w, &config, 1)));
        assert!(
            take_changes(&mut w, false).is_empty(),
            "nothing changed since"
        );

        // A Service deleted, one created, a slice changed, a pod added and one removed.
        Watched::apply_service_event(&mut w, watcher::Event::Delete(service("s7", "10.96.0.7")));
        Watched::apply_service_event(&mut w, watcher::Event::Apply(service("new", "10.96.1.1")));
        Watched::apply_endpoint_slice_event(
            &mut w,
            watcher::Event::Apply(slice("db", &["10.244.0.1", "10.244.0.333"])),
        );
        apply_pod(&mut w, watcher::Event::Apply(pod("p1", "10.244.0.22")));
        apply_pod(&mut w, watcher::Event::Delete(pod("p0", "10.244.0.1")));
        let changes = take_changes(&mut w, false);
        assert_eq!(
            (
                changes.services.len(),
                changes.slices.len(),
                changes.pods.len()
            ),
            (2, 1, 2),
            "only the changed objects are taken"
        );
        let z = apply(&mut state, changes, 2);
        assert_eq!(served(&z), served(&snapshot_of(&w, &config, 2)));
        assert!(
            state.changed_names().len() < z.names.len() / 2,
            "the change wrote its names only"
        );
    }
}
