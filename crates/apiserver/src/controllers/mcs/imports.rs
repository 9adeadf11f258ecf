//! The ServiceImport of a derived Service: created while at least one cluster exports it,
//! kept equal to the derivation, deleted when no cluster does. A ClusterSetIP import holds one
//! address per IP family from this cluster's ClusterSetIP range
//! ([`crate::Config::clusterset_ip_cidrs`], as Submariner's `--clusterset-ip-cidr`), kept for as
//! long as the import lives; a Headless import holds none. Only imports this controller made
//! (label [`super::DERIVED_LABEL`]) are changed or deleted: a user's own stays as written.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};

use super::derive::{Derived, CLUSTER_SET_IP};
use super::DERIVED_LABEL;
use crate::meta;
use crate::resources::SERVICEIMPORTS;
use crate::store::{DeleteOpts, Store, Sub, WriteOpts};

fn ips_of(import: &Value) -> Vec<IpAddr> {
    meta::path(import, "spec.ips")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// The ClusterSetIPs the import should hold: what it holds where still in range, then the
/// lowest free address of each other family the derived Service uses.
fn cluster_set_ips(store: &Store, d: &Derived, have: Option<&Value>) -> Vec<String> {
    if d.type_ != CLUSTER_SET_IP {
        return Vec::new();
    }
    let ranges = &store.config.clusterset_ip_cidrs;
    let families: Vec<bool> = if d.ip_families.is_empty() {
        vec![false]
    } else {
        d.ip_families.iter().map(|f| f == "IPv6").collect()
    };
    let kept: Vec<IpAddr> = have
        .map(ips_of)
        .unwrap_or_default()
        .into_iter()
        .filter(|ip| ranges.iter().any(|r| r.contains(ip)) && families.contains(&ip.is_ipv6()))
        .collect();
    let mut used: Option<HashSet<IpAddr>> = None;
    let mut out: Vec<IpAddr> = Vec::new();
    for v6 in families {
        if let Some(ip) = kept.iter().find(|ip| ip.is_ipv6() == v6) {
            out.push(*ip);
            continue;
        }
        let Some(range) = ranges.iter().find(|r| matches!(r, IpNet::V6(_)) == v6) else {
            tracing::warn!(
                "no ClusterSetIP range of family {} configured",
                if v6 { "IPv6" } else { "IPv4" }
            );
            continue;
        };
        let used = used.get_or_insert_with(|| {
            let (all, _) = store.list(SERVICEIMPORTS, None, |_| true);
            all.iter().flat_map(|i| ips_of(i)).collect()
        });
        match range.hosts().take(1 << 20).find(|ip| !used.contains(ip)) {
            Some(ip) => {
                used.insert(ip);
                out.push(ip);
            }
            None => tracing::warn!("ClusterSetIP range {range} is exhausted"),
        }
    }
    out.iter().map(IpAddr::to_string).collect()
}

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
    let ips = cluster_set_ips(store, d, have.as_deref());
    let want_spec = spec(d, ips);
    let want_labels = labels(d);
    let want_annotations = json!(d.annotations);
    let written = match &have {
        Some(h)
            if h.get("spec") == Some(&want_spec)
                && meta::metadata(h).get("labels") == Some(&want_labels)
                && meta::metadata(h).get("annotations").unwrap_or(&json!({}))
                    == &want_annotations =>
        {
            Ok(h.clone())
        }
        Some(_) => store.modify(
            SERVICEIMPORTS,
            ns,
            name,
            Sub::Main,
            WriteOpts::internal(),
            |cur| {
                let mut new = cur.clone();
                new["spec"] = want_spec.clone();
                let m = meta::metadata_mut(&mut new);
                m.insert("labels".into(), want_labels.clone());
                m.insert("annotations".into(), want_annotations.clone());
                Ok(new)
            },
        ),
        None => store.create(
            SERVICEIMPORTS,
            ns,
            json!({
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceImport",
                "metadata": {"name": name, "labels": want_labels, "annotations": want_annotations},
                "spec": want_spec,
            }),
            WriteOpts::internal(),
        ),
    };
    let cur = match written {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("writing ServiceImport {ns}/{name}: {e}");
            return;
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
