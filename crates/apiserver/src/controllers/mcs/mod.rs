//! The Multi-Cluster Services controller (KEP-1645, `multicluster.x-k8s.io/v1alpha1`), per
//! namespace and name:
//! - a ServiceExport is `Valid` when its Service exists and is not ExternalName (reasons
//!   `Valid`, `NoService`, `InvalidServiceType`); a valid export puts this cluster's MCS
//!   EndpointSlices in place ([`slices`]), which carry the export's record;
//! - the MCS EndpointSlices of every cluster (this one's, and those a cluster-set sync copies in)
//!   are merged by the conflict resolution policy ([`derive`]) into the ServiceImport
//!   ([`imports`]), which exists while at least one cluster exports the Service, with a derived
//!   Service ([`derived_service`]) whose ClusterIP is the ClusterSetIP, so the service proxy
//!   balances it over every exporting cluster's endpoints;
//! - the export's `Conflict` condition names what the clusters disagree on, and `Ready` says
//!   it is exported (`Exported`) or why not.
//!
//! One cluster alone is a cluster set of one: its exports are imported by itself.

pub mod derive;
pub mod derived_service;
pub mod imports;
pub mod slices;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::controllers::endpointslices as k8s_slices;
use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, ENDPOINTSLICES, SERVICEEXPORTS, SERVICEIMPORTS, SERVICES};
use crate::store::{Event, EventKind, Store, Sub, WriteOpts};
use derive::{ExportRecord, CLUSTER_SET_IP, HEADLESS};

pub const SERVICE_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";
pub const SOURCE_CLUSTER_LABEL: &str = "multicluster.kubernetes.io/source-cluster";
/// `endpointslice.kubernetes.io/managed-by` of MCS slices (never the EndpointSlice controller's).
pub const MANAGED_BY: &str = "mcs-controller.sarasa.io";
/// The export record on an MCS slice.
pub const EXPORT_ANNOTATION: &str = "multicluster.sarasa.io/export";
/// Marks the ServiceImports this controller derives.
pub const DERIVED_LABEL: &str = "multicluster.sarasa.io/derived";

/// The controller; keeps which Services have MCS slices (of any cluster), from slice events.
#[derive(Default)]
pub struct ServiceExports {
    mcs_slices: HashMap<Key, BTreeSet<String>>,
}

type Key = (String, String);

impl ServiceExports {
    fn index(&mut self, s: &Value, present: bool) {
        let Some(n) = meta::label(s, SERVICE_NAME_LABEL) else {
            return;
        };
        let k = (meta::namespace(s).to_string(), n.to_string());
        if present {
            self.mcs_slices
                .entry(k)
                .or_default()
                .insert(meta::name(s).to_string());
        } else if let Some(set) = self.mcs_slices.get_mut(&k) {
            set.remove(meta::name(s));
            if set.is_empty() {
                self.mcs_slices.remove(&k);
            }
        }
    }
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// What this cluster's export says, from the Service and the ServiceExport.
pub fn record(svc: &Value, export: &Value) -> ExportRecord {
    let headless = meta::path_str(svc, "spec.clusterIP") == Some("None");
    let ports = meta::path(svc, "spec.ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| sarasa_model::mcs::ServiceImportPort {
                    name: p
                        .get("name")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .map(String::from),
                    protocol: Some(
                        p.get("protocol")
                            .and_then(Value::as_str)
                            .unwrap_or("TCP")
                            .to_string(),
                    ),
                    app_protocol: p
                        .get("appProtocol")
                        .and_then(Value::as_str)
                        .map(String::from),
                    port: p.get("port").and_then(Value::as_i64).unwrap_or(0) as i32,
                })
                .collect()
        })
        .unwrap_or_default();
    ExportRecord {
        created: meta::metadata(export)
            .get("creationTimestamp")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        type_: if headless { HEADLESS } else { CLUSTER_SET_IP }.to_string(),
        ports,
        session_affinity: meta::path_str(svc, "spec.sessionAffinity")
            .unwrap_or("None")
            .to_string(),
        session_affinity_config: meta::path(svc, "spec.sessionAffinityConfig")
            .and_then(|c| serde_json::from_value(c.clone()).ok()),
        ip_families: meta::path(svc, "spec.ipFamilies")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        labels: string_map(meta::path(export, "spec.exportedLabels")),
        annotations: string_map(meta::path(export, "spec.exportedAnnotations")),
    }
}

/// Whether the Service can be exported: `Ok`, or the `Valid=False` reason and message.
fn validity(svc: Option<&Value>, ns: &str, name: &str) -> Result<(), (&'static str, String)> {
    match svc {
        None => Err((
            "NoService",
            format!("there is no Service {ns}/{name} to export"),
        )),
        Some(s) if meta::path_str(s, "spec.type") == Some("ExternalName") => Err((
            "InvalidServiceType",
            "a Service of type ExternalName cannot be exported".to_string(),
        )),
        Some(_) => Ok(()),
    }
}

