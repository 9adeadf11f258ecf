//! kubectl's human-readable tables (`get` without `-o`, and `-o wide`): the same columns,
//! cell formats and spacing (tabwriter, three spaces of padding, last column unpadded).

use crate::age::age;
use crate::kind::ResourceKind;
use crate::object::Object;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use sarasa_model::mcs::ServiceImport;
use std::collections::BTreeMap;
use std::time::SystemTime;

const NONE: &str = "<none>";

/// How to draw a table.
#[derive(Debug, Clone, Copy)]
pub struct TableOptions {
    /// `-o wide`: the extra columns.
    pub wide: bool,
    /// `-A`: a leading NAMESPACE column (namespaced kinds only).
    pub all_namespaces: bool,
    /// The time AGE is measured from.
    pub now: SystemTime,
}

/// The table of `objects` (all of `kind`), header included, each line ending in `\n`.
pub fn render_table(kind: ResourceKind, objects: &[Object], opts: &TableOptions) -> String {
    let with_namespace = opts.all_namespaces && kind.namespaced();
    let mut header: Vec<&str> = Vec::new();
    if with_namespace {
        header.push("NAMESPACE");
    }
    header.extend(columns(kind, opts.wide));
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for object in objects {
        let mut row = Vec::new();
        if with_namespace {
            row.push(object.namespace().unwrap_or("").to_string());
        }
        row.extend(cells(object, opts));
        rows.push(row);
    }
    align(&rows)
}

fn columns(kind: ResourceKind, wide: bool) -> Vec<&'static str> {
    let (base, extra): (&[&str], &[&str]) = match kind {
        ResourceKind::Namespace => (&["NAME", "STATUS", "AGE"], &[]),
        ResourceKind::Node => (
            &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            &[
                "INTERNAL-IP",
                "EXTERNAL-IP",
                "OS-IMAGE",
                "KERNEL-VERSION",
                "CONTAINER-RUNTIME",
            ],
        ),
        ResourceKind::Pod => (
            &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            &["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
        ),
        ResourceKind::Deployment => (
            &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        ResourceKind::Service => (
            &[
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ],
            &["SELECTOR"],
        ),
        ResourceKind::EndpointSlice => (&["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], &[]),
        ResourceKind::NetworkPolicy => (&["NAME", "POD-SELECTOR", "AGE"], &[]),
        // The mcs-api CRDs' printer columns.
        ResourceKind::ServiceExport => (&["NAME", "AGE"], &[]),
        ResourceKind::ServiceImport => (&["NAME", "TYPE", "IP", "AGE"], &[]),
        // kubectl's event columns: no NAME, the age of the last occurrence first.
        ResourceKind::Event => (
            &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            &["SOURCE", "FIRST SEEN", "COUNT", "NAME"],
        ),
    };
    let mut cols = base.to_vec();
    if wide {
        cols.extend_from_slice(extra);
    }
    cols
}

fn cells(object: &Object, opts: &TableOptions) -> Vec<String> {
    if let Object::Event(e) = object {
        return event_cells(e, opts);
    }
    let created = object.metadata().creation_timestamp.as_ref();
    let age = age(created, opts.now);
    let name = object.name().to_string();
    let mut row = match object {
        Object::Namespace(ns) => namespace_cells(ns, opts.wide),
        Object::Node(node) => node_cells(node, opts.wide),
        Object::Pod(pod) => pod_cells(pod, opts.wide),
        Object::Deployment(d) => deployment_cells(d, opts.wide),
        Object::Service(svc) => service_cells(svc, opts.wide),
        Object::EndpointSlice(slice) => endpoint_slice_cells(slice),
        Object::NetworkPolicy(np) => network_policy_cells(np),
        Object::Event(e) => event_cells(e, opts),
        Object::ServiceExport(_) => Vec::new(),
        Object::ServiceImport(si) => service_import_cells(si),
    };
    // Every kind shows NAME first; AGE sits where `columns` puts it.
    let age_at = columns(object.kind(), false)
        .iter()
        .position(|c| *c == "AGE")
        .unwrap_or(row.len() + 1)
        - 1;
    row.insert(age_at.min(row.len()), age);
    row.insert(0, name);
    row
}

fn namespace_cells(ns: &Namespace, _wide: bool) -> Vec<String> {
    let phase = ns.status.as_ref().and_then(|s| s.phase.clone());
    vec![phase.unwrap_or_else(|| "Active".to_string())]
}

fn node_cells(node: &Node, wide: bool) -> Vec<String> {
    let status = node.status.as_ref();
    let mut state: Vec<String> = Vec::new();
    if let Some(ready) = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
    {
        state.push(if ready.status == "True" {
            "Ready".to_string()
        } else {
            "NotReady".to_string()
        });
    }
    if state.is_empty() {
        state.push("Unknown".to_string());
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        state.push("SchedulingDisabled".to_string());
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let mut roles: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                (!role.is_empty()).then(|| role.to_string())
            } else if k == "kubernetes.io/role" && !v.is_empty() {
                Some(v.clone())
            } else {
                None
            }
        })
        .collect();
    roles.sort();
    roles.dedup();
    let info = status.and_then(|s| s.node_info.as_ref());
    let mut row = vec![
        state.join(","),
        or_none(roles.join(",")),
        info.map(|i| i.kubelet_version.clone()).unwrap_or_default(),
    ];
    if wide {
        let address = |type_: &str| {
            status
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == type_))
                .map(|a| a.address.clone())
                .unwrap_or_else(|| NONE.to_string())
        };
        let unknown = |v: Option<&String>| {
            v.filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| "<unknown>".to_string())
        };
        row.push(address("InternalIP"));
        row.push(address("ExternalIP"));
        row.push(unknown(info.map(|i| &i.os_image)));
        row.push(unknown(info.map(|i| &i.kernel_version)));
        row.push(unknown(info.map(|i| &i.container_runtime_version)));
    }
    row
}

