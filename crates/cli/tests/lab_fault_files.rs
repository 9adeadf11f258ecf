//! Fault injection on the lab's state files (issue 14): each file the lab keeps — the API
//! store's snapshot, log and resourceVersion reservation, a node's IPAM allocations.json, the
//! control plane's process record, a pod's runtime record (of a pod and of a hostNetwork pod),
//! the lab spec, the API loopback record — garbage-filled, truncated, emptied and deleted in
//! turn, with the lab stopped or running as fits; then what reads it is restarted and the
//! outcome classified:
//! - recovered: it runs again with the objects intact (the same pods with the same addresses)
//!   and, where addresses are handed out, a new pod gets one no other pod holds;
//! - a clear error: it refuses, naming the file (the file is then restored to go on);
//! - a silent failure: anything else (target 0).
//!
//! Duplicates are counted on the pods' real interfaces (eth0 in each pod's namespace);
//! orphans as container instances (their log shims, the damaged record's container processes)
//! left running beside a new one — for the hostNetwork pod too, whose containers share the
//! node's namespace.
//! The CI form damages every file in every way once (36 faults, about 50 s with the lab's
//! start); `scripts/fault-files.sh` repeats that `ROUNDS` times.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::TestLab;
use sarasa_lab::process::ProcessRecord;
use sarasa_lab::LabPaths;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Garbage,
    Truncated,
    Emptied,
    Deleted,
}

const KINDS: [Kind; 4] = [Kind::Garbage, Kind::Truncated, Kind::Emptied, Kind::Deleted];

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Garbage => "garbage",
            Kind::Truncated => "truncated",
            Kind::Emptied => "emptied",
            Kind::Deleted => "deleted",
        }
    }
}

/// The state files, and how each is exercised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum File {
    StoreSnapshot,
    StoreLog,
    StoreReserved,
    Ipam,
    ControlPlaneRecord,
    PodRecord,
    HostPodRecord,
    LabSpec,
    ApiLoopback,
}

const FILES: [File; 9] = [
    File::StoreSnapshot,
    File::StoreLog,
    File::StoreReserved,
    File::Ipam,
    File::ControlPlaneRecord,
    File::PodRecord,
    File::HostPodRecord,
    File::LabSpec,
    File::ApiLoopback,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Recovered,
    ClearError,
    Silent,
}

#[derive(Default)]
struct Tally {
    faults: usize,
    recovered: usize,
    clear: usize,
    silent: usize,
    duplicates: usize,
    /// Processes of earlier container instances left running: extra log shims of one
    /// container, and the recorded container processes of a damaged pod record.
    orphans: usize,
}

/// Damages `path` in one of the four ways (it exists beforehand).
fn damage(path: &Path, kind: Kind) {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(1);
    match kind {
        Kind::Garbage => {
            // Not JSON, not UTF-8, the file's length (at least a few bytes).
            let bytes: Vec<u8> = (0..len.max(16))
                .map(|i| [0xff, b'{', 0x00, b'"', 0x9c][(i % 5) as usize])
                .collect();
            std::fs::write(path, bytes).expect("write garbage");
        }
        Kind::Truncated => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open to truncate");
            f.set_len(len / 2).expect("truncate");
        }
        Kind::Emptied => std::fs::write(path, b"").expect("empty"),
        Kind::Deleted => std::fs::remove_file(path).expect("delete"),
    }
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The lab's pods as the API has them: name → podIP (Running ones with an address).
fn inventory(lab: &TestLab) -> Option<BTreeMap<String, String>> {
    let out = lab.run(&["get", "pods", "-A", "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["items"]
            .as_array()?
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    format!(
                        "{}/{}",
                        p["metadata"]["namespace"].as_str().unwrap_or_default(),
                        p["metadata"]["name"].as_str().unwrap_or_default()
                    ),
                    p["status"]["podIP"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect(),
    )
}

/// Pod IPv4 addresses on the pods' real interfaces, from the runtime's records: address →
/// pods holding it.
fn interface_addresses(paths: &LabPaths) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(paths.pods_dir()) else {
        return out;
    };
    for e in dir.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Ok(rec) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if rec["host_network"].as_bool() == Some(true) {
            continue;
        }
        let Some(netns) = rec["netns"].as_str() else {
            continue;
        };
        let o = std::process::Command::new("ip")
            .args(["-n", netns, "-4", "-o", "addr", "show", "dev", "eth0"])
            .output();
        let Ok(o) = o else { continue };
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let mut words = line.split_whitespace();
            if let Some(addr) = words.find(|w| *w == "inet").and_then(|_| words.next()) {
                let ip = addr.split('/').next().unwrap_or(addr).to_string();
                out.entry(ip)
                    .or_default()
                    .push(rec["name"].as_str().unwrap_or("?").to_string());
            }
        }
    }
    out
}

