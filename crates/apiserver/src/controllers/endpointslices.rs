//! EndpointSlices for Services with selectors, with the Kubernetes EndpointSlice controller's
//! semantics: one slice group per address family and distinct port mapping (named target ports
//! resolve per pod, a pod without the named port is left out of that group), ready / serving /
//! terminating conditions from the pod's Ready condition and deletionTimestamp,
//! `publishNotReadyAddresses`, nodeName and targetRef, at most 100 endpoints per slice, a
//! placeholder slice when there are no endpoints, and changes made in place.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::controllers::deployments::pod_ready;
use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, ENDPOINTSLICES, PODS, SERVICES};
use crate::selector::{JsonSelector, LabelSelector};
use crate::store::{DeleteOpts, Event, EventKind, Obj, Store, Sub, WriteOpts};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Endpoints per slice (kube-controller-manager's --max-endpoints-per-slice default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

#[derive(Default)]
pub struct EndpointSlices {
    /// Managed slices per (namespace, Service name), kept from slice events, so a Service's
    /// slices are found without scanning its namespace.
    by_service: HashMap<(String, String), BTreeSet<String>>,
}

type SliceIndex = HashMap<(String, String), BTreeSet<String>>;

fn managed_by_us(s: &Value) -> bool {
    meta::label(s, MANAGED_BY_LABEL) == Some(MANAGED_BY)
}

fn index_remove(idx: &mut SliceIndex, s: &Value) {
    if let Some(svc) = meta::label(s, SERVICE_NAME_LABEL) {
        let k = (meta::namespace(s).to_string(), svc.to_string());
        if let Some(set) = idx.get_mut(&k) {
            set.remove(meta::name(s));
            if set.is_empty() {
                idx.remove(&k);
            }
        }
    }
}

fn index_add(idx: &mut SliceIndex, s: &Value) {
    if !managed_by_us(s) {
        return;
    }
    if let Some(svc) = meta::label(s, SERVICE_NAME_LABEL) {
        idx.entry((meta::namespace(s).to_string(), svc.to_string()))
            .or_default()
            .insert(meta::name(s).to_string());
    }
}

fn selector(svc: &Value) -> Option<LabelSelector> {
    if meta::path_str(svc, "spec.type") == Some("ExternalName") {
        return None;
    }
    let sel = meta::path(svc, "spec.selector").and_then(Value::as_object)?;
    if sel.is_empty() {
        return None;
    }
    Some(LabelSelector::from_map(sel))
}

/// Whether a pod is an endpoint at all (an IP, not finished); terminating pods are included.
fn in_endpoints(pod: &Value) -> bool {
    let has_ip = !meta::path_str(pod, "status.podIP").unwrap_or("").is_empty()
        || meta::path(pod, "status.podIPs")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    has_ip
        && !matches!(
            meta::path_str(pod, "status.phase"),
            Some("Succeeded" | "Failed")
        )
}

fn pod_ips(pod: &Value, v6: bool) -> Vec<String> {
    let mut ips: Vec<String> = meta::path(pod, "status.podIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("ip")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if ips.is_empty() {
        if let Some(ip) = meta::path_str(pod, "status.podIP") {
            ips.push(ip.to_string());
        }
    }
    ips.into_iter()
        .filter(|ip| {
            ip.parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_ipv6() == v6)
        })
        .take(1)
        .collect()
}

/// The pod port a Service port reaches: a number as is, a name through the pod's container
/// ports of that name and protocol.
pub fn find_port(pod: &Value, svc_port: &Value) -> Option<i64> {
    let proto = svc_port
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP");
    match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64().filter(|n| *n > 0),
        Some(Value::String(name)) => {
            if let Ok(n) = name.parse::<i64>() {
                return Some(n);
            }
            let containers = meta::path(pod, "spec.containers").and_then(Value::as_array)?;
            containers
                .iter()
                .filter_map(|c| c.get("ports").and_then(Value::as_array))
                .flatten()
                .find(|p| {
                    p.get("name").and_then(Value::as_str) == Some(name.as_str())
                        && p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == proto
                })
                .and_then(|p| p.get("containerPort")?.as_i64())
        }
        _ => svc_port.get("port").and_then(Value::as_i64),
    }
}

