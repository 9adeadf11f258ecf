//! Watchers feeding the shared [`ClusterState`]: one kube-rs watcher per kind, each event folded
//! into the kind's projection store, then the reconcile loop is woken (it debounces).
//! A new kind = one more `spawn_watcher` call with its `ClusterState::apply_*_event`.

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

use crate::state::ClusterState;

/// State shared between the watchers and the reconcile loop.
#[derive(Debug, Default)]
pub struct Shared {
    pub state: Mutex<ClusterState>,
    /// Woken after every event; `notify_one` keeps a permit, so no event is missed while a
    /// reconcile runs.
    pub changed: Notify,
}

impl Shared {
    /// A copy of the current state (projections are small).
    pub fn snapshot(&self) -> ClusterState {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut ClusterState) -> R) -> R {
        let mut guard = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
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
    apply: fn(&mut ClusterState, watcher::Event<K>) -> bool,
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
            ClusterState::apply_node_event,
        ),
        spawn_watcher(
            Api::<Pod>::all(client.clone()),
            shared.clone(),
            ClusterState::apply_pod_event,
        ),
        spawn_watcher(
            Api::<Service>::all(client.clone()),
            shared.clone(),
            ClusterState::apply_service_event,
        ),
        spawn_watcher(
            Api::<EndpointSlice>::all(client.clone()),
            shared.clone(),
            ClusterState::apply_endpoint_slice_event,
        ),
        spawn_watcher(
            Api::<NetworkPolicy>::all(client.clone()),
            shared.clone(),
            ClusterState::apply_network_policy_event,
        ),
        spawn_watcher(
            Api::<Namespace>::all(client.clone()),
            shared.clone(),
            ClusterState::apply_namespace_event,
        ),
    ]
}
