//! A small in-memory Kubernetes API server (axum router, driven in-process through
//! `kube::Client::new`) for the mock-API test tier: CRUD for the supported kinds,
//! resourceVersion conflicts, `dryRun=All`, 422 Status with causes for an out-of-range Service
//! port and a bad NetworkPolicy CIDR, and namespaces that must exist.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Fake {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (plural, namespace or "", name) → object
    objects: BTreeMap<(String, String, String), Value>,
    rv: u64,
    /// "METHOD path?query" of every request.
    log: Vec<String>,
    /// Objects whose resourceVersion moves right after the next N reads (a busy controller).
    bump_after_get: BTreeMap<(String, String, String), usize>,
}

impl Fake {
    pub fn new() -> Arc<Fake> {
        let fake = Arc::new(Fake::default());
        fake.insert(
            "namespaces",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default"}, "status": {"phase": "Active"}}),
        );
        fake
    }

    pub fn client(self: &Arc<Self>) -> kube::Client {
        let router = Router::new().fallback(handle).with_state(self.clone());
        kube::Client::new(router, "default")
    }

    pub fn insert(&self, plural: &str, ns: &str, mut object: Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        if !ns.is_empty() {
            object["metadata"]["namespace"] = json!(ns);
        }
        inner
            .objects
            .insert((plural.into(), ns.into(), name), object);
    }

    pub fn object(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().unwrap();
        inner
            .objects
            .get(&(plural.into(), ns.into(), name.into()))
            .cloned()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().objects.len()
    }

    /// Requests that changed (or would have changed, without dryRun) something.
    pub fn writes(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        inner
            .log
            .iter()
            .filter(|l| !l.starts_with("GET "))
            .cloned()
            .collect()
    }

    pub fn clear_log(&self) {
        self.inner.lock().unwrap().log.clear();
    }

    /// The next `reads` GETs of the object are each followed by a status update that bumps its
    /// resourceVersion, so a write based on that read conflicts.
    pub fn bump_after_get(&self, plural: &str, ns: &str, name: &str, reads: usize) {
        let mut inner = self.inner.lock().unwrap();
        inner
            .bump_after_get
            .insert((plural.into(), ns.into(), name.into()), reads);
    }

    /// Bumps an object's resourceVersion as a controller's status update would.
    pub fn touch(&self, plural: &str, ns: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv.to_string();
        if let Some(o) = inner
            .objects
            .get_mut(&(plural.into(), ns.into(), name.into()))
        {
            o["metadata"]["resourceVersion"] = json!(rv);
        }
    }
}

struct Target {
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
}

/// `/api/v1[/namespaces/NS]/PLURAL[/NAME]`, `/apis/G/V[/namespaces/NS]/PLURAL[/NAME]`
fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => (Some(ns.to_string()), {
            let mut v = vec![*plural];
            v.extend_from_slice(rest);
            v
        }),
        other => (None, other.to_vec()),
    };
    match rest.as_slice() {
        [plural] => Some(Target {
            plural: plural.to_string(),
            namespace,
            name: None,
        }),
        [plural, name] => Some(Target {
            plural: plural.to_string(),
            namespace,
            name: Some(name.to_string()),
        }),
        _ => None,
    }
}

fn status(code: u16, reason: &str, message: String, causes: Vec<Value>) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "code": code, "reason": reason, "message": message,
        "details": {"causes": causes}});
    (
        StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, body: Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The checks a real API server's validation would make, for the fields the tests use.
fn validate(plural: &str, object: &Value) -> Vec<Value> {
    let mut causes = Vec::new();
    if plural == "services" {
        for (i, p) in object["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let port = p["port"].as_i64().unwrap_or(0);
            if !(1..=65535).contains(&port) {
                causes.push(json!({"reason": "FieldValueInvalid",
                    "message": format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                    "field": format!("spec.ports[{i}].port")}));
            }
        }
    }
    if plural == "networkpolicies" {
        for (i, rule) in object["spec"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (j, peer) in rule["from"].as_array().into_iter().flatten().enumerate() {
                if let Some(cidr) = peer["ipBlock"]["cidr"].as_str() {
                    if cidr.parse::<ipnet_like::Cidr>().is_err() {
                        causes.push(json!({"reason": "FieldValueInvalid",
                            "message": format!("Invalid value: \"{cidr}\": must be a valid CIDR"),
                            "field": format!("spec.ingress[{i}].from[{j}].ipBlock.cidr")}));
                    }
                }
            }
        }
    }
    causes
}

mod ipnet_like {
    pub struct Cidr;
    impl std::str::FromStr for Cidr {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let (ip, len) = s.split_once('/').ok_or(())?;
            let ip: std::net::IpAddr = ip.parse().map_err(|_| ())?;
            let len: u8 = len.parse().map_err(|_| ())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            (len <= max).then_some(Cidr).ok_or(())
        }
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "namespaces" => "Namespace",
        "nodes" => "Node",
        "pods" => "Pod",
        "deployments" => "Deployment",
        "services" => "Service",
        "endpointslices" => "EndpointSlice",
        _ => "NetworkPolicy",
    }
}