/// READY, STATUS and RESTARTS as kubectl's `printPod` computes them.
fn pod_cells(pod: &Pod, wide: bool) -> Vec<String> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let total = spec.map(|s| s.containers.len()).unwrap_or(0);
    let mut reason = status
        .and_then(|s| s.reason.clone().or_else(|| s.phase.clone()))
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "Pending".to_string());
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut has_running = false;
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    for cs in statuses.iter().rev() {
        restarts += i64::from(cs.restart_count);
        let state = cs.state.as_ref();
        let waiting = state.and_then(|s| s.waiting.as_ref());
        let terminated = state.and_then(|s| s.terminated.as_ref());
        if let Some(r) = waiting
            .and_then(|w| w.reason.clone())
            .filter(|r| !r.is_empty())
        {
            reason = r;
        } else if let Some(t) = terminated {
            reason = match (&t.reason, t.signal) {
                (Some(r), _) if !r.is_empty() => r.clone(),
                (_, Some(sig)) if sig != 0 => format!("Signal:{sig}"),
                _ => format!("ExitCode:{}", t.exit_code),
            };
        } else if cs.ready && state.is_some_and(|s| s.running.is_some()) {
            has_running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".to_string();
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason = "Terminating".to_string();
    }
    let mut row = vec![format!("{ready}/{total}"), reason, restarts.to_string()];
    if wide {
        row.push(or_none(
            status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        ));
        row.push(or_none(
            spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        ));
        row.push(or_none(
            status
                .and_then(|s| s.nominated_node_name.clone())
                .unwrap_or_default(),
        ));
        let gates: Vec<String> = spec
            .and_then(|s| s.readiness_gates.as_ref())
            .map(|g| g.iter().map(|g| g.condition_type.clone()).collect())
            .unwrap_or_default();
        row.push(or_none(gates.join(",")));
    }
    row
}

