//! Projections of the objects the service proxy and the policy compiler consume: each object
//! converted once, when its watch event arrives, into the compiler's domain type. A conversion
//! error is kept (not dropped) so the consumer can report it and leave the object out while
//! every other object keeps being programmed. Values sit behind an [`Arc`]: a compiler's state,
//! a journal's delta and a [`crate::ClusterView`] share them.
//!
//! Which pods NetworkPolicy applies to is decided here, once ([`is_policy_pod`]), so the
//! enforcer and every CLI view build the same pod set.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::journal::Converted;
use crate::store::{parse_rv, Applied, ProjectedStore};

/// The kind names deltas and rejections carry.
pub const SERVICE: &str = "Service";
pub const ENDPOINT_SLICE: &str = "EndpointSlice";
pub const NETWORK_POLICY: &str = "NetworkPolicy";
pub const NAMESPACE: &str = "Namespace";
pub const POD: &str = "Pod";
pub const NODE: &str = "Node";

pub fn service(svc: &Service) -> Converted<sarasa_model::Service> {
    sarasa_model::Service::try_from(svc)
        .map(Arc::new)
        .map_err(|e| format!("field {}: {}", e.field, e.message))
}

pub fn endpoint_slice(slice: &EndpointSlice) -> Converted<sarasa_model::EndpointSlice> {
    sarasa_model::EndpointSlice::try_from(slice)
        .map(Arc::new)
        .map_err(|e| format!("field {}: {}", e.field, e.message))
}

pub fn network_policy(np: &NetworkPolicy) -> Converted<sarasa_policy::NetworkPolicy> {
    sarasa_policy::NetworkPolicy::try_from(np)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

pub fn namespace(ns: &Namespace) -> Converted<sarasa_policy::PolicyNamespace> {
    Ok(Arc::new(sarasa_policy::PolicyNamespace::from(ns)))
}

/// Whether NetworkPolicy applies to `pod`, the one rule the enforcer and the CLI share:
/// host-network pods are not policy pods (their address is their node's, which policy does not
/// police), nor are pods that have finished (`Succeeded`/`Failed`: their address is released
/// and may already belong to another pod). Pending pods with an address (init containers) and
/// terminating ones (still running) are.
pub fn is_policy_pod(pod: &Pod) -> bool {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !host_network && !finished
}

/// The policy projection of a pod (labels, addresses, container ports), or `None` when policy
/// does not apply to it ([`is_policy_pod`]).
pub fn policy_pod(pod: &Pod) -> Option<Converted<sarasa_policy::PolicyPod>> {
    is_policy_pod(pod).then(|| {
        sarasa_policy::PolicyPod::try_from(pod)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
}

/// `namespace/name` (or `name` for cluster-scoped kinds): the key of every store.
pub fn key_of<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Folds one watcher event into a store of converted objects.
pub fn apply_converted<K: Resource, T: PartialEq>(
    store: &mut ProjectedStore<Converted<T>>,
    event: watcher::Event<K>,
    convert: fn(&K) -> Converted<T>,
) -> Applied {
    apply_projected(store, event, |o| Some(convert(o)))
}

/// Folds one watcher event into a store of converted objects, leaving out the objects
/// `project` maps to `None`.
pub fn apply_projected<K: Resource, T: PartialEq>(
    store: &mut ProjectedStore<Converted<T>>,
    event: watcher::Event<K>,
    project: impl Fn(&K) -> Option<Converted<T>>,
) -> Applied {
    store.apply(event, key_of, project, |o| {
        parse_rv(o.meta().resource_version.as_deref())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "a"},
            "spec": spec,
            "status": {"phase": phase, "podIPs": [{"ip": "10.244.1.2"}]}
        }))
        .unwrap()
    }

    #[test]
    fn policy_pods_exclude_host_network_and_finished_pods() {
        let containers = json!({"containers": [{"name": "c"}]});
        let host = json!({"hostNetwork": true, "containers": [{"name": "c"}]});
        assert!(is_policy_pod(&pod(containers.clone(), "Running")));
        assert!(is_policy_pod(&pod(containers.clone(), "Pending")));
        assert!(!is_policy_pod(&pod(host.clone(), "Running")));
        assert!(!is_policy_pod(&pod(containers.clone(), "Succeeded")));
        assert!(!is_policy_pod(&pod(containers.clone(), "Failed")));
        assert!(policy_pod(&pod(host, "Running")).is_none());
        let p = policy_pod(&pod(containers, "Running")).unwrap().unwrap();
        assert_eq!(p.ips, ["10.244.1.2".parse::<std::net::IpAddr>().unwrap()]);
        // A conversion error is kept, with the field that failed.
        let bad = json!({"containers": [{"name": "c", "ports": [{"containerPort": 0}]}]});
        let e = policy_pod(&pod(bad, "Running")).unwrap().unwrap_err();
        assert!(e.contains("containerPort"), "{e}");
    }
}
