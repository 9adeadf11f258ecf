//! resourceVersions never move backwards, even when the log loses its tail (issue 14): a log
//! cut short from outside, mid-line, loses acknowledged changes, but the store continues above
//! every resourceVersion it ever handed out, and a watcher that resumes from one of the lost
//! ones is told to relist (410 Gone) instead of silently skipping what it saw.

use std::sync::Arc;

use sarasa_apiserver::resources::NAMESPACES;
use sarasa_apiserver::store::{Store, WriteOpts};
use sarasa_apiserver::{meta, Config};
use serde_json::json;

fn open(dir: &std::path::Path) -> Arc<Store> {
    Store::open(Arc::new(Config::new(dir.to_path_buf()))).expect("store opens")
}

fn create(store: &Store, name: &str) -> u64 {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let obj = store
        .create(NAMESPACES, "", ns, WriteOpts::default())
        .expect("create");
    store.sync().expect("durable");
    meta::resource_version(&obj)
        .parse()
        .expect("numeric resourceVersion")
}

#[test]
fn a_log_cut_short_never_moves_resource_versions_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = open(&state);
    let rvs: Vec<u64> = (0..40)
        .map(|i| create(&store, &format!("ns-{i}")))
        .collect();
    let highest = *rvs.last().unwrap();
    store.close();
    drop(store);

    // Cut the log at half, mid-line: the acknowledged changes after the cut are gone.
    let log = state.join("log.jsonl");
    let bytes = std::fs::read(&log).unwrap();
    let mut cut = bytes.len() / 2;
    while bytes[cut - 1] == b'\n' {
        cut += 1;
    }
    std::fs::write(&log, &bytes[..cut]).unwrap();

    let store = open(&state);
    let kept = store.list(NAMESPACES, None, |_| true).0.len();
    assert!(kept < 40, "the cut lost changes ({kept} of 40 kept)");
    let (_, list_rv) = store.list(NAMESPACES, None, |_| true);
    assert!(
        list_rv > highest,
        "a list after the restart is at resourceVersion {list_rv}, not above {highest} handed out before"
    );
    let next = create(&store, "after");
    assert!(next > highest, "new write got {next}, not above {highest}");

    // A watcher that saw the last (lost) change must relist; one from a kept change resumes.
    assert!(
        store.changes_since(highest, |_| true).is_err(),
        "resuming from a lost resourceVersion must be 410 Gone"
    );
    let kept_rv = rvs[kept - 1];
    let (events, _) = store
        .changes_since(kept_rv, |_| true)
        .expect("resuming from a kept resourceVersion");
    assert_eq!(events.len(), 1, "only the new write follows: {events:?}");

    // The skipped range survives another restart (the log records the skip), and a third
    // start continues above everything again.
    store.close();
    drop(store);
    let store = open(&state);
    assert!(store.changes_since(highest, |_| true).is_err());
    assert!(store.get(NAMESPACES, "", "after").is_ok());
    let again = create(&store, "again");
    assert!(again > next);
}

#[test]
fn a_damaged_reservation_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = open(&state);
    create(&store, "a");
    store.close();
    drop(store);
    std::fs::write(state.join("rv-reserved.json"), b"\0\0garbage").unwrap();
    let err = Store::open(Arc::new(Config::new(state.clone())))
        .err()
        .expect("a damaged reservation is refused")
        .to_string();
    assert!(err.contains("rv-reserved.json"), "{err}");
}

#[test]
fn deleted_store_files_still_continue_above_the_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = open(&state);
    let mut last = 0;
    for i in 0..3 {
        last = create(&store, &format!("c{i}"));
    }
    store.close();
    drop(store);
    std::fs::remove_file(state.join("log.jsonl")).unwrap();
    std::fs::remove_file(state.join("snapshot.jsonl")).unwrap();
    let store = open(&state);
    assert!(create(&store, "fresh") > last);
}
