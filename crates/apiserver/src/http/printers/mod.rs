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
        "Role" | "ClusterRole" => vec![
            NAME,
            ("Created At", "date", 0, AGE.3),
        ],
        // The mcs-api CRDs' additionalPrinterColumns.
        "ServiceImport" => vec![
            NAME,
            ("Type", "string", 0, "The type of this ServiceImport"),
            ("IP", "string", 0, "The VIP for this ServiceImport"),
            AGE,
        ],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            NAME,
            ("Role", "string", 0, "Role of this binding."),
            AGE,
            ("Users", "string", 1, "Users in the roleBinding."),
            ("Groups", "string", 1, "Groups in the roleBinding."),
            ("ServiceAccounts", "string", 1, "ServiceAccounts in the roleBinding."),
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
        "Role" | "ClusterRole" => vec![json!(name), json!(created(obj).unwrap_or(""))],
        "RoleBinding" | "ClusterRoleBinding" => role_binding(obj, name, age_),
        "ServiceImport" => {
            // A CRD column of `.spec.ips`: the array as JSON, `<none>` when unset.
            let ips = meta::path(obj, "spec.ips")
                .filter(|v| !v.is_null())
                .map_or_else(|| NONE.to_string(), Value::to_string);
            vec![
                json!(name),
                json!(s(obj, "spec.type")),
                json!(ips),
                json!(age_),
            ]
        }
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

mod rows;
#[cfg(test)]
mod tests;

use rows::{event, node, pod, role_binding, service};