fn endpoint_ports(svc: &Value, pod: &Value) -> Vec<Value> {
    let Some(ports) = meta::path(svc, "spec.ports").and_then(Value::as_array) else {
        return Vec::new();
    };
    ports
        .iter()
        .filter_map(|sp| {
            let port = find_port(pod, sp)?;
            let mut p = json!({
                "name": sp.get("name").and_then(Value::as_str).unwrap_or(""),
                "port": port,
                "protocol": sp.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
            });
            if let Some(ap) = sp.get("appProtocol") {
                p["appProtocol"] = ap.clone();
            }
            Some(p)
        })
        .collect()
}

/// A canonical key of a ports list (independent of JSON key order).
fn ports_key(ports: Option<&Value>) -> String {
    let mut items: Vec<String> = ports
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    format!(
                        "{}|{}|{}|{}",
                        p.get("name").and_then(Value::as_str).unwrap_or(""),
                        p.get("port").and_then(Value::as_i64).unwrap_or(0),
                        p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
                        p.get("appProtocol").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    items.sort();
    items.join(",")
}

fn endpoint(svc: &Value, pod: &Value, ip: &str) -> Value {
    let publish =
        meta::path(svc, "spec.publishNotReadyAddresses").and_then(Value::as_bool) == Some(true);
    let terminating = meta::is_deleting(pod);
    let serving = publish || pod_ready(pod);
    let ready = serving && (!terminating || publish);
    let mut ep = json!({
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta::namespace(pod), "name": meta::name(pod), "uid": meta::uid(pod)},
    });
    if let Some(node) = meta::path_str(pod, "spec.nodeName").filter(|n| !n.is_empty()) {
        ep["nodeName"] = json!(node);
    }
    let hostname = meta::path_str(pod, "spec.hostname").unwrap_or("");
    if !hostname.is_empty() && meta::path_str(pod, "spec.subdomain") == Some(meta::name(svc)) {
        ep["hostname"] = json!(hostname);
    }
    ep
}

fn address_types(svc: &Value) -> Vec<&'static str> {
    let fams: Vec<&'static str> = meta::path(svc, "spec.ipFamilies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| match f.as_str() {
                    Some("IPv4") => Some("IPv4"),
                    Some("IPv6") => Some("IPv6"),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if fams.is_empty() {
        vec!["IPv4"]
    } else {
        fams
    }
}

/// Group key: (addressType, ports key).
type GroupKey = (String, String);

struct Group {
    ports: Vec<Value>,
    /// (address, endpoint) in pod order.
    endpoints: Vec<(String, Value)>,
}

fn desired(svc: &Value, pods: &[Obj]) -> BTreeMap<GroupKey, Group> {
    let mut out: BTreeMap<GroupKey, Group> = BTreeMap::new();
    for at in address_types(svc) {
        for pod in pods {
            for ip in pod_ips(pod, at == "IPv6") {
                let ports = endpoint_ports(svc, pod);
                let key = (at.to_string(), ports_key(Some(&json!(ports))));
                let g = out.entry(key).or_insert_with(|| Group {
                    ports: ports.clone(),
                    endpoints: Vec::new(),
                });
                g.endpoints.push((ip.clone(), endpoint(svc, pod, &ip)));
            }
        }
    }
    out
}

fn slice_labels(svc: &Value) -> Value {
    let mut labels = meta::metadata(svc)
        .get("labels")
        .cloned()
        .unwrap_or(json!({}));
    if !labels.is_object() {
        labels = json!({});
    }
    labels[SERVICE_NAME_LABEL] = json!(meta::name(svc));
    labels[MANAGED_BY_LABEL] = json!(MANAGED_BY);
    if meta::path_str(svc, "spec.clusterIP") == Some("None") {
        labels[HEADLESS_LABEL] = json!("");
    } else if let Some(o) = labels.as_object_mut() {
        o.remove(HEADLESS_LABEL);
    }
    labels
}

