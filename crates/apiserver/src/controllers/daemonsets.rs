//! DaemonSets: one pod of the template per eligible Node, as kube-controller-manager's daemon
//! controller. A Node is eligible when the template (plus the default DaemonSet tolerations)
//! satisfies its nodeSelector, required node affinity and taints; pods are pinned to their Node
//! with a `matchFields metadata.name` node affinity term and the scheduler binds them. Pods on
//! Nodes that may no longer run them (a NoExecute taint, affinity, the Node gone) are deleted;
//! a changed template rolls out per `updateStrategy` (RollingUpdate within maxUnavailable,
//! OnDelete only on deletion), and the status carries the counts `kubectl rollout status` reads.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::controllers::deployments::pod_ready;
use crate::controllers::{nodefit, Controller};
use crate::meta;
use crate::resources::{ResId, DAEMONSETS, NODES, PODS};
use crate::selector::{JsonSelector, LabelSelector};
use crate::store::{DeleteOpts, Event, Obj, Store, Sub, WriteOpts};

pub struct DaemonSets;

pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Where the API server keeps a DaemonSet's template generation (bumped on template change).
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The revision hash of a DaemonSet's template.
pub fn revision_hash(ds: &Value) -> String {
    let template = meta::path(ds, "spec.template")
        .cloned()
        .unwrap_or(Value::Null);
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    meta::safe_encode(sarasa_model::hash::fnv1a32(&bytes))
}

fn template_generation(ds: &Value) -> String {
    meta::path(ds, "metadata.annotations")
        .and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION))
        .and_then(Value::as_str)
        .unwrap_or("1")
        .to_string()
}

/// The tolerations the controller adds to every daemon pod (AddOrUpdateDaemonPodTolerations).
pub fn default_tolerations(host_network: bool) -> Vec<Value> {
    let mut out = vec![
        json!({"key": nodefit::TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": nodefit::TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": nodefit::TAINT_DISK_PRESSURE, "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": nodefit::TAINT_MEMORY_PRESSURE, "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": nodefit::TAINT_PID_PRESSURE, "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": nodefit::TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}),
    ];
    if host_network {
        out.push(json!({"key": nodefit::TAINT_NETWORK_UNAVAILABLE, "operator": "Exists", "effect": "NoSchedule"}));
    }
    out
}

/// The template's pod spec with the default tolerations added (those it lacks).
fn daemon_pod_spec(ds: &Value) -> Value {
    let mut spec = meta::path(ds, "spec.template.spec")
        .cloned()
        .unwrap_or(json!({}));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    let mut tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in default_tolerations(host_network) {
        let same = |o: &Value| {
            o.get("key") == t.get("key")
                && o.get("effect") == t.get("effect")
                && o.get("operator") == t.get("operator")
        };
        if !tolerations.iter().any(same) {
            tolerations.push(t);
        }
    }
    spec["tolerations"] = json!(tolerations);
    spec
}

/// (should run: a new pod goes there, should continue running: an existing pod stays).
fn node_should_run(spec: &Value, node: &Value) -> (bool, bool) {
    if meta::is_deleting(node) || !nodefit::affinity_matches(spec, node) {
        return (false, false);
    }
    let taints = nodefit::effective_taints(node);
    let run = nodefit::untolerated(spec, &taints, &["NoSchedule", "NoExecute"]).is_none();
    let stay = nodefit::untolerated(spec, &taints, &["NoExecute"]).is_none();
    (run, stay)
}

/// maxUnavailable of `desired` nodes: an int, or a percent rounded up (as the daemon controller
/// scales it); at least 1 so a rollout always progresses. Saturates instead of overflowing.
pub fn max_unavailable(v: Option<&Value>, desired: i64) -> i64 {
    let n = match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(i64::MAX),
        Some(Value::String(s)) => match s.strip_suffix('%').map(str::parse::<i64>) {
            Some(Ok(pct)) => pct.clamp(0, 100).saturating_mul(desired).saturating_add(99) / 100,
            _ => s.parse::<i64>().unwrap_or(1),
        },
        _ => 1,
    };
    n.max(1)
}

