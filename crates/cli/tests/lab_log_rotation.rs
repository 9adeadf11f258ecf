//! Container logs rotate at the size `lab up --container-log-max-size` sets, keeping
//! `--container-log-max-files` files (the kubelet's containerLogMaxSize / containerLogMaxFiles):
//! a pod writes about 45 times the size to stdout; the rotated files exist, bounded in count
//! and size, together hold the newest lines in order with none lost between them, and
//! `kubectl logs` serves the newest lines. Bad values are refused naming the flag, before
//! anything is built.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{sarasa_bin, unique_lab, TestLab};

const MAX_BYTES: u64 = 64 * 1024;
const MAX_FILES: usize = 3;
const LINES: u32 = 30_000;

/// The `line NNNNNN` numbers in CRI log text, in order.
fn numbers(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("line ")?;
            rest.get(..6)?.parse().ok()
        })
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

#[test]
fn container_logs_rotate_at_the_configured_size() {
    let lab = TestLab::up(&[
        "--nodes",
        "1",
        "--container-log-max-size",
        "64Ki",
        "--container-log-max-files",
        &MAX_FILES.to_string(),
    ]);
    let spec = sarasa_lab::Lab::open(&lab.name).expect("lab spec").spec;
    assert_eq!(spec.container_log_max_bytes, MAX_BYTES);
    assert_eq!(spec.container_log_max_files, MAX_FILES);

    // ~100 bytes a record: about 2.9 MB of log, 45 times the size.
    lab.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: chatty}}
spec:
  nodeName: node-1
  containers:
  - name: c
    image: x
    command: ["/bin/sh", "-c", "seq -f 'line %06g {pad}' 1 {LINES}; echo last-line; exec sleep 3600"]
"#,
        pad = "x".repeat(40)
    ));
    let dir = PathBuf::from("/var/lib/sarasa")
        .join(&lab.name)
        .join("logs/pods");
    let current = dir.join("default_chatty_c.log");
    let rotated = |n: usize| dir.join(format!("default_chatty_c.log.{n}"));
    let done = lab.eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(&current)
            .ok()?
            .contains("stdout F last-line")
            .then_some(())
    });
    assert!(
        done.is_some(),
        "the pod's last line never reached its log; files: {:?}",
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );

    // Bounded in count: the file written and MAX_FILES - 1 rotated ones, nothing else.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("log dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("default_chatty_c."))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "default_chatty_c.log",
            "default_chatty_c.log.1",
            "default_chatty_c.log.2"
        ],
        "the current log and {} rotated ones",
        MAX_FILES - 1
    );
    // Bounded in size: the limit, plus at most what one read of the pipe (64 KiB of output,
    // stamped) added past it.
    let written: u64 = u64::from(LINES) * 100;
    let mut kept = 0;
    for f in [rotated(2), rotated(1), current.clone()] {
        let len = std::fs::metadata(&f).expect("log file").len();
        assert!(len < MAX_BYTES + 128 * 1024, "{}: {len} bytes", f.display());
        kept += len;
    }
    assert!(
        kept < written / 4,
        "{kept} bytes kept of about {written} written: the log was not rotated away"
    );

    // Oldest to newest the files hold consecutive lines ending with the last ones: rotation
    // loses nothing in between, and the oldest lines are gone.
    let all: Vec<u32> = [rotated(2), rotated(1), current.clone()]
        .iter()
        .flat_map(|f| numbers(&read(f)))
        .collect();
    assert_eq!(all.last(), Some(&LINES), "the newest line is kept");
    assert!(all[0] > 1, "the oldest lines were rotated away");
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 1),
        "lines in order, none lost between the kept files"
    );
    assert!(read(&current).trim_end().ends_with("stdout F last-line"));

    // `kubectl logs --tail` serves the newest lines, from the rotated files too when the
    // current one holds fewer (where the rotation falls depends on how output was read).
    let out = Command::new("kubectl")
        .env("KUBECONFIG", lab.kubeconfig())
        .args(["--context", &format!("sarasa-{}", lab.name)])
        .args(["logs", "chatty", "--tail", "3"])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl logs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let pad = "x".repeat(40);
    let want = format!(
        "line {:06} {pad}\nline {LINES:06} {pad}\nlast-line\n",
        LINES - 1
    );
    assert_eq!(text, want);
}

#[test]
fn bad_container_log_limits_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--container-log-max-size", "10MB"),
        ("--container-log-max-size", "1Ki"),
        ("--container-log-max-files", "1"),
    ] {
        let name = unique_lab();
        let out = Command::new(sarasa_bin())
            .args(["--lab", &name, "lab", "up", "--nodes", "1", flag, value])
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .output()
            .expect("sarasa");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was taken");
        assert!(err.contains(flag), "{flag} {value}: {err}");
        assert!(
            !PathBuf::from("/var/lib/sarasa").join(&name).exists(),
            "{flag} {value}: a lab was started"
        );
    }
}
