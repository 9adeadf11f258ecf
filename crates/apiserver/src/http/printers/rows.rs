//! The cells of the kinds whose status takes rules to summarise: a Pod's READY/STATUS/RESTARTS
//! (printPod's walk over init and app container states), a Service's EXTERNAL-IP and PORT(S), a
//! Node's STATUS and ROLES, an Event of either API group, and a RoleBinding's subjects.

use serde_json::{json, Value};

use super::{arr, i, map_pairs, or_none, s, NONE};
use crate::http::table::age;
use crate::meta;

pub(super) fn pod(obj: &Value, name: String, age_: String, now: i64) -> Vec<Value> {
    let total = arr(obj, "spec.containers").len();
    let mut restarts = 0;
    let mut ready = 0;
    let mut last_restart: Option<i64> = None;
    let mut reason = s(obj, "status.phase").to_string();
    if !s(obj, "status.reason").is_empty() {
        reason = s(obj, "status.reason").to_string();
    }
    let mut note_restart = |c: &Value| {
        if let Some(t) =
            meta::path_str(c, "lastState.terminated.finishedAt").and_then(meta::parse_ts)
        {
            last_restart = Some(last_restart.map_or(t, |l: i64| l.max(t)));
        }
    };
    // Init containers first: a pod still initializing shows `Init:<n>/<total>` or the reason.
    let inits = arr(obj, "spec.initContainers").len();
    let mut initializing = false;
    for (idx, c) in arr(obj, "status.initContainerStatuses").iter().enumerate() {
        restarts += i(c, "restartCount");
        note_restart(c);
        if meta::path(c, "state.terminated").is_some() && i(c, "state.terminated.exitCode") == 0 {
            continue;
        }
        initializing = true;
        reason = if meta::path(c, "state.terminated").is_some() {
            let r = s(c, "state.terminated.reason");
            if r.is_empty() {
                if i(c, "state.terminated.signal") != 0 {
                    format!("Init:Signal:{}", i(c, "state.terminated.signal"))
                } else {
                    format!("Init:ExitCode:{}", i(c, "state.terminated.exitCode"))
                }
            } else {
                format!("Init:{r}")
            }
        } else if !s(c, "state.waiting.reason").is_empty()
            && s(c, "state.waiting.reason") != "PodInitializing"
        {
            format!("Init:{}", s(c, "state.waiting.reason"))
        } else {
            format!("Init:{idx}/{inits}")
        };
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in arr(obj, "status.containerStatuses").iter().rev() {
            restarts += i(c, "restartCount");
            note_restart(c);
            if !s(c, "state.waiting.reason").is_empty() {
                reason = s(c, "state.waiting.reason").to_string();
            } else if meta::path(c, "state.terminated").is_some() {
                let r = s(c, "state.terminated.reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if i(c, "state.terminated.signal") != 0 {
                    format!("Signal:{}", i(c, "state.terminated.signal"))
                } else {
                    format!("ExitCode:{}", i(c, "state.terminated.exitCode"))
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true)
                && meta::path(c, "state.running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = arr(obj, "status.conditions")
                .iter()
                .any(|c| s(c, "type") == "Ready" && s(c, "status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }
    if meta::path(obj, "metadata.deletionTimestamp").is_some() {
        reason = if s(obj, "status.reason") == "NodeLost" {
            "Unknown"
        } else {
            "Terminating"
        }
        .into();
    }
    let restarts_cell = match last_restart {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            crate::http::table::human_duration(now - t)
        ),
        _ => restarts.to_string(),
    };
    let gates = arr(obj, "spec.readinessGates");
    let gates_cell = if gates.is_empty() {
        NONE.to_string()
    } else {
        let conds = arr(obj, "status.conditions");
        let true_ = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .any(|c| s(c, "type") == s(g, "conditionType") && s(c, "status") == "True")
            })
            .count();
        format!("{true_}/{}", gates.len())
    };
    vec![
        json!(name),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age_),
        json!(or_none(s(obj, "status.podIP").to_string())),
        json!(or_none(s(obj, "spec.nodeName").to_string())),
        json!(or_none(s(obj, "status.nominatedNodeName").to_string())),
        json!(gates_cell),
    ]
}

pub(super) fn service(obj: &Value, name: String, age_: String) -> Vec<Value> {
    let ty = s(obj, "spec.type");
    let ty = if ty.is_empty() { "ClusterIP" } else { ty };
    let external: Vec<String> = arr(obj, "spec.externalIPs")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let external_cell = match ty {
        "LoadBalancer" => {
            let mut ips: Vec<String> = arr(obj, "status.loadBalancer.ingress")
                .iter()
                .filter_map(|i| {
                    i.get("ip")
                        .or_else(|| i.get("hostname"))
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .collect();
            ips.extend(external);
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        "ExternalName" => s(obj, "spec.externalName").to_string(),
        _ => or_none(external.join(",")),
    };
    let ports: Vec<String> = arr(obj, "spec.ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) if np != 0 => format!("{}:{np}/{proto}", i(p, "port")),
                _ => format!("{}/{proto}", i(p, "port")),
            }
        })
        .collect();
    let cluster_ip = s(obj, "spec.clusterIP");
    vec![
        json!(name),
        json!(ty),
        json!(or_none(cluster_ip.to_string())),
        json!(external_cell),
        json!(or_none(ports.join(","))),
        json!(age_),
        json!(or_none(map_pairs(meta::path(obj, "spec.selector")))),
    ]
}

pub(super) fn node(obj: &Value, name: String, age_: String) -> Vec<Value> {
    let ready = arr(obj, "status.conditions")
        .iter()
        .find(|c| s(c, "type") == "Ready")
        .map(|c| s(c, "status"));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if meta::path(obj, "spec.unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = meta::path(obj, "metadata.labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
                        Some(r.to_string())
                    } else if k == "kubernetes.io/role" {
                        v.as_str().map(String::from)
                    } else {
                        None
                    }
                })
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    roles.dedup();
    let addr = |ty: &str| {
        arr(obj, "status.addresses")
            .iter()
            .find(|a| s(a, "type") == ty)
            .map_or(NONE.to_string(), |a| s(a, "address").to_string())
    };
    let info = |f: &str| {
        let v = s(obj, &format!("status.nodeInfo.{f}"));
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        json!(name),
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age_),
        json!(s(obj, "status.nodeInfo.kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

pub(super) fn event(obj: &Value, name: String, now: i64) -> Vec<Value> {
    // core/v1 and events.k8s.io/v1 name the same things differently.
    let pick = |paths: &[&str]| {
        paths
            .iter()
            .map(|p| s(obj, p))
            .find(|v| !v.is_empty())
            .unwrap_or("")
            .to_string()
    };
    let last = pick(&[
        "lastTimestamp",
        "deprecatedLastTimestamp",
        "eventTime",
        "series.lastObservedTime",
        "firstTimestamp",
    ]);
    let first = pick(&["firstTimestamp", "deprecatedFirstTimestamp", "eventTime"]);
    let obj_ref = if obj.get("involvedObject").is_some() {
        "involvedObject"
    } else {
        "regarding"
    };
    let kind = s(obj, &format!("{obj_ref}.kind")).to_lowercase();
    let object = format!("{kind}/{}", s(obj, &format!("{obj_ref}.name")));
    let component = pick(&[
        "source.component",
        "reportingController",
        "reportingComponent",
        "deprecatedSource.component",
    ]);
    let host = pick(&["source.host", "reportingInstance", "deprecatedSource.host"]);
    let source = if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    let count = meta::path(obj, "count")
        .or_else(|| meta::path(obj, "series.count"))
        .or_else(|| meta::path(obj, "deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    vec![
        json!(age(
            Some(&last).filter(|l| !l.is_empty()).map(String::as_str),
            now
        )),
        json!(s(obj, "type")),
        json!(s(obj, "reason")),
        json!(object),
        json!(s(obj, &format!("{obj_ref}.fieldPath"))),
        json!(source),
        json!(pick(&["message", "note"]).trim().to_string()),
        json!(age(
            Some(&first).filter(|l| !l.is_empty()).map(String::as_str),
            now
        )),
        json!(count.to_string()),
        json!(name),
    ]
}

/// ROLE `Kind/name`; USERS, GROUPS and SERVICEACCOUNTS (`namespace/name`) from the subjects.
pub(super) fn role_binding(obj: &Value, name: String, age_: String) -> Vec<Value> {
    let subjects = arr(obj, "subjects");
    let of_kind = |kind: &str| {
        subjects
            .iter()
            .filter(|s_| s(s_, "kind") == kind)
            .map(|s_| {
                if kind == "ServiceAccount" {
                    format!("{}/{}", s(s_, "namespace"), s(s_, "name"))
                } else {
                    s(s_, "name").to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        json!(name),
        json!(format!(
            "{}/{}",
            s(obj, "roleRef.kind"),
            s(obj, "roleRef.name")
        )),
        json!(age_),
        json!(of_kind("User")),
        json!(of_kind("Group")),
        json!(of_kind("ServiceAccount")),
    ]
}
