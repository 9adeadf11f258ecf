//! The derived Service of an import (KEP-1645's implementation note, as Cilium and GKE do it):
//! a selectorless Service `derived-<hash>` in the import's namespace, owned by the
//! ServiceImport, with the derived ports, session affinity and families. Its ClusterIP is the
//! import's ClusterSetIP (allocated from the service CIDR like any ClusterIP), and the MCS
//! EndpointSlices of every cluster carry `kubernetes.io/service-name: derived-<hash>`, so the
//! service proxy, trace and NetworkPolicy handle a ClusterSetIP as they handle any Service. A
//! Headless import gets a headless derived Service. The hash is of namespace and name only, so
//! every cluster names the same derived Service alike.

use serde_json::{json, Value};

use super::derive::{Derived, HEADLESS};
use super::{DERIVED_LABEL, SERVICE_NAME_LABEL};
use crate::alloc;
use crate::meta;
use crate::resources::SERVICES;
use crate::store::{DeleteOpts, Store, WriteOpts};

/// The derived Service's name for import `ns/name`.
pub fn name(ns: &str, name: &str) -> String {
    sarasa_model::clusterset::derived_service_name(ns, name)
}

fn ports(d: &Derived) -> Value {
    json!(d
        .ports
        .iter()
        .map(|p| {
            let mut v = json!({"port": p.port, "protocol": p.protocol.as_deref().unwrap_or("TCP")});
            if let Some(n) = &p.name {
                v["name"] = json!(n);
            }
            if let Some(a) = &p.app_protocol {
                v["appProtocol"] = json!(a);
            }
            v
        })
        .collect::<Vec<_>>())
}

fn spec(d: &Derived) -> Value {
    let mut s = json!({
        "type": "ClusterIP",
        "ports": ports(d),
        "sessionAffinity": d.session_affinity,
    });
    if d.type_ == HEADLESS {
        s["clusterIP"] = json!("None");
    }
    if let Some(c) = &d.session_affinity_config {
        s["sessionAffinityConfig"] = json!(c);
    }
    if !d.ip_families.is_empty() {
        s["ipFamilies"] = json!(d.ip_families);
        if d.ip_families.len() > 1 {
            s["ipFamilyPolicy"] = json!("RequireDualStack");
        }
    }
    s
}

/// Whether a stored Service says what `want` decides: ports, affinity, headlessness, and the
/// affinity config and families when `want` names them (admission defaults them otherwise).
fn says(have: &Value, want: &Value) -> bool {
    let ports = |svc: &Value| -> Vec<Value> {
        meta::path(svc, "spec.ports")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| {
                        json!([
                            p.get("name"),
                            p.get("port"),
                            p.get("protocol"),
                            p.get("appProtocol")
                        ])
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let headless = |svc: &Value| meta::path_str(svc, "spec.clusterIP") == Some("None");
    let same = |field: &str| meta::path(have, field) == meta::path(want, field);
    let same_if_named = |field: &str| meta::path(want, field).is_none() || same(field);
    ports(have) == ports(want)
        && headless(have) == headless(want)
        && same("spec.sessionAffinity")
        && same_if_named("spec.sessionAffinityConfig")
        && same_if_named("spec.ipFamilies")
}

/// Brings the derived Service of `ns/name` to `d`, owned by the import `import_uid`; returns
/// its ClusterIPs (empty when headless or not written).
pub fn sync(store: &Store, ns: &str, import: &str, import_uid: &str, d: &Derived) -> Vec<String> {
    let n = name(ns, import);
    let want = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": n,
            "labels": {SERVICE_NAME_LABEL: import, DERIVED_LABEL: "true"},
            "ownerReferences": [{
                "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
                "name": import, "uid": import_uid, "controller": true, "blockOwnerDeletion": true
            }],
        },
        "spec": spec(d),
    });
    let have = store.get(SERVICES, ns, &n).ok();
    let current = match have {
        Some(h) if meta::controller_uid(&h) == Some(import_uid) && says(&h, &want) => Ok(h),
        Some(h) => {
            // Headlessness, families and ports may all change: a new Service says it all
            // (a ClusterIP cannot be changed in place).
            if let Err(e) = store.delete(SERVICES, ns, meta::name(&h), &DeleteOpts::default()) {
                if e.code != 404 {
                    tracing::warn!("replacing derived Service {ns}/{n}: {e}");
                    return Vec::new();
                }
            }
            store.create(SERVICES, ns, want, WriteOpts::internal())
        }
        None => store.create(SERVICES, ns, want, WriteOpts::internal()),
    };
    match current {
        Ok(s) if d.type_ != HEADLESS => alloc::cluster_ips(&s)
            .iter()
            .map(|i| i.to_string())
            .collect(),
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::warn!("writing derived Service {ns}/{n}: {e}");
            Vec::new()
        }
    }
}