/// Containers with more than one log shim running (each shim serves one container instance:
/// an extra one is an instance the runtime lost track of), counted as extra shims.
fn orphaned_shims(paths: &LabPaths) -> usize {
    let logs = paths.logs_dir().join("pods");
    let want = logs.to_string_lossy().into_owned();
    let mut per_log: BTreeMap<String, usize> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "log-shim") {
            if let Some(log) = args.iter().find(|a| a.starts_with(&want)) {
                *per_log.entry(log.clone()).or_default() += 1;
            }
        }
    }
    per_log.values().map(|n| n.saturating_sub(1)).sum()
}

/// Every process of the lab's pods: in one of its pod namespaces, or a log shim of its
/// containers (what `lab down` must have stopped; orphans are not found by it).
fn pod_processes(lab: &str, paths: &LabPaths) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!("sarasa-{lab}-p-");
    let netns: BTreeSet<u64> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| std::fs::metadata(e.path()).ok().map(|m| m.ino()))
        .collect();
    let logs = paths.logs_dir().join("pods").to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let in_pod =
            std::fs::metadata(e.path().join("ns/net")).is_ok_and(|m| netns.contains(&m.ino()));
        let shim = std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&logs));
        if in_pod || shim {
            out.push(pid);
        }
    }
    out
}

/// A process's start time (clock ticks since boot): with the pid, its identity. None once
/// it ended (a zombie included).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Kills, once the lab is down, what of these processes is still running (the orphans the
/// damaged pod records left), each checked by its start time first: the test leaves nothing
/// behind and touches nothing else.
struct KillLeftovers(Vec<(i32, u64)>);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for (pid, started) in &self.0 {
            if start_time(*pid) == Some(*started) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn duplicates(paths: &LabPaths) -> Vec<(String, Vec<String>)> {
    interface_addresses(paths)
        .into_iter()
        .filter(|(_, pods)| pods.len() > 1)
        .collect()
}

struct Run<'a> {
    lab: &'a TestLab,
    paths: LabPaths,
    /// Pod names created by the IPAM faults (one per fault).
    next_pod: usize,
    /// Container processes of pod records about to be damaged (pid, start time): the runtime
    /// may lose track of them (an orphan to kill at the end).
    recorded: std::cell::RefCell<Vec<(i32, u64)>>,
    /// Recorded container processes still running after their pod was started again.
    earlier_running: std::cell::Cell<usize>,
}

/// The running container processes a pod record names (pid, start time); none when the
/// record is missing or unreadable.
fn recorded_processes(path: &Path) -> Vec<(i32, u64)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let rec: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    rec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let pid = c["process"]["pid"].as_i64()? as i32;
            Some((pid, start_time(pid)?))
        })
        .collect()
}