async fn handle(State(fake): State<Arc<Fake>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let query = uri.query().unwrap_or("").to_string();
    let dry_run = query.contains("dryRun=All");
    let mut inner = fake.inner.lock().unwrap();
    inner.log.push(format!("{method} {}?{query}", uri.path()));
    let Some(target) = parse_path(uri.path()) else {
        return status(404, "NotFound", format!("no route {}", uri.path()), vec![]);
    };
    let ns = target.namespace.clone().unwrap_or_default();
    let kind = kind_of(&target.plural);
    let not_found = |name: &str| {
        status(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", target.plural),
            vec![],
        )
    };
    match (method.clone(), target.name.clone()) {
        (Method::GET, Some(name)) => {
            let key = (target.plural.clone(), ns, name.clone());
            let Some(found) = inner.objects.get(&key).cloned() else {
                return not_found(&name);
            };
            if let Some(left) = inner.bump_after_get.get_mut(&key).filter(|n| **n > 0) {
                *left -= 1;
                inner.rv += 1;
                let rv = inner.rv.to_string();
                inner.objects.get_mut(&key).unwrap()["metadata"]["resourceVersion"] = json!(rv);
            }
            ok(StatusCode::OK, found)
        }
        (Method::GET, None) => {
            let items: Vec<Value> = inner
                .objects
                .iter()
                .filter(|((p, n, _), _)| {
                    *p == target.plural && (target.namespace.is_none() || *n == ns)
                })
                .map(|(_, o)| {
                    let mut o = o.clone();
                    // Real servers omit these in list items.
                    o.as_object_mut().unwrap().remove("kind");
                    o.as_object_mut().unwrap().remove("apiVersion");
                    o
                })
                .collect();
            ok(
                StatusCode::OK,
                json!({"kind": format!("{kind}List"), "apiVersion": "v1",
                "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
            )
        }
        (Method::POST, None) => {
            let mut object: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return status(400, "BadRequest", e.to_string(), vec![]),
            };
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if !ns.is_empty()
                && !inner
                    .objects
                    .contains_key(&("namespaces".into(), String::new(), ns.clone()))
            {
                return status(
                    404,
                    "NotFound",
                    format!("namespaces \"{ns}\" not found"),
                    vec![],
                );
            }
            let causes = validate(&target.plural, &object);
            if !causes.is_empty() {
                let fields: Vec<String> = causes
                    .iter()
                    .map(|c| {
                        format!(
                            "{}: {}",
                            c["field"].as_str().unwrap(),
                            c["message"].as_str().unwrap()
                        )
                    })
                    .collect();
                return status(
                    422,
                    "Invalid",
                    format!("{kind} \"{name}\" is invalid: {}", fields.join(", ")),
                    causes,
                );
            }
            let key = (target.plural.clone(), ns.clone(), name.clone());
            if inner.objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", target.plural),
                    vec![],
                );
            }
            inner.rv += 1;
            object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            object["metadata"]["uid"] = json!(format!("uid-{}", inner.rv));
            object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            object["metadata"]["managedFields"] =
                json!([{"manager": "sarasa", "operation": "Update"}]);
            if target.plural == "services" && object["spec"]["clusterIP"].is_null() {
                object["spec"]["clusterIP"] = json!(format!("10.96.0.{}", inner.rv));
            }
            if !dry_run {
                inner.objects.insert(key, object.clone());
            }
            ok(StatusCode::CREATED, object)
        }
        (Method::PUT, Some(name)) => {
            let mut object: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return status(400, "BadRequest", e.to_string(), vec![]),
            };
            let key = (target.plural.clone(), ns.clone(), name.clone());
            let Some(live) = inner.objects.get(&key).cloned() else {
                return not_found(&name);
            };
            if object["metadata"]["resourceVersion"] != live["metadata"]["resourceVersion"] {
                return status(409, "Conflict", format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified", target.plural), vec![]);
            }
            if target.plural == "services"
                && object["spec"]["clusterIP"] != live["spec"]["clusterIP"]
            {
                return status(422, "Invalid", format!("Service \"{name}\" is invalid: spec.clusterIP: Invalid value: field is immutable"), vec![]);
            }
            let causes = validate(&target.plural, &object);
            if !causes.is_empty() {
                return status(
                    422,
                    "Invalid",
                    format!("{kind} \"{name}\" is invalid"),
                    causes,
                );
            }
            inner.rv += 1;
            object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            object["metadata"]["creationTimestamp"] = live["metadata"]["creationTimestamp"].clone();
            if !dry_run {
                inner.objects.insert(key, object.clone());
            }
            ok(StatusCode::OK, object)
        }
        (Method::DELETE, Some(name)) => {
            let key = (target.plural.clone(), ns, name.clone());
            match inner.objects.remove(&key) {
                Some(o) => ok(StatusCode::OK, o),
                None => not_found(&name),
            }
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} not supported"),
            vec![],
        ),
    }
}
