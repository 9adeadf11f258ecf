//! The objects NetworkPolicy depends on — Namespaces, policy pods, NetworkPolicies, and node
//! addresses — journaled like the Services ([`crate::service_objects`]), and the
//! [`Consumer`] implementations that fold them into a [`PolicyState`] (a full build, CLI views)
//! or a live [`PolicyCompiler`] (the enforcer's incremental updates).
//!
//! Both go through [`PolicyDelta::feed`], so every policy state sarasa builds — enforced or
//! shown — has the same pod set ([`crate::objects::is_policy_pod`]), the same node addresses
//! ([`NodeInfo::policy_addresses`]) and the same handling of invalid policies.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy as K8sNetworkPolicy;
use kube::runtime::watcher;
use sarasa_policy::{
    NetworkPolicy, PodKey, PolicyCompiler, PolicyNamespace, PolicyPod, PolicyState,
};

use crate::journal::{split_key, Consumer, Converted, Delta, Fed};
use crate::objects::{
    self, apply_converted, apply_projected, NAMESPACE, NETWORK_POLICY, NODE, POD,
};
use crate::state::NodeInfo;
use crate::store::{Applied, ProjectedStore};

/// The policy inputs changed since the previous take, or (all `complete`) every one of them.
#[derive(Debug, Default)]
pub struct PolicyDelta {
    pub namespaces: Delta<PolicyNamespace>,
    /// Nodes, for their addresses ([`NodeInfo::policy_addresses`]).
    pub nodes: Delta<NodeInfo>,
    /// Policy pods only ([`crate::objects::is_policy_pod`]).
    pub pods: Delta<PolicyPod>,
    pub policies: Delta<NetworkPolicy>,
    /// The isolating stand-ins ([`NetworkPolicy::fail_closed`]) of NetworkPolicies that did
    /// not convert, by key: fed after such a policy is reported rejected, so its pods are
    /// isolated rather than left open (fail closed).
    pub stand_ins: BTreeMap<String, Arc<NetworkPolicy>>,
}

impl PolicyDelta {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.namespaces.len() + self.nodes.len() + self.pods.len() + self.policies.len()
    }

    /// Every object is listed (a full rebuild).
    pub fn complete(&self) -> bool {
        self.namespaces.complete
            && self.nodes.complete
            && self.pods.complete
            && self.policies.complete
    }

    /// Feeds Namespaces and nodes first, pods next, NetworkPolicies last: a policy's peers
    /// resolve against the newest pods and labels.
    pub fn feed<C>(self, consumer: &mut C) -> Fed
    where
        C: Consumer<PolicyNamespace>
            + Consumer<NodeInfo>
            + Consumer<PolicyPod>
            + Consumer<NetworkPolicy>,
    {
        let mut fed = Fed::default();
        self.namespaces.feed(NAMESPACE, consumer, &mut fed);
        self.nodes.feed(NODE, consumer, &mut fed);
        self.pods.feed(POD, consumer, &mut fed);
        let before = fed.rejected.len();
        self.policies.feed(NETWORK_POLICY, consumer, &mut fed);
        // Fail closed: a policy that did not convert still isolates what it selects.
        for r in &fed.rejected[before..] {
            if let Some(np) = self.stand_ins.get(&r.key) {
                if let Err(e) = Consumer::<NetworkPolicy>::apply(consumer, np.clone()) {
                    tracing::warn!(networkpolicy = %r.key, error = %e, "isolating stand-in refused");
                }
            }
        }
        fed
    }
}

/// The policy state of a complete delta: the one rule by which the enforcer (on a full
/// rebuild) and every CLI view build it. Objects left out are in the returned [`Fed`].
pub fn build_policy_state(all: PolicyDelta) -> (PolicyState, Fed) {
    let mut state = PolicyState::new();
    let fed = all.feed(&mut state);
    (state, fed)
}

/// The watched Namespaces, policy pods and NetworkPolicies (nodes are in
/// [`crate::ClusterState`], which the node plan reads too).
#[derive(Debug)]
pub struct PolicyObjects {
    namespaces: ProjectedStore<Converted<PolicyNamespace>>,
    pods: ProjectedStore<Converted<PolicyPod>>,
    policies: ProjectedStore<Converted<NetworkPolicy>>,
    /// Isolating stand-ins of the NetworkPolicies that do not convert (see
    /// [`PolicyDelta::stand_ins`]).
    stand_ins: BTreeMap<String, Arc<NetworkPolicy>>,
}