impl Run<'_> {
    fn control_plane_log(&self) -> String {
        let text = std::fs::read_to_string(self.paths.logs_dir().join("control-plane.log"))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(60).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// `lab control-plane start`, retried for a while (a port the old process held may take
    /// a moment to be free).
    fn start(&self) {
        let ok = self.lab.eventually(Duration::from_secs(30), || {
            let out = self.lab.run(&["lab", "control-plane", "start"]);
            out.status.success().then_some(())
        });
        assert!(
            ok.is_some(),
            "the control plane does not start again:\n{}",
            self.control_plane_log()
        );
    }

    /// Pods as before (same names, same addresses), within `timeout`.
    fn intact(&self, before: &BTreeMap<String, String>, timeout: Duration) -> bool {
        self.lab
            .eventually(timeout, || {
                let now = inventory(self.lab)?;
                (now == *before).then_some(())
            })
            .is_some()
    }

    /// Writes a Namespace's label and returns its resourceVersion once the write is acknowledged.
    fn write_mark(&self) -> u64 {
        let name = "rv-mark";
        // A new value each time, so the apply is a write.
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        self.lab.apply_nowait(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{at: \"{at}\"}}}}\n"
        ));
        let list = self.lab.get_json(&["namespaces"]);
        let ns = list["items"]
            .as_array()
            .and_then(|items| items.iter().find(|o| o["metadata"]["name"] == name))
            .expect("the mark Namespace was written");
        ns["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok())
            .expect("a numeric resourceVersion")
    }

    /// The store files: the control plane stopped, damaged, started.
    fn store_file(&self, path: &Path, kind: Kind) -> Outcome {
        let before = inventory(self.lab).expect("pods listed");
        // The last acknowledged write before the fault: whatever the damage took, a write
        // after the restart must get a higher resourceVersion.
        let mark = self.write_mark();
        self.lab.ok(&["lab", "control-plane", "stop"]);
        let backup = std::fs::read(path).expect("read store file");
        damage(path, kind);
        let out = self.lab.run(&["lab", "control-plane", "start"]);
        if out.status.success() {
            if self.intact(&before, Duration::from_secs(20)) {
                let after = self.write_mark();
                if after > mark {
                    return Outcome::Recovered;
                }
                eprintln!(
                    "{} {}: resourceVersion moved back: {after} after {mark}",
                    file_name(path),
                    kind.as_str()
                );
                return Outcome::Silent;
            }
            eprintln!(
                "{} {}: started without the objects: {:?}",
                file_name(path),
                kind.as_str(),
                inventory(self.lab)
            );
            self.lab.ok(&["lab", "control-plane", "stop"]);
            std::fs::write(path, &backup).expect("restore");
            self.start();
            return Outcome::Silent;
        }
        let text = format!("{}{}", said(&out), self.control_plane_log());
        std::fs::write(path, &backup).expect("restore");
        self.start();
        assert!(
            self.intact(&before, Duration::from_secs(20)),
            "not restored"
        );
        if text.contains(&file_name(path)) {
            Outcome::ClearError
        } else {
            eprintln!(
                "{} {}: refused without naming it:\n{text}",
                file_name(path),
                kind.as_str()
            );
            Outcome::Silent
        }
    }

    /// A node's IPAM store, damaged under the running lab; then a new pod on that node must
    /// get an address no other pod holds (or its ADD fail naming the file).
    fn ipam(&mut self, kind: Kind) -> Outcome {
        let path = self.paths.ipam_dir("node-1").join("allocations.json");
        assert!(path.exists(), "{} missing", path.display());
        damage(&path, kind);
        self.next_pod += 1;
        let name = format!("ff-{}", self.next_pod);
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: ff}}}}\n\
             spec:\n  nodeName: node-1\n  containers: [{{name: c, image: x}}]\n"
        );
        self.lab.apply_nowait(&yaml);
        let ip = self.lab.eventually(Duration::from_secs(30), || {
            let p = self.lab.object("pods", "default", &name)?;
            let ready = p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let ip = p["status"]["podIP"].as_str()?.to_string();
            (ready && !ip.is_empty()).then_some(ip)
        });
        let outcome = match ip {
            Some(_) => Outcome::Recovered,
            None => {
                let events = self.lab.run(&["get", "events", "-o", "json"]);
                let text = format!("{}{}", said(&events), self.control_plane_log());
                if text.contains("allocations.json") {
                    Outcome::ClearError
                } else {
                    eprintln!(
                        "allocations.json {}: pod {name} got no address and nothing names the file",
                        kind.as_str()
                    );
                    Outcome::Silent
                }
            }
        };
        outcome
    }

    /// The control plane's process record, damaged under the running lab; `restart` must
    /// replace the running control plane (none orphaned) or refuse naming the record.
    fn control_plane_record(&self, kind: Kind) -> Outcome {
        let path = self.paths.pids_dir().join("control-plane.json");
        let old = ProcessRecord::read(&path)
            .expect("record readable")
            .expect("recorded");
        let before = inventory(self.lab).expect("pods listed");
        damage(&path, kind);
        let out = self.lab.run(&["lab", "control-plane", "restart"]);
        let new = ProcessRecord::read(&path).ok().flatten();
        match (out.status.success(), new) {
            (true, Some(new)) if !old.alive() && new.alive() && new != old => {
                if self.intact(&before, Duration::from_secs(20)) {
                    Outcome::Recovered
                } else {
                    eprintln!("control-plane.json {}: objects changed", kind.as_str());
                    Outcome::Silent
                }
            }
            (false, _) if said(&out).contains("control-plane.json") => {
                eprintln!("control-plane.json {}: {}", kind.as_str(), said(&out));
                // Refused: put the record back and restart properly.
                std::fs::write(&path, serde_json::to_vec(&old).expect("json")).expect("restore");
                self.lab.ok(&["lab", "control-plane", "restart"]);
                Outcome::ClearError
            }
            (ok, new) => {
                eprintln!(
                    "control-plane.json {}: restart ok={ok}, old alive={}, new={new:?}:\n{}",
                    kind.as_str(),
                    old.alive(),
                    said(&out)
                );
                Outcome::Silent
            }
        }
    }

    /// A pod's runtime record (of the `app: ff` pod, or with `host` of the hostNetwork pod
    /// `ffh`), damaged with the control plane stopped; after the start the pod runs — with an
    /// address (its own, or a new one after a restart) that no other pod holds, or on its
    /// node's — or the runtime names the record. The recorded container processes still
    /// running after that (the earlier instance) are counted in `orphans`.
    fn pod_record(&self, kind: Kind, host: bool) -> Outcome {
        let (uid, name) = if host {
            self.record_of("ffh")
                .expect("a pod record of the hostNetwork pod ffh")
        } else {
            self.ff_record().expect("a pod record of app=ff on node-1")
        };
        let path = self.paths.pods_dir().join(format!("{uid}.json"));
        let before = recorded_processes(&path);
        self.recorded.borrow_mut().extend(before.iter().copied());
        self.lab.ok(&["lab", "control-plane", "stop"]);
        damage(&path, kind);
        self.start();
        let running = self.lab.eventually(Duration::from_secs(30), || {
            let p = self.lab.object("pods", "default", &name)?;
            let ready = p["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let ip = p["status"]["podIP"].as_str()?.to_string();
            // The status and the pod's interface may still be the earlier instance's: a new
            // record with its own running containers says the runtime started it again.
            let now = recorded_processes(&path);
            let restarted = !now.is_empty() && now.iter().all(|p| !before.contains(p));
            let placed = host || interface_addresses(&self.paths).contains_key(&ip);
            (ready && restarted && placed).then_some(())
        });
        // Killed processes may take a moment to be gone.
        let still = || -> Vec<(i32, u64)> {
            before
                .iter()
                .copied()
                .filter(|(pid, t)| start_time(*pid) == Some(*t))
                .collect()
        };
        let _ = self
            .lab
            .eventually(Duration::from_secs(2), || still().is_empty().then_some(()));
        let left = still();
        if !left.is_empty() {
            eprintln!(
                "{uid}.json {}: processes of the earlier instance still run: {left:?}",
                kind.as_str()
            );
            self.earlier_running
                .set(self.earlier_running.get() + left.len());
        }
        if running.is_some() {
            Outcome::Recovered
        } else if self.control_plane_log().contains(&format!("{uid}.json")) {
            Outcome::ClearError
        } else {
            eprintln!(
                "{uid}.json {}: pod {name} not running on its address; log:\n{}",
                kind.as_str(),
                self.control_plane_log()
            );
            Outcome::Silent
        }
    }

    /// The record of the pod `name` in `default`: (uid, name).
    fn record_of(&self, name: &str) -> Option<(String, String)> {
        let dir = std::fs::read_dir(self.paths.pods_dir()).ok()?;
        dir.flatten().find_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            (v["name"] == name && v["namespace"] == "default").then(|| {
                (
                    v["uid"].as_str().unwrap_or_default().to_string(),
                    name.to_string(),
                )
            })
        })
    }

    /// A record of one of the test pods (`app: ff`).
    fn ff_record(&self) -> Option<(String, String)> {
        let dir = std::fs::read_dir(self.paths.pods_dir()).ok()?;
        dir.flatten().find_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let name = v["name"].as_str()?;
            (name.starts_with("ff-") && v["namespace"] == "default").then(|| {
                (
                    v["uid"].as_str().unwrap_or_default().to_string(),
                    name.to_string(),
                )
            })
        })
    }

    /// The lab spec, damaged under the running lab; `lab status` must work or name it.
    fn lab_spec(&self, kind: Kind) -> Outcome {
        let path = self.paths.spec_file();
        let backup = std::fs::read(&path).expect("read lab.json");
        damage(&path, kind);
        let out = self.lab.run(&["lab", "status"]);
        let outcome = if out.status.success() {
            Outcome::Recovered
        } else if said(&out).contains("lab.json") {
            Outcome::ClearError
        } else {
            eprintln!("lab.json {}: {}", kind.as_str(), said(&out));
            Outcome::Silent
        };
        std::fs::write(&path, backup).expect("restore");
        outcome
    }

    /// The API loopback record, damaged with the control plane stopped.
    fn api_loopback(&self, kind: Kind) -> Outcome {
        let path = self.paths.api_loopback_file();
        let before = inventory(self.lab).expect("pods listed");
        self.lab.ok(&["lab", "control-plane", "stop"]);
        let backup = std::fs::read(&path).expect("read api-loopback.json");
        damage(&path, kind);
        let out = self.lab.run(&["lab", "control-plane", "start"]);
        if out.status.success() {
            // The published port may change: the lab's kubeconfig follows it.
            if self.intact(&before, Duration::from_secs(20)) {
                return Outcome::Recovered;
            }
            eprintln!(
                "api-loopback.json {}: API unreachable after start",
                kind.as_str()
            );
            return Outcome::Silent;
        }
        std::fs::write(&path, backup).expect("restore");
        self.start();
        if said(&out).contains("api-loopback.json") {
            Outcome::ClearError
        } else {
            eprintln!("api-loopback.json {}: {}", kind.as_str(), said(&out));
            Outcome::Silent
        }
    }

    fn fault(&mut self, file: File, kind: Kind) -> Outcome {
        match file {
            File::StoreSnapshot => {
                self.store_file(&self.paths.store_dir().join("snapshot.jsonl"), kind)
            }
            File::StoreLog => self.store_file(&self.paths.store_dir().join("log.jsonl"), kind),
            File::StoreReserved => {
                self.store_file(&self.paths.store_dir().join("rv-reserved.json"), kind)
            }
            File::Ipam => self.ipam(kind),
            File::ControlPlaneRecord => self.control_plane_record(kind),
            File::PodRecord => self.pod_record(kind, false),
            File::HostPodRecord => self.pod_record(kind, true),
            File::LabSpec => self.lab_spec(kind),
            File::ApiLoopback => self.api_loopback(kind),
        }
    }
}

