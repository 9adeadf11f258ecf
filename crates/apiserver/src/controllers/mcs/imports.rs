//! The ServiceImport of a derived Service: created while at least one cluster exports it,
//! kept equal to the derivation, deleted when no cluster does. A ClusterSetIP import's
//! addresses are its derived Service's ClusterIPs ([`super::derived_service`]); a Headless
//! import holds none. Only imports this controller made (label [`super::DERIVED_LABEL`]) are
//! changed or deleted: a user's own stays as written.

use serde_json::{json, Value};

use super::derive::Derived;
use super::{derived_service, DERIVED_LABEL};
use crate::meta;
use crate::resources::SERVICEIMPORTS;
use crate::store::{DeleteOpts, Store, Sub, WriteOpts};

fn spec(d: &Derived, ips: Vec<String>) -> Value {
    let mut s = json!({
        "type": d.type_,
        "ports": d.ports,
        "sessionAffinity": d.session_affinity,
    });
    if let Some(c) = &d.session_affinity_config {
        s["sessionAffinityConfig"] = json!(c);
    }
    if !ips.is_empty() {
        s["ips"] = json!(ips);
    }
    if !d.ip_families.is_empty() {
        s["ipFamilies"] = json!(d.ip_families);
    }
    s
}

fn labels(d: &Derived) -> Value {
    let mut l = json!(d.labels);
    l[DERIVED_LABEL] = json!("true");
    l
}

fn status(d: &Derived) -> Value {
    json!({"clusters": d.clusters.iter().map(|c| json!({"cluster": c})).collect::<Vec<_>>()})
}

/// Brings the ServiceImport `ns/name` to `derived` (`None`: no cluster exports it).
pub fn sync(store: &Store, ns: &str, name: &str, derived: Option<&Derived>) {
    let have = store.get(SERVICEIMPORTS, ns, name).ok();
    if let Some(h) = &have {
        if meta::label(h, DERIVED_LABEL).is_none() {
            if derived.is_some() {
                tracing::warn!(
                    "ServiceImport {ns}/{name} was written by someone else; left as it is"
                );
            }
            return;
        }
    }
    let Some(d) = derived else {
        if have.is_some() {
            if let Err(e) = store.delete(SERVICEIMPORTS, ns, name, &DeleteOpts::default()) {
                if e.code != 404 {
                    tracing::warn!("deleting ServiceImport {ns}/{name}: {e}");
                }
            }
        }
        return;
    };
    let want_labels = labels(d);
    let want_annotations = json!(d.annotations);
    let cur = match have {
        Some(h) => h,
        None => match store.create(
            SERVICEIMPORTS,
            ns,
            json!({
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceImport",
                "metadata": {"name": name, "labels": want_labels, "annotations": want_annotations},
                "spec": spec(d, Vec::new()),
            }),
            WriteOpts::internal(),
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("creating ServiceImport {ns}/{name}: {e}");
                return;
            }
        },
    };
    let ips = derived_service::sync(store, ns, name, meta::uid(&cur), d);
    let want_spec = spec(d, ips);
    let same = cur.get("spec") == Some(&want_spec)
        && meta::metadata(&cur).get("labels") == Some(&want_labels)
        && meta::metadata(&cur)
            .get("annotations")
            .unwrap_or(&json!({}))
            == &want_annotations;
    let cur = if same {
        cur
    } else {
        match store.modify(
            SERVICEIMPORTS,
            ns,
            name,
            Sub::Main,
            WriteOpts::internal(),
            |c| {
                let mut new = c.clone();
                new["spec"] = want_spec.clone();
                let m = meta::metadata_mut(&mut new);
                m.insert("labels".into(), want_labels.clone());
                m.insert("annotations".into(), want_annotations.clone());
                Ok(new)
            },
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("writing ServiceImport {ns}/{name}: {e}");
                return;
            }
        }
    };
    let want_status = status(d);
    if cur.get("status") != Some(&want_status) {
        let r = store.modify(
            SERVICEIMPORTS,
            ns,
            name,
            Sub::Status,
            WriteOpts::internal(),
            |c| {
                let mut new = c.clone();
                new["status"] = want_status.clone();
                Ok(new)
            },
        );
        if let Err(e) = r {
            tracing::warn!("writing ServiceImport {ns}/{name} status: {e}");
        }
    }
}
