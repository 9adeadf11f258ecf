//! Scheduler: binds every Pod without `spec.nodeName` to a Node. Candidates are the Nodes whose
//! labels and name satisfy the pod's nodeSelector and required node affinity and whose taints
//! (a cordoned Node's `unschedulable`, a NotReady Node's `not-ready`) the pod tolerates; while no
//! Node is Ready at all, NotReady ones stay candidates. A Node already running as many pods as its
//! `status.allocatable.pods` takes no more (kube-scheduler's NodeResourcesFit; the lab's
//! `--ipam vpc` nodes report their address limit there); a pod no Node can take for that is
//! marked `PodScheduled=False`, `Unschedulable`, "0/N nodes are available: M Too many pods.".
//! The pick spreads pods of one owner first, then takes the Node with the fewest pods.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::controllers::nodefit;
use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, NODES, PODS};
use crate::store::{Event, Obj, Store, Sub, WriteOpts};

pub struct Scheduler;

pub fn node_ready(n: &Value) -> bool {
    meta::path(n, "status.conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn terminal(p: &Value) -> bool {
    matches!(
        meta::path_str(p, "status.phase"),
        Some("Succeeded" | "Failed")
    )
}

fn unscheduled(p: &Value) -> bool {
    meta::path_str(p, "spec.nodeName").unwrap_or("").is_empty()
        && !meta::is_deleting(p)
        && !terminal(p)
}

/// Whether `pod` may go to `node`; `conditions`: NotReady/unreachable taints count.
fn fits(pod: &Value, node: &Value, conditions: bool) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    if !nodefit::affinity_matches(spec, node) {
        return false;
    }
    let taints = if conditions {
        nodefit::effective_taints(node)
    } else {
        let mut t = nodefit::spec_taints(node);
        t.extend(
            nodefit::effective_taints(node)
                .into_iter()
                .filter(|t| t.key == nodefit::TAINT_UNSCHEDULABLE),
        );
        t
    };
    nodefit::untolerated(spec, &taints, &["NoSchedule", "NoExecute"]).is_none()
}

/// `status.allocatable.pods` of a Node, when it says.
fn allocatable_pods(node: &Value) -> Option<usize> {
    let q = meta::path(node, "status.allocatable.pods")?;
    match q {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().map(|n| n as usize),
        _ => None,
    }
}

fn owner_key(p: &Value) -> String {
    // Pods of one Deployment share a controller uid; bare pods spread among themselves.
    meta::controller_uid(p).unwrap_or("").to_string()
}

impl Controller for Scheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn watches(&self) -> &'static [ResId] {
        &[PODS, NODES]
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        if let Some(evs) = events {
            if !evs.iter().any(|e| e.res == NODES || unscheduled(&e.obj)) {
                return None;
            }
        }
        let (pending, _) = store.list(PODS, None, unscheduled);
        if pending.is_empty() {
            return None;
        }
        let (candidates, _) = store.list(NODES, None, |n| !meta::is_deleting(n));
        if candidates.is_empty() {
            return None;
        }
        let any_ready = candidates.iter().any(|n| node_ready(n));
        let (pods, _) = store.list(PODS, None, |p| !terminal(p) && !meta::is_deleting(p));
        let mut total: HashMap<String, usize> = HashMap::new();
        let mut by_owner: HashMap<(String, String), usize> = HashMap::new();
        for p in &pods {
            let node = meta::path_str(p, "spec.nodeName").unwrap_or("");
            if node.is_empty() {
                continue;
            }
            *total.entry(node.to_string()).or_default() += 1;
            *by_owner
                .entry((owner_key(p), node.to_string()))
                .or_default() += 1;
        }
        let mut pending: Vec<Obj> = pending;
        pending.sort_by(|a, b| {
            let ka = (
                meta::metadata(a)
                    .get("creationTimestamp")
                    .and_then(Value::as_str),
                meta::name(a),
            );
            let kb = (
                meta::metadata(b)
                    .get("creationTimestamp")
                    .and_then(Value::as_str),
                meta::name(b),
            );
            ka.cmp(&kb)
        });
        for pod in pending {
            let owner = owner_key(&pod);
            let fitting: Vec<&Obj> = candidates
                .iter()
                .filter(|n| fits(&pod, n, any_ready))
                .collect();
            let has_room = |n: &&Obj| {
                allocatable_pods(n)
                    .is_none_or(|max| total.get(meta::name(n)).copied().unwrap_or(0) < max)
            };
            let full = fitting.iter().filter(|n| !has_room(n)).count();
            let best = fitting.iter().filter(|n| has_room(n)).min_by_key(|n| {
                let name = meta::name(n).to_string();
                let same = if owner.is_empty() {
                    0
                } else {
                    by_owner
                        .get(&(owner.clone(), name.clone()))
                        .copied()
                        .unwrap_or(0)
                };
                (same, total.get(&name).copied().unwrap_or(0), name)
            });
            let Some(node) = best else {
                if full > 0 {
                    let message = format!(
                        "0/{} nodes are available: {full} Too many pods.",
                        candidates.len()
                    );
                    if let Err(e) = write_scheduling(store, &pod, None, Some(&message)) {
                        if e.code != 404 {
                            tracing::warn!(
                                "marking pod {}/{} unschedulable: {e}",
                                meta::namespace(&pod),
                                meta::name(&pod)
                            );
                        }
                    }
                }
                continue;
            };
            let node = meta::name(node).to_string();
            let r = write_scheduling(store, &pod, Some(&node), None);
            match r {
                Ok(_) => {
                    *total.entry(node.clone()).or_default() += 1;
                    *by_owner.entry((owner, node)).or_default() += 1;
                }
                Err(e) if e.code == 404 => {}
                Err(e) => tracing::warn!(
                    "binding pod {}/{}: {e}",
                    meta::namespace(&pod),
                    meta::name(&pod)
                ),
            }
        }
        None
    }
}

/// Writes the scheduler's decision on a pod still unscheduled: bound to `node` with
/// `PodScheduled=True`, or (no node) `PodScheduled=False`, `Unschedulable`, `message` — the
/// condition replaced only when it says something else (a no-op write moves nothing).
fn write_scheduling(
    store: &Store,
    pod: &Obj,
    node: Option<&str>,
    message: Option<&str>,
) -> Result<Obj, crate::error::ApiError> {
    store.modify(
        PODS,
        meta::namespace(pod),
        meta::name(pod),
        Sub::Main,
        WriteOpts::internal(),
        |cur| {
            let mut new = cur.clone();
            if !unscheduled(cur) {
                return Ok(new);
            }
            let mut cond = json!({"type": "PodScheduled", "lastProbeTime": null,
                "lastTransitionTime": meta::now_rfc3339()});
            match node {
                Some(n) => {
                    new["spec"]["nodeName"] = json!(n);
                    cond["status"] = json!("True");
                }
                None => {
                    cond["status"] = json!("False");
                    cond["reason"] = json!("Unschedulable");
                    cond["message"] = json!(message);
                }
            }
            if !new.get("status").is_some_and(Value::is_object) {
                new["status"] = json!({});
            }
            match new["status"]
                .get_mut("conditions")
                .and_then(Value::as_array_mut)
            {
                Some(cs) => {
                    let same = cs.iter().any(|c| {
                        c.get("type") == cond.get("type")
                            && c.get("status") == cond.get("status")
                            && c.get("message") == cond.get("message")
                    });
                    if !same {
                        cs.retain(|c| c.get("type") != cond.get("type"));
                        cs.push(cond);
                    }
                }
                None => new["status"]["conditions"] = json!([cond]),
            }
            Ok(new)
        },
    )
}
