//! Projections of the objects the service proxy and the policy compiler consume: each object
//! converted once, when its watch event arrives, into the compiler's domain type. A conversion
//! error is kept (not dropped) so the reconcile loop can log it and leave the object out while
//! every other object keeps being programmed.
//!
//! Values sit behind an [`Arc`] so that the per-reconcile snapshot of [`ClusterState`] copies
//! pointers, and a change between two snapshots is found by pointer comparison first.
//!
//! [`ClusterState`]: crate::state::ClusterState

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::state::{parse_rv, Applied, ProjectedStore};

/// One converted object, or why it could not be converted.
pub type Converted<T> = Result<Arc<T>, String>;

pub fn service(svc: &Service) -> Converted<sarasa_model::Service> {
    sarasa_model::Service::try_from(svc)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

pub fn endpoint_slice(slice: &EndpointSlice) -> Converted<sarasa_model::EndpointSlice> {
    sarasa_model::EndpointSlice::try_from(slice)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

pub fn network_policy(np: &NetworkPolicy) -> Converted<sarasa_policy::NetworkPolicy> {
    let name = format!(
        "NetworkPolicy {}/{}",
        np.metadata.namespace.as_deref().unwrap_or_default(),
        np.metadata.name.as_deref().unwrap_or_default()
    );
    sarasa_policy::NetworkPolicy::try_from(np)
        .map(Arc::new)
        .map_err(|e| format!("{name}: {e}"))
}

pub fn namespace(ns: &Namespace) -> Converted<sarasa_policy::PolicyNamespace> {
    Ok(Arc::new(sarasa_policy::PolicyNamespace::from(ns)))
}

pub fn pod(pod: &Pod) -> Converted<sarasa_policy::PolicyPod> {
    let name = format!(
        "Pod {}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    sarasa_policy::PolicyPod::try_from(pod)
        .map(Arc::new)
        .map_err(|e| format!("{name}: {e}"))
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
    store.apply(event, key_of, convert, |o| {
        parse_rv(o.meta().resource_version.as_deref())
    })
}

/// How one keyed item differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a, T> {
    /// New or changed (converted successfully).
    Upsert(&'a str, &'a Arc<T>),
    /// Gone, or now failing conversion (the previous version is withdrawn).
    Delete(&'a str, &'a Arc<T>),
    /// Newly failing conversion: report it.
    Invalid(&'a str, &'a str),
}

fn same<T: PartialEq>(a: &Converted<T>, b: &Converted<T>) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => Arc::ptr_eq(x, y) || x == y,
        (Err(x), Err(y)) => x == y,
        _ => false,
    }
}

/// The changes from `old` to `new` (both sorted maps: one merge pass, pointer comparisons).
pub fn changes<'a, T: PartialEq>(
    old: &'a BTreeMap<String, Converted<T>>,
    new: &'a BTreeMap<String, Converted<T>>,
) -> Vec<Change<'a, T>> {
    let mut out = Vec::new();
    let mut o = old.iter().peekable();
    let mut n = new.iter().peekable();
    loop {
        let ord = match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((ok, _)), Some((nk, _))) => ok.cmp(nk),
        };
        match ord {
            std::cmp::Ordering::Less => {
                if let Some((k, Ok(v))) = o.next() {
                    out.push(Change::Delete(k, v));
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((k, v)) = n.next() {
                    match v {
                        Ok(v) => out.push(Change::Upsert(k, v)),
                        Err(e) => out.push(Change::Invalid(k, e)),
                    }
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some((k, ov)), Some((_, nv))) = (o.next(), n.next()) {
                    if same(ov, nv) {
                        continue;
                    }
                    match (ov, nv) {
                        (_, Ok(v)) => out.push(Change::Upsert(k, v)),
                        (Ok(prev), Err(e)) => {
                            out.push(Change::Delete(k, prev));
                            out.push(Change::Invalid(k, e));
                        }
                        (Err(_), Err(e)) => out.push(Change::Invalid(k, e)),
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, Result<u32, &str>)]) -> BTreeMap<String, Converted<u32>> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(Arc::new).map_err(|e| e.to_string())))
            .collect()
    }

    #[test]
    fn changes_are_found_in_one_pass() {
        let old = map(&[("a", Ok(1)), ("b", Ok(2)), ("c", Ok(3)), ("d", Err("bad"))]);
        let new = map(&[
            ("b", Ok(2)),
            ("c", Err("now bad")),
            ("d", Ok(4)),
            ("e", Ok(5)),
        ]);
        let got: Vec<String> = changes(&old, &new)
            .iter()
            .map(|c| match c {
                Change::Upsert(k, v) => format!("+{k}={v}"),
                Change::Delete(k, v) => format!("-{k}={v}"),
                Change::Invalid(k, e) => format!("!{k}:{e}"),
            })
            .collect();
        assert_eq!(got, ["-a=1", "-c=3", "!c:now bad", "+d=4", "+e=5"]);
        assert!(changes(&new, &new).is_empty());
    }
}