fn new_slice(svc: &Value, at: &str, ports: &[Value], endpoints: Vec<Value>) -> Value {
    let name = meta::name(svc);
    let mut s = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": format!("{name}-"),
            "labels": slice_labels(svc),
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": meta::uid(svc),
                                 "controller": true, "blockOwnerDeletion": true}],
        },
        "addressType": at,
        "endpoints": endpoints,
    });
    if !ports.is_empty() {
        s["ports"] = json!(ports);
    }
    s
}

fn first_address(ep: &Value) -> &str {
    ep.get("addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Writes a slice's endpoints, ports and labels in place (a no-op when nothing changed).
fn update_slice(store: &Store, svc: &Value, slice: &Value, ports: &[Value], endpoints: Vec<Value>) {
    let same_ports = match slice.get("ports").and_then(Value::as_array) {
        Some(p) => {
            ports_key(Some(&json!(p))) == ports_key(Some(&json!(ports))) && !ports.is_empty()
        }
        None => ports.is_empty(),
    };
    let same_endpoints = slice
        .get("endpoints")
        .and_then(Value::as_array)
        .is_some_and(|cur| {
            cur.len() == endpoints.len()
                && cur.iter().zip(&endpoints).all(|(a, b)| same_endpoint(a, b))
        });
    let same_labels = meta::metadata(slice).get("labels") == Some(&slice_labels(svc));
    if same_ports && same_endpoints && same_labels {
        return;
    }
    let r = store.modify(
        ENDPOINTSLICES,
        meta::namespace(slice),
        meta::name(slice),
        Sub::Main,
        WriteOpts::internal(),
        |cur| {
            let mut new = cur.clone();
            new["endpoints"] = json!(endpoints);
            if ports.is_empty() {
                if let Some(o) = new.as_object_mut() {
                    o.remove("ports");
                }
            } else {
                new["ports"] = json!(ports);
            }
            meta::metadata_mut(&mut new).insert("labels".into(), slice_labels(svc));
            Ok(new)
        },
    );
    if let Err(e) = r {
        if e.code != 404 {
            tracing::warn!(
                "updating EndpointSlice {}/{}: {e}",
                meta::namespace(slice),
                meta::name(slice)
            );
        }
    }
}

/// Whether a stored endpoint already says what `want` says (fields we set only).
fn same_endpoint(have: &Value, want: &Value) -> bool {
    ["addresses", "conditions", "nodeName", "hostname"]
        .iter()
        .all(|k| have.get(*k) == want.get(*k))
        && have.get("targetRef").and_then(|t| t.get("uid"))
            == want.get("targetRef").and_then(|t| t.get("uid"))
        && have.get("targetRef").and_then(|t| t.get("name"))
            == want.get("targetRef").and_then(|t| t.get("name"))
}

fn delete_slice(store: &Store, slice: &Value) {
    if let Err(e) = store.delete(
        ENDPOINTSLICES,
        meta::namespace(slice),
        meta::name(slice),
        &DeleteOpts::default(),
    ) {
        if e.code != 404 {
            tracing::warn!(
                "deleting EndpointSlice {}/{}: {e}",
                meta::namespace(slice),
                meta::name(slice)
            );
        }
    }
}

fn create_slice(store: &Store, idx: &mut SliceIndex, svc: &Value, slice: Value) {
    match store.create(
        ENDPOINTSLICES,
        meta::namespace(svc),
        slice,
        WriteOpts::internal(),
    ) {
        Ok(created) => index_add(idx, &created),
        Err(e) => tracing::warn!(
            "creating an EndpointSlice for {}/{}: {e}",
            meta::namespace(svc),
            meta::name(svc)
        ),
    }
}

/// Reconciles the slices of one Service.
fn reconcile_service(store: &Store, idx: &mut SliceIndex, ns: &str, name: &str) {
    let svc = store
        .get(SERVICES, ns, name)
        .ok()
        .filter(|s| !meta::is_deleting(s));
    let names: Vec<String> = idx
        .get(&(ns.to_string(), name.to_string()))
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    let existing: Vec<Obj> = names
        .iter()
        .filter_map(|n| store.get(ENDPOINTSLICES, ns, n).ok())
        .filter(|s| meta::label(s, SERVICE_NAME_LABEL) == Some(name) && managed_by_us(s))
        .collect();
    let Some((svc, sel)) = svc.and_then(|s| selector(&s).map(|sel| (s, sel))) else {
        // No Service, or one without selector: its managed slices go (the GC handles owners).
        for s in &existing {
            delete_slice(store, s);
        }
        return;
    };
    let (pods, _) = store.list(PODS, Some(ns), |p| in_endpoints(p) && sel.matches_object(p));
    let want = desired(&svc, &pods);
    if want.is_empty() {
        // Placeholder: one slice without endpoints.
        let at = address_types(&svc)[0];
        let mut rest = existing.iter();
        match rest.next() {
            Some(first) if meta::path_str(first, "addressType") == Some(at) => {
                update_slice(store, &svc, first, &[], Vec::new());
            }
            Some(first) => {
                delete_slice(store, first);
                create_slice(store, idx, &svc, new_slice(&svc, at, &[], Vec::new()));
            }
            None => create_slice(store, idx, &svc, new_slice(&svc, at, &[], Vec::new())),
        }
        for s in rest {
            delete_slice(store, s);
        }
        return;
    }
    let mut by_group: HashMap<GroupKey, Vec<&Obj>> = HashMap::new();
    for s in &existing {
        let key = (
            meta::path_str(s, "addressType").unwrap_or("").to_string(),
            ports_key(s.get("ports")),
        );
        by_group.entry(key).or_default().push(s);
    }
    for (key, group) in &want {
        let slices = by_group.remove(key).unwrap_or_default();
        let wanted: HashMap<&str, &Value> = group
            .endpoints
            .iter()
            .map(|(a, e)| (a.as_str(), e))
            .collect();
        let mut placed: HashSet<String> = HashSet::new();
        // Keep every endpoint in the slice that holds it; drop the ones no longer wanted.
        let mut contents: Vec<Vec<Value>> = slices
            .iter()
            .map(|s| {
                s.get("endpoints")
                    .and_then(Value::as_array)
                    .map(|eps| {
                        eps.iter()
                            .filter_map(|ep| {
                                let addr = first_address(ep);
                                let w = wanted.get(addr)?;
                                placed.insert(addr.to_string()).then(|| (*w).clone())
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let mut remaining = group
            .endpoints
            .iter()
            .filter(|(a, _)| !placed.contains(a))
            .map(|(_, e)| e.clone())
            .peekable();
        // New endpoints fill slices with room first.
        for c in contents.iter_mut() {
            while c.len() < MAX_ENDPOINTS_PER_SLICE {
                match remaining.next() {
                    Some(e) => c.push(e),
                    None => break,
                }
            }
        }
        for (s, c) in slices.iter().zip(contents) {
            if c.is_empty() {
                delete_slice(store, s);
            } else {
                update_slice(store, &svc, s, &group.ports, c);
            }
        }
        let rest: Vec<Value> = remaining.collect();
        for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
            create_slice(
                store,
                idx,
                &svc,
                new_slice(&svc, &key.0, &group.ports, chunk.to_vec()),
            );
        }
    }
    for slices in by_group.values() {
        for s in slices {
            delete_slice(store, s);
        }
    }
}

impl Controller for EndpointSlices {
    fn name(&self) -> &'static str {
        "endpointslices"
    }

    fn watches(&self) -> &'static [ResId] {
        &[SERVICES, PODS, ENDPOINTSLICES]
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        let mut dirty: HashSet<(String, String)> = HashSet::new();
        match events {
            None => {
                let (svcs, _) = store.list(SERVICES, None, |_| true);
                dirty.extend(
                    svcs.iter()
                        .map(|s| (meta::namespace(s).to_string(), meta::name(s).to_string())),
                );
                self.by_service.clear();
                let (slices, _) = store.list(ENDPOINTSLICES, None, managed_by_us);
                for s in slices {
                    index_add(&mut self.by_service, &s);
                    // Slices of Services that are gone get cleaned up too.
                    if let Some(svc) = meta::label(&s, SERVICE_NAME_LABEL) {
                        dirty.insert((meta::namespace(&s).to_string(), svc.to_string()));
                    }
                }
            }
            Some(evs) => {
                let mut pod_namespaces: HashMap<String, Vec<&Event>> = HashMap::new();
                for e in evs {
                    let ns = meta::namespace(&e.obj).to_string();
                    match e.res {
                        SERVICES => {
                            dirty.insert((ns, meta::name(&e.obj).to_string()));
                        }
                        ENDPOINTSLICES => {
                            if let Some(p) = &e.prev {
                                index_remove(&mut self.by_service, p);
                            }
                            if e.kind == EventKind::Deleted {
                                index_remove(&mut self.by_service, &e.obj);
                            } else {
                                index_add(&mut self.by_service, &e.obj);
                            }
                            for s in std::iter::once(&e.obj).chain(e.prev.iter()) {
                                if managed_by_us(s) {
                                    if let Some(svc) = meta::label(s, SERVICE_NAME_LABEL) {
                                        dirty.insert((ns.clone(), svc.to_string()));
                                    }
                                }
                            }
                        }
                        _ => pod_namespaces.entry(ns).or_default().push(e),
                    }
                }
                for (ns, pod_events) in pod_namespaces {
                    let (svcs, _) = store.list(SERVICES, Some(&ns), |s| selector(s).is_some());
                    for s in svcs {
                        let Some(sel) = selector(&s) else { continue };
                        let hit = pod_events.iter().any(|e| {
                            sel.matches_object(&e.obj)
                                || e.prev.as_ref().is_some_and(|p| sel.matches_object(p))
                        });
                        if hit {
                            dirty.insert((ns.clone(), meta::name(&s).to_string()));
                        }
                    }
                }
            }
        }
        for (ns, name) in dirty {
            reconcile_service(store, &mut self.by_service, &ns, &name);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_target_port_resolves_per_pod() {
        let sp = json!({"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"});
        let a = json!({"spec": {"containers": [{"ports": [{"name": "web", "containerPort": 8080, "protocol": "TCP"}]}]}});
        let b =
            json!({"spec": {"containers": [{"ports": [{"name": "web", "containerPort": 9090}]}]}});
        let c =
            json!({"spec": {"containers": [{"ports": [{"name": "other", "containerPort": 1}]}]}});
        assert_eq!(find_port(&a, &sp), Some(8080));
        assert_eq!(find_port(&b, &sp), Some(9090));
        assert_eq!(find_port(&c, &sp), None);
        let udp = json!({"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "web"});
        assert_eq!(find_port(&a, &udp), None);
    }

    #[test]
    fn conditions() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {}});
        let ready_pod = json!({"metadata": {"name": "p"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let ep = endpoint(&svc, &ready_pod, "10.0.0.1");
        assert_eq!(
            ep["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
        let term = json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"},
                          "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let ep = endpoint(&svc, &term, "10.0.0.1");
        assert_eq!(
            ep["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
        let publish =
            json!({"metadata": {"name": "s"}, "spec": {"publishNotReadyAddresses": true}});
        let unready = json!({"metadata": {"name": "p"}, "status": {}});
        let ep = endpoint(&publish, &unready, "10.0.0.1");
        assert_eq!(
            ep["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
    }
}
