//! Whether a pod may run on a Node: `nodeSelector`, required node affinity (label
//! `matchExpressions` and `matchFields` on `metadata.name`), and taints against tolerations.
//! Shared by the scheduler and the DaemonSet controller so both decide alike, as
//! kube-scheduler's NodeAffinity/TaintToleration plugins and the DaemonSet controller's
//! predicates do.

use serde_json::{json, Value};

use crate::meta;

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// One taint of a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

impl Taint {
    fn new(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: String::new(),
            effect: effect.into(),
        }
    }
}

/// `spec.taints` of a Node.
pub fn spec_taints(node: &Value) -> Vec<Taint> {
    meta::path(node, "spec.taints")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .map(|t| Taint {
                    key: str_of(t, "key").into(),
                    value: str_of(t, "value").into(),
                    effect: str_of(t, "effect").into(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `spec.taints` plus the taints the node lifecycle controller derives from the Node's state
/// (TaintNodesByCondition): `unschedulable` for a cordoned Node, `not-ready` for Ready=False or
/// no Ready condition yet (a kubelet registers with it), `unreachable` for Ready=Unknown.
pub fn effective_taints(node: &Value) -> Vec<Taint> {
    let mut out = spec_taints(node);
    let mut add = |t: Taint| {
        if !out.iter().any(|o| o.key == t.key && o.effect == t.effect) {
            out.push(t);
        }
    };
    if meta::path(node, "spec.unschedulable").and_then(Value::as_bool) == Some(true) {
        add(Taint::new(TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    let ready = meta::path(node, "status.conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_of(c, "type") == "Ready"))
        .map(|c| str_of(c, "status"));
    let cond_taint = match ready {
        Some("True") => None,
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        _ => Some(TAINT_NOT_READY),
    };
    if let Some(key) = cond_taint {
        add(Taint::new(key, "NoSchedule"));
        add(Taint::new(key, "NoExecute"));
    }
    out
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// ToleratesTaint: an empty key with `Exists` tolerates everything; an empty effect matches
/// every effect; `Equal` (the default operator) compares values.
pub fn tolerates(toleration: &Value, taint: &Taint) -> bool {
    let effect = str_of(toleration, "effect");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = str_of(toleration, "key");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match str_of(toleration, "operator") {
        "Exists" => true,
        "" | "Equal" => str_of(toleration, "value") == taint.value,
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration of `pod_spec` tolerates.
pub fn untolerated<'a>(
    pod_spec: &Value,
    taints: &'a [Taint],
    effects: &[&str],
) -> Option<&'a Taint> {
    let tolerations = pod_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    taints.iter().find(|t| {
        effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t))
    })
}

/// `spec.nodeSelector` and `requiredDuringSchedulingIgnoredDuringExecution` of `pod_spec`
/// hold for `node`.
pub fn affinity_matches(pod_spec: &Value, node: &Value) -> bool {
    if let Some(sel) = pod_spec.get("nodeSelector").and_then(Value::as_object) {
        if !sel.iter().all(|(k, v)| meta::label(node, k) == v.as_str()) {
            return false;
        }
    }
    let Some(terms) = meta::path(
        pod_spec,
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
    )
    .and_then(Value::as_array) else {
        return true;
    };
    // Terms are ORed; a term with no requirement matches nothing.
    terms.iter().any(|term| term_matches(term, node))
}

fn term_matches(term: &Value, node: &Value) -> bool {
    let exprs = term.get("matchExpressions").and_then(Value::as_array);
    let fields = term.get("matchFields").and_then(Value::as_array);
    if exprs.is_none_or(Vec::is_empty) && fields.is_none_or(Vec::is_empty) {
        return false;
    }
    let labels_ok = exprs.into_iter().flatten().all(|e| {
        let key = str_of(e, "key");
        requirement_holds(e, meta::label(node, key))
    });
    let fields_ok = fields.into_iter().flatten().all(|e| {
        // metadata.name is the only field the API accepts here.
        let v = (str_of(e, "key") == "metadata.name").then(|| meta::name(node));
        requirement_holds(e, v)
    });
    labels_ok && fields_ok
}

/// One NodeSelectorRequirement against the value (or absence) of its key.
fn requirement_holds(req: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> = req
        .get("values")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match str_of(req, "operator") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(want)) =
                (value.and_then(int), values.first().and_then(|v| int(v)))
            else {
                return false;
            };
            if str_of(req, "operator") == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// The node a pod is pinned to by a `matchFields` `metadata.name In [one]` term (what the
/// DaemonSet controller writes), if every term pins the same single node.
pub fn pinned_node(pod_spec: &Value) -> Option<&str> {
    let terms = meta::path(
        pod_spec,
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms",
    )?
    .as_array()?;
    let mut found = None;
    for term in terms {
        let name = term
            .get("matchFields")?
            .as_array()?
            .iter()
            .find(|f| str_of(f, "key") == "metadata.name" && str_of(f, "operator") == "In")
            .and_then(|f| f.get("values")?.as_array())
            .filter(|v| v.len() == 1)
            .and_then(|v| v[0].as_str())?;
        if found.is_some_and(|f| f != name) {
            return None;
        }
        found = Some(name);
    }
    found
}

/// Replaces the required node affinity's terms so the pod can only go to `node` (keeping each
/// term's label requirements), as the DaemonSet controller's ReplaceDaemonSetPodNodeNameNodeAffinity.
pub fn pin_to_node(pod_spec: &mut Value, node: &str) {
    let field = json!({"key": "metadata.name", "operator": "In", "values": [node]});
    let path = [
        "affinity",
        "nodeAffinity",
        "requiredDuringSchedulingIgnoredDuringExecution",
    ];
    let mut cur = &mut *pod_spec;
    for p in path {
        if !cur.get(p).is_some_and(Value::is_object) {
            cur[p] = json!({});
        }
        cur = &mut cur[p];
    }
    let terms = cur
        .get("nodeSelectorTerms")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let new_terms: Vec<Value> = if terms.is_empty() {
        vec![json!({"matchFields": [field]})]
    } else {
        terms
            .into_iter()
            .map(|mut t| {
                t["matchFields"] = json!([field.clone()]);
                t
            })
            .collect()
    };
    cur["nodeSelectorTerms"] = json!(new_terms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        }
    }

    #[test]
    fn tolerations_match_as_kubernetes_defines() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(&json!({"operator": "Exists"}), &t));
        assert!(tolerates(
            &json!({"key": "dedicated", "operator": "Exists"}),
            &t
        ));
        assert!(tolerates(&json!({"key": "dedicated", "value": "gpu"}), &t));
        assert!(!tolerates(&json!({"key": "dedicated", "value": "cpu"}), &t));
        assert!(!tolerates(
            &json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}),
            &t
        ));
        assert!(!tolerates(
            &json!({"key": "other", "operator": "Exists"}),
            &t
        ));
    }

    #[test]
    fn node_state_becomes_taints() {
        let n = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let keys: Vec<(String, String)> = effective_taints(&n)
            .into_iter()
            .map(|t| (t.key, t.effect))
            .collect();
        assert_eq!(
            keys,
            [
                (TAINT_UNSCHEDULABLE.into(), "NoSchedule".into()),
                (TAINT_UNREACHABLE.into(), "NoSchedule".into()),
                (TAINT_UNREACHABLE.into(), "NoExecute".into())
            ]
        );
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(effective_taints(&ready).is_empty());
    }

    #[test]
    fn affinity_terms_or_and_requirements_and() {
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a", "cores": "8"}}});
        let spec = |terms: Value| json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}});
        assert!(affinity_matches(
            &spec(
                json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                         {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])
            ),
            &node
        ));
        assert!(!affinity_matches(
            &spec(
                json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}],
                          "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}])
            ),
            &node
        ));
        assert!(affinity_matches(
            &spec(
                json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]},
                                                {"key": "gpu", "operator": "DoesNotExist"}]}])
            ),
            &node
        ));
        assert!(!affinity_matches(&spec(json!([{}])), &node));
        assert!(!affinity_matches(
            &json!({"nodeSelector": {"zone": "b"}}),
            &node
        ));
    }

    #[test]
    fn pinning_keeps_label_terms_and_is_read_back() {
        let mut s = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}});
        pin_to_node(&mut s, "n1");
        assert_eq!(pinned_node(&s), Some("n1"));
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}});
        assert!(affinity_matches(&s, &node));
        let other_zone = json!({"metadata": {"name": "n1", "labels": {"zone": "b"}}});
        assert!(!affinity_matches(&s, &other_zone));
        let mut bare = json!({});
        pin_to_node(&mut bare, "n2");
        assert_eq!(pinned_node(&bare), Some("n2"));
    }
}
