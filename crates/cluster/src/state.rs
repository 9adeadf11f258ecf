//! The agent's view of the cluster: small projections of the watched objects (only the fields the
//! datapath needs, so memory stays flat), kept per kind in a [`ProjectedStore`] fed by watcher
//! events, and snapshotted as a [`ClusterState`] for each reconcile.
//!
//! Giving a kind a real projection later (Services, EndpointSlices, NetworkPolicies, Namespaces are
//! watched with only their key today) means: a projection type with a `from_object`, its store
//! field in [`ClusterState`] retyped, and the compiler reading it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::objects::{self, apply_converted, Converted};
use sarasa_model::MacAddr;

pub const ANNOTATION_VTEP_MAC: &str = "sarasa.io/vtep-mac";
pub const ANNOTATION_PUBLIC_IP: &str = "sarasa.io/public-ip";
pub const ANNOTATION_BACKEND: &str = "sarasa.io/backend";
pub const ANNOTATION_OBSERVED_RV: &str = "sarasa.io/observed-resource-version";
pub const READY_REASON: &str = "SarasaAgentReady";

/// What the agent keeps of a Node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub name: String,
    pub pod_cidrs: Vec<IpNet>,
    pub internal_ip: Option<IpAddr>,
    /// `sarasa.io/public-ip`: the node's underlay address for tunnels and host-gw routes.
    pub public_ip: Option<IpAddr>,
    pub vtep_mac: Option<MacAddr>,
    pub backend: Option<String>,
    /// NetworkUnavailable=False set by a sarasa agent.
    pub network_ready: bool,
}

impl NodeInfo {
    pub fn from_object(node: &Node) -> Self {
        let annotations = node.annotations();
        let spec = node.spec.as_ref();
        let mut pod_cidrs: Vec<IpNet> = spec
            .and_then(|s| s.pod_cidrs.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| IpNet::from_str(c).ok())
            .collect();
        if pod_cidrs.is_empty() {
            if let Some(c) = spec.and_then(|s| s.pod_cidr.as_deref()) {
                pod_cidrs.extend(IpNet::from_str(c).ok());
            }
        }
        let status = node.status.as_ref();
        let internal_ip = status.and_then(|s| s.addresses.as_ref()).and_then(|a| {
            a.iter()
                .find(|a| a.type_ == "InternalIP")
                .and_then(|a| IpAddr::from_str(&a.address).ok())
        });
        let network_ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "NetworkUnavailable"
                        && c.status == "False"
                        && c.reason.as_deref() == Some(READY_REASON)
                })
            });
        NodeInfo {
            name: node.name_any(),
            pod_cidrs,
            internal_ip,
            public_ip: annotations
                .get(ANNOTATION_PUBLIC_IP)
                .and_then(|v| IpAddr::from_str(v).ok()),
            vtep_mac: annotations
                .get(ANNOTATION_VTEP_MAC)
                .and_then(|v| MacAddr::from_str(v).ok()),
            backend: annotations.get(ANNOTATION_BACKEND).cloned(),
            network_ready,
        }
    }

    /// The address other nodes use to reach this one: the published underlay address, else the
    /// InternalIP.
    pub fn underlay_ip(&self) -> Option<IpAddr> {
        self.public_ip.or(self.internal_ip)
    }
}

/// What the agent keeps of a Pod (used for the observed resourceVersion now; policy later).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub node_name: Option<String>,
    pub pod_ips: Vec<IpAddr>,
    pub host_network: bool,
}

impl PodInfo {
    pub fn from_object(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        let mut pod_ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .filter_map(|p| IpAddr::from_str(&p.ip).ok())
                    .collect()
            })
            .unwrap_or_default();
        if pod_ips.is_empty() {
            pod_ips.extend(
                status
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|p| IpAddr::from_str(p).ok()),
            );
        }
        let spec = pod.spec.as_ref();
        PodInfo {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            node_name: spec.and_then(|s| s.node_name.clone()),
            pod_ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        }
    }
}

/// resourceVersions are opaque strings in Kubernetes; etcd's (and the lab's) are decimal revision
/// numbers, which is what `sarasa.io/observed-resource-version` compares.
pub fn parse_rv(rv: Option<&str>) -> Option<u64> {
    rv.and_then(|v| v.parse().ok())
}

/// The identity of an object whose content the agent does not use yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

