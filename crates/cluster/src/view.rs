//! A one-shot view of the cluster for CLI consumers (`sarasa policy matrix`, `sarasa trace`):
//! every kind listed once and folded through exactly the projections the agent's watchers use
//! (the same [`Watched`] and its `apply_*_event` functions), so what the CLI explains is what
//! the agents program.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::journal::{Converted, Delta, Fed, Rejected};
use crate::objects::{ENDPOINT_SLICE, NAMESPACE, NETWORK_POLICY, POD, SERVICE};
use crate::policy_objects::{build_policy_state, PolicyDelta};
use crate::state::{NodeInfo, PodInfo};
use crate::watch::Watched;

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("listing {kind}: {source}")]
    List {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// The API objects a view is built from, as the API server returns them.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub namespaces: Vec<Namespace>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub network_policies: Vec<NetworkPolicy>,
}

/// The cluster as sarasa's compilers see it. Every map is keyed by `namespace/name` (`name`
/// for Nodes and Namespaces) and sorted; objects whose conversion failed are left out of the
/// maps and listed in `rejected`.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Every Node: name, podCIDRs, InternalIP, underlay (public) IP, vtep MAC, backend.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Every Pod, host-network ones included: node, pod IPs, hostNetwork, phase, uid.
    pub pods: BTreeMap<String, PodInfo>,
    /// The pods NetworkPolicy applies to ([`crate::objects::is_policy_pod`]), as policy sees
    /// them: labels, pod IPs, container ports (for named ports), node.
    pub policy_pods: BTreeMap<String, Arc<sarasa_policy::PolicyPod>>,
    /// Services as the service proxy compiles them (ClusterIPs, ports, NodePorts, traffic
    /// policies, session affinity, ...).
    pub services: BTreeMap<String, Arc<sarasa_model::Service>>,
    /// EndpointSlices as the service proxy compiles them (each names its Service).
    pub endpoint_slices: BTreeMap<String, Arc<sarasa_model::EndpointSlice>>,
    /// NetworkPolicies, converted and validated.
    pub network_policies: BTreeMap<String, Arc<sarasa_policy::NetworkPolicy>>,
    /// The isolating stand-ins of the NetworkPolicies that did not convert (in `rejected`):
    /// the agents enforce these in their place (fail closed), and so does the policy state.
    pub isolated_policies: BTreeMap<String, Arc<sarasa_policy::NetworkPolicy>>,
    /// Namespaces with their labels (for namespaceSelectors).
    pub namespaces: BTreeMap<String, Arc<sarasa_policy::PolicyNamespace>>,
    /// Objects that did not convert, with the reason (the agents leave them out too).
    pub rejected: Vec<Rejected>,
    /// The highest resourceVersion among the listed objects.
    pub resource_version: u64,
}

/// Feeds one kind's list to `w` as a watcher's first list would.
fn fold<K>(w: &mut Watched, apply: fn(&mut Watched, watcher::Event<K>) -> bool, objects: Vec<K>) {
    apply(w, watcher::Event::Init);
    for o in objects {
        apply(w, watcher::Event::InitApply(o));
    }
    apply(w, watcher::Event::InitDone);
}

/// The converted objects of a store, the failures added to `rejected`.
fn split<T>(
    kind: &'static str,
    items: &BTreeMap<String, Converted<T>>,
    rejected: &mut Vec<Rejected>,
) -> BTreeMap<String, Arc<T>> {
    let mut out = BTreeMap::new();
    for (key, item) in items {
        match item {
            Ok(o) => {
                out.insert(key.clone(), o.clone());
            }
            Err(reason) => rejected.push(Rejected {
                kind,
                key: key.clone(),
                reason: reason.clone(),
            }),
        }
    }
    out
}

/// Every object of a map as a complete delta.
fn complete<T>(items: &BTreeMap<String, Arc<T>>) -> Delta<T> {
    Delta {
        items: items
            .iter()
            .map(|(k, v)| (k.clone(), Some(Ok(v.clone()))))
            .collect(),
        complete: true,
    }
}