fn label(file: File) -> &'static str {
    match file {
        File::StoreSnapshot => "store snapshot.jsonl",
        File::StoreLog => "store log.jsonl",
        File::StoreReserved => "store rv-reserved.json",
        File::Ipam => "ipam allocations.json",
        File::ControlPlaneRecord => "pids/control-plane.json",
        File::PodRecord => "pods/<uid>.json",
        File::HostPodRecord => "pods/<uid>.json hostNet",
        File::LabSpec => "lab.json",
        File::ApiLoopback => "api-loopback.json",
    }
}

/// The faults of one run: every file × kind, `rounds` times (once in CI).
fn plan(rounds: usize) -> Vec<(File, Kind)> {
    let mut out = Vec::new();
    for _ in 0..rounds.max(1) {
        for f in FILES {
            for k in KINDS {
                out.push((f, k));
            }
        }
    }
    out
}

#[test]
fn damaged_state_files_recover_or_name_the_file() {
    let rounds: usize = std::env::var("FAULT_FILES_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let started = Instant::now();
    // Declared before the lab: dropped after it, once `lab down` has stopped what it knows.
    let mut leftovers = KillLeftovers(Vec::new());
    let lab = TestLab::up(&["--nodes", "2"]);
    let mut run = Run {
        lab: &lab,
        paths: LabPaths::new(&lab.name),
        next_pod: 0,
        recorded: Default::default(),
        earlier_running: Default::default(),
    };
    // A pod of ours to damage the record of, and the IPAM store to exist.
    run.ipam(Kind::Garbage);
    assert!(run.ff_record().is_some(), "the first test pod runs");
    // A hostNetwork pod, whose containers share node-1's namespace.
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ffh}\n\
         spec:\n  nodeName: node-1\n  hostNetwork: true\n  \
         containers: [{name: c, image: x, command: [/bin/sh, -c, 'echo up; exec sleep 3600']}]\n",
    );
    assert!(
        run.record_of("ffh").is_some(),
        "the hostNetwork test pod runs"
    );

    let mut tallies: BTreeMap<(File, Kind), Tally> = BTreeMap::new();
    let mut silent = Vec::new();
    let mut dup_total = 0;
    let mut shims_total = 0;
    for (file, kind) in plan(rounds) {
        let t0 = Instant::now();
        let outcome = run.fault(file, kind);
        let dups = duplicates(&run.paths);
        // Extra shims stay running: only those new since the last fault count for this one.
        let shims = orphaned_shims(&run.paths);
        let orphans = shims.saturating_sub(shims_total) + run.earlier_running.replace(0);
        shims_total = shims_total.max(shims);
        let t = tallies.entry((file, kind)).or_default();
        t.faults += 1;
        match outcome {
            Outcome::Recovered => t.recovered += 1,
            Outcome::ClearError => t.clear += 1,
            Outcome::Silent => {
                t.silent += 1;
                silent.push(format!("{} {}", label(file), kind.as_str()));
            }
        }
        t.orphans += orphans;
        if !dups.is_empty() {
            eprintln!(
                "duplicate addresses after {} {}: {dups:?}",
                label(file),
                kind.as_str()
            );
            t.duplicates += dups.len();
            dup_total += dups.len();
        }
        eprintln!(
            "{:<26} {:<10} {:?} ({:.1}s)",
            label(file),
            kind.as_str(),
            outcome,
            t0.elapsed().as_secs_f64()
        );
    }
    println!(
        "{:<26} {:<10} {:>6} {:>9} {:>12} {:>7} {:>10} {:>8}",
        "file", "kind", "faults", "recovered", "clear errors", "silent", "duplicates", "orphans"
    );
    let mut total = Tally::default();
    for ((file, kind), t) in &tallies {
        println!(
            "{:<26} {:<10} {:>6} {:>9} {:>12} {:>7} {:>10} {:>8}",
            label(*file),
            kind.as_str(),
            t.faults,
            t.recovered,
            t.clear,
            t.silent,
            t.duplicates,
            t.orphans
        );
        total.faults += t.faults;
        total.recovered += t.recovered;
        total.clear += t.clear;
        total.silent += t.silent;
        total.duplicates += t.duplicates;
        total.orphans += t.orphans;
    }
    println!(
        "{:<26} {:<10} {:>6} {:>9} {:>12} {:>7} {:>10} {:>8}   ({:.0}s)",
        "total",
        "",
        total.faults,
        total.recovered,
        total.clear,
        total.silent,
        total.duplicates,
        total.orphans,
        started.elapsed().as_secs_f64()
    );
    // A damaged pod record makes the runtime start the pod again; the earlier container
    // instance (and its shim) must not run on beside it. (Leftovers are killed regardless.)
    leftovers.0 = pod_processes(&lab.name, &run.paths)
        .into_iter()
        .filter_map(|p| Some((p, start_time(p)?)))
        .chain(run.recorded.borrow().iter().copied())
        .collect();
    let files: BTreeSet<&str> = tallies.keys().map(|(f, _)| label(*f)).collect();
    assert_eq!(files.len(), FILES.len(), "every file damaged");
    assert_eq!(dup_total, 0, "an address held twice");
    assert!(silent.is_empty(), "silent failures: {silent:?}");
    assert_eq!(
        total.orphans, 0,
        "container instances left running beside restarted pods"
    );
}
