//! The cluster state policy depends on (namespaces, pods, policies, node addresses), with
//! `apply`/`delete` per object so a watcher (or a test) feeds it directly, and the selection
//! questions both the evaluator and the compiler ask.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::{
    Direction, NetworkPolicy, Peer, PodKey, PolicyKey, PolicyNamespace, PolicyPod,
    NAMESPACE_NAME_LABEL,
};
use crate::{LabelSelector, Labels};

/// Everything policy decisions depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyState {
    namespaces: BTreeMap<String, PolicyNamespace>,
    /// Pods by namespace, then name.
    pods: BTreeMap<String, BTreeMap<String, PolicyPod>>,
    policies: BTreeMap<PolicyKey, NetworkPolicy>,
    /// Node name → the node's own addresses (traffic from a pod's own node is always allowed).
    nodes: BTreeMap<String, Vec<IpAddr>>,
}

impl PolicyState {
    pub fn new() -> Self {
        PolicyState::default()
    }

    /// Adds or replaces a namespace (its `kubernetes.io/metadata.name` label is forced).
    pub fn apply_namespace(&mut self, mut ns: PolicyNamespace) {
        ns.labels
            .insert(NAMESPACE_NAME_LABEL.to_string(), ns.name.clone());
        self.namespaces.insert(ns.name.clone(), ns);
    }

    pub fn delete_namespace(&mut self, name: &str) -> Option<PolicyNamespace> {
        self.namespaces.remove(name)
    }

    /// Adds or replaces a pod.
    pub fn apply_pod(&mut self, pod: PolicyPod) {
        self.pods
            .entry(pod.namespace.clone())
            .or_default()
            .insert(pod.name.clone(), pod);
    }

    pub fn delete_pod(&mut self, key: &PodKey) -> Option<PolicyPod> {
        let in_ns = self.pods.get_mut(&key.namespace)?;
        let pod = in_ns.remove(&key.name);
        if in_ns.is_empty() {
            self.pods.remove(&key.namespace);
        }
        pod
    }

    /// Adds or replaces a policy, validating it first; an invalid policy is not stored (and
    /// the others keep being enforced).
    pub fn apply_policy(&mut self, mut policy: NetworkPolicy) -> Result<(), crate::PolicyError> {
        policy.validate()?;
        self.policies.insert(policy.key(), policy);
        Ok(())
    }

    pub fn delete_policy(&mut self, key: &PolicyKey) -> Option<NetworkPolicy> {
        self.policies.remove(key)
    }

    /// Sets the addresses of a node.
    pub fn apply_node(&mut self, name: impl Into<String>, addresses: Vec<IpAddr>) {
        self.nodes.insert(name.into(), addresses);
    }

    pub fn delete_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    pub fn namespace(&self, name: &str) -> Option<&PolicyNamespace> {
        self.namespaces.get(name)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &PolicyNamespace> {
        self.namespaces.values()
    }

    pub fn pod(&self, key: &PodKey) -> Option<&PolicyPod> {
        self.pods.get(&key.namespace)?.get(&key.name)
    }

    /// All pods, by namespace then name.
    pub fn pods(&self) -> impl Iterator<Item = &PolicyPod> {
        self.pods.values().flat_map(|m| m.values())
    }

    /// Pods of one namespace, by name.
    pub fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &PolicyPod> {
        self.pods
            .get(namespace)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn policy(&self, key: &PolicyKey) -> Option<&NetworkPolicy> {
        self.policies.get(key)
    }

    pub fn policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.policies.values()
    }

    /// Policies of one namespace.
    pub fn policies_in<'a>(&'a self, namespace: &str) -> impl Iterator<Item = &'a NetworkPolicy> {
        let start = PodKey::new(namespace, "");
        let namespace = namespace.to_string();
        self.policies
            .range(start..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .map(|(_, p)| p)
    }

    pub fn node_addresses(&self, node: &str) -> &[IpAddr] {
        self.nodes.get(node).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Labels of a namespace; a namespace the state does not know has only its name label.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.get(name) {
            Some(ns) => ns.labels.clone(),
            None => Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())]),
        }
    }

    fn namespace_matches(&self, sel: &LabelSelector, name: &str) -> bool {
        match self.namespaces.get(name) {
            Some(ns) => sel.matches(&ns.labels),
            None => sel.matches(&self.namespace_labels(name)),
        }
    }

    /// The policies that select `pod` and isolate it in `dir`, by key.
    pub fn isolating_policies(&self, pod: &PolicyPod, dir: Direction) -> Vec<&NetworkPolicy> {
        self.policies_in(&pod.namespace)
            .filter(|p| p.isolates(dir) && p.pod_selector.matches(&pod.labels))
            .collect()
    }

    /// Does the pod-selecting `peer` of a policy in `policy_ns` match `pod`?
    /// (`ipBlock` peers are matched on addresses, see [`crate::allowed`].)
    pub fn peer_selects(&self, policy_ns: &str, peer: &Peer, pod: &PolicyPod) -> bool {
        match peer {
            Peer::IpBlock(_) => false,
            Peer::Pods {
                namespace_selector,
                pod_selector,
            } => {
                let ns_ok = match namespace_selector {
                    None => pod.namespace == policy_ns,
                    Some(sel) => self.namespace_matches(sel, &pod.namespace),
                };
                ns_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&pod.labels))
            }
        }
    }

    /// Every pod the pod-selecting `peer` of a policy in `policy_ns` matches.
    pub fn peer_pods<'a>(
        &'a self,
        policy_ns: &'a str,
        peer: &'a Peer,
    ) -> Box<dyn Iterator<Item = &'a PolicyPod> + 'a> {
        match peer {
            Peer::IpBlock(_) => Box::new(std::iter::empty()),
            Peer::Pods {
                namespace_selector: None,
                pod_selector,
            } => Box::new(
                self.pods_in(policy_ns)
                    .filter(move |p| pod_selector.as_ref().is_none_or(|s| s.matches(&p.labels))),
            ),
            Peer::Pods {
                namespace_selector: Some(ns_sel),
                pod_selector,
            } => Box::new(
                self.pods
                    .iter()
                    .filter(move |(ns, _)| self.namespace_matches(ns_sel, ns))
                    .flat_map(|(_, m)| m.values())
                    .filter(move |p| pod_selector.as_ref().is_none_or(|s| s.matches(&p.labels))),
            ),
        }
    }

    /// The pod that owns `ip`, if any (linear; the evaluator's and tests' helper).
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&PolicyPod> {
        self.pods().find(|p| p.ips.contains(&ip))
    }
}
