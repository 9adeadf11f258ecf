//! Fault injection (issue 14): the agent killed with SIGKILL at random points while a stream of
//! Service, EndpointSlice and NetworkPolicy changes goes to the API, FAULT_KILLS times (5 here,
//! 50 in `scripts/fault-agent.sh`) over FAULT_CHANGES changes (100 here, 1,000 there). After
//! each kill the node's agent pod is replaced (`lab agent restart`: the kubelet's crash
//! back-off would otherwise space 50 kills over hours); with the stream paused, every node's
//! nftables tables must equal the plan compiled from the API (`sarasa lab check`) within 30 s.
//! Throughout, a TCP connection from a pod on node-1 through a Service to a pod on node-2
//! exchanges a line every 200 ms and must never miss a reply. Prints the counts.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{sarasa_bin, TestLab};

const HELD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: held}}
spec:
  nodeName: node-2
  containers: [{name: web, image: sarasa/serve, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: node-1
  containers: [{name: web, image: sarasa/serve, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: held}
spec:
  selector: {app: held}
  ports: [{port: 80, targetPort: 8080}]
"#;

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), seeded by FAULT_SEED or the clock.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The i-th change of the stream: a Service, its EndpointSlice or a NetworkPolicy, created,
/// changed or (every seventh) deleted.
fn change(i: u32) -> (String, bool) {
    let n = i % 10;
    let port = 1000 + (i % 50);
    let doc = match i % 3 {
        0 => format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: churn-{n}}}\nspec:\n  ports: [{{name: p, port: {port}, targetPort: 8080}}]\n"
        ),
        1 => format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: churn-{n}-1\n  labels: {{kubernetes.io/service-name: churn-{n}}}\naddressType: IPv4\nports: [{{name: p, port: 8080, protocol: TCP}}]\nendpoints:\n- addresses: [\"10.244.1.{}\"]\n  conditions: {{ready: true}}\n",
            100 + (i % 100)
        ),
        _ => format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: churn-{}}}\nspec:\n  podSelector: {{matchLabels: {{app: churn-{n}}}}}\n  ingress:\n  - ports: [{{port: {port}}}]\n",
            i % 5
        ),
    };
    (doc, i % 7 == 6)
}

#[test]
fn agent_killed_at_random_points_leaves_the_plan_and_the_held_connection() {
    let kills = env_u32("FAULT_KILLS", 5);
    let changes = env_u32("FAULT_CHANGES", 100);
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let lab = TestLab::up(&["--nodes", "2"]);
    lab.apply(HELD);
    let svc = lab.object("services", "default", "held").expect("service");
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();

    // The held connection, in its own process group so it can be ended with what it started.
    let mut held = Command::new(sarasa_bin())
        .args(["--lab", &lab.name, "exec", "client", "--"])
        .arg(sarasa_bin())
        .args([
            "probe",
            "--hold",
            "3600s",
            "--interval",
            "200ms",
            "--timeout",
            "5s",
        ])
        .arg(format!("tcp://{cluster_ip}:80"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn the held connection");

    // The stream of changes, paused while a check runs.
    let gate = Arc::new(Mutex::new(()));
    let done = Arc::new(AtomicBool::new(false));
    let applied = Arc::new(AtomicU32::new(0));
    let stream = {
        let (gate, done, applied, name) = (
            gate.clone(),
            done.clone(),
            applied.clone(),
            lab.name.clone(),
        );
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().expect("tempdir");
            for i in 0..changes {
                let _g = gate.lock().unwrap_or_else(|p| p.into_inner());
                let (doc, delete) = change(i);
                let f = dir.path().join("c.yaml");
                std::fs::write(&f, doc).expect("write");
                let verb = if delete { "delete" } else { "apply" };
                let out = Command::new(sarasa_bin())
                    .args(["--lab", &name, verb, "-f"])
                    .arg(&f)
                    .output()
                    .expect("sarasa");
                assert!(
                    out.status.success() || delete,
                    "{verb} #{i}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                applied.fetch_add(1, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let mut rng = Rng(seed);
    let (mut equal, mut unequal) = (0u32, Vec::new());
    for k in 0..kills {
        // A random point: spread the kills over the stream.
        std::thread::sleep(Duration::from_millis(50 + rng.next(400)));
        let node = if rng.next(2) == 0 { "node-1" } else { "node-2" };
        let pid = lab
            .eventually(Duration::from_secs(30), || {
                common::agent_pid(&lab.name, node)
            })
            .unwrap_or_else(|| panic!("no agent process on {node}"));
        // SAFETY: kill(2) on a pid this test found as the lab agent of its own lab.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
        lab.ok(&["lab", "agent", "restart", node]);
        let _paused = gate.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + Duration::from_secs(30);
        let last = loop {
            let out = lab.run(&["lab", "check"]);
            if out.status.success() {
                break None;
            }
            if Instant::now() > deadline {
                break Some(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        match last {
            None => equal += 1,
            Some(diff) => unequal.push(format!("after kill {k} on {node}:\n{diff}")),
        }
        assert!(
            held.try_wait().expect("held").is_none(),
            "the held connection broke after kill {k}"
        );
    }
    stream.join().expect("stream");
    let alive = held.try_wait().expect("held").is_none();
    // SAFETY: the process group this test started for the held connection.
    unsafe { libc::killpg(held.id() as i32, libc::SIGTERM) };
    let out = held.wait_with_output().expect("held output");
    println!(
        "fault-agent: seed {seed}, kills {kills}, changes applied {}, plan checks {} equal / {} unequal, connections held 1, broken {}",
        applied.load(Ordering::SeqCst),
        equal,
        unequal.len(),
        u32::from(!alive)
    );
    assert!(
        alive,
        "the held connection broke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(unequal.is_empty(), "{}", unequal.join("\n"));
    assert_eq!(applied.load(Ordering::SeqCst), changes);
}