fn deployment_cells(d: &Deployment, wide: bool) -> Vec<String> {
    let desired = d.spec.replicas.unwrap_or(1);
    let status = d.status.as_ref();
    let count = |f: fn(&k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<i32>| {
        status.and_then(f).unwrap_or(0)
    };
    let mut row = vec![
        format!("{}/{desired}", count(|s| s.ready_replicas)),
        count(|s| s.updated_replicas).to_string(),
        count(|s| s.available_replicas).to_string(),
    ];
    if wide {
        let containers = d
            .spec
            .template
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or(&[]);
        row.push(
            containers
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
                .join(","),
        );
        row.push(
            containers
                .iter()
                .map(|c| c.image.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","),
        );
        row.push(format_label_selector(Some(&d.spec.selector)));
    }
    row
}

fn service_cells(svc: &Service, wide: bool) -> Vec<String> {
    let default_spec = Default::default();
    let spec = svc.spec.as_ref().unwrap_or(&default_spec);
    let type_ = spec
        .type_
        .clone()
        .unwrap_or_else(|| "ClusterIP".to_string());
    let cluster_ip = or_none(spec.cluster_ip.clone().unwrap_or_default());
    let external_ips = spec.external_ips.clone().unwrap_or_default();
    let external = match type_.as_str() {
        "ClusterIP" | "NodePort" => or_none(external_ips.join(",")),
        "LoadBalancer" => {
            let mut ips: Vec<String> = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .map(|ingress| {
                    ingress
                        .iter()
                        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                        .collect()
                })
                .unwrap_or_default();
            if ips.is_empty() {
                "<pending>".to_string()
            } else {
                ips.extend(external_ips);
                ips.join(",")
            }
        }
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = spec
        .ports
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port {
                Some(np) if np > 0 => format!("{}:{np}/{proto}", p.port),
                _ => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    let mut row = vec![type_, cluster_ip, external, or_none(ports.join(","))];
    if wide {
        row.push(format_labels(spec.selector.as_ref()));
    }
    row
}

fn endpoint_slice_cells(slice: &EndpointSlice) -> Vec<String> {
    let ports: Vec<String> = slice
        .ports
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|p| match (p.port, &p.name) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) if !name.is_empty() => name.clone(),
            _ => "*".to_string(),
        })
        .collect();
    let addresses: Vec<String> = slice
        .endpoints
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    vec![
        slice.address_type.clone(),
        list_with_more(&ports),
        list_with_more(&addresses),
    ]
}

fn network_policy_cells(np: &NetworkPolicy) -> Vec<String> {
    let selector = np.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
    vec![format_label_selector(selector)]
}

/// TYPE, and IP as a CRD's printer column of `.spec.ips` shows it (the array as JSON).
fn service_import_cells(si: &ServiceImport) -> Vec<String> {
    let spec = si.spec.as_ref();
    let ips = spec
        .and_then(|s| s.ips.as_ref())
        .map(|ips| serde_json::to_string(ips).unwrap_or_default())
        .unwrap_or_else(|| NONE.to_string());
    vec![spec.map(|s| s.type_.clone()).unwrap_or_default(), ips]
}

fn event_cells(e: &Event, opts: &TableOptions) -> Vec<String> {
    let created = e.metadata.creation_timestamp.as_ref();
    let first = e.first_timestamp.as_ref().or(created);
    let last = e.last_timestamp.as_ref().or(first);
    let object = &e.involved_object;
    let mut row = vec![
        age(last, opts.now),
        e.type_.clone().unwrap_or_default(),
        e.reason.clone().unwrap_or_default(),
        format!(
            "{}/{}",
            object.kind.as_deref().unwrap_or("").to_ascii_lowercase(),
            object.name.as_deref().unwrap_or("")
        ),
        e.message.clone().unwrap_or_default(),
    ];
    if opts.wide {
        let source = e.source.as_ref();
        let component = source.and_then(|s| s.component.clone()).unwrap_or_default();
        row.push(match source.and_then(|s| s.host.as_deref()) {
            Some(host) => format!("{component}, {host}"),
            None => component,
        });
        row.push(age(first, opts.now));
        row.push(e.count.unwrap_or(1).to_string());
        row.push(e.metadata.name.clone().unwrap_or_default());
    }
    row
}

