//! Fault injection: the API server is killed with SIGKILL in the middle of a stream of writes
//! (creates, updates, deletes of ConfigMaps from 4 concurrent clients) while a watcher follows
//! them, and restarted on the same state directory, again and again. After every restart:
//! every acknowledged write is there, resourceVersions only move forward, and the watcher
//! (resuming from the last resourceVersion it saw, as a reflector does) sees every
//! acknowledged change exactly once, in order.
//!
//! The server runs in a child process (this test binary again, running `serve_child`).
//! `FAULT_KILLS` sets the number of kills (5 by default, the CI form; scripts/fault-apiserver.sh
//! runs 50), `FAULT_SEED` the random seed (printed).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::WatchParams;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent};
use kube::{Client, Config as KubeConfig};
use serde_json::json;

const CHILD_STATE: &str = "SARASA_FAULT_CHILD_STATE";
const CHILD_ADDR: &str = "SARASA_FAULT_CHILD_ADDR";
const WRITERS: usize = 4;

/// The server process of the driver below; does nothing in an ordinary test run.
#[test]
fn serve_child() {
    let (Ok(state), Ok(addr)) = (std::env::var(CHILD_STATE), std::env::var(CHILD_ADDR)) else {
        return;
    };
    // Exit when the driver is gone (it kills this process itself otherwise).
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || loop {
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(3);
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let server =
            sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new(state)).expect("open");
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        server.serve(listener).await.expect("serve");
    });
}

struct Server {
    child: Child,
}

impl Server {
    fn start(state: &std::path::Path, addr: &str) -> Server {
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "serve_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_STATE, state)
            .env(CHILD_ADDR, addr)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server");
        Server { child }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn client(addr: &str) -> Client {
    let mut cfg = KubeConfig::new(format!("http://{addr}").parse().expect("url"));
    cfg.default_namespace = "default".into();
    cfg.read_timeout = Some(Duration::from_secs(20));
    cfg.connect_timeout = Some(Duration::from_secs(5));
    Client::try_from(cfg).expect("client")
}

async fn wait_ready(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let ns: Api<Namespace> = Api::all(c.clone());
    loop {
        if ns.get("default").await.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "the API server did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// xorshift64*: enough randomness for kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a client was told about one object.
#[derive(Debug, Clone, PartialEq)]
enum Known {
    /// Exists with this value (acknowledged create or update).
    Value(String),
    /// Acknowledged delete.
    Gone,
    /// The last write was not acknowledged: either outcome is right.
    Unsure,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Default)]
struct Ledger {
    known: BTreeMap<String, Known>,
    /// Acknowledged writes: (op, name, resourceVersion; 0 for deletes, whose reply has none).
    acked: Vec<(Op, String, u64)>,
    failures: Vec<String>,
}

fn rv_of(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// One writer: its own objects, one change at a time, until `stop` or the server is gone.
async fn writer(
    cms: Api<ConfigMap>,
    id: usize,
    round: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut rng = Rng(seed | 1);
    let mut mine: Vec<String> = ledger
        .lock()
        .unwrap()
        .known
        .iter()
        .filter(|(n, k)| n.starts_with(&format!("w{id}-")) && matches!(k, Known::Value(_)))
        .map(|(n, _)| n.clone())
        .collect();
    let mut last_rv = 0u64;
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let choice = rng.below(10);
        let (op, name) = if mine.is_empty() || choice < 5 {
            (Op::Create, format!("w{id}-r{round}-{seq}"))
        } else {
            let i = rng.below(mine.len() as u64) as usize;
            let op = if choice < 8 { Op::Update } else { Op::Delete };
            (op, mine[i].clone())
        };
        let value = format!("{round}-{seq}");
        ledger
            .lock()
            .unwrap()
            .known
            .insert(name.clone(), Known::Unsure);
        let res = match op {
            Op::Create => {
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": name}, "data": {"v": value}}),
                )
                .unwrap();
                cms.create(&PostParams::default(), &cm)
                    .await
                    .map(|c| rv_of(&c))
            }
            Op::Update => cms
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"v": value}})),
                )
                .await
                .map(|c| rv_of(&c)),
            Op::Delete => cms.delete(&name, &DeleteParams::default()).await.map(|_| 0),
        };
        let Ok(rv) = res else {
            // The server is gone (or going): the outcome of this write is unknown.
            return;
        };
        let mut l = ledger.lock().unwrap();
        if op != Op::Delete {
            if rv <= last_rv {
                l.failures.push(format!(
                    "{name}: acknowledged resourceVersion {rv} after {last_rv}"
                ));
            }
            last_rv = rv;
        }
        match op {
            Op::Create => {
                mine.push(name.clone());
                l.known.insert(name.clone(), Known::Value(value));
            }
            Op::Update => {
                l.known.insert(name.clone(), Known::Value(value));
            }
            Op::Delete => {
                mine.retain(|n| *n != name);
                l.known.insert(name.clone(), Known::Gone);
            }
        }
        l.acked.push((op, name, rv));
    }
}

