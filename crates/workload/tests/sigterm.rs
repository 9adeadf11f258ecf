//! `serve` shuts down cleanly (returns Ok, exit 0) on SIGTERM, even with other threads in the
//! process (libtest's). A signal is process-wide, so this test re-runs itself as a child.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "SARASA_WORKLOAD_SERVE_CHILD";

#[test]
fn serve_exits_cleanly_on_sigterm() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // Child: serve until SIGTERM.
        let config = sarasa_workload::ServeConfig::new(vec!["0/tcp".parse().unwrap()]);
        sarasa_workload::serve(config).expect("clean shutdown");
        println!("clean shutdown");
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "serve_exits_cleanly_on_sigterm",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it listens (it says so on stderr), bounded.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("listening on") => break,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("child never listened: {e}");
            }
        }
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "exit {status:?}");
    assert!(out.contains("clean shutdown"), "{out}");
}
