//! A controller whose reconcile panics on one object is restarted with backoff (counted in
//! `sarasa_controller_restarts_total`) and, once the object is fixed, serves again.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sarasa_apiserver::controllers::{self, Controller};
use sarasa_apiserver::resources::{ResId, CONFIGMAPS};
use sarasa_apiserver::store::{Event, Store, Sub, WriteOpts};
use sarasa_apiserver::{meta, ApiServer, Config};
use serde_json::{json, Value};

/// Records the ConfigMaps it sees; panics on one whose data says `panic: "yes"`.
struct Picky {
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl Controller for Picky {
    fn name(&self) -> &'static str {
        "picky"
    }
    fn watches(&self) -> &'static [ResId] {
        &[CONFIGMAPS]
    }
    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        let objs: Vec<Value> = match events {
            Some(ev) => ev.iter().map(|e| (*e.obj).clone()).collect(),
            None => {
                let (items, _) = store.list(CONFIGMAPS, Some("default"), |_| true);
                items.iter().map(|o| (**o).clone()).collect()
            }
        };
        for o in objs {
            if meta::path_str(&o, "data.panic") == Some("yes") {
                panic!("picky: cannot handle {}", meta::name(&o));
            }
            self.seen.lock().unwrap().insert(meta::name(&o).to_string());
        }
        None
    }
}

fn configmap(name: &str, panic: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"panic": panic}})
}

async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_controller_restarts_with_backoff_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("state"));
    config.controller_restart_backoff = (Duration::from_millis(20), Duration::from_millis(160));
    let server = ApiServer::open(config).unwrap();
    let store = server.store().clone();
    let opts = WriteOpts::internal();
    store
        .create(CONFIGMAPS, "default", configmap("boom", "yes"), opts)
        .unwrap();
    store
        .create(CONFIGMAPS, "default", configmap("fine", "no"), opts)
        .unwrap();

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let s = seen.clone();
    let metrics = server.metrics().clone();
    let handle = controllers::spawn(store.clone(), metrics.clone(), move || Picky {
        seen: s.clone(),
    });

    // Every restart's full pass meets "boom" again: it keeps restarting, ever more slowly.
    until(10, "three restarts", || {
        metrics.controller_restarts("picky") >= 3
    })
    .await;
    let before = metrics.controller_restarts("picky");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let during = metrics.controller_restarts("picky") - before;
    // Without backoff this would be thousands; capped at 160 ms it is at most ~6.
    assert!(during <= 8, "{during} restarts in 800 ms: no backoff");
    assert!(!handle.is_finished(), "the supervisor gave up");
    assert!(
        server
            .metrics()
            .render()
            .contains("sarasa_controller_restarts_total{controller=\"picky\"}"),
        "restarts are exported"
    );

    // Fix the object: the next restart's full pass gets through, then events flow again.
    store
        .update(
            CONFIGMAPS,
            "default",
            "boom",
            configmap("boom", "no"),
            Sub::Main,
            opts,
        )
        .unwrap();
    until(10, "boom reconciled after the fix", || {
        seen.lock().unwrap().contains("boom")
    })
    .await;
    store
        .create(CONFIGMAPS, "default", configmap("later", "no"), opts)
        .unwrap();
    until(10, "a later change reconciled", || {
        seen.lock().unwrap().contains("later")
    })
    .await;
    assert!(seen.lock().unwrap().contains("fine"));
    server.shutdown();
    handle.abort();
}