impl ClusterView {
    /// Folds listed objects through the watchers' projections.
    pub fn from_objects(objects: ClusterObjects) -> ClusterView {
        let mut w = Watched::default();
        fold(&mut w, Watched::apply_node_event, objects.nodes);
        fold(&mut w, Watched::apply_pod_event, objects.pods);
        fold(&mut w, Watched::apply_namespace_event, objects.namespaces);
        fold(&mut w, Watched::apply_service_event, objects.services);
        fold(
            &mut w,
            Watched::apply_endpoint_slice_event,
            objects.endpoint_slices,
        );
        fold(
            &mut w,
            Watched::apply_network_policy_event,
            objects.network_policies,
        );
        let mut rejected = Vec::new();
        ClusterView {
            nodes: w.cluster.nodes.items().clone(),
            pods: w.cluster.pods.items().clone(),
            policy_pods: split(POD, w.policy.pods(), &mut rejected),
            services: split(SERVICE, w.services.services(), &mut rejected),
            endpoint_slices: split(ENDPOINT_SLICE, w.services.slices(), &mut rejected),
            network_policies: split(NETWORK_POLICY, w.policy.policies(), &mut rejected),
            isolated_policies: w.policy.stand_ins().clone(),
            namespaces: split(NAMESPACE, w.policy.namespaces(), &mut rejected),
            rejected,
            resource_version: w.cluster.max_resource_version,
        }
    }

    /// The NetworkPolicy state of the cluster, built by the rule the agents' enforcers use
    /// ([`build_policy_state`]: policy pods only, node addresses, invalid policies replaced
    /// by their isolating stand-ins).
    pub fn policy_state(&self) -> sarasa_policy::PolicyState {
        self.build_policy_state().0
    }

    /// [`ClusterView::policy_state`], with what building it left out (NetworkPolicies the
    /// policy state refuses; conversion failures are in `rejected` already).
    pub fn build_policy_state(&self) -> (sarasa_policy::PolicyState, Fed) {
        let nodes = Delta {
            items: self
                .nodes
                .iter()
                .map(|(k, v)| (k.clone(), Some(Ok(Arc::new(v.clone())))))
                .collect(),
            complete: true,
        };
        let (mut state, fed) = build_policy_state(PolicyDelta {
            namespaces: complete(&self.namespaces),
            nodes,
            pods: complete(&self.policy_pods),
            policies: complete(&self.network_policies),
            stand_ins: Default::default(),
        });
        // What the enforcers do with a policy that did not convert (fail closed).
        for np in self.isolated_policies.values() {
            if let Err(e) = state.apply_policy(sarasa_policy::NetworkPolicy::clone(np)) {
                tracing::warn!(networkpolicy = %np.key(), error = %e, "isolating stand-in refused");
            }
        }
        (state, fed)
    }

    /// The EndpointSlices of the Service `namespace/name`.
    pub fn endpoint_slices_of<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
    ) -> impl Iterator<Item = &'a Arc<sarasa_model::EndpointSlice>> + 'a {
        self.endpoint_slices
            .values()
            .filter(move |s| s.namespace == namespace && s.service_name == service)
    }
}

async fn list<K>(client: &kube::Client, kind: &'static str) -> Result<Vec<K>, ClusterError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|source| ClusterError::List { kind, source })
}

/// Lists every kind sarasa consumes once (concurrently).
pub async fn list_objects(client: &kube::Client) -> Result<ClusterObjects, ClusterError> {
    let (nodes, pods, namespaces, services, endpoint_slices, network_policies) = futures::try_join!(
        list::<Node>(client, "nodes"),
        list::<Pod>(client, "pods"),
        list::<Namespace>(client, "namespaces"),
        list::<Service>(client, "services"),
        list::<EndpointSlice>(client, "endpointslices"),
        list::<NetworkPolicy>(client, "networkpolicies"),
    )?;
    Ok(ClusterObjects {
        nodes,
        pods,
        namespaces,
        services,
        endpoint_slices,
        network_policies,
    })
}

/// The cluster as the agents see it: every kind listed once and folded through the
/// watchers' projections.
pub async fn list_view(client: &kube::Client) -> Result<ClusterView, ClusterError> {
    Ok(ClusterView::from_objects(list_objects(client).await?))
}