impl Default for PolicyObjects {
    fn default() -> Self {
        PolicyObjects {
            namespaces: ProjectedStore::journaled(),
            pods: ProjectedStore::journaled(),
            policies: ProjectedStore::journaled(),
            stand_ins: BTreeMap::new(),
        }
    }
}

fn node_converted(n: &NodeInfo) -> Converted<NodeInfo> {
    Ok(Arc::new(n.clone()))
}

impl PolicyObjects {
    pub fn apply_namespace_event(&mut self, event: watcher::Event<Namespace>) -> Applied {
        apply_converted(&mut self.namespaces, event, objects::namespace)
    }

    /// Only policy pods enter the store; a pod that stops being one leaves it.
    pub fn apply_pod_event(&mut self, event: watcher::Event<Pod>) -> Applied {
        apply_projected(&mut self.pods, event, objects::policy_pod)
    }

    pub fn apply_network_policy_event(
        &mut self,
        event: watcher::Event<K8sNetworkPolicy>,
    ) -> Applied {
        match &event {
            watcher::Event::Apply(np) | watcher::Event::InitApply(np) => {
                let key = objects::key_of(np);
                match objects::network_policy(np) {
                    Ok(_) => self.stand_ins.remove(&key),
                    Err(_) => self
                        .stand_ins
                        .insert(key, Arc::new(NetworkPolicy::fail_closed(np))),
                };
            }
            watcher::Event::Delete(np) => {
                self.stand_ins.remove(&objects::key_of(np));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        apply_converted(&mut self.policies, event, objects::network_policy)
    }

    /// Every kind has completed its first list.
    pub fn synced(&self) -> bool {
        self.namespaces.synced && self.pods.synced && self.policies.synced
    }

    pub fn namespaces(&self) -> &BTreeMap<String, Converted<PolicyNamespace>> {
        self.namespaces.items()
    }

    pub fn pods(&self) -> &BTreeMap<String, Converted<PolicyPod>> {
        self.pods.items()
    }

    pub fn policies(&self) -> &BTreeMap<String, Converted<NetworkPolicy>> {
        self.policies.items()
    }

    /// The isolating stand-ins of the NetworkPolicies that do not convert, by key.
    pub fn stand_ins(&self) -> &BTreeMap<String, Arc<NetworkPolicy>> {
        &self.stand_ins
    }

    /// The changes since the last take (node changes from `nodes`' journal).
    pub fn take_changed(&mut self, nodes: &mut ProjectedStore<NodeInfo>) -> PolicyDelta {
        PolicyDelta {
            namespaces: self.namespaces.take_delta(Clone::clone),
            nodes: nodes.take_delta(node_converted),
            pods: self.pods.take_delta(Clone::clone),
            policies: self.policies.take_delta(Clone::clone),
            stand_ins: self.stand_ins.clone(),
        }
    }

    /// Every object (pointers, not copies); clears the journals, which it subsumes.
    pub fn take_all(&mut self, nodes: &mut ProjectedStore<NodeInfo>) -> PolicyDelta {
        PolicyDelta {
            namespaces: self.namespaces.take_all(Clone::clone),
            nodes: nodes.take_all(node_converted),
            pods: self.pods.take_all(Clone::clone),
            policies: self.policies.take_all(Clone::clone),
            stand_ins: self.stand_ins.clone(),
        }
    }

    /// Journals again the keys of a delta its consumer did not take.
    pub fn requeue(&mut self, delta: &PolicyDelta, nodes: &mut ProjectedStore<NodeInfo>) {
        self.namespaces.requeue(&delta.namespaces);
        nodes.requeue(&delta.nodes);
        self.pods.requeue(&delta.pods);
        self.policies.requeue(&delta.policies);
    }
}

fn pod_key(key: &str) -> PodKey {
    let (ns, name) = split_key(key);
    PodKey::new(ns, name)
}

/// `PolicyState` and `PolicyCompiler` have the same apply/delete vocabulary; one body serves
/// both. A NetworkPolicy either refuses is withdrawn (its previous version too): an object the
/// API holds in a form we cannot enforce must not keep old rules.
macro_rules! policy_consumer {
    ($t:ty) => {
        impl Consumer<PolicyNamespace> for $t {
            fn apply(&mut self, ns: Arc<PolicyNamespace>) -> Result<(), String> {
                self.apply_namespace(PolicyNamespace::clone(&ns));
                Ok(())
            }
            fn delete(&mut self, key: &str) {
                self.delete_namespace(key);
            }
        }

        impl Consumer<NodeInfo> for $t {
            fn apply(&mut self, node: Arc<NodeInfo>) -> Result<(), String> {
                self.apply_node(node.name.as_str(), node.policy_addresses());
                Ok(())
            }
            fn delete(&mut self, key: &str) {
                self.delete_node(key);
            }
        }

        impl Consumer<PolicyPod> for $t {
            fn apply(&mut self, pod: Arc<PolicyPod>) -> Result<(), String> {
                self.apply_pod(PolicyPod::clone(&pod));
                Ok(())
            }
            fn delete(&mut self, key: &str) {
                self.delete_pod(&pod_key(key));
            }
        }

        impl Consumer<NetworkPolicy> for $t {
            /// A policy refused is replaced by its isolating form (same pods, same
            /// directions, nothing allowed): fail closed, its pods are not left open.
            fn apply(&mut self, np: Arc<NetworkPolicy>) -> Result<(), String> {
                self.apply_policy(NetworkPolicy::clone(&np)).map_err(|e| {
                    if self.apply_policy(np.isolating()).is_err() {
                        self.delete_policy(&np.key());
                    }
                    e.to_string()
                })
            }
            fn delete(&mut self, key: &str) {
                self.delete_policy(&pod_key(key));
            }
        }
    };
}

policy_consumer!(PolicyState);
policy_consumer!(PolicyCompiler);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, extra: serde_json::Value) -> Pod {
        let mut v = json!({
            "metadata": {"namespace": "x", "name": name, "labels": {"pod": name}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIPs": [{"ip": ip}]}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn policy(name: &str, spec: serde_json::Value) -> K8sNetworkPolicy {
        serde_json::from_value(json!({"metadata": {"namespace": "x", "name": name}, "spec": spec}))
            .unwrap()
    }

    fn node(name: &str, ip: &str) -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(json!({"metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}))
        .unwrap()
    }

    /// Objects as a first list delivers them.
    fn listed(o: &mut PolicyObjects, nodes: &mut crate::ClusterState) {
        o.apply_namespace_event(watcher::Event::Init);
        o.apply_namespace_event(watcher::Event::InitApply(
            serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
        ));
        o.apply_namespace_event(watcher::Event::InitDone);
        o.apply_pod_event(watcher::Event::Init);
        o.apply_pod_event(watcher::Event::InitApply(pod("a", "10.244.1.2", json!({}))));
        o.apply_pod_event(watcher::Event::InitApply(pod(
            "host",
            "192.168.33.11",
            json!({"spec": {"hostNetwork": true}}),
        )));
        o.apply_pod_event(watcher::Event::InitDone);
        o.apply_network_policy_event(watcher::Event::Init);
        o.apply_network_policy_event(watcher::Event::InitApply(policy(
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        )));
        o.apply_network_policy_event(watcher::Event::InitDone);
        nodes.apply_node_event(watcher::Event::Init);
        nodes.apply_node_event(watcher::Event::InitApply(node("n1", "192.168.33.11")));
        nodes.apply_node_event(watcher::Event::InitDone);
    }

    #[test]
    fn journal_per_kind_feeds_a_compiler_like_a_full_build() {
        let mut o = PolicyObjects::default();
        let mut cluster = crate::ClusterState::default();
        listed(&mut o, &mut cluster);
        assert!(o.synced());
        assert!(o.take_changed(&mut cluster.nodes).is_empty());

        let all = o.take_all(&mut cluster.nodes);
        assert!(all.complete());
        let (state, fed) = build_policy_state(all);
        assert!(fed.rejected.is_empty(), "{:?}", fed.rejected);
        // The host-network pod is not a policy pod.
        let pods: Vec<String> = state.pods().map(|p| p.key().to_string()).collect();
        assert_eq!(pods, ["x/a"]);
        assert_eq!(
            state.node_addresses("n1"),
            ["192.168.33.11".parse::<std::net::IpAddr>().unwrap()]
        );
        let mut compiler = PolicyCompiler::new(state, Default::default());

        // Changes of every kind flow as one delta.
        o.apply_pod_event(watcher::Event::Apply(pod("b", "10.244.1.3", json!({}))));
        o.apply_pod_event(watcher::Event::Apply(pod(
            "a",
            "10.244.1.2",
            json!({"status": {"phase": "Succeeded"}}),
        )));
        o.apply_network_policy_event(watcher::Event::Apply(policy(
            "broken",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
        )));
        o.apply_network_policy_event(watcher::Event::Delete(policy("deny", json!({}))));
        cluster.apply_node_event(watcher::Event::Apply(node("n2", "192.168.33.12")));
        o.apply_namespace_event(watcher::Event::Apply(
            serde_json::from_value(json!({"metadata": {"name": "y", "labels": {"team": "a"}}}))
                .unwrap(),
        ));
        let d = o.take_changed(&mut cluster.nodes);
        assert_eq!(
            (
                d.namespaces.len(),
                d.nodes.len(),
                d.pods.len(),
                d.policies.len()
            ),
            (1, 1, 2, 2)
        );
        // Handed back (a reconcile that could not program it), it comes again.
        o.requeue(&d, &mut cluster.nodes);
        let d = o.take_changed(&mut cluster.nodes);
        assert_eq!(d.len(), 6);
        let fed = d.feed(&mut compiler);
        assert_eq!((fed.applied, fed.deleted), (3, 2));
        assert_eq!(compiler.state().namespace_labels("y")["team"], "a");
        let rejected: Vec<String> = fed.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(rejected.len(), 1);
        assert!(
            rejected[0].starts_with("NetworkPolicy x/broken: ") && rejected[0].contains("endPort"),
            "{rejected:?}"
        );
        let pods: Vec<String> = compiler
            .state()
            .pods()
            .map(|p| p.key().to_string())
            .collect();
        assert_eq!(pods, ["x/b"], "a finished pod leaves the policy pods");
        // Fail closed: the broken policy is enforced as its isolating stand-in (the pods it
        // selects, in its directions, nothing allowed), not dropped.
        let enforced: Vec<&NetworkPolicy> = compiler.state().policies().collect();
        assert_eq!(enforced.len(), 1);
        assert_eq!(enforced[0].name, "broken");
        assert!(enforced[0].ingress.is_empty() && enforced[0].egress.is_empty());
        assert_eq!(
            enforced[0].policy_types,
            [sarasa_policy::Direction::Ingress],
            "its implicit policyTypes"
        );
        assert_eq!(compiler.state().node_addresses("n2").len(), 1);
        assert!(!compiler.take_transaction().is_empty());

        // The journal is drained; a full build of everything now equals the compiler's state.
        assert!(o.take_changed(&mut cluster.nodes).is_empty());
        let (full, _) = build_policy_state(o.take_all(&mut cluster.nodes));
        assert_eq!(&full, compiler.state());
    }

    #[test]
    fn a_refused_policy_withdraws_its_previous_version() {
        let mut state = PolicyState::new();
        let good = objects::network_policy(&policy(
            "p",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ))
        .unwrap();
        assert!(Consumer::<NetworkPolicy>::apply(&mut state, good.clone()).is_ok());
        let mut bad = NetworkPolicy::clone(&good);
        bad.ingress.push(sarasa_policy::PolicyRule {
            ports: vec![sarasa_policy::PolicyPort {
                protocol: sarasa_policy::Protocol::Tcp,
                port: Some(sarasa_policy::PortRef::Number(90)),
                end_port: Some(80),
            }],
            ..Default::default()
        });
        assert!(Consumer::<NetworkPolicy>::apply(&mut state, Arc::new(bad)).is_err());
        // Its previous rules are gone; what is left isolates the same pods, allowing nothing.
        let left: Vec<&NetworkPolicy> = state.policies().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(*left[0], good.isolating());
    }
}
