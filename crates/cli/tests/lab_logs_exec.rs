//! Lab end to end: the machine's real `kubectl` against the lab's API server for `logs` (plain,
//! `--tail`, `--timestamps`, `--since`, `-f`, `--previous` after a restart, `-c`) and `exec`
//! (output, exit status, stdin, stderr apart, the pod's network namespace and environment,
//! over WebSocket without SPDY fallback), and the errors kubectl prints for unknown pods and
//! containers. kubectl runs inside the fabric namespace, where the API server listens.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestLab;

/// kubectl pointed at one lab, run in its fabric namespace.
struct Kubectl {
    netns: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(lab: &TestLab) -> Kubectl {
        let handle = sarasa_lab::Lab::open(&lab.name).expect("lab spec");
        let spec = handle.spec.clone();
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("config");
        // The lab's own kubeconfig (its CA, the admin token), pointed at the underlay address.
        let mut doc = handle.kubeconfig().expect("lab kubeconfig");
        doc["clusters"][0]["cluster"]["server"] = spec.api_url().into();
        std::fs::write(&kubeconfig, serde_norway::to_string(&doc).expect("yaml"))
            .expect("write kubeconfig");
        Kubectl {
            netns: spec.fabric_netns,
            kubeconfig,
            _dir: dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running kubectl")
    }

    /// Runs, asserts success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// Runs, asserts failure, returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf8")
    }
}

fn manifest(counter: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: logexec}}
spec:
  nodeName: node-1
  containers:
  - name: app
    image: x
    env: [{{name: GREETING, value: hello-env}}]
    command: ["/bin/sh", "-c"]
    args: ["echo hello from app; echo warn from app >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]
  - name: crash
    image: x
    command: ["/bin/sh", "-c"]
    args: ["n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo run $n; if [ $n -eq 1 ]; then exit 1; fi; exec sleep 3600"]
"#,
        c = counter.display()
    )
}

