//! The state directory on a real, small filesystem (a 2 MiB tmpfs mounted for the test) that
//! fills up: writes fail with a 507 Status naming the cause while reads and watches go on, no
//! write is torn, writes resume once space is freed, the server starts on the full disk, and
//! every acknowledged write is there after restarts. Needs root (mount); skipped otherwise.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{status_of, TestServer};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem with a file of zeros; returns its path.
    fn fill(&self) -> PathBuf {
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).expect("filler");
        let chunk = vec![0u8; 4096];
        for _ in 0..10_000 {
            if f.write_all(&chunk).is_err() {
                return p;
            }
        }
        panic!("the small filesystem never filled up");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn cm(name: &str, kib: usize) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": {"v": "x".repeat(kib * 1024)}
    }))
    .unwrap()
}

/// Every line of the log parses (nothing torn or glued together).
fn assert_log_whole(state: &Path) {
    let text = std::fs::read_to_string(state.join("log.jsonl")).expect("log");
    assert!(text.ends_with('\n'), "the log ends mid-line");
    for (i, line) in text.lines().enumerate() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("log line {} is not whole: {e}", i + 1));
    }
}

#[tokio::test]
async fn full_disk_fails_writes_clearly_and_recovers() {
    let Some(fs) = SmallFs::mount("2m") else {
        return;
    };
    let state = fs.path().join("state");
    let st = state.clone();
    let mut server = TestServer::start_with(move |c| c.state_dir = st).await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(&PostParams::default(), &cm("before", 1))
        .await
        .expect("create before the disk fills");
    let list = cms.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut events = cms
        .watch(&WatchParams::default().timeout(120), &rv)
        .await
        .unwrap()
        .boxed();

    let filler = fs.fill();
    // Several sizes, so some writes land partly (a short write) before the space runs out.
    let mut refused = 0;
    for (i, kib) in [1, 3, 7, 12, 30].iter().enumerate() {
        let r = cms
            .create(&PostParams::default(), &cm(&format!("full-{i}"), *kib))
            .await;
        if r.is_ok() {
            continue;
        }
        let s = status_of(r);
        assert_eq!(s.code, 507, "{s:?}");
        assert!(s.message.contains("no space left"), "{}", s.message);
        refused += 1;
    }
    assert!(refused >= 3, "only {refused} writes refused on a full disk");
    assert_log_whole(&state);
    // Reads go on.
    cms.get("before").await.expect("get on a full disk");
    cms.list(&ListParams::default())
        .await
        .expect("list on a full disk");

    // The server starts on the full disk, and still refuses writes clearly.
    server.restart().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.get("before")
        .await
        .expect("get after a restart on a full disk");
    let s = status_of(
        cms.create(&PostParams::default(), &cm("full-after-restart", 8))
            .await,
    );
    assert_eq!(s.code, 507, "{s:?}");
    // The watch opened before the restart ended; a new one from the same version works.
    drop(events);
    events = cms
        .watch(&WatchParams::default().timeout(120), &rv)
        .await
        .unwrap()
        .boxed();

    // Space returns: writes resume and the watcher sees them.
    std::fs::remove_file(&filler).unwrap();
    cms.create(&PostParams::default(), &cm("after", 8))
        .await
        .expect("create once space is back");
    let seen = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match events.try_next().await {
                Ok(Some(WatchEvent::Added(c))) if c.metadata.name.as_deref() == Some("after") => {
                    return true
                }
                Ok(Some(_)) => {}
                _ => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(seen, "the watcher did not see the write after recovery");
    assert_log_whole(&state);

    // Every acknowledged write survives a restart; the refused ones left nothing behind.
    server.restart().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let names: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(names.contains(&"before".to_string()) && names.contains(&"after".to_string()));
    assert!(!names.contains(&"full-after-restart".to_string()));
    server.stop().await;
}
