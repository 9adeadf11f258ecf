//! This cluster's MCS EndpointSlices: for each exported Service, a mirror of each of its
//! EndpointSlices labelled `multicluster.kubernetes.io/service-name` and
//! `multicluster.kubernetes.io/source-cluster` (KEP-1645's EndpointSlices of an import), managed
//! by this controller rather than the EndpointSlice controller, and carrying the export's
//! [`ExportRecord`] so that the slices alone say what the cluster exports. A Service without
//! slices still gets one empty slice, so its export is seen. Endpoints keep their addresses,
//! conditions and hostname (the headless per-cluster DNS names need it); node names and target
//! references name objects of the exporting cluster and are left out.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::derive::ExportRecord;
use super::{EXPORT_ANNOTATION, MANAGED_BY, SERVICE_NAME_LABEL, SOURCE_CLUSTER_LABEL};
use crate::controllers::endpointslices as k8s_slices;
use crate::meta;
use crate::resources::ENDPOINTSLICES;
use crate::store::{DeleteOpts, Store, Sub, WriteOpts};

/// Whether a slice is an MCS slice (of any cluster) of Service `name`.
pub fn is_mcs_slice_of(s: &Value, name: &str) -> bool {
    meta::label(s, SERVICE_NAME_LABEL) == Some(name)
}

/// The record an MCS slice carries, if it carries a readable one.
pub fn record_of(s: &Value) -> Option<ExportRecord> {
    let text = meta::metadata(s)
        .get("annotations")?
        .get(EXPORT_ANNOTATION)?
        .as_str()?;
    match serde_json::from_str(text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(
                "EndpointSlice {}/{}: unreadable {EXPORT_ANNOTATION}: {e}",
                meta::namespace(s),
                meta::name(s)
            );
            None
        }
    }
}

fn mirrored_endpoint(ep: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["addresses", "conditions", "hostname"] {
        if let Some(v) = ep.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    Value::Object(out)
}

fn slice_name(base: &str, cluster: &str) -> String {
    let mut n = format!("{base}-{cluster}");
    n.truncate(253);
    n
}

/// The MCS slices this cluster should hold for Service `svc` exported as `record`.
fn desired(
    store: &Store,
    svc: &Value,
    record: &ExportRecord,
    cluster: &str,
) -> BTreeMap<String, Value> {
    let ns = meta::namespace(svc);
    let name = meta::name(svc);
    let (local, _) = store.list(ENDPOINTSLICES, Some(ns), |s| {
        meta::label(s, k8s_slices::SERVICE_NAME_LABEL) == Some(name)
            && meta::label(s, SOURCE_CLUSTER_LABEL).is_none()
    });
    let record_text = serde_json::to_string(record).unwrap_or_default();
    let mut labels = json!({
        SERVICE_NAME_LABEL: name,
        SOURCE_CLUSTER_LABEL: cluster,
        k8s_slices::MANAGED_BY_LABEL: MANAGED_BY,
        // The derived Service's endpoints, for the service proxy.
        k8s_slices::SERVICE_NAME_LABEL: super::derived_service::name(ns, name),
    });
    if record.type_ == super::derive::HEADLESS {
        labels[k8s_slices::HEADLESS_LABEL] = json!("");
    }
    let make =
        |slice_name: String, address_type: &str, endpoints: Vec<Value>, ports: Option<&Value>| {
            let mut s = json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "namespace": ns,
                    "labels": labels,
                    "annotations": {EXPORT_ANNOTATION: record_text},
                },
                "addressType": address_type,
                "endpoints": endpoints,
            });
            if let Some(p) = ports.filter(|p| p.as_array().is_some_and(|a| !a.is_empty())) {
                s["ports"] = p.clone();
            }
            s
        };
    let mut out = BTreeMap::new();
    for l in &local {
        let n = slice_name(meta::name(l), cluster);
        let eps: Vec<Value> = l
            .get("endpoints")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(mirrored_endpoint).collect())
            .unwrap_or_default();
        let at = l
            .get("addressType")
            .and_then(Value::as_str)
            .unwrap_or("IPv4");
        out.insert(n.clone(), make(n, at, eps, l.get("ports")));
    }
    if out.is_empty() {
        let at = record
            .ip_families
            .first()
            .map(String::as_str)
            .unwrap_or("IPv4");
        let n = slice_name(name, cluster);
        out.insert(n.clone(), make(n, at, Vec::new(), None));
    }
    out
}

/// Whether a stored slice already says what `want` says.
fn same(have: &Value, want: &Value) -> bool {
    ["addressType", "endpoints", "ports"]
        .iter()
        .all(|k| have.get(*k) == want.get(*k))
        && meta::metadata(have).get("labels") == meta::metadata(want).get("labels")
        && meta::metadata(have)
            .get("annotations")
            .and_then(|a| a.get(EXPORT_ANNOTATION))
            == meta::metadata(want)
                .get("annotations")
                .and_then(|a| a.get(EXPORT_ANNOTATION))
}

/// Brings this cluster's MCS slices of `ns/name` to what `export` asks (`None`: none).
pub fn sync(
    store: &Store,
    ns: &str,
    name: &str,
    export: Option<(&Value, &ExportRecord)>,
    cluster: &str,
) {
    let (have, _) = store.list(ENDPOINTSLICES, Some(ns), |s| {
        is_mcs_slice_of(s, name) && meta::label(s, SOURCE_CLUSTER_LABEL) == Some(cluster)
    });
    let want = export
        .map(|(svc, rec)| desired(store, svc, rec, cluster))
        .unwrap_or_default();
    for h in &have {
        if !want.contains_key(meta::name(h)) {
            if let Err(e) = store.delete(ENDPOINTSLICES, ns, meta::name(h), &DeleteOpts::default())
            {
                if e.code != 404 {
                    tracing::warn!("deleting MCS EndpointSlice {ns}/{}: {e}", meta::name(h));
                }
            }
        }
    }
    for (n, w) in want {
        let r = match have.iter().find(|h| meta::name(h) == n) {
            Some(h) if same(h, &w) => continue,
            Some(_) => store
                .modify(
                    ENDPOINTSLICES,
                    ns,
                    &n,
                    Sub::Main,
                    WriteOpts::internal(),
                    |cur| {
                        let mut new = w.clone();
                        new["metadata"] = cur["metadata"].clone();
                        let m = meta::metadata_mut(&mut new);
                        m.insert("labels".into(), w["metadata"]["labels"].clone());
                        m.insert("annotations".into(), w["metadata"]["annotations"].clone());
                        Ok(new)
                    },
                )
                .map(|_| ()),
            None => store
                .create(ENDPOINTSLICES, ns, w, WriteOpts::internal())
                .map(|_| ()),
        };
        if let Err(e) = r {
            tracing::warn!("writing MCS EndpointSlice {ns}/{n}: {e}");
        }
    }
}