/// A metav1.Condition, keeping the transition time while the status stays.
fn condition(old: &[Value], ty: &str, status: bool, reason: &str, message: &str) -> Value {
    let status = if status { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(meta::now_rfc3339()));
    json!({"type": ty, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": since})
}

fn same_conditions(a: &[Value], b: &[Value]) -> bool {
    let key = |c: &Value| {
        ["type", "status", "reason", "message"]
            .map(|k| c.get(k).and_then(Value::as_str).unwrap_or("").to_string())
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

fn write_conditions(store: &Store, export: &Value, want: Vec<Value>) {
    let old: Vec<Value> = meta::path(export, "status.conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if same_conditions(&old, &want) {
        return;
    }
    let (ns, name) = (meta::namespace(export), meta::name(export));
    let r = store.modify(
        SERVICEEXPORTS,
        ns,
        name,
        Sub::Status,
        WriteOpts::internal(),
        |c| {
            let mut new = c.clone();
            new["status"] = json!({"conditions": want});
            Ok(new)
        },
    );
    if let Err(e) = r {
        if e.code != 404 {
            tracing::warn!("ServiceExport {ns}/{name}: writing its conditions: {e}");
        }
    }
}

/// Reconciles the export, this cluster's slices and the import of one Service.
fn reconcile_one(store: &Store, ns: &str, name: &str) {
    let cluster = store.config.cluster_id.clone();
    let export = store
        .get(SERVICEEXPORTS, ns, name)
        .ok()
        .filter(|e| !meta::is_deleting(e));
    let svc = store
        .get(SERVICES, ns, name)
        .ok()
        .filter(|s| !meta::is_deleting(s));
    let valid = export.as_ref().map(|_| validity(svc.as_deref(), ns, name));
    let local = match (&export, &svc, &valid) {
        (Some(e), Some(s), Some(Ok(()))) => Some(record(s, e)),
        _ => None,
    };
    slices::sync(
        store,
        ns,
        name,
        svc.as_deref().zip(local.as_ref()),
        &cluster,
    );

    let (all, _) = store.list(ENDPOINTSLICES, Some(ns), |s| {
        slices::is_mcs_slice_of(s, name)
    });
    let mut records: BTreeMap<String, ExportRecord> = BTreeMap::new();
    for s in &all {
        let Some(c) = meta::label(s, SOURCE_CLUSTER_LABEL) else {
            continue;
        };
        if c == cluster || records.contains_key(c) {
            continue;
        }
        if let Some(r) = slices::record_of(s) {
            records.insert(c.to_string(), r);
        }
    }
    if let Some(r) = &local {
        records.insert(cluster.clone(), r.clone());
    }
    let derived = derive::derive(&records);
    imports::sync(store, ns, name, derived.as_ref());

    let Some(export) = export else { return };
    let old: Vec<Value> = meta::path(&export, "status.conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let want = match (valid, &derived) {
        (Some(Ok(())), Some(d)) => vec![
            condition(&old, "Valid", true, "Valid", "the Service is exported"),
            condition(
                &old,
                "Ready",
                true,
                "Exported",
                &format!(
                    "exported from {cluster}; imported from {}",
                    d.clusters.join(", ")
                ),
            ),
            condition(
                &old,
                "Conflict",
                !d.conflicts.is_empty(),
                &d.conflict_reason(),
                &d.conflict_message(),
            ),
        ],
        (Some(Err((reason, message))), _) => vec![
            condition(&old, "Valid", false, reason, &message),
            condition(&old, "Ready", false, "Failed", "nothing is exported"),
        ],
        _ => return,
    };
    write_conditions(store, &export, want);
}

impl Controller for ServiceExports {
    fn name(&self) -> &'static str {
        "serviceexports"
    }

    fn watches(&self) -> &'static [ResId] {
        &[SERVICEEXPORTS, SERVICES, ENDPOINTSLICES, SERVICEIMPORTS]
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        let mut dirty: HashSet<Key> = HashSet::new();
        let key = |o: &Value, name: &str| (meta::namespace(o).to_string(), name.to_string());
        match events {
            None => {
                for res in [SERVICEEXPORTS, SERVICEIMPORTS] {
                    let (all, _) = store.list(res, None, |o| {
                        res == SERVICEEXPORTS || meta::label(o, DERIVED_LABEL).is_some()
                    });
                    dirty.extend(all.iter().map(|o| key(o, meta::name(o))));
                }
                let (all, _) = store.list(ENDPOINTSLICES, None, |s| {
                    meta::label(s, SERVICE_NAME_LABEL).is_some()
                });
                self.mcs_slices.clear();
                for s in &all {
                    self.index(s, true);
                }
                dirty.extend(self.mcs_slices.keys().cloned());
            }
            Some(evs) => {
                for e in evs.iter().filter(|e| e.res == ENDPOINTSLICES) {
                    if let Some(p) = &e.prev {
                        self.index(p, false);
                    }
                    self.index(&e.obj, e.kind != EventKind::Deleted);
                }
                for e in evs {
                    for o in std::iter::once(&e.obj).chain(e.prev.iter()) {
                        if e.res != ENDPOINTSLICES {
                            dirty.insert(key(o, meta::name(o)));
                        }
                        // A slice names its Service; a derived Service its import.
                        for l in [SERVICE_NAME_LABEL, k8s_slices::SERVICE_NAME_LABEL] {
                            if let Some(n) = meta::label(o, l) {
                                dirty.insert(key(o, n));
                            }
                        }
                    }
                }
                // Services and their slices matter only where something is exported or
                // imported: most changes of a big cluster are not.
                dirty.retain(|(ns, name)| {
                    store.get(SERVICEEXPORTS, ns, name).is_ok()
                        || store.get(SERVICEIMPORTS, ns, name).is_ok()
                        || self.mcs_slices.contains_key(&(ns.clone(), name.clone()))
                });
            }
        }
        for (ns, name) in dirty {
            reconcile_one(store, &ns, &name);
        }
        None
    }
}
