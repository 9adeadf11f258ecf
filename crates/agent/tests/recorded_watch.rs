//! The agent's list/watch path against responses in kube-apiserver's exact wire format, replayed
//! by a small HTTP server: a paginated list (`continue`, `remainingItemCount`), watch streams
//! of ADDED/MODIFIED/DELETED with BOOKMARKs, an `ERROR` event carrying a 410 Expired Status,
//! a 410 on the relist's continue page, a 429 with Retry-After, a 500, and a connection
//! dropped mid-stream. The script is `fixtures/apiserver-nodes.json`; the other kinds list
//! empty and watch quietly. The assertion is on the node plan the agent compiles from what
//! its watchers cached, and on the requests they made (resume points). No root needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use sarasa_agent::plan::{compile, LocalNode, Route, RouteDev};
use sarasa_agent::Backend;
use sarasa_cluster::watch::{spawn_all, Shared};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

const SCRIPT: &str = include_str!("fixtures/apiserver-nodes.json");

/// One kind's remaining responses.
#[derive(Default)]
struct Script {
    lists: Vec<Value>,
    watches: Vec<Value>,
}

#[derive(Clone, Default)]
struct Replay {
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    /// Every request: "LIST|WATCH path?query".
    log: Arc<Mutex<Vec<String>>>,
    gates: Arc<HashMap<String, Arc<Semaphore>>>,
}

fn kind_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