/// A keyed store of projections, maintained from watcher events like a reflector, but keeping
/// only the projection (not the object).
#[derive(Debug, Clone)]
pub struct ProjectedStore<T> {
    items: BTreeMap<String, T>,
    /// Objects received since the last `Init`, swapped in at `InitDone` (a relist is atomic).
    buffer: Option<BTreeMap<String, T>>,
    /// True once the first full list has been received.
    pub synced: bool,
    /// Keys whose projection changed since the last [`ProjectedStore::take_changed`], when the
    /// store keeps a journal (consumers that must not copy or rescan the whole store per change).
    journal: Option<BTreeSet<String>>,
}

impl<T> Default for ProjectedStore<T> {
    fn default() -> Self {
        ProjectedStore {
            items: BTreeMap::new(),
            buffer: None,
            synced: false,
            journal: None,
        }
    }
}

impl<T> ProjectedStore<T> {
    /// An empty store that journals the keys of changed items.
    pub fn journaled() -> Self {
        ProjectedStore {
            journal: Some(BTreeSet::new()),
            ..Self::default()
        }
    }

    /// The keys changed (added, modified or removed) since the last call; empty for a store
    /// without a journal. The journal starts after the first complete list: read every item
    /// first.
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Journals `key` as changed (again), e.g. when a consumer could not program it.
    pub fn note_changed(&mut self, key: &str) {
        if let Some(j) = self.journal.as_mut() {
            j.insert(key.to_string());
        }
    }
}

/// Outcome of feeding one watcher event to a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// The store's visible contents changed.
    pub changed: bool,
    /// Highest resourceVersion carried by the event's objects.
    pub resource_version: Option<u64>,
}

impl<T: PartialEq> ProjectedStore<T> {
    pub fn items(&self) -> &BTreeMap<String, T> {
        &self.items
    }

    /// Applies one watcher event; `key` and `project` extract the store key and the projection.
    pub fn apply<K>(
        &mut self,
        event: watcher::Event<K>,
        key: impl Fn(&K) -> String,
        project: impl Fn(&K) -> T,
        rv: impl Fn(&K) -> Option<u64>,
    ) -> Applied {
        match event {
            watcher::Event::Init => {
                self.buffer = Some(BTreeMap::new());
                Applied::default()
            }
            watcher::Event::InitApply(obj) => {
                let buffer = self.buffer.get_or_insert_with(BTreeMap::new);
                buffer.insert(key(&obj), project(&obj));
                Applied {
                    changed: false,
                    resource_version: rv(&obj),
                }
            }
            watcher::Event::InitDone => {
                let fresh = self.buffer.take().unwrap_or_default();
                let changed = fresh != self.items || !self.synced;
                // The first list is not journaled: a consumer starts from every item.
                if changed && self.synced && self.journal.is_some() {
                    let old = std::mem::take(&mut self.items);
                    for (k, v) in &old {
                        if fresh.get(k) != Some(v) {
                            self.note_changed(k);
                        }
                    }
                    for k in fresh.keys() {
                        if !old.contains_key(k) {
                            self.note_changed(k);
                        }
                    }
                }
                self.items = fresh;
                self.synced = true;
                Applied {
                    changed,
                    resource_version: None,
                }
            }
            watcher::Event::Apply(obj) => {
                let projection = project(&obj);
                let k = key(&obj);
                let changed = self.items.get(&k) != Some(&projection);
                if changed {
                    self.note_changed(&k);
                }
                self.items.insert(k, projection);
                Applied {
                    changed,
                    resource_version: rv(&obj),
                }
            }
            watcher::Event::Delete(obj) => {
                let k = key(&obj);
                let changed = self.items.remove(&k).is_some();
                if changed {
                    self.note_changed(&k);
                }
                Applied {
                    changed,
                    resource_version: rv(&obj),
                }
            }
        }
    }
}

