//! Lab end-to-end: damaged lab records and state files are detected and reported, never a
//! silent empty cluster or an orphaned process.

mod common;

use std::time::{Duration, Instant};

use common::TestLab;
use sarasa_lab::process::ProcessRecord;
use sarasa_lab::LabPaths;

/// `lab control-plane restart` with an emptied record: the old control plane is found by its
/// tag and stopped (not orphaned), and the new one runs and is recorded. (The agents are
/// DaemonSet pods, recorded by the kubelet, not lab daemons.)
#[test]
fn control_plane_restart_with_an_emptied_record_replaces_the_old_one() {
    let lab = TestLab::up(&["--nodes", "1"]);
    let paths = LabPaths::new(&lab.name);
    let file = paths.pids_dir().join("control-plane.json");
    let old = ProcessRecord::read(&file)
        .expect("control-plane record")
        .expect("control plane recorded");
    assert!(old.alive());
    std::fs::write(&file, b"").unwrap();
    // Reading the damaged record names the file.
    let e = ProcessRecord::read(&file).unwrap_err().to_string();
    assert!(
        e.contains("control-plane.json") && e.contains("empty"),
        "{e}"
    );

    lab.ok(&["lab", "control-plane", "restart"]);
    assert!(!old.alive(), "the old control plane was orphaned");
    let new = ProcessRecord::read(&file)
        .expect("control-plane record")
        .expect("new control plane recorded");
    assert_ne!(new, old);
    // The new control plane stays up (it would die on "Address already in use" next to the
    // old one).
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(new.alive(), "the new control plane exited:\n{}", lab.logs());
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