fn empty_list(kind: &str) -> Value {
    let list_kind = match kind {
        "pods" => "PodList",
        "services" => "ServiceList",
        "endpointslices" => "EndpointSliceList",
        "networkpolicies" => "NetworkPolicyList",
        "namespaces" => "NamespaceList",
        _ => "List",
    };
    json!({"status": 200, "headers": {"Content-Type": "application/json"},
           "body": {"kind": list_kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1000"}, "items": []}})
}

fn respond(step: &Value, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(step["status"].as_u64().unwrap_or(200) as u16)
        .unwrap_or(StatusCode::OK);
    for (k, v) in step["headers"].as_object().into_iter().flatten() {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str().unwrap_or_default()),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

async fn handle(State(replay): State<Replay>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let kind = kind_of(&path);
    replay.log.lock().unwrap().push(format!(
        "{} {path}?{query}",
        if watch { "WATCH" } else { "LIST" }
    ));
    let step = {
        let mut scripts = replay.scripts.lock().unwrap();
        let s = scripts.entry(kind.clone()).or_default();
        let q = if watch { &mut s.watches } else { &mut s.lists };
        (!q.is_empty()).then(|| q.remove(0))
    };
    if !watch {
        let step = step.unwrap_or_else(|| empty_list(&kind));
        if let Some(gate) = step["gate"].as_str().and_then(|g| replay.gates.get(g)) {
            let _ = gate.acquire().await.map(|p| p.forget());
        }
        return respond(&step, Body::from(step["body"].to_string()));
    }
    // A watch: each event one JSON line in its own chunk, as kube-apiserver streams them.
    let step = step.unwrap_or_else(|| json!({"events": [], "end": "hang"}));
    let lines: Vec<Result<Bytes, std::io::Error>> = step["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Ok(Bytes::from(format!("{e}\n"))))
        .collect();
    let end = step["end"].as_str().unwrap_or("hang").to_string();
    // The end waits for the test to have seen the events (a real connection that breaks
    // later; hyper would otherwise drop what it had not flushed yet).
    let gate = step["gate"]
        .as_str()
        .and_then(|g| replay.gates.get(g))
        .cloned();
    let tail = futures::stream::once(async move {
        if let Some(gate) = gate {
            let _ = gate.acquire().await.map(|p| p.forget());
        }
        match end.as_str() {
            "close" => None,
            // Half an event, then the connection breaks (no terminating chunk).
            "drop" => Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection dropped",
            ))),
            _ => {
                std::future::pending::<()>().await;
                None
            }
        }
    })
    .filter_map(|x| async move { x });
    let half = futures::stream::iter(
        (step["end"] == "drop").then(|| Ok(Bytes::from_static(b"{\"type\":\"MODIFIED\",\"obj"))),
    );
    let body = Body::from_stream(futures::stream::iter(lines).chain(half).chain(tail));
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

async fn serve(replay: Replay) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(handle).with_state(replay);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn local() -> LocalNode {
    LocalNode {
        name: "node-1".into(),
        backend: Backend::HostGw,
        underlay_ip: "192.168.33.11".parse().unwrap(),
        uplink: "eth0".into(),
        uplink_mtu: 1500,
        vtep_mac: None,
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        remote_cluster_cidrs: Vec::new(),
        global_egress: Vec::new(),
    }
}

/// The remote podCIDR routes of the plan compiled from what the watchers cached.
fn routes(shared: &Shared) -> Option<Vec<(String, String)>> {
    let snap = shared.snapshot(false);
    if !snap.synced() {
        return None;
    }
    let plan = compile(&snap.cluster, &local()).ok()?;
    Some(
        plan.fabric
            .routes
            .iter()
            .map(|r: &Route| {
                assert_eq!(r.dev, RouteDev::Uplink);
                (r.dst.to_string(), r.gateway.to_string())
            })
            .collect(),
    )
}

async fn eventually<T>(
    what: &str,
    timeout: Duration,
    replay: &Replay,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; requests:\n{}",
            replay.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_path_converges_through_410_bookmarks_errors_and_drops() {
    let script: Value = serde_json::from_str(SCRIPT).expect("fixture parses");
    let relist = Arc::new(Semaphore::new(0));
    let drop_gate = Arc::new(Semaphore::new(0));
    let replay = Replay {
        gates: Arc::new(HashMap::from([
            ("relist".to_string(), relist.clone()),
            ("drop".to_string(), drop_gate.clone()),
        ])),
        ..Replay::default()
    };
    replay.scripts.lock().unwrap().insert(
        "nodes".into(),
        Script {
            lists: script["list"].as_array().unwrap().clone(),
            watches: script["watch"].as_array().unwrap().clone(),
        },
    );
    let addr = serve(replay.clone()).await;
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let shared = Arc::new(Shared::default());
    let tasks = spawn_all(&client, &shared);

    // The two list pages, then the first watch's MODIFIED and ADDED: node-2 and node-3 are
    // remote. The watch then ends with an ERROR 410 and the relist is held at the gate.
    let want = pairs(&[
        ("10.244.2.0/24", "192.168.33.12"),
        ("10.244.3.0/24", "192.168.33.13"),
    ]);
    eventually(
        "plan after the first watch",
        Duration::from_secs(20),
        &replay,
        || routes(&shared).filter(|r| *r == want),
    )
    .await;

    // Relist: its continue page is 410 Expired, then 429, then 500, then a complete list in
    // which node-2 is gone and node-4 appeared. The next watch deletes node-3 (with bookmarks
    // around it), then drops the connection mid-event; the watch after that adds node-5.
    relist.add_permits(1);
    let want = pairs(&[("10.244.4.0/24", "192.168.33.14")]);
    eventually(
        "plan after the relist and a DELETED",
        Duration::from_secs(90),
        &replay,
        || routes(&shared).filter(|r| *r == want),
    )
    .await;
    drop_gate.add_permits(1);
    let want = pairs(&[
        ("10.244.4.0/24", "192.168.33.14"),
        ("10.244.5.0/24", "192.168.33.15"),
    ]);
    eventually(
        "plan after 410, errors and a drop",
        Duration::from_secs(30),
        &replay,
        || routes(&shared).filter(|r| *r == want),
    )
    .await;

    let log = replay.log.lock().unwrap().clone();
    let nodes: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("/api/v1/nodes?"))
        .collect();
    let text = nodes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    // Pagination: the second page asked for with the first page's continue token.
    assert!(
        nodes[0].starts_with("LIST") && nodes[0].contains("limit=500"),
        "{text}"
    );
    assert!(
        nodes[1].contains("continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTAwMCw"),
        "{text}"
    );
    let watches: Vec<&&String> = nodes.iter().filter(|l| l.starts_with("WATCH")).collect();
    assert!(watches.len() >= 3, "{text}");
    // Every watch asks for bookmarks; the first resumes from the list, the second from the
    // complete relist (not the expired 1000), the third from the last BOOKMARK (1350) seen
    // before the connection dropped: no relist after a drop.
    for w in &watches {
        assert!(w.contains("allowWatchBookmarks=true"), "{w}");
    }
    assert!(watches[0].contains("resourceVersion=1000"), "{text}");
    assert!(watches[1].contains("resourceVersion=1300"), "{text}");
    assert!(watches[2].contains("resourceVersion=1350"), "{text}");
    let lists = nodes.iter().filter(|l| l.starts_with("LIST")).count();
    assert_eq!(
        lists, 7,
        "two pages, then relist page 1, 410, 429, 500, full: {text}"
    );
    for t in tasks {
        t.abort();
    }
}