/// The first three, then ` + N more...`; `<unset>` when empty.
fn list_with_more(items: &[String]) -> String {
    const MAX: usize = 3;
    if items.is_empty() {
        return "<unset>".to_string();
    }
    let shown = items[..items.len().min(MAX)].join(",");
    if items.len() > MAX {
        format!("{shown} + {} more...", items.len() - MAX)
    } else {
        shown
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        NONE.to_string()
    } else {
        s
    }
}

/// `k=v,k2=v2` (sorted by key), as apimachinery's `labels.FormatLabels`.
fn format_labels(labels: Option<&BTreeMap<String, String>>) -> String {
    let s: Vec<String> = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    or_none(s.join(","))
}

/// apimachinery's `FormatLabelSelector`: requirements sorted by key, `k=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k`, `!k`; `<none>` for an empty selector.
pub(crate) fn format_label_selector(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else {
        return NONE.to_string();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        requirements.push((k.clone(), format!("{k}={v}")));
    }
    for e in selector.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        let k = &e.key;
        let text = match e.operator.as_str() {
            "In" => format!("{k} in ({})", values.join(",")),
            "NotIn" => format!("{k} notin ({})", values.join(",")),
            "Exists" => k.clone(),
            "DoesNotExist" => format!("!{k}"),
            _ => return "<error>".to_string(),
        };
        requirements.push((k.clone(), text));
    }
    requirements.sort();
    or_none(
        requirements
            .into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// tabwriter(minwidth 0, padding 3): each column as wide as its widest cell plus three
/// spaces; the last column is not padded.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] + 3 - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-01-01T00:00:00Z
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn obj(kind: ResourceKind, v: serde_json::Value) -> Object {
        Object::from_json(kind, v).unwrap()
    }

    fn opts(wide: bool, all_namespaces: bool) -> TableOptions {
        TableOptions {
            wide,
            all_namespaces,
            now: now(),
        }
    }

    fn pods() -> Vec<Object> {
        vec![
            obj(
                ResourceKind::Pod,
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "my-nginx-6b7f6d4c5-abcde", "namespace": "default",
                             "creationTimestamp": "2025-12-31T23:57:00Z"},
                "spec": {"nodeName": "node-1", "containers": [{"name": "nginx"}]},
                "status": {"phase": "Running", "podIP": "10.244.1.2",
                           "containerStatuses": [{"name": "nginx", "ready": true, "restartCount": 1,
                                                  "image": "nginx", "imageID": "",
                                                  "state": {"running": {}}}]}}),
            ),
            obj(
                ResourceKind::Pod,
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web", "namespace": "shop",
                             "creationTimestamp": "2025-12-30T00:00:00Z"},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": "Pending"}}),
            ),
        ]
    }

    #[test]
    fn pods_table() {
        assert_eq!(
            render_table(ResourceKind::Pod, &pods(), &opts(false, false)),
            "\
NAME                       READY   STATUS    RESTARTS   AGE
my-nginx-6b7f6d4c5-abcde   1/1     Running   1          3m
web                        0/2     Pending   0          2d
"
        );
    }

    #[test]
    fn pods_table_wide_all_namespaces() {
        assert_eq!(
            render_table(ResourceKind::Pod, &pods(), &opts(true, true)),
            "\
NAMESPACE   NAME                       READY   STATUS    RESTARTS   AGE   IP           NODE     NOMINATED NODE   READINESS GATES
default     my-nginx-6b7f6d4c5-abcde   1/1     Running   1          3m    10.244.1.2   node-1   <none>           <none>
shop        web                        0/2     Pending   0          2d    <none>       <none>   <none>           <none>
"
        );
    }

    #[test]
    fn pod_status_follows_container_states() {
        let pod = obj(
            ResourceKind::Pod,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "a", "ready": false,
                "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
        );
        let table = render_table(ResourceKind::Pod, &[pod], &opts(false, false));
        assert!(
            table.ends_with("p      0/1     CrashLoopBackOff   4          <unknown>\n"),
            "{table}"
        );
    }

    #[test]
    fn services_table() {
        let svcs = vec![
            obj(
                ResourceKind::Service,
                json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "creationTimestamp": "2025-12-01T00:00:00Z"},
                "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
                         "ports": [{"port": 443, "protocol": "TCP"}]}}),
            ),
            obj(
                ResourceKind::Service,
                json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "my-nginx", "creationTimestamp": "2025-12-31T23:59:30Z"},
                "spec": {"type": "NodePort", "clusterIP": "10.96.12.34",
                         "selector": {"run": "my-nginx", "app": "web"},
                         "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                                   {"port": 53, "protocol": "UDP"}]}}),
            ),
            obj(
                ResourceKind::Service,
                json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "lb", "creationTimestamp": "2025-12-31T23:59:30Z"},
                "spec": {"type": "LoadBalancer", "clusterIP": "None"}}),
            ),
        ];
        assert_eq!(
            render_table(ResourceKind::Service, &svcs, &opts(true, false)),
            "\
NAME         TYPE           CLUSTER-IP    EXTERNAL-IP   PORT(S)               AGE   SELECTOR
kubernetes   ClusterIP      10.96.0.1     <none>        443/TCP               31d   <none>
my-nginx     NodePort       10.96.12.34   <none>        80:30080/TCP,53/UDP   30s   app=web,run=my-nginx
lb           LoadBalancer   None          <pending>     <none>                30s   <none>
"
        );
    }

    #[test]
    fn events_table_as_kubectl() {
        let ev = obj(
            ResourceKind::Event,
            json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "hp-b.1a2b", "namespace": "default",
                         "creationTimestamp": "2025-12-31T23:59:00Z"},
            "involvedObject": {"kind": "Pod", "name": "hp-b", "namespace": "default"},
            "reason": "FailedCreatePodSandBox", "type": "Warning",
            "message": "hostPort 18080/tcp is already in use",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2025-12-31T23:59:00Z", "lastTimestamp": "2025-12-31T23:59:50Z",
            "count": 3}),
        );
        assert_eq!(
            render_table(
                ResourceKind::Event,
                std::slice::from_ref(&ev),
                &opts(false, false)
            ),
            "\
LAST SEEN   TYPE      REASON                   OBJECT     MESSAGE
10s         Warning   FailedCreatePodSandBox   pod/hp-b   hostPort 18080/tcp is already in use
"
        );
        let wide = render_table(ResourceKind::Event, &[ev], &opts(true, true));
        assert!(wide.starts_with("NAMESPACE   LAST SEEN"), "{wide}");
        assert!(
            wide.contains("kubelet, node-1   60s          3       hp-b.1a2b"),
            "{wide}"
        );
    }

    #[test]
    fn nodes_table() {
        let node = obj(
            ResourceKind::Node,
            json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-1", "creationTimestamp": "2025-12-31T22:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.33.11"}],
                       "nodeInfo": {"kubeletVersion": "v1.37.0-sarasa", "osImage": "sarasa lab",
                                    "kernelVersion": "6.8.0", "containerRuntimeVersion": "sarasa://0.1.0",
                                    "architecture": "", "bootID": "", "kubeProxyVersion": "",
                                    "machineID": "", "operatingSystem": "linux", "systemUUID": ""}}}),
        );
        let unknown = obj(
            ResourceKind::Node,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-2",
                   "creationTimestamp": "2025-12-31T22:00:00Z"}, "spec": {"unschedulable": true}}),
        );
        assert_eq!(
            render_table(
                ResourceKind::Node,
                &[node.clone(), unknown],
                &opts(false, true)
            ),
            "\
NAME     STATUS                       ROLES           AGE    VERSION
node-1   Ready                        control-plane   120m   v1.37.0-sarasa
node-2   Unknown,SchedulingDisabled   <none>          120m   
"
        );
        assert_eq!(
            render_table(ResourceKind::Node, &[node], &opts(true, false)),
            "\
NAME     STATUS   ROLES           AGE    VERSION          INTERNAL-IP     EXTERNAL-IP   OS-IMAGE     KERNEL-VERSION   CONTAINER-RUNTIME
node-1   Ready    control-plane   120m   v1.37.0-sarasa   192.168.33.11   <none>        sarasa lab   6.8.0            sarasa://0.1.0
"
        );
    }

    #[test]
    fn deployments_namespaces_slices_and_policies() {
        let d = obj(
            ResourceKind::Deployment,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "my-nginx", "creationTimestamp": "2025-12-31T23:00:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"run": "my-nginx"}},
                     "template": {"spec": {"containers": [{"name": "my-nginx", "image": "nginx"}]}}},
            "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}}),
        );
        assert_eq!(
            render_table(ResourceKind::Deployment, &[d], &opts(true, false)),
            "\
NAME       READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES   SELECTOR
my-nginx   1/2     2            1           60m   my-nginx     nginx    run=my-nginx
"
        );
        let ns = obj(
            ResourceKind::Namespace,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default",
                   "creationTimestamp": "2025-12-31T23:59:00Z"}, "status": {"phase": "Active"}}),
        );
        assert_eq!(
            render_table(ResourceKind::Namespace, &[ns], &opts(true, true)),
            "NAME      STATUS   AGE\ndefault   Active   60s\n"
        );
        let slice = obj(
            ResourceKind::EndpointSlice,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "my-nginx-x7k2p", "namespace": "default",
                         "creationTimestamp": "2025-12-31T23:59:00Z"},
            "ports": [{"port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.2"]}, {"addresses": ["10.244.2.2"]},
                          {"addresses": ["10.244.3.2"]}, {"addresses": ["10.244.1.3"]},
                          {"addresses": ["10.244.2.3"]}]}),
        );
        let empty = obj(
            ResourceKind::EndpointSlice,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                   "metadata": {"name": "e", "namespace": "default"}}),
        );
        assert_eq!(
            render_table(
                ResourceKind::EndpointSlice,
                &[slice, empty],
                &opts(false, false)
            ),
            "\
NAME             ADDRESSTYPE   PORTS     ENDPOINTS                                      AGE
my-nginx-x7k2p   IPv4          80        10.244.1.2,10.244.2.2,10.244.3.2 + 2 more...   60s
e                IPv4          <unset>   <unset>                                        <unknown>
"
        );
        let np = obj(
            ResourceKind::NetworkPolicy,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "db", "namespace": "shop", "creationTimestamp": "2025-12-31T23:59:00Z"},
            "spec": {"podSelector": {"matchLabels": {"role": "db"},
                     "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                                          {"key": "canary", "operator": "DoesNotExist"}]}}}),
        );
        let all = obj(
            ResourceKind::NetworkPolicy,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": "shop", "creationTimestamp": "2025-12-31T23:59:00Z"},
            "spec": {"podSelector": {}}}),
        );
        assert_eq!(
            render_table(ResourceKind::NetworkPolicy, &[np, all], &opts(false, true)),
            "\
NAMESPACE   NAME       POD-SELECTOR                    AGE
shop        db         !canary,role=db,tier in (a,b)   60s
shop        deny-all   <none>                          60s
"
        );
    }
}
