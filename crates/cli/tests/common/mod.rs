//! Harness for lab end-to-end tests: a lab with a unique name that is taken down when the
//! test ends, pass or fail; helpers to run `sarasa` against it and read JSON back.
#![allow(dead_code)]

pub mod clusterset;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn sarasa_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sarasa"))
}

/// A unique lab name for this test process (`t<pid><n>`).
pub fn unique_lab() -> String {
    format!(
        "t{}{}",
        std::process::id(),
        (b'a' + COUNTER.fetch_add(1, Ordering::SeqCst) as u8) as char
    )
}

pub struct TestLab {
    pub name: String,
}

impl TestLab {
    /// `lab up` with these flags; panics (after cleaning up) when it fails.
    pub fn up(flags: &[&str]) -> TestLab {
        let lab = TestLab { name: unique_lab() };
        let mut args = vec!["lab", "up"];
        args.extend_from_slice(flags);
        let out = lab.run(&args);
        assert!(
            out.status.success(),
            "lab up {flags:?} failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            lab.logs()
        );
        lab
    }

    /// The kubeconfig `lab up` merges this lab's context into (a private file per test lab,
    /// never the user's own).
    pub fn kubeconfig(&self) -> PathBuf {
        std::env::temp_dir().join(format!("sarasa-test-{}.kubeconfig", self.name))
    }

    /// Runs `sarasa --lab NAME ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(sarasa_bin())
            .arg("--lab")
            .arg(&self.name)
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .output()
            .expect("running sarasa")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sarasa {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Node `node`'s conntrack entries of `proto` to port `dport` (`conntrack -L`, one line
    /// each).
    pub fn conntrack(&self, node: &str, proto: &str, dport: u16) -> Vec<String> {
        let node = format!("node/{node}");
        let dport = dport.to_string();
        let out = self.ok(&[
            "exec",
            &node,
            "--",
            "conntrack",
            "-L",
            "-p",
            proto,
            "--dport",
            &dport,
        ]);
        out.lines().map(str::to_string).collect()
    }

    pub fn apply(&self, yaml: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("m.yaml");
        std::fs::write(&f, yaml).expect("write manifest");
        self.ok(&[
            "apply",
            "-f",
            f.to_str().expect("utf8"),
            "--wait",
            "--timeout",
            "90s",
        ])
    }

    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("get -o json gives JSON")
    }