/// A consistent snapshot of everything the agent consumes.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub nodes: ProjectedStore<NodeInfo>,
    pub pods: ProjectedStore<PodInfo>,
    /// Converted for the policy compiler; an object that fails conversion is kept as its error
    /// (see [`crate::objects`]). Services and EndpointSlices live apart, in
    /// [`crate::service_objects::ServiceObjects`]: this state is copied per reconcile, they are
    /// not (100k Services).
    pub network_policies: ProjectedStore<Converted<sarasa_policy::NetworkPolicy>>,
    pub namespaces: ProjectedStore<Converted<sarasa_policy::PolicyNamespace>>,
    /// Pods as NetworkPolicy sees them (labels, container ports), beside `pods`.
    pub policy_pods: ProjectedStore<Converted<sarasa_policy::PolicyPod>>,
    /// Highest resourceVersion among all events received so far.
    pub max_resource_version: u64,
}

impl ClusterState {
    pub fn apply_node_event(&mut self, event: watcher::Event<Node>) -> bool {
        let applied = self.nodes.apply(
            event,
            |n| n.name_any(),
            NodeInfo::from_object,
            |n| parse_rv(n.resource_version().as_deref()),
        );
        self.note_rv(applied)
    }

    pub fn apply_pod_event(&mut self, event: watcher::Event<Pod>) -> bool {
        let policy = apply_converted(&mut self.policy_pods, event.clone(), objects::pod);
        let applied = self.pods.apply(
            event,
            |p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
            PodInfo::from_object,
            |p| parse_rv(p.resource_version().as_deref()),
        );
        self.note_rv(applied) | policy.changed
    }

    pub fn apply_network_policy_event(&mut self, event: watcher::Event<NetworkPolicy>) -> bool {
        let applied = apply_converted(&mut self.network_policies, event, objects::network_policy);
        self.note_rv(applied)
    }

    pub fn apply_namespace_event(&mut self, event: watcher::Event<Namespace>) -> bool {
        let applied = apply_converted(&mut self.namespaces, event, objects::namespace);
        self.note_rv(applied)
    }

    /// Counts the resourceVersion of an event of a kind kept elsewhere; returns `changed`.
    pub fn note_rv(&mut self, applied: Applied) -> bool {
        if let Some(rv) = applied.resource_version {
            self.max_resource_version = self.max_resource_version.max(rv);
        }
        applied.changed
    }

    /// All watched kinds have completed their first list.
    pub fn synced(&self) -> bool {
        self.nodes.synced
            && self.pods.synced
            && self.network_policies.synced
            && self.namespaces.synced
            && self.policy_pods.synced
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.items().get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    pub(crate) fn node(name: &str, rv: u64, cidr: Option<&str>, ip: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.to_string()),
                annotations: Some(
                    [
                        (
                            ANNOTATION_VTEP_MAC.to_string(),
                            "02:00:00:00:00:01".to_string(),
                        ),
                        (ANNOTATION_PUBLIC_IP.to_string(), ip.to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn node_projection_reads_cidr_annotations_and_address() {
        let info = NodeInfo::from_object(&node("n1", 7, Some("10.244.1.0/24"), "192.168.33.11"));
        assert_eq!(
            info.pod_cidrs,
            vec!["10.244.1.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(info.underlay_ip(), Some("192.168.33.11".parse().unwrap()));
        assert_eq!(info.vtep_mac, Some("02:00:00:00:00:01".parse().unwrap()));
        assert!(!info.network_ready);
    }

    #[test]
    fn store_tracks_changes_relists_and_rv() {
        let mut state = ClusterState::default();
        assert!(!state.apply_node_event(watcher::Event::Init));
        assert!(!state.apply_node_event(watcher::Event::InitApply(node(
            "n1",
            5,
            None,
            "192.168.33.11"
        ))));
        assert!(state.apply_node_event(watcher::Event::InitDone));
        assert!(state.nodes.synced);
        assert_eq!(state.max_resource_version, 5);
        // Same projection with a new rv (e.g. a heartbeat) is not a change, but the rv counts.
        assert!(!state.apply_node_event(watcher::Event::Apply(node(
            "n1",
            9,
            None,
            "192.168.33.11"
        ))));
        assert_eq!(state.max_resource_version, 9);
        // The podCIDR arriving is a change.
        assert!(state.apply_node_event(watcher::Event::Apply(node(
            "n1",
            10,
            Some("10.244.1.0/24"),
            "192.168.33.11"
        ))));
        // A relist that lost n1 removes it atomically at InitDone.
        state.apply_node_event(watcher::Event::Init);
        assert!(state.node("n1").is_some());
        assert!(state.apply_node_event(watcher::Event::InitDone));
        assert!(state.node("n1").is_none());
    }
}
