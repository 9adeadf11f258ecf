//! Deployments: keeps `spec.replicas` pods of the current template per Deployment (pods named
//! `<deployment>-<pod-template-hash>-<suffix>`, owned by the Deployment), replaces deleted pods,
//! rolls a changed template (new pods first, old ones go as new ones become Ready, within
//! maxUnavailable; Recreate removes old pods first), and reports status.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, DEPLOYMENTS, PODS};
use crate::selector::{JsonSelector, LabelSelector};
use crate::store::{DeleteOpts, Event, Obj, Store, Sub, WriteOpts};
use crate::validate::numeric::IntOrPercent;

pub struct Deployments;

pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The pod-template-hash of a Deployment's template.
pub fn template_hash(d: &Value) -> String {
    let template = meta::path(d, "spec.template")
        .cloned()
        .unwrap_or(Value::Null);
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    meta::safe_encode(sarasa_model::hash::fnv1a32(&bytes))
}

pub fn pod_ready(p: &Value) -> bool {
    meta::path(p, "status.conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn active(p: &Value) -> bool {
    !meta::is_deleting(p)
        && !matches!(
            meta::path_str(p, "status.phase"),
            Some("Succeeded" | "Failed")
        )
}

/// `25%` or `1` of `replicas`, rounded down (maxUnavailable); saturating, so a value stored
/// before validation bounded it cannot overflow.
fn scaled(v: Option<&Value>, replicas: i64, default_pct: i64) -> i64 {
    IntOrPercent::parse(v)
        .unwrap_or(IntOrPercent::Percent(default_pct))
        .scaled(replicas, false)
}

fn new_pod(d: &Value, hash: &str) -> Value {
    let name = meta::name(d);
    let template = meta::path(d, "spec.template").cloned().unwrap_or(json!({}));
    let mut labels = meta::path(&template, "metadata.labels")
        .cloned()
        .unwrap_or(json!({}));
    labels[TEMPLATE_HASH_LABEL] = json!(hash);
    let mut metadata = json!({
        "generateName": format!("{name}-{hash}-"),
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": meta::uid(d),
            "controller": true, "blockOwnerDeletion": true
        }]
    });
    if let Some(a) = meta::path(&template, "metadata.annotations") {
        metadata["annotations"] = a.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// Order in which surplus pods go: unscheduled, then not Ready, then newest.
fn deletion_order(pods: &mut [Obj]) {
    pods.sort_by(|a, b| {
        let key = |p: &Obj| {
            (
                !meta::path_str(p, "spec.nodeName").unwrap_or("").is_empty(),
                pod_ready(p),
                std::cmp::Reverse(
                    meta::metadata(p)
                        .get("creationTimestamp")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                ),
            )
        };
        key(a).cmp(&key(b))
    });
}

fn condition(old: Option<&Value>, ty: &str, status: bool, reason: &str, message: &str) -> Value {
    let status = if status { "True" } else { "False" };
    let now = meta::now_rfc3339();
    let prev = old.and_then(Value::as_array).and_then(|cs| {
        cs.iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
    });
    let (transition, update) = match prev {
        Some(p) if p.get("status").and_then(Value::as_str) == Some(status) => (
            p.get("lastTransitionTime").cloned().unwrap_or(json!(now)),
            p.get("lastUpdateTime").cloned().unwrap_or(json!(now)),
        ),
        _ => (json!(now), json!(now)),
    };
    json!({"type": ty, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": transition, "lastUpdateTime": update})
}

fn reconcile_one(store: &Store, d: &Value) {
    let ns = meta::namespace(d);
    let name = meta::name(d);
    let uid = meta::uid(d).to_string();
    if meta::is_deleting(d) {
        return;
    }
    // Clamped to the server's bound too: an object stored before the bound never makes this
    // loop create pods without end.
    let replicas = meta::path(d, "spec.replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .clamp(0, store.config.limits.max_replicas);
    let hash = template_hash(d);
    let selector = meta::path(d, "spec.selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .unwrap_or_default();
    let (pods, _) = store.list(PODS, Some(ns), |p| {
        meta::controller_uid(p) == Some(uid.as_str())
    });
    let owned: Vec<Obj> = pods
        .into_iter()
        .filter(|p| selector.matches_object(p))
        .collect();
    let (mut current, mut old): (Vec<Obj>, Vec<Obj>) = owned
        .iter()
        .filter(|p| active(p))
        .cloned()
        .partition(|p| meta::label(p, TEMPLATE_HASH_LABEL) == Some(hash.as_str()));
    let terminating_old = owned.iter().any(|p| {
        meta::is_deleting(p) && meta::label(p, TEMPLATE_HASH_LABEL) != Some(hash.as_str())
    });
    let recreate = meta::path_str(d, "spec.strategy.type") == Some("Recreate");
    let delete = |p: &Obj| {
        if let Err(e) = store.delete(PODS, ns, meta::name(p), &DeleteOpts::default()) {
            if e.code != 404 {
                tracing::warn!(
                    "deployment {ns}/{name}: deleting pod {}: {e}",
                    meta::name(p)
                );
            }
        }
    };
    if recreate && (!old.is_empty() || terminating_old) {
        for p in &old {
            delete(p);
        }
        old.clear();
    } else {
        let have = current.len() as i64;
        if have < replicas {
            for _ in have..replicas {
                match store.create(PODS, ns, new_pod(d, &hash), WriteOpts::internal()) {
                    Ok(p) => current.push(p),
                    Err(e) => {
                        tracing::warn!("deployment {ns}/{name}: creating a pod: {e}");
                        break;
                    }
                }
            }
        } else if have > replicas {
            deletion_order(&mut current);
            let surplus = (have - replicas) as usize;
            for p in current.drain(..surplus) {
                delete(&p);
            }
        }
        if !old.is_empty() {
            let max_unavailable = scaled(
                meta::path(d, "spec.strategy.rollingUpdate.maxUnavailable"),
                replicas,
                25,
            );
            let new_ready = current.iter().filter(|p| pod_ready(p)).count() as i64;
            let keep = replicas
                .saturating_sub(max_unavailable)
                .saturating_sub(new_ready)
                .max(0) as usize;
            if old.len() > keep {
                deletion_order(&mut old);
                let n = old.len() - keep;
                for p in old.drain(..n) {
                    delete(&p);
                }
            }
        }
    }
    let all: Vec<&Obj> = current.iter().chain(old.iter()).collect();
    let ready = all.iter().filter(|p| pod_ready(p)).count() as i64;
    let updated = current.len() as i64;
    let total = all.len() as i64;
    let generation = meta::metadata(d)
        .get("generation")
        .cloned()
        .unwrap_or(json!(1));
    let names: HashSet<&str> = all.iter().map(|p| meta::name(p)).collect();
    let _ = names;
    let r = store.modify(DEPLOYMENTS, ns, name, Sub::Status, WriteOpts::internal(), |cur| {
        let old_conds = meta::path(cur, "status.conditions");
        let available = ready >= replicas.saturating_sub(scaled(meta::path(cur, "spec.strategy.rollingUpdate.maxUnavailable"), replicas, 25));
        let mut status = json!({
            "observedGeneration": generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                condition(old_conds, "Available", available,
                    if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                    if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." }),
                condition(old_conds, "Progressing", true,
                    if updated == replicas && total == replicas { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                    &format!("ReplicaSet \"{name}-{hash}\" is progressing.")),
            ]
        });
        if replicas - ready > 0 {
            status["unavailableReplicas"] = json!(replicas - ready);
        }
        let mut new = cur.clone();
        new["status"] = status;
        Ok(new)
    });
    if let Err(e) = r {
        if e.code != 404 {
            tracing::warn!("deployment {ns}/{name}: writing status: {e}");
        }
    }
}

impl Controller for Deployments {
    fn name(&self) -> &'static str {
        "deployments"
    }

    fn watches(&self) -> &'static [ResId] {
        &[DEPLOYMENTS, PODS]
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        let targets: Vec<Obj> = match events {
            None => store.list(DEPLOYMENTS, None, |_| true).0,
            Some(evs) => {
                let mut keys: HashSet<(String, String)> = HashSet::new();
                let mut namespaces: HashSet<String> = HashSet::new();
                for e in evs {
                    if e.res == DEPLOYMENTS {
                        keys.insert((
                            meta::namespace(&e.obj).to_string(),
                            meta::name(&e.obj).to_string(),
                        ));
                    } else if meta::controller_uid(&e.obj).is_some()
                        || e.prev
                            .as_ref()
                            .is_some_and(|p| meta::controller_uid(p).is_some())
                    {
                        namespaces.insert(meta::namespace(&e.obj).to_string());
                    }
                }
                let mut out = Vec::new();
                for ns in &namespaces {
                    out.extend(store.list(DEPLOYMENTS, Some(ns), |_| true).0);
                }
                for (ns, name) in keys {
                    if !namespaces.contains(&ns) {
                        if let Ok(d) = store.get(DEPLOYMENTS, &ns, &name) {
                            out.push(d);
                        }
                    }
                }
                out
            }
        };
        for d in targets {
            reconcile_one(store, &d);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_template_sensitive() {
        let a = json!({"spec": {"template": {"metadata": {"labels": {"app": "x"}}}}});
        let b = json!({"spec": {"template": {"metadata": {"labels": {"app": "y"}}}}});
        assert_eq!(template_hash(&a), template_hash(&a));
        assert_ne!(template_hash(&a), template_hash(&b));
        // ReplicaSet and pod names carry it: pinned so existing objects keep their names.
        assert_eq!(template_hash(&a), "5c7d8d496d");
    }

    #[test]
    fn max_unavailable() {
        assert_eq!(scaled(Some(&json!("25%")), 4, 25), 1);
        assert_eq!(scaled(Some(&json!(2)), 4, 25), 2);
        assert_eq!(scaled(None, 3, 25), 0);
    }
}
