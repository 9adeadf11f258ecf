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

use crate::policy_objects::{PolicyDelta, PolicyObjects};
use crate::service_objects::{ServiceDelta, ServiceObjects};
use crate::state::ClusterState;

/// Everything the watchers maintain. [`crate::list_view`] folds a one-shot list through the
/// same `apply_*_event` functions.
#[derive(Debug, Default)]
pub struct Watched {
    /// Nodes and Pods, copied for each reconcile (the node plan reads them).
    pub cluster: ClusterState,
    /// Services and EndpointSlices, handed to the proxy as changes.
    pub services: ServiceObjects,
    /// Namespaces, policy pods and NetworkPolicies, handed to the policy compiler as changes
    /// (with the node changes of `cluster.nodes`).
    pub policy: PolicyObjects,
}

impl Watched {
    pub fn apply_node_event(&mut self, event: watcher::Event<Node>) -> bool {
        self.cluster.apply_node_event(event)
    }

    pub fn apply_pod_event(&mut self, event: watcher::Event<Pod>) -> bool {
        let policy = self.policy.apply_pod_event(event.clone());
        self.cluster.apply_pod_event(event) | policy.changed
    }

    pub fn apply_network_policy_event(&mut self, event: watcher::Event<NetworkPolicy>) -> bool {
        let applied = self.policy.apply_network_policy_event(event);
        self.cluster.note_rv(applied)
    }

    pub fn apply_namespace_event(&mut self, event: watcher::Event<Namespace>) -> bool {
        let applied = self.policy.apply_namespace_event(event);
        self.cluster.note_rv(applied)
    }

    pub fn apply_service_event(&mut self, event: watcher::Event<Service>) -> bool {
        let applied = self.services.apply_service_event(event);
        self.cluster.note_rv(applied)
    }

    pub fn apply_endpoint_slice_event(&mut self, event: watcher::Event<EndpointSlice>) -> bool {
        let applied = self.services.apply_endpoint_slice_event(event);
        self.cluster.note_rv(applied)
    }

    /// Every watched kind has completed its first list.
    pub fn synced(&self) -> bool {
        self.cluster.synced() && self.services.synced() && self.policy.synced()
    }

    /// The policy inputs changed since the last take.
    pub fn take_policy_changed(&mut self) -> PolicyDelta {
        self.policy.take_changed(&mut self.cluster.nodes)
    }

    /// Every policy input (pointers); clears their journals.
    pub fn take_policy_all(&mut self) -> PolicyDelta {
        self.policy.take_all(&mut self.cluster.nodes)
    }
}

/// What one reconcile works from, taken atomically: the cluster state, and the objects of the
/// journaled kinds changed since the previous snapshot. Everything up to
/// `cluster.max_resource_version` is in one or the other.
#[derive(Debug)]
pub struct Snapshot {
    pub cluster: ClusterState,
    pub services: ServiceDelta,
    pub policy: PolicyDelta,
    /// Every watched kind has completed its first list.
    pub synced: bool,
    pub service_count: usize,
    pub endpoint_count: usize,
}

impl Snapshot {
    /// Every watched kind has completed its first list.
    pub fn synced(&self) -> bool {
        self.synced
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

    /// A copy of the cluster state and the changes of the journaled kinds since the last
    /// snapshot — or, with `all_services`, every Service and EndpointSlice (a full rebuild).
    /// Nothing is taken before every kind has completed its first list. The caller owns the
    /// changes: what it cannot program it hands back ([`Shared::requeue`],
    /// [`Shared::requeue_policy`]).
    pub fn snapshot(&self, all_services: bool) -> Snapshot {
        let mut w = self.lock();
        let synced = w.synced();
        let (services, policy) = if !synced {
            (ServiceDelta::default(), PolicyDelta::default())
        } else if all_services {
            (w.services.take_all(), w.take_policy_changed())
        } else {
            (w.services.take_changed(), w.take_policy_changed())
        };
        Snapshot {
            cluster: w.cluster.clone(),
            services,
            policy,
            synced,
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

    /// Hands back policy changes a reconcile took but did not program.
    pub fn requeue_policy(&self, delta: &PolicyDelta) {
        if !delta.is_empty() {
            let mut w = self.lock();
            let w = &mut *w;
            w.policy.requeue(delta, &mut w.cluster.nodes);
        }
    }

    /// Every Service and EndpointSlice (for a full rebuild); clears the change journal.
    pub fn all_services(&self) -> ServiceDelta {
        self.lock().services.take_all()
    }

    /// Every policy input (for a full rebuild); clears their change journals.
    pub fn all_policy(&self) -> PolicyDelta {
        self.lock().take_policy_all()
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

/// Watches everything the agent consumes: Nodes, Pods, Services, EndpointSlices,
/// NetworkPolicies and Namespaces.
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

    fn pod(name: &str, rv: u64) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": name, "resourceVersion": rv.to_string()},
            "spec": {"containers": []},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.2"}]}
        }))
        .unwrap()
    }

    #[test]
    fn snapshot_takes_every_journal_once_synced_and_requeues() {
        let shared = Shared::default();
        shared.update(|w| listed(w, Watched::apply_pod_event, vec![pod("a", 3)]));
        // Not every kind has listed: nothing is taken.
        let s = shared.snapshot(false);
        assert!(!s.synced() && s.policy.is_empty() && s.services.is_empty());
        shared.update(|w| {
            listed(w, Watched::apply_node_event, vec![]);
            listed(w, Watched::apply_namespace_event, vec![]);
            listed(w, Watched::apply_network_policy_event, vec![]);
            listed(w, Watched::apply_service_event, vec![]);
            listed(w, Watched::apply_endpoint_slice_event, vec![]);
        });
        let s = shared.snapshot(true);
        assert!(s.synced());
        assert!(s.services.complete() && s.policy.is_empty());
        assert_eq!(s.cluster.max_resource_version, 3);
        assert_eq!(shared.all_policy().pods.len(), 1);

        shared.update(|w| w.apply_pod_event(watcher::Event::Apply(pod("b", 4))));
        let s = shared.snapshot(false);
        assert_eq!(s.policy.pods.len(), 1);
        assert!(!s.policy.complete());
        // A reconcile that did not get to policy hands the change back.
        shared.requeue_policy(&s.policy);
        assert_eq!(shared.snapshot(false).policy.pods.len(), 1);
        assert!(shared.snapshot(false).policy.is_empty());
    }
}