fn new_pod(ds: &Value, spec: &Value, node: &str, hash: &str) -> Value {
    let name = meta::name(ds);
    let mut labels = meta::path(ds, "spec.template.metadata.labels")
        .cloned()
        .unwrap_or(json!({}));
    labels[REVISION_HASH_LABEL] = json!(hash);
    labels[TEMPLATE_GENERATION_LABEL] = json!(template_generation(ds));
    let mut metadata = json!({
        "generateName": format!("{name}-"),
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "DaemonSet", "name": name, "uid": meta::uid(ds),
            "controller": true, "blockOwnerDeletion": true
        }]
    });
    if let Some(a) = meta::path(ds, "spec.template.metadata.annotations") {
        metadata["annotations"] = a.clone();
    }
    let mut spec = spec.clone();
    nodefit::pin_to_node(&mut spec, node);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// The node a daemon pod is for: its binding, or the node its affinity pins it to.
fn pod_node(p: &Value) -> Option<String> {
    match meta::path_str(p, "spec.nodeName").filter(|n| !n.is_empty()) {
        Some(n) => Some(n.to_string()),
        None => p
            .get("spec")
            .and_then(nodefit::pinned_node)
            .map(String::from),
    }
}

fn created_at(p: &Value) -> String {
    meta::path_str(p, "metadata.creationTimestamp")
        .unwrap_or("")
        .to_string()
}

