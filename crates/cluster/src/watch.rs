//! Watchers feeding the shared [`Watched`] state: one kube-rs watcher per kind, each event folded
//! into the kind's projection store, then the reconcile loop is woken (it debounces).
//! A new kind = one more `spawn_watcher` call with its `Watched::apply_*_event`.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::service_objects::{ServiceDelta, ServiceObjects};
use crate::state::ClusterState;

/// Everything the watchers maintain.
#[derive(Debug, Default)]
pub struct Watched {
    /// Small projections, copied for each reconcile.
    pub cluster: ClusterState,
    /// Services and EndpointSlices, handed to the proxy as changes.
    pub services: ServiceObjects,
}

impl Watched {
    pub fn apply_node_event(&mut self, event: watcher::Event<Node>) -> bool {
        self.cluster.apply_node_event(event)
    }

    pub fn apply_pod_event(&mut self, event: watcher::Event<Pod>) -> bool {
        self.cluster.apply_pod_event(event)
    }

    pub fn apply_network_policy_event(&mut self, event: watcher::Event<NetworkPolicy>) -> bool {
        self.cluster.apply_network_policy_event(event)
    }

    pub fn apply_namespace_event(&mut self, event: watcher::Event<Namespace>) -> bool {
        self.cluster.apply_namespace_event(event)
    }

    pub fn apply_service_event(&mut self, event: watcher::Event<Service>) -> bool {
        let applied = self.services.apply_service_event(event);
        self.cluster.note_rv(applied)
    }

    pub fn apply_endpoint_slice_event(&mut self, event: watcher::Event<EndpointSlice>) -> bool {
        let applied = self.services.apply_endpoint_slice_event(event);
        self.cluster.note_rv(applied)
    }
}

/// What one reconcile works from, taken atomically: the cluster state, and the Services and
/// EndpointSlices changed since the previous snapshot. Everything up to
/// `cluster.max_resource_version` is in one or the other.
#[derive(Debug)]
pub struct Snapshot {
    pub cluster: ClusterState,
    pub services: ServiceDelta,
    /// Services and EndpointSlices have completed their first list.
    pub services_synced: bool,
    pub service_count: usize,
    pub endpoint_count: usize,
}

impl Snapshot {
    /// Every watched kind has completed its first list.
    pub fn synced(&self) -> bool {
        self.cluster.synced() && self.services_synced
    }
}

/// State shared between the watchers and the reconcile loop.
#[derive(Debug, Default)]
pub struct Shared {
    pub state: Mutex<Watched>,
    /// Woken after every event; `notify_one` keeps a permit, so no event is missed while a
    /// reconcile runs.
    pub changed: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A copy of the cluster state and the Service changes since the last snapshot — or, with
    /// `all_services`, every Service and EndpointSlice (a full rebuild). The caller owns them:
    /// what it cannot program it hands back ([`Shared::requeue`]).
    pub fn snapshot(&self, all_services: bool) -> Snapshot {
        let mut w = self.lock();
        let services = if !w.services.synced() {
            ServiceDelta::default()
        } else if all_services {
            w.services.take_all()
        } else {
            w.services.take_changed()
        };
        Snapshot {
            cluster: w.cluster.clone(),
            services,
            services_synced: w.services.synced(),
            service_count: w.services.service_count(),
            endpoint_count: w.services.endpoint_count(),
        }
    }

    /// Hands back Service changes a reconcile took but did not program.
    pub fn requeue(&self, delta: &ServiceDelta) {
        if !delta.is_empty() {
            self.lock().services.requeue(delta);
        }
    }

    /// Every Service and EndpointSlice (for a full rebuild); clears the change journal.
    pub fn all_services(&self) -> ServiceDelta {
        self.lock().services.take_all()
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut Watched) -> R) -> R {
        let mut guard = self.lock();
        let r = f(&mut guard);
        drop(guard);
        self.changed.notify_one();
        r
    }
}

/// Runs a watcher for `api`, folding events with `apply`, until the task is aborted.
pub fn spawn_watcher<K>(
    api: Api<K>,
    shared: Arc<Shared>,
    apply: fn(&mut Watched, watcher::Event<K>) -> bool,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let kind = K::kind(&Default::default()).to_string();
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    shared.update(|s| apply(s, event));
                }
                Err(e) => tracing::warn!(kind, error = %e, "watch error; retrying"),
            }
        }
    })
}

/// Watches everything the agent consumes: Nodes and Pods (compiled today), Services,
/// EndpointSlices, NetworkPolicies and Namespaces (tracked for the observed resourceVersion).
pub fn spawn_all(client: &kube::Client, shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    vec![
        spawn_watcher(
            Api::<Node>::all(client.clone()),
            shared.clone(),
            Watched::apply_node_event,
        ),
        spawn_watcher(
            Api::<Pod>::all(client.clone()),
            shared.clone(),
            Watched::apply_pod_event,
        ),
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
        spawn_watcher(
            Api::<NetworkPolicy>::all(client.clone()),
            shared.clone(),
            Watched::apply_network_policy_event,
        ),
        spawn_watcher(
            Api::<Namespace>::all(client.clone()),
            shared.clone(),
            Watched::apply_namespace_event,
        ),
    ]
}