    /// Pods (name, podIP, nodeName) with this label `key=value`.
    pub fn pods(&self, ns: &str, key: &str, value: &str) -> Vec<(String, String, String)> {
        let list = self.get_json(&["pods", "-n", ns]);
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|p| p["metadata"]["labels"][key] == value)
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["status"]["podIP"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    /// `sarasa exec TARGET -- sarasa probe ARGS...`: the reply JSON, or None when it failed.
    pub fn probe(&self, target: &str, url: &str) -> Option<Value> {
        let bin = sarasa_bin();
        let out = self.run(&[
            "exec",
            target,
            "--",
            bin.to_str().expect("utf8"),
            "probe",
            "--timeout",
            "3s",
            url,
        ]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().next().unwrap_or_default()).ok()
    }

    /// Polls `f` until it returns Some, for at most `timeout`.
    pub fn eventually<T>(&self, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f() {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tail of every log of the lab: its own processes', and the containers' of the
    /// agent DaemonSet and the cluster DNS.
    pub fn logs(&self) -> String {
        let dir = PathBuf::from("/var/lib/sarasa")
            .join(&self.name)
            .join("logs");
        let mut s = String::new();
        let files = std::fs::read_dir(&dir)
            .into_iter()
            .chain(std::fs::read_dir(dir.join("pods")))
            .flat_map(|d| d.flatten());
        for e in files {
            let name = e.file_name().to_string_lossy().into_owned();
            let system_pod = name.starts_with("sarasa-system_") || name.starts_with("kube-system_");
            if e.path().is_file() && (e.path().parent() == Some(dir.as_path()) || system_pod) {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                s.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lab {} logs:\n{}", self.name, self.logs());
        }
        let out = self.run(&["lab", "down"]);
        if !out.status.success() {
            eprintln!(
                "lab down {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let kc = self.kubeconfig();
        let _ = std::fs::remove_file(kc.with_extension("lock"));
        let _ = std::fs::remove_file(kc);
    }
}

/// A bare `sarasa/serve` pod on `node` labelled `app: APP`, serving on 8080.
pub fn serve_pod(name: &str, node: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\n\
         spec:\n  nodeName: {node}\n  containers:\n  - name: web\n    image: sarasa/serve\n    ports: [{{containerPort: 8080}}]\n"
    )
}

/// A LoadBalancer Service `name` on port 80 → 8080 of the pods labelled `app: APP`, with the
/// cloud balancer's `ip` targets.
pub fn ip_target_service(name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  annotations: {{sarasa.io/load-balancer-target: ip}}\n\
         spec:\n  type: LoadBalancer\n  selector: {{app: {app}}}\n  ports:\n  - {{port: 80, targetPort: 8080}}\n"
    )
}

/// Where `sarasa-cni` was built: next to `sarasa`.
pub fn cni_dir() -> PathBuf {
    let dir = sarasa_bin().parent().expect("bin dir").to_path_buf();
    assert!(
        dir.join("sarasa-cni").exists(),
        "sarasa-cni is not built next to sarasa in {} (run `cargo build --workspace --bins` first)",
        dir.display()
    );
    dir
}

/// The client IP in a serve reply.
pub fn client_ip(reply: &Value) -> String {
    let client = reply["client"].as_str().unwrap_or_default();
    client
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// What one `sarasa probe` run gave: the reply JSON or the error text, and how long it took.
#[derive(Debug)]
pub struct ProbeOutcome {
    pub reply: Result<Value, String>,
    pub elapsed: Duration,
}

impl TestLab {
    /// `apply -f` without waiting for pods to be Ready (for pods that never become Ready).
    pub fn apply_nowait(&self, yaml: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("m.yaml");
        std::fs::write(&f, yaml).expect("write manifest");
        self.ok(&["apply", "-f", f.to_str().expect("utf8")])
    }

    /// `apply -f` expected to fail: returns stdout + stderr.
    pub fn apply_err(&self, yaml: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("m.yaml");
        std::fs::write(&f, yaml).expect("write manifest");
        let out = self.run(&["apply", "-f", f.to_str().expect("utf8")]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "apply unexpectedly succeeded:\n{yaml}\n{text}"
        );
        text
    }

    /// `sarasa exec TARGET -- sarasa probe --timeout T URL`, keeping the error text.
    pub fn probe_outcome(&self, target: &str, url: &str, timeout: &str) -> ProbeOutcome {
        let bin = sarasa_bin();
        let started = Instant::now();
        let out = self.run(&[
            "exec",
            target,
            "--",
            bin.to_str().expect("utf8"),
            "probe",
            "--timeout",
            timeout,
            url,
        ]);
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let reply = if out.status.success() {
            serde_json::from_str(stdout.lines().next().unwrap_or_default())
                .map_err(|e| format!("reply is not JSON ({e}): {stdout}"))
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        };
        ProbeOutcome { reply, elapsed }
    }

    /// `sarasa exec TARGET -- CMD...`: its stdout (panics when it fails).
    pub fn exec(&self, target: &str, cmd: &[&str]) -> String {
        let mut args = vec!["exec", target, "--"];
        args.extend_from_slice(cmd);
        self.ok(&args)
    }

    /// `dig +short NAME` from pod `pod`, polled (30 s) until the answer passes `accept`; panics
    /// naming the name and the last answer otherwise.
    pub fn dig_until(&self, pod: &str, name: &str, accept: impl Fn(&str) -> bool) -> String {
        self.dig_type_until(pod, "A", name, accept)
    }

    /// The same for records of type `qtype` (`AAAA`, `SRV`, ...).
    pub fn dig_type_until(
        &self,
        pod: &str,
        qtype: &str,
        name: &str,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        self.eventually(Duration::from_secs(30), || {
            let out = self.run(&[
                "exec", pod, "--", "dig", "+short", "+time=2", "+tries=1", "-t", qtype, name,
            ]);
            last = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!last.is_empty() && !last.starts_with(";;") && accept(&last)).then(|| last.clone())
        })
        .unwrap_or_else(|| panic!("{}: {name} from {pod}: last answer {last:?}", self.name))
    }

    /// The pod's IP in `default`, once it has one (30 s).
    pub fn pod_ip(&self, name: &str) -> String {
        self.eventually(Duration::from_secs(30), || {
            let p = self.object("pods", "default", name)?;
            let ip = p["status"]["podIP"].as_str()?;
            (!ip.is_empty()).then(|| ip.to_string())
        })
        .unwrap_or_else(|| panic!("{name} has no IP\n{}", self.logs()))
    }

    /// A Node's condition of `type_`: (status, reason, message), empty when absent.
    pub fn node_condition(&self, node: &str, type_: &str) -> (String, String, String) {
        let n = self.object("nodes", "default", node).expect("node listed");
        let c = n["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or_default();
        let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
        (s("status"), s("reason"), s("message"))
    }

    /// The Node's condition of `type_` once its status is `status` (panics after `timeout`).
    pub fn wait_condition_status(
        &self,
        node: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> (String, String, String) {
        self.eventually(timeout, || {
            let c = self.node_condition(node, type_);
            (c.0 == status).then_some(c)
        })
        .unwrap_or_else(|| {
            panic!(
                "{node}: {type_} never {status}: {:?}",
                self.node_condition(node, type_)
            )
        })
    }

    /// `sarasa lab check` finds every node equal to its plan (panics with its report if not).
    pub fn check_equal(&self) {
        let check = self.run(&["lab", "check"]);
        assert!(
            check.status.success(),
            "lab check: {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }

    /// The first ingress address of a LoadBalancer Service in `default` (30 s).
    pub fn ingress_ip(&self, service: &str) -> String {
        self.eventually(Duration::from_secs(30), || {
            self.object("services", "default", service)?["status"]["loadBalancer"]["ingress"][0]
                ["ip"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("{service} got no ingress address\n{}", self.logs()))
    }

    /// The first Event in `ns` about `object` with `reason` whose message contains
    /// `contains` (30 s).
    pub fn wait_event(&self, ns: &str, object: &str, reason: &str, contains: &str) -> Value {
        self.eventually(Duration::from_secs(30), || {
            let events = self.get_json(&["events", "-n", ns]);
            events["items"].as_array().and_then(|items| {
                items
                    .iter()
                    .find(|e| {
                        e["involvedObject"]["name"] == object
                            && e["reason"] == reason
                            && e["message"].as_str().unwrap_or_default().contains(contains)
                    })
                    .cloned()
            })
        })
        .unwrap_or_else(|| panic!("no {reason} Event for {object}\n{}", self.logs()))
    }

    /// One object of `get KIND -n NS -o json` by name.
    pub fn object(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let list = self.get_json(&[kind, "-n", ns]);
        list["items"]
            .as_array()?
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .cloned()
    }

    /// Every address of every node namespace (what a masqueraded source may be).
    pub fn all_node_addrs(&self) -> std::collections::BTreeSet<String> {
        let nodes = self.get_json(&["nodes"]);
        let mut out = std::collections::BTreeSet::new();
        for n in nodes["items"].as_array().into_iter().flatten() {
            let name = n["metadata"]["name"].as_str().unwrap_or_default();
            let text = self.ok(&["exec", &format!("node/{name}"), "--", "ip", "-j", "addr"]);
            let v: Value = serde_json::from_str(&text).expect("ip -j addr");
            for l in v.as_array().into_iter().flatten() {
                for a in l["addr_info"].as_array().into_iter().flatten() {
                    if let Some(ip) = a["local"].as_str() {
                        out.insert(ip.to_string());
                    }
                }
            }
        }
        out
    }

    /// The agent log of `node` (its DaemonSet pod's `agent` container, current instance), in
    /// the CRI format the kubelet writes.
    pub fn agent_log(&self, node: &str) -> String {
        let pods = self.get_json(&["pods", "-n", "sarasa-system"]);
        let Some(pod) = pods["items"].as_array().into_iter().flatten().find(|p| {
            p["spec"]["nodeName"] == node && p["metadata"]["deletionTimestamp"].is_null()
        }) else {
            return String::new();
        };
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let path = PathBuf::from("/var/lib/sarasa")
            .join(&self.name)
            .join(format!("logs/pods/sarasa-system_{name}_agent.log"));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The lab's fabric namespace (the underlay router).
    pub fn fabric_netns(&self) -> String {
        format!("sarasa-{}-fabric", self.name)
    }
}

/// The pid of `node`'s agent process: a `sarasa agent` whose network namespace is the node's.
pub fn agent_pid(lab: &str, node: &str) -> Option<i32> {
    let target = std::fs::metadata(format!("/run/netns/sarasa-{lab}-{node}")).ok()?;
    use std::os::unix::fs::MetadataExt;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_agent = args.len() > 1
            && args[0].ends_with(b"sarasa")
            && args[1] == b"agent"
            && args
                .get(2)
                .is_none_or(|a| *a != b"install-cni" && *a != b"uninstall");
        if !is_agent {
            continue;
        }
        let same = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev());
        if same {
            return Some(pid);
        }
    }
    None
}
