//! A small in-memory Kubernetes API for the agent's watch-path tests: list + watch (with
//! resourceVersion and history), get, create, merge-patch (also `/status`), for any
//! `.../<plural>[/<name>[/status]]` path. Objects are plain JSON, as kube-apiserver sends them.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast;

const PLURALS: &[&str] = &[
    "nodes",
    "pods",
    "namespaces",
    "leases",
    "services",
    "endpointslices",
    "networkpolicies",
];

#[derive(Default)]
struct Inner {
    rv: u64,
    /// collection path → name → object
    objects: HashMap<String, BTreeMap<String, Value>>,
    history: Vec<(String, Value)>,
    /// Count of writes per collection path (to detect write loops).
    writes: HashMap<String, u64>,
}

#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<(String, Value)>,
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn status(code: u16, reason: &str, msg: &str) -> Response {
    let body = json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":msg,"reason":reason,"code":code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

struct Target {
    collection: String,
    name: Option<String>,
    namespace: Option<String>,
}

fn parse(path: &str) -> Option<Target> {
    let mut segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.last() == Some(&"status") {
        segs.pop();
    }
    let n = segs.len();
    let (plural_at, name) = if PLURALS.contains(&segs[n - 1]) {
        (n - 1, None)
    } else if n >= 2 && PLURALS.contains(&segs[n - 2]) {
        (n - 2, Some(segs[n - 1].to_string()))
    } else {
        return None;
    };
    let namespace = (plural_at >= 2 && segs[plural_at - 2] == "namespaces")
        .then(|| segs[plural_at - 1].to_string());
    // Cluster-wide lists of namespaced kinds (e.g. /api/v1/pods) share the plural's objects.
    let plural = segs[plural_at];
    Some(Target {
        collection: plural.to_string(),
        name,
        namespace,
    })
}

impl FakeApi {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        FakeApi {
            inner: Arc::new(Mutex::new(Inner::default())),
            events,
        }
    }

    /// Serves on a listener made elsewhere (e.g. inside a test namespace, where agents in
    /// containers reach it).
    pub async fn serve_on(&self, listener: std::net::TcpListener) -> std::net::SocketAddr {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    pub async fn serve(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    pub fn get(&self, plural: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().unwrap();
        inner.objects.get(plural).and_then(|m| m.get(name)).cloned()
    }

    pub fn rv(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }

    pub fn writes(&self, plural: &str) -> u64 {
        *self.inner.lock().unwrap().writes.get(plural).unwrap_or(&0)
    }

    /// Stores `obj` (create or replace) and emits the watch event; returns its resourceVersion.
    pub fn put(&self, plural: &str, mut obj: Value) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let existed = inner
            .objects
            .entry(plural.to_string())
            .or_default()
            .insert(name, obj.clone())
            .is_some();
        *inner.writes.entry(plural.to_string()).or_default() += 1;
        let ev = json!({"type": if existed {"MODIFIED"} else {"ADDED"}, "object": obj});
        inner.history.push((plural.to_string(), ev.clone()));
        let _ = self.events.send((plural.to_string(), ev));
        rv
    }

    /// Merge-patches a stored object (as a controller would); returns the new resourceVersion.
    pub fn patch(&self, plural: &str, name: &str, patch: Value) -> Option<u64> {
        let mut obj = self.get(plural, name)?;
        merge(&mut obj, &patch);
        Some(self.put(plural, obj))
    }
}

async fn handle(State(api): State<FakeApi>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    let Some(t) = parse(&path) else {
        return status(404, "NotFound", &format!("no route {path}"));
    };
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let params: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match (method, t.name) {
        (Method::GET, None) if params.get("watch").map(String::as_str) == Some("true") => {
            let since: u64 = params
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (backlog, rx) = {
                let inner = api.inner.lock().unwrap();
                let rx = api.events.subscribe();
                let backlog: Vec<Value> = inner
                    .history
                    .iter()
                    .filter(|(c, ev)| {
                        *c == t.collection
                            && ev["object"]["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|v| v.parse::<u64>().ok())
                                .unwrap_or(0)
                                > since
                    })
                    .map(|(_, ev)| ev.clone())
                    .collect();
                (backlog, rx)
            };
            let collection = t.collection.clone();
            let live = futures::stream::unfold(rx, move |mut rx| {
                let collection = collection.clone();
                async move {
                    loop {
                        match rx.recv().await {
                            Ok((c, ev)) if c == collection => return Some((ev, rx)),
                            Ok(_) => continue,
                            Err(_) => return None,
                        }
                    }
                }
            });
            let stream = futures::StreamExt::map(
                futures::StreamExt::chain(futures::stream::iter(backlog), live),
                |ev| Ok::<_, std::io::Error>(format!("{ev}\n")),
            );
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        (Method::GET, None) => {
            let inner = api.inner.lock().unwrap();
            let items: Vec<Value> = inner
                .objects
                .get(&t.collection)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            axum::Json(json!({"kind":"List","apiVersion":"v1","metadata":{"resourceVersion": inner.rv.to_string()},"items":items})).into_response()
        }
        (Method::GET, Some(name)) => match api.get(&t.collection, &name) {
            Some(o) => axum::Json(o).into_response(),
            None => status(
                404,
                "NotFound",
                &format!("{} {name} not found", t.collection),
            ),
        },
        (Method::POST, None) => {
            let mut obj: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if api.get(&t.collection, &name).is_some() {
                return status(409, "AlreadyExists", "exists");
            }
            if let Some(ns) = &t.namespace {
                obj["metadata"]["namespace"] = json!(ns);
            }
            api.put(&t.collection, obj);
            (
                StatusCode::CREATED,
                axum::Json(api.get(&t.collection, &name).unwrap()),
            )
                .into_response()
        }
        (Method::PATCH, Some(name)) => {
            let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let Some(cur) = api.get(&t.collection, &name) else {
                return status(
                    404,
                    "NotFound",
                    &format!("{} {name} not found", t.collection),
                );
            };
            if let Some(want) = patch["metadata"]["resourceVersion"].as_str() {
                if cur["metadata"]["resourceVersion"].as_str() != Some(want) {
                    return status(409, "Conflict", "resourceVersion changed");
                }
            }
            api.patch(&t.collection, &name, patch);
            axum::Json(api.get(&t.collection, &name).unwrap()).into_response()
        }
        (m, _) => status(405, "MethodNotAllowed", &format!("{m} not supported")),
    }
}
