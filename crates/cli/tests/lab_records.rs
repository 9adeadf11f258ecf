//! Lab end-to-end: damaged lab records and state files are detected and reported, never a
//! silent empty cluster or an orphaned process.

mod common;

use std::time::{Duration, Instant};

use common::TestLab;
use sarasa_lab::process::ProcessRecord;
use sarasa_lab::LabPaths;

/// `lab agent restart` with an emptied agent record: the old agent is found by its tag and
/// stopped (not orphaned), and the new one runs and is recorded.
#[test]
fn agent_restart_with_an_emptied_record_replaces_the_old_agent() {
    let lab = TestLab::up(&["--nodes", "1"]);
    let paths = LabPaths::new(&lab.name);
    let file = paths.pids_dir().join("agent-node-1.json");
    let old = ProcessRecord::read(&file)
        .expect("agent record")
        .expect("agent recorded");
    assert!(old.alive());
    std::fs::write(&file, b"").unwrap();
    // Reading the damaged record names the file.
    let e = ProcessRecord::read(&file).unwrap_err().to_string();
    assert!(
        e.contains("agent-node-1.json") && e.contains("empty"),
        "{e}"
    );

    lab.ok(&["lab", "agent", "restart", "node-1"]);
    assert!(!old.alive(), "the old agent was orphaned");
    let new = ProcessRecord::read(&file)
        .expect("agent record")
        .expect("new agent recorded");
    assert_ne!(new, old);
    // The new agent stays up (it would die on "Address already in use" next to the old one).
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(new.alive(), "the new agent exited:\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An emptied snapshot of the API store: the control plane refuses to start, naming the file,
/// instead of starting an empty cluster.
#[test]
fn emptied_store_snapshot_is_refused_not_an_empty_cluster() {
    let lab = TestLab::up(&["--nodes", "1"]);
    let paths = LabPaths::new(&lab.name);
    lab.ok(&["lab", "control-plane", "stop"]);
    let snap = paths.store_dir().join("snapshot.jsonl");
    assert!(std::fs::metadata(&snap).unwrap().len() > 0);
    std::fs::write(&snap, b"").unwrap();
    let out = lab.run(&["lab", "control-plane", "start"]);
    let log =
        std::fs::read_to_string(paths.logs_dir().join("control-plane.log")).unwrap_or_default();
    assert!(!out.status.success(), "started on an emptied snapshot");
    let said = format!(
        "{}{}{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("snapshot.jsonl") && said.contains("empty"),
        "the error does not name the emptied file:\n{said}"
    );
}