/// What the watcher saw: (resourceVersion, type, name), in arrival order.
type Seen = Vec<(u64, &'static str, String)>;

/// Follows the ConfigMaps of `default` from `from` until the stream ends; records what it sees.
async fn watcher(
    cms: Api<ConfigMap>,
    from: u64,
    seen: Arc<Mutex<Seen>>,
    errors: Arc<Mutex<Vec<String>>>,
) {
    let wp = WatchParams::default().timeout(290);
    let Ok(stream) = cms.watch(&wp, &from.to_string()).await else {
        return;
    };
    let mut stream = stream.boxed();
    while let Some(ev) = stream.next().await {
        let (kind, cm) = match ev {
            Ok(WatchEvent::Added(c)) => ("ADDED", c),
            Ok(WatchEvent::Modified(c)) => ("MODIFIED", c),
            Ok(WatchEvent::Deleted(c)) => ("DELETED", c),
            Ok(WatchEvent::Bookmark(_)) => continue,
            Ok(WatchEvent::Error(e)) => {
                errors
                    .lock()
                    .unwrap()
                    .push(format!("watch from {from}: {} {}", e.code, e.message));
                return;
            }
            Err(_) => return,
        };
        let name = cm.metadata.name.clone().unwrap_or_default();
        if name.starts_with('w') {
            seen.lock().unwrap().push((rv_of(&cm), kind, name));
        }
    }
}

fn last_seen(seen: &Mutex<Seen>, or: u64) -> u64 {
    seen.lock().unwrap().last().map_or(or, |e| e.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_write_loses_nothing() {
    let kills: usize = std::env::var("FAULT_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").to_string()
    };
    let c = client(&addr);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mut server = Server::start(&state, &addr);
    wait_ready(&c).await;
    let start_rv: u64 = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watch_errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut checked = 0usize;
    let mut max_acked_rv = 0u64;
    let started = Instant::now();
    for round in 0..kills {
        let stop = Arc::new(AtomicBool::new(false));
        let w = tokio::spawn(watcher(
            cms.clone(),
            last_seen(&seen, start_rv),
            seen.clone(),
            watch_errors.clone(),
        ));
        let writers: Vec<_> = (0..WRITERS)
            .map(|id| {
                tokio::spawn(writer(
                    cms.clone(),
                    id,
                    round,
                    rng.next(),
                    stop.clone(),
                    ledger.clone(),
                ))
            })
            .collect();
        // Kill at a random point of the stream of writes.
        tokio::time::sleep(Duration::from_millis(50 + rng.below(400))).await;
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for h in writers {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;

        server = Server::start(&state, &addr);
        wait_ready(&c).await;
        // Every acknowledged write is there.
        let list = cms.list(&ListParams::default()).await.expect("list");
        let list_rv: u64 = list
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let have: BTreeMap<String, String> = list
            .items
            .iter()
            .filter_map(|c| {
                let n = c.metadata.name.clone()?;
                let v = c.data.as_ref()?.get("v")?.clone();
                Some((n, v))
            })
            .collect();
        let mut l = ledger.lock().unwrap();
        let round_acked = l.acked.iter().filter(|a| a.2 > max_acked_rv).count();
        let mut lost = Vec::new();
        for (name, k) in &l.known {
            match k {
                Known::Value(v) if have.get(name) != Some(v) => lost.push(format!(
                    "{name}: acknowledged {v}, found {:?}",
                    have.get(name)
                )),
                Known::Gone if have.contains_key(name) => {
                    lost.push(format!("{name}: acknowledged delete, still there"))
                }
                Known::Unsure => {}
                _ => checked += 1,
            }
        }
        let round_max = l.acked.iter().map(|a| a.2).max().unwrap_or(0);
        if list_rv < round_max {
            lost.push(format!(
                "resourceVersion went back: {list_rv} after a restart, {round_max} acknowledged before"
            ));
        }
        max_acked_rv = max_acked_rv.max(round_max);
        l.failures.extend(lost);
        assert!(
            l.failures.is_empty(),
            "round {round} (seed {seed}, {round_acked} writes acknowledged): {:#?}",
            l.failures
        );
        // Writes whose outcome was unknown are settled now: what the server holds is the truth.
        for (name, k) in l.known.iter_mut() {
            if *k == Known::Unsure {
                *k = match have.get(name) {
                    Some(v) => Known::Value(v.clone()),
                    None => Known::Gone,
                };
            }
        }
    }

    // Catch the watcher up with everything, then check it saw every acknowledged change.
    let final_rv: u64 = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_seen(&seen, start_rv) < final_rv.min(max_acked_rv) && Instant::now() < deadline {
        let from = last_seen(&seen, start_rv);
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            watcher(cms.clone(), from, seen.clone(), watch_errors.clone()),
        )
        .await;
    }
    let seen = seen.lock().unwrap().clone();
    let l = ledger.lock().unwrap();
    let mut monotonic = true;
    for pair in seen.windows(2) {
        if pair[1].0 <= pair[0].0 {
            monotonic = false;
        }
    }
    let by_rv: BTreeMap<u64, (&str, &str)> = seen
        .iter()
        .map(|(rv, k, n)| (*rv, (*k, n.as_str())))
        .collect();
    let deleted_seen: BTreeSet<&str> = seen
        .iter()
        .filter(|e| e.1 == "DELETED")
        .map(|e| e.2.as_str())
        .collect();
    let mut missed = Vec::new();
    for (op, name, rv) in &l.acked {
        let ok = match op {
            Op::Create => by_rv.get(rv) == Some(&("ADDED", name.as_str())),
            Op::Update => by_rv.get(rv) == Some(&("MODIFIED", name.as_str())),
            Op::Delete => deleted_seen.contains(name.as_str()),
        };
        if !ok {
            missed.push(format!("{op:?} {name} at {rv}"));
        }
    }
    let count = |o: Op| l.acked.iter().filter(|a| a.0 == o).count();
    println!(
        "fault-apiserver: seed {seed}, {:.1}s: kills {kills}, writes acknowledged {} (creates {}, updates {}, deletes {}), \
         writes checked {checked} (each acknowledged write again after every later restart), lost 0, rv monotonic {}, watch events {}, missed by the watcher {}, watch errors {}",
        started.elapsed().as_secs_f64(),
        l.acked.len(),
        count(Op::Create),
        count(Op::Update),
        count(Op::Delete),
        if monotonic { "yes" } else { "NO" },
        seen.len(),
        missed.len(),
        watch_errors.lock().unwrap().len(),
    );
    assert!(
        monotonic,
        "the watcher saw resourceVersions go back: {seen:?}"
    );
    assert!(missed.is_empty(), "the watcher missed: {missed:#?}");
    assert!(
        watch_errors.lock().unwrap().is_empty(),
        "{:?}",
        watch_errors.lock().unwrap()
    );
    assert!(
        l.acked.len() >= kills,
        "too few writes acknowledged to mean anything"
    );
    drop(server);
}
