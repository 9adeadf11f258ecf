//! The columns of each kind's Table, as Kubernetes' printers define them
//! (pkg/printers/internalversion): names, types, `priority: 1` for the `-o wide` columns, and
//! the cell values kubectl users know (READY `1/1`, PORT(S) `80:30080/TCP`, AGE `5m`, ...).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::http::table::age;
use crate::meta;

const NONE: &str = "<none>";

/// (name, type, priority, description)
type Col = (&'static str, &'static str, u8, &'static str);

const NAME: Col = (
    "Name",
    "string",
    0,
    "Name must be unique within a namespace.",
);
const AGE: Col = (
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

fn defs(kind: &str) -> Vec<Col> {
    match kind {
        "Pod" => vec![
            NAME,
            ("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
            ("Status", "string", 0, "The aggregate status of the containers in this pod."),
            ("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE,
            ("IP", "string", 1, "IP address allocated to the pod."),
            ("Node", "string", 1, "Name of the node the pod is assigned to."),
            ("Nominated Node", "string", 1, "Name of the node the scheduler nominated for this pod."),
            ("Readiness Gates", "string", 1, "Pod readiness gates."),
        ],
        "Service" => vec![
            NAME,
            ("Type", "string", 0, "How the service is exposed."),
            ("Cluster-IP", "string", 0, "The cluster IP address of the service."),
            ("External-IP", "string", 0, "The external IP addresses of the service."),
            ("Port(s)", "string", 0, "The ports the service is exposed on."),
            AGE,
            ("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector."),
        ],
        "Deployment" => vec![
            NAME,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            ("Up-to-date", "string", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
            ("Available", "string", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
            ("Selector", "string", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ],
        "DaemonSet" => vec![
            NAME,
            ("Desired", "integer", 0, "The total number of nodes that should be running the daemon pod."),
            ("Current", "integer", 0, "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            ("Ready", "integer", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
            ("Up-to-date", "integer", 0, "The total number of nodes that are running updated daemon pod"),
            ("Available", "integer", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
            ("Node Selector", "string", 0, "NodeSelector is a selector which must be true for the pod to fit on a node."),
            AGE,
            ("Containers", "string", 1, "Names of each container in the template."),
            ("Images", "string", 1, "Images referenced by each container in the template."),
            ("Selector", "string", 1, "A label query over pods that are managed by the daemon set."),
        ],
        "Node" => vec![
            NAME,
            ("Status", "string", 0, "The status of the node"),
            ("Roles", "string", 0, "The roles of the node"),
            AGE,
            ("Version", "string", 0, "Kubelet Version reported by the node."),
            ("Internal-IP", "string", 1, "List of internal IPs in the node."),
            ("External-IP", "string", 1, "List of external IPs in the node."),
            ("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            ("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            ("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        "Namespace" => vec![
            NAME,
            ("Status", "string", 0, "The status of the namespace"),
            AGE,
        ],
        "EndpointSlice" => vec![
            NAME,
            ("AddressType", "string", 0, "Type of address contained in this endpoint slice."),
            ("Ports", "string", 0, "Ports contained in this endpoint slice."),
            ("Endpoints", "string", 0, "Endpoints contained in this endpoint slice."),
            AGE,
        ],
        "NetworkPolicy" => vec![
            NAME,
            ("Pod-Selector", "string", 0, "Selects the pods to which this NetworkPolicy object applies."),
            AGE,
        ],
        "Lease" => vec![
            NAME,
            ("Holder", "string", 0, "The holder of the lease"),
            AGE,
        ],
        "Event" => vec![
            ("Last Seen", "string", 0, "Time when last this event was recorded"),
            ("Type", "string", 0, "Type of this event (Normal, Warning), new types could be added in the future."),
            ("Reason", "string", 0, "This should be a short, machine understandable string that gives the reason for this event being generated."),
            ("Object", "string", 0, "The object that this event is about."),
            ("Subobject", "string", 1, "The subobject that this event is about."),
            ("Source", "string", 1, "The component reporting this event."),
            ("Message", "string", 0, "A human-readable description of the status of this operation."),
            ("First Seen", "string", 1, "The time at which the event was first recorded."),
            ("Count", "string", 1, "The number of times this event has occurred."),
            ("Name", "string", 1, "Name must be unique within a namespace."),
        ],
        "ConfigMap" => vec![
            NAME,
            ("Data", "string", 0, "The number of keys in the data and binaryData of the ConfigMap."),
            AGE,
        ],
        "Secret" => vec![
            NAME,
            ("Type", "string", 0, "The type of secret"),
            ("Data", "string", 0, "The number of keys in the data of the secret."),
            AGE,
        ],
        "ServiceAccount" => vec![
            NAME,
            ("Secrets", "string", 0, "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
            AGE,
        ],
        _ => vec![NAME, AGE],
    }
}

/// The column definitions of `kind`'s Table.
pub fn columns(kind: &str) -> Vec<Value> {
    defs(kind)
        .into_iter()
        .map(|(name, ty, priority, description)| {
            let format = if name == "Name" && !matches!(kind, "Event") {
                "name"
            } else {
                ""
            };
            json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
        })
        .collect()
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    meta::path_str(v, path).unwrap_or("")
}

fn i(v: &Value, path: &str) -> i64 {
    meta::path(v, path).and_then(Value::as_i64).unwrap_or(0)
}

fn arr<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    meta::path(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        NONE.into()
    } else {
        s
    }
}

fn created(obj: &Value) -> Option<&str> {
    meta::path_str(obj, "metadata.creationTimestamp")
}

/// The cells of one object's row, in `columns` order.
pub fn cells(obj: &Value, now: i64) -> Vec<Value> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = meta::name(obj).to_string();
    let age_ = age(created(obj), now);
    match kind {
        "Pod" => pod(obj, name, age_, now),
        "Service" => service(obj, name, age_),
        "Deployment" => {
            let containers = arr(obj, "spec.template.spec.containers");
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    i(obj, "status.readyReplicas"),
                    i(obj, "spec.replicas")
                )),
                json!(i(obj, "status.updatedReplicas")),
                json!(i(obj, "status.availableReplicas")),
                json!(age_),
                json!(join_field(containers, "name")),
                json!(join_field(containers, "image")),
                json!(label_selector(meta::path(obj, "spec.selector"))),
            ]
        }
        "DaemonSet" => {
            let containers = arr(obj, "spec.template.spec.containers");
            vec![
                json!(name),
                json!(i(obj, "status.desiredNumberScheduled")),
                json!(i(obj, "status.currentNumberScheduled")),
                json!(i(obj, "status.numberReady")),
                json!(i(obj, "status.updatedNumberScheduled")),
                json!(i(obj, "status.numberAvailable")),
                json!(or_none(map_pairs(meta::path(
                    obj,
                    "spec.template.spec.nodeSelector"
                )))),
                json!(age_),
                json!(join_field(containers, "name")),
                json!(join_field(containers, "image")),
                json!(label_selector(meta::path(obj, "spec.selector"))),
            ]
        }
        "Node" => node(obj, name, age_),
        "Namespace" => vec![json!(name), json!(s(obj, "status.phase")), json!(age_)],
        "EndpointSlice" => {
            let ports: Vec<String> = arr(obj, "ports")
                .iter()
                .map(|p| match p.get("port").and_then(Value::as_i64) {
                    Some(n) => n.to_string(),
                    None => "<unset>".into(),
                })
                .collect();
            let addrs: Vec<&str> = arr(obj, "endpoints")
                .iter()
                .flat_map(|e| arr(e, "addresses"))
                .filter_map(Value::as_str)
                .collect();
            let eps = if addrs.is_empty() {
                "<unset>".to_string()
            } else if addrs.len() > 3 {
                format!("{} + {} more...", addrs[..3].join(","), addrs.len() - 3)
            } else {
                addrs.join(",")
            };
            vec![
                json!(name),
                json!(s(obj, "addressType")),
                json!(if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(eps),
                json!(age_),
            ]
        }
        "NetworkPolicy" => vec![
            json!(name),
            json!(label_selector(meta::path(obj, "spec.podSelector"))),
            json!(age_),
        ],
        "Lease" => vec![
            json!(name),
            json!(s(obj, "spec.holderIdentity")),
            json!(age_),
        ],
        "Event" => event(obj, name, now),
        "ConfigMap" => {
            let n = ["data", "binaryData"]
                .iter()
                .filter_map(|k| obj.get(*k).and_then(Value::as_object))
                .map(|m| m.len())
                .sum::<usize>();
            vec![json!(name), json!(n), json!(age_)]
        }
        "Secret" => {
            let n = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![json!(name), json!(s(obj, "type")), json!(n), json!(age_)]
        }
        "ServiceAccount" => vec![json!(name), json!(arr(obj, "secrets").len()), json!(age_)],
        _ => vec![json!(name), json!(age_)],
    }
}

fn join_field(items: &[Value], field: &str) -> String {
    items
        .iter()
        .map(|c| c.get(field).and_then(Value::as_str).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(",")
}

/// `k=v,k2=v2`, sorted by key (Go's labels.Set.String()).
fn map_pairs(m: Option<&Value>) -> String {
    let Some(m) = m.and_then(Value::as_object) else {
        return String::new();
    };
    let sorted: BTreeMap<&String, &str> = m
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// metav1.FormatLabelSelector: matchLabels and matchExpressions as a selector string, or
/// `<none>` when it selects everything.
fn label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel else {
        return NONE.into();
    };
    let mut parts: Vec<String> = Vec::new();
    let labels = map_pairs(sel.get("matchLabels"));
    if !labels.is_empty() {
        parts.extend(labels.split(',').map(String::from));
    }
    for e in arr(sel, "matchExpressions") {
        let key = s(e, "key");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        parts.push(match s(e, "operator") {
            "In" => format!("{key} in ({})", sorted.join(",")),
            "NotIn" => format!("{key} notin ({})", sorted.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other}"),
        });
    }
    parts.sort();
    or_none(parts.join(","))
}

fn pod(obj: &Value, name: String, age_: String, now: i64) -> Vec<Value> {
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

fn service(obj: &Value, name: String, age_: String) -> Vec<Value> {
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

fn node(obj: &Value, name: String, age_: String) -> Vec<Value> {
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

fn event(obj: &Value, name: String, now: i64) -> Vec<Value> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(kind: &str, wide: bool) -> Vec<String> {
        columns(kind)
            .iter()
            .filter(|c| wide || c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap().to_uppercase())
            .collect()
    }

    #[test]
    fn column_sets_match_kubectl_against_a_real_cluster() {
        assert_eq!(
            names("Pod", false),
            ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        );
        assert_eq!(
            names("Pod", true),
            [
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
                "IP",
                "NODE",
                "NOMINATED NODE",
                "READINESS GATES"
            ]
        );
        assert_eq!(
            names("Service", true),
            [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "SELECTOR"
            ]
        );
        assert_eq!(
            names("Deployment", false),
            ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        );
        assert_eq!(
            names("Node", true),
            [
                "NAME",
                "STATUS",
                "ROLES",
                "AGE",
                "VERSION",
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME"
            ]
        );
        assert_eq!(names("Namespace", false), ["NAME", "STATUS", "AGE"]);
        assert_eq!(
            names("EndpointSlice", false),
            ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
        );
        assert_eq!(
            names("NetworkPolicy", false),
            ["NAME", "POD-SELECTOR", "AGE"]
        );
        assert_eq!(
            names("Event", false),
            ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        );
    }

    #[test]
    fn pod_cells_running_waiting_and_terminating() {
        let now = meta::parse_ts("2026-01-01T00:10:00Z").unwrap();
        let mut pod = json!({
            "kind": "Pod",
            "metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 2,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2026-01-01T00:09:00Z"}}}
            ]}
        });
        assert_eq!(
            cells(&pod, now),
            vec![
                json!("web-1"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("2 (60s ago)"),
                json!("10m"),
                json!("10.244.1.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:10:00Z");
        assert_eq!(cells(&pod, now)[2], "Terminating");
        let pending = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}});
        let c = cells(&pending, now);
        assert_eq!(
            (c[1].as_str(), c[2].as_str(), c[4].as_str(), c[5].as_str()),
            (
                Some("0/1"),
                Some("Pending"),
                Some("<unknown>"),
                Some("<none>")
            )
        );
    }

    #[test]
    fn service_cells_for_each_type() {
        let now = 0;
        let np = json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {
            "type": "NodePort", "clusterIP": "10.96.0.20", "selector": {"app": "web", "tier": "fe"},
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let c = cells(&np, now);
        assert_eq!(
            &c[1..5],
            &[
                json!("NodePort"),
                json!("10.96.0.20"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP")
            ]
        );
        assert_eq!(c[6], "app=web,tier=fe");
        let lb = json!({"kind": "Service", "metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.21", "ports": [{"port": 80}]}});
        assert_eq!(cells(&lb, now)[3], "<pending>");
        let lb_ready = json!({"kind": "Service", "metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": []},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.18.255.1"}]}}});
        assert_eq!(cells(&lb_ready, now)[3], "172.18.255.1");
        let headless =
            json!({"kind": "Service", "metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        assert_eq!(
            &cells(&headless, now)[1..5],
            &[
                json!("ClusterIP"),
                json!("None"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn deployment_node_slice_policy_and_event_cells() {
        let d = json!({"kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            &cells(&d, 0)[..4],
            &[json!("web"), json!("2/3"), json!(3), json!(2)]
        );
        assert_eq!(
            &cells(&d, 0)[5..],
            &[json!("nginx"), json!("nginx:1"), json!("app=web")]
        );
        let n = json!({"kind": "Node", "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.33.11"}],
                       "nodeInfo": {"kubeletVersion": "v1.34.0", "osImage": "Debian"}}});
        let c = cells(&n, 0);
        assert_eq!(
            &c[1..3],
            &[json!("Ready,SchedulingDisabled"), json!("control-plane")]
        );
        assert_eq!(
            &c[4..8],
            &[
                json!("v1.34.0"),
                json!("192.168.33.11"),
                json!("<none>"),
                json!("Debian")
            ]
        );
        let es = json!({"kind": "EndpointSlice", "metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"port": 8080}], "endpoints": [
                {"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        assert_eq!(
            &cells(&es, 0)[1..4],
            &[
                json!("IPv4"),
                json!("8080"),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...")
            ]
        );
        let np = json!({"kind": "NetworkPolicy", "metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
        assert_eq!(cells(&np, 0)[1], "<none>");
        let np = json!({"kind": "NetworkPolicy", "metadata": {"name": "x"}, "spec": {"podSelector": {
            "matchLabels": {"app": "db"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]}}});
        assert_eq!(cells(&np, 0)[1], "app=db,tier in (a,b)");
        let ev = json!({"kind": "Event", "metadata": {"name": "web.1"}, "type": "Normal", "reason": "Scheduled",
            "involvedObject": {"kind": "Pod", "name": "web-1"}, "message": "assigned", "source": {"component": "default-scheduler"},
            "lastTimestamp": "1970-01-01T00:00:00Z", "count": 1});
        let c = cells(&ev, 30);
        assert_eq!(
            &c[..4],
            &[
                json!("30s"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/web-1")
            ]
        );
        assert_eq!(c[5], "default-scheduler");
        assert_eq!(c.len(), columns("Event").len());
    }
}