/// The tick numbers in some log text.
fn ticks(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| {
            l.rsplit_once("tick ")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
        .collect()
}

#[test]
fn kubectl_logs_and_exec_against_the_lab() {
    let lab = TestLab::up(&["--nodes", "1"]);
    let state = tempfile::tempdir().expect("tempdir");
    let counter = state.path().join("crash-runs");
    lab.apply(&manifest(&counter));
    let k = Kubectl::new(&lab);

    // --- logs -------------------------------------------------------------------------------
    // Wait for a few ticks, so --tail and --since have lines to leave out.
    let text = lab
        .eventually(Duration::from_secs(30), || {
            let out = k.run(&["logs", "logexec", "-c", "app"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (ticks(&text).last().copied().unwrap_or(0) >= 8).then_some(text)
        })
        .expect("the app container logs ticks");
    // stdout and stderr are two pipes, so their lines interleave as they were read, as on a
    // real node; each stream's own order holds.
    let head: Vec<&str> = text.lines().take(3).collect();
    assert!(head.contains(&"hello from app"), "{text}");
    assert!(head.contains(&"warn from app"), "stderr too: {text}");
    assert_eq!(
        ticks(&text),
        (1..=ticks(&text).len() as u64).collect::<Vec<_>>()
    );
    let tail = k.ok(&["logs", "logexec", "-c", "app", "--tail=2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert_eq!(ticks(&tail).len(), 2, "{tail}");
    let stamped = k.ok(&["logs", "logexec", "-c", "app", "--timestamps", "--tail=3"]);
    for line in stamped.lines() {
        let (ts, rest) = line
            .split_once(' ')
            .expect("a timestamp, a space, the line");
        assert!(
            ts.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
            "{ts} is not RFC 3339"
        );
        assert!(rest.starts_with("tick "), "{line}");
    }
    let recent = k.ok(&["logs", "logexec", "-c", "app", "--since=1s"]);
    assert!(
        !recent.contains("hello from app") && !ticks(&recent).is_empty(),
        "--since=1s keeps only the last second: {recent}"
    );
    assert!(k
        .ok(&["logs", "logexec", "-c", "app", "--since=1h"])
        .contains("hello from app\n"));

    // -f: a line written after kubectl started arrives, then kubectl is stopped.
    let mut follow = k
        .command(&["logs", "-f", "logexec", "-c", "app", "--tail=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the last line at once");
    let first_tick = ticks(&first)[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    let later = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("a new line while following");
        if ticks(&line).first().is_some_and(|t| *t > first_tick) {
            break line;
        }
    };
    assert!(later.starts_with("tick "), "{later}");
    follow.kill().expect("stop kubectl logs -f");
    follow.wait().expect("reap kubectl");

    // --previous: the crash container's first run exited, the runner restarted it.
    let mut seen = String::new();
    let current = lab
        .eventually(Duration::from_secs(30), || {
            let out = k.run(&["logs", "logexec", "-c", "crash"]);
            seen = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (seen == "run 2\n").then(|| seen.clone())
        })
        .unwrap_or_else(|| {
            panic!(
                "the crash container did not log its second run; last seen {seen:?}, runs {:?}",
                std::fs::read_to_string(&counter)
            )
        });
    assert_eq!(current, "run 2\n");
    assert_eq!(
        k.ok(&["logs", "logexec", "-c", "crash", "--previous"]),
        "run 1\n"
    );
    let err = k.fails(&["logs", "logexec", "-c", "app", "--previous"]);
    assert!(
        err.contains("previous terminated container \"app\" in pod \"logexec\" not found"),
        "{err}"
    );

    // Without -c kubectl picks the first container (and says so on stderr).
    let out = k.run(&["logs", "logexec", "--tail=1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        ticks(&String::from_utf8_lossy(&out.stdout)).len(),
        1,
        "{out:?}"
    );

    // Errors, in kubectl's words.
    let err = k.fails(&["logs", "nope"]);
    assert!(err.contains("(NotFound): pods \"nope\" not found"), "{err}");
    let err = k.fails(&["logs", "logexec", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod logexec"),
        "{err}"
    );

    // --- exec -------------------------------------------------------------------------------
    assert_eq!(
        k.ok(&["exec", "logexec", "-c", "app", "--", "echo", "hi"]),
        "hi\n"
    );
    let out = k.run(&["exec", "logexec", "-c", "app", "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit status propagates: {out:?}"
    );

    let out = k.run(&[
        "exec",
        "logexec",
        "-c",
        "app",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let mut cat = k
        .command(&["exec", "-i", "logexec", "-c", "app", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec -i");
    cat.stdin
        .take()
        .expect("stdin")
        .write_all(b"piped through\nstdin\n")
        .expect("write stdin");
    let out = cat
        .wait_with_output()
        .expect("kubectl exec -i ends at end of stdin");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "piped through\nstdin\n"
    );

    // -t: the command runs on a terminal of its own, sized as kubectl's (kubectl only uses
    // one when its own stdin is a terminal: `script` gives it one, 97 columns by 31 rows),
    // and its exit status still comes back.
    let inner = format!(
        "stty cols 97 rows 31; nsenter --net=/run/netns/{} kubectl --kubeconfig {} exec -it logexec -c app -- \
         sh -c 'tty; for i in $(seq 50); do s=$(stty size); [ \"$s\" != \"0 0\" ] && break; sleep 0.1; done; echo size $s; exit 4'",
        k.netns,
        k.kubeconfig.display()
    );
    // stdin stays open (a pipe nobody writes) until the session ends.
    let tty = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script")
        .wait_with_output()
        .expect("kubectl exec -it");
    let text = String::from_utf8_lossy(&tty.stdout);
    assert!(text.contains("/dev/pts/"), "no terminal: {text:?} {tty:?}");
    assert!(
        text.contains("size 31 97"),
        "not sized as kubectl's: {text:?}"
    );
    assert_eq!(tty.status.code(), Some(4), "{text:?} {tty:?}");
    assert_eq!(
        k.run(&["exec", "logexec", "-c", "app", "--", "tty"])
            .status
            .code(),
        Some(1),
        "without -t there is no terminal"
    );

    // The command runs in the pod: its address, its DNS, its container's environment.
    let pod = lab.get_json(&["pods", "logexec"]);
    let ip = pod["status"]["podIP"].as_str().expect("podIP");
    let addrs = k.ok(&[
        "exec", "logexec", "-c", "app", "--", "ip", "-4", "-o", "addr", "show", "eth0",
    ]);
    assert!(addrs.contains(&format!(" {ip}/")), "{addrs}");
    let resolv = k.ok(&[
        "exec",
        "logexec",
        "-c",
        "app",
        "--",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(resolv.contains("default.svc.cluster.local"), "{resolv}");
    let env = k.ok(&[
        "exec",
        "logexec",
        "-c",
        "app",
        "--",
        "sh",
        "-c",
        "echo $GREETING $POD_NAME",
    ]);
    assert_eq!(env, "hello-env logexec\n");

    // kubectl took the WebSocket path and did not fall back to SPDY.
    let out = k.run(&["-v=6", "exec", "logexec", "-c", "app", "--", "true"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("101 Switching Protocols"), "{log}");
    assert!(!log.to_lowercase().contains("fallback"), "{log}");
    assert!(!log.contains("POST"), "no SPDY request: {log}");

    let err = k.fails(&["exec", "logexec", "-c", "app", "--", "/nonexistent/program"]);
    assert!(
        err.contains("error executing command in container"),
        "{err}"
    );
    let err = k.fails(&["exec", "nope", "--", "true"]);
    assert!(err.contains("pods \"nope\" not found"), "{err}");
    let err = k.fails(&["exec", "logexec", "-c", "nope", "--", "true"]);
    assert!(
        err.contains("container nope is not valid for pod logexec"),
        "{err}"
    );

    // A pod made again with the same name is a new pod: its logs start empty, no previous.
    k.ok(&["delete", "pod", "logexec", "--wait=true"]);
    lab.apply(&manifest(&counter));
    let fresh = lab
        .eventually(Duration::from_secs(30), || {
            let out = k.run(&["logs", "logexec", "-c", "crash"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (!text.is_empty()).then_some(text)
        })
        .expect("the new pod's crash container logs");
    assert_eq!(fresh, "run 3\n");
    let err = k.fails(&["logs", "logexec", "-c", "crash", "--previous"]);
    assert!(err.contains("previous terminated container"), "{err}");
}