/// Ready for at least minReadySeconds; `Err(wait)` when Ready but not yet long enough.
fn available(p: &Value, min_ready: i64, now: i64) -> Result<bool, i64> {
    if !pod_ready(p) {
        return Ok(false);
    }
    if min_ready <= 0 {
        return Ok(true);
    }
    let since = meta::path(p, "status.conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("lastTransitionTime")?.as_str())
        .and_then(meta::parse_ts)
        .unwrap_or(now);
    let left = since.saturating_add(min_ready).saturating_sub(now);
    if left <= 0 {
        Ok(true)
    } else {
        Err(left)
    }
}

#[derive(Default)]
struct Counts {
    desired: i64,
    current: i64,
    misscheduled: i64,
    ready: i64,
    available: i64,
    updated: i64,
}

/// Reconciles one DaemonSet; returns when to look again (minReadySeconds pending).
fn reconcile_one(store: &Store, ds: &Value, nodes: &[Obj]) -> Option<Duration> {
    if meta::is_deleting(ds) {
        return None;
    }
    let ns = meta::namespace(ds);
    let name = meta::name(ds);
    let uid = meta::uid(ds).to_string();
    let hash = revision_hash(ds);
    let spec = daemon_pod_spec(ds);
    let selector = meta::path(ds, "spec.selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .unwrap_or_default();
    let (pods, _) = store.list(PODS, Some(ns), |p| {
        meta::controller_uid(p) == Some(uid.as_str())
    });
    let mut by_node: BTreeMap<String, Vec<Obj>> = BTreeMap::new();
    let mut terminating: HashSet<String> = HashSet::new();
    let mut orphans: Vec<Obj> = Vec::new();
    for p in pods.into_iter().filter(|p| selector.matches_object(p)) {
        match pod_node(&p) {
            Some(n) if meta::is_deleting(&p) => {
                terminating.insert(n);
            }
            Some(n) => by_node.entry(n).or_default().push(p),
            None => orphans.push(p),
        }
    }
    let delete = |p: &Obj| {
        if let Err(e) = store.delete(PODS, ns, meta::name(p), &DeleteOpts::default()) {
            if e.code != 404 {
                tracing::warn!("daemonset {ns}/{name}: deleting pod {}: {e}", meta::name(p));
            }
        }
    };
    let min_ready = meta::path(ds, "spec.minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let now = meta::now_secs();
    let mut requeue: Option<i64> = None;
    let mut counts = Counts::default();
    let on_delete = meta::path_str(ds, "spec.updateStrategy.type") == Some("OnDelete");
    // Per eligible node: the pod kept there (None: none yet).
    let mut kept: Vec<(String, Option<Obj>)> = Vec::new();
    let known: HashSet<&str> = nodes.iter().map(|n| meta::name(n)).collect();
    for p in &orphans {
        delete(p);
    }
    for (node, ps) in &by_node {
        if !known.contains(node.as_str()) {
            ps.iter().for_each(delete);
        }
    }
    for node in nodes {
        let node_name = meta::name(node).to_string();
        let (run, stay) = node_should_run(&spec, node);
        let mut here = by_node.remove(&node_name).unwrap_or_default();
        if !stay {
            here.iter().for_each(delete);
            continue;
        }
        if !run && !here.is_empty() {
            counts.misscheduled += 1;
        }
        // Failed daemon pods are replaced; of several, the oldest stays.
        here.retain(|p| {
            let failed = meta::path_str(p, "status.phase") == Some("Failed");
            if failed {
                delete(p);
            }
            !failed
        });
        here.sort_by_key(|p| (created_at(p), meta::name(p).to_string()));
        if here.len() > 1 {
            here.drain(1..).for_each(|p| delete(&p));
        }
        let pod = here.pop();
        if !run {
            continue;
        }
        counts.desired += 1;
        match pod {
            Some(p) => kept.push((node_name, Some(p))),
            // A pod still terminating there (hostNetwork ports, one per node) is waited for.
            None if terminating.contains(&node_name) => kept.push((node_name, None)),
            None => match store.create(
                PODS,
                ns,
                new_pod(ds, &spec, &node_name, &hash),
                WriteOpts::internal(),
            ) {
                Ok(p) => kept.push((node_name, Some(p))),
                Err(e) => {
                    tracing::warn!("daemonset {ns}/{name}: creating a pod for {node_name}: {e}");
                    kept.push((node_name, None));
                }
            },
        }
    }
    let is_available = |p: &Obj, requeue: &mut Option<i64>| match available(p, min_ready, now) {
        Ok(a) => a,
        Err(wait) => {
            *requeue = Some(requeue.map_or(wait, |r: i64| r.min(wait)));
            false
        }
    };
    if !on_delete {
        // RollingUpdate: old pods that are unavailable go at once; available ones go while the
        // number of unavailable nodes stays within maxUnavailable.
        let budget = max_unavailable(
            meta::path(ds, "spec.updateStrategy.rollingUpdate.maxUnavailable"),
            counts.desired,
        );
        let mut unavailable = kept
            .iter()
            .filter(|(_, p)| p.as_ref().is_none_or(|p| !is_available(p, &mut None)))
            .count() as i64;
        for (_, slot) in kept.iter_mut() {
            let Some(p) = slot else { continue };
            if meta::label(p, REVISION_HASH_LABEL) == Some(hash.as_str()) {
                continue;
            }
            if !is_available(p, &mut None) {
                delete(p);
                *slot = None;
            } else if unavailable < budget {
                delete(p);
                *slot = None;
                unavailable += 1;
            }
        }
    }
    for (_, p) in &kept {
        let Some(p) = p else { continue };
        counts.current += 1;
        if meta::label(p, REVISION_HASH_LABEL) == Some(hash.as_str()) {
            counts.updated += 1;
        }
        if pod_ready(p) {
            counts.ready += 1;
        }
        if is_available(p, &mut requeue) {
            counts.available += 1;
        }
    }
    write_status(store, ds, &counts);
    requeue.map(|s| Duration::from_secs(s.max(1) as u64))
}

fn write_status(store: &Store, ds: &Value, c: &Counts) {
    let ns = meta::namespace(ds);
    let name = meta::name(ds);
    let generation = meta::metadata(ds)
        .get("generation")
        .cloned()
        .unwrap_or(json!(1));
    let r = store.modify(
        DAEMONSETS,
        ns,
        name,
        Sub::Status,
        WriteOpts::internal(),
        |cur| {
            let mut status = json!({
                "desiredNumberScheduled": c.desired,
                "currentNumberScheduled": c.current,
                "numberMisscheduled": c.misscheduled,
                "numberReady": c.ready,
                "updatedNumberScheduled": c.updated,
                "numberAvailable": c.available,
                "observedGeneration": generation,
            });
            if c.desired > c.available {
                status["numberUnavailable"] = json!(c.desired - c.available);
            }
            let mut new = cur.clone();
            if new.get("status") == Some(&status) {
                return Ok(new);
            }
            new["status"] = status;
            Ok(new)
        },
    );
    if let Err(e) = r {
        if e.code != 404 {
            tracing::warn!("daemonset {ns}/{name}: writing status: {e}");
        }
    }
}

impl Controller for DaemonSets {
    fn name(&self) -> &'static str {
        "daemonsets"
    }

    fn watches(&self) -> &'static [ResId] {
        &[DAEMONSETS, PODS, NODES]
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        let targets: Vec<Obj> = match events {
            Some(evs) if !evs.iter().any(|e| e.res == NODES) => {
                let mut keys: HashSet<(String, String)> = HashSet::new();
                let mut owners: HashSet<(String, String)> = HashSet::new();
                for e in evs {
                    if e.res == DAEMONSETS {
                        keys.insert((meta::namespace(&e.obj).into(), meta::name(&e.obj).into()));
                        continue;
                    }
                    for o in std::iter::once(&e.obj).chain(e.prev.as_ref()) {
                        if let Some(uid) = meta::controller_uid(o) {
                            owners.insert((meta::namespace(o).into(), uid.into()));
                        }
                    }
                }
                let mut out: Vec<Obj> = Vec::new();
                for ns in owners.iter().map(|(ns, _)| ns).collect::<HashSet<_>>() {
                    out.extend(
                        store
                            .list(DAEMONSETS, Some(ns), |d| {
                                owners.contains(&(ns.clone(), meta::uid(d).to_string()))
                            })
                            .0,
                    );
                }
                for (ns, name) in keys {
                    if !out
                        .iter()
                        .any(|d| meta::namespace(d) == ns && meta::name(d) == name)
                    {
                        if let Ok(d) = store.get(DAEMONSETS, &ns, &name) {
                            out.push(d);
                        }
                    }
                }
                out
            }
            _ => store.list(DAEMONSETS, None, |_| true).0,
        };
        if targets.is_empty() {
            return None;
        }
        let (nodes, _) = store.list(NODES, None, |_| true);
        targets
            .iter()
            .filter_map(|d| reconcile_one(store, d, &nodes))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unavailable_rounds_percent_up_and_saturates() {
        assert_eq!(max_unavailable(None, 10), 1);
        assert_eq!(max_unavailable(Some(&json!(3)), 10), 3);
        assert_eq!(max_unavailable(Some(&json!("25%")), 10), 3);
        assert_eq!(max_unavailable(Some(&json!("0%")), 10), 1);
        assert_eq!(
            max_unavailable(Some(&json!("100%")), i64::MAX),
            i64::MAX / 100
        );
        assert_eq!(max_unavailable(Some(&json!(u64::MAX)), 3), i64::MAX);
    }

    #[test]
    fn default_tolerations_let_pods_on_cordoned_and_unready_nodes_but_not_tainted() {
        let ds = json!({"spec": {"template": {"spec": {"hostNetwork": true, "containers": []}}}});
        let spec = daemon_pod_spec(&ds);
        let cordoned = json!({"metadata": {"name": "a"}, "spec": {"unschedulable": true,
            "taints": [{"key": nodefit::TAINT_NETWORK_UNAVAILABLE, "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(node_should_run(&spec, &cordoned), (true, true));
        // NotReady: the NoSchedule not-ready taint keeps new pods off, NoExecute is tolerated.
        let not_ready = json!({"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(node_should_run(&spec, &not_ready), (false, true));
        let tainted = json!({"metadata": {"name": "c"}, "spec": {"taints": [{"key": "x", "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(node_should_run(&spec, &tainted), (false, false));
        let everything =
            json!({"spec": {"template": {"spec": {"tolerations": [{"operator": "Exists"}]}}}});
        let spec = daemon_pod_spec(&everything);
        assert_eq!(node_should_run(&spec, &not_ready), (true, true));
        assert_eq!(node_should_run(&spec, &tainted), (true, true));
    }
}
