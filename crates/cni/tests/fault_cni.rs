//! Fault injection: the real sarasa-cni is killed with SIGKILL at random points of ADD and DEL
//! (a node namespace, 8 pod namespaces, random ADD/DEL), then the runtime's GC runs with the
//! attachments it believes in (those whose last ADD completed). Afterwards: no leaked host
//! veth, route or allocation, every valid pod keeps its interface and addresses, no address
//! is held twice (in the store or in the pods' namespaces), and fresh ADDs get free addresses.
//!
//! `FAULT_KILLS` sets the number of kills (20 by default, the CI form; scripts/fault-cni.sh
//! runs 200), `FAULT_SEED` the random seed (printed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sarasa_netns::{CommandExt, Netlink};
use serde_json::Value;

const PODS: usize = 8;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Runs the plugin in the node namespace; kills it after `kill_after` if still running.
/// Returns Some(exit code) when it finished, None when it was killed.
fn run_killed(
    node: &Node,
    env: &[(&str, &str)],
    conf: &Value,
    kill_after: Duration,
    took: &mut Duration,
) -> Option<i32> {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.netns(&node.ns.ns);
    let mut child = cmd.spawn().expect("spawn sarasa-cni");
    if let Some(mut si) = child.stdin.take() {
        let _ = si.write_all(conf.to_string().as_bytes());
    }
    let start = Instant::now();
    let deadline = start + kill_after;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            // How long a whole command takes, to spread the kill points over it.
            *took = (*took * 3 + start.elapsed()) / 4;
            return Some(st.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let st = child.wait().expect("wait");
            // It may have finished just before the signal.
            return st.code();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Global addresses on `eth0` of a pod namespace.
fn pod_addrs(pod: &Ns) -> Vec<IpAddr> {
    let mut nl: Netlink = pod.netlink();
    let Some(l) = nl.link_by_name("eth0").unwrap() else {
        return Vec::new();
    };
    nl.addrs(Some(l.index), None)
        .unwrap()
        .into_iter()
        .map(|a| a.net.addr())
        .filter(|a| match a {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect()
}

fn alloc_map(node: &Node) -> BTreeMap<String, Vec<IpAddr>> {
    node.allocations()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let id = a["containerId"].as_str().unwrap().to_string();
            let ips = a["leases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    l["address"]
                        .as_str()
                        .unwrap()
                        .split('/')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
            (id, ips)
        })
        .collect()
}

#[test]
fn killed_add_and_del_then_gc_leak_nothing() {
    let kills: usize = std::env::var("FAULT_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut total_ops = 0;
    let mut total_kills = 0;
    let mut gcs = 0;
    for (mode, dual) in [("routed", true), ("bridge", true)] {
        let node = Node::new(&format!("fc{}", &mode[..1]));
        let conf = node.conf("1.1.0", mode, dual);
        let pods: Vec<Ns> = (0..PODS).map(|i| node.pod(i)).collect();
        // The runtime's belief: pods whose last ADD completed (container id per pod; a new id
        // per attempt, as a runtime's new sandbox gets).
        let mut valid: BTreeMap<usize, String> = BTreeMap::new();
        let mut attempt: BTreeMap<usize, String> = BTreeMap::new();
        let mut killed = 0;
        let mut ops = 0;
        let mut took = Duration::from_millis(20);
        while killed < kills.div_ceil(2) {
            ops += 1;
            let i = rng.below(PODS as u64) as usize;
            // Kill points spread over the whole command; one command in three runs to the end.
            let span = took.as_micros().max(1000) as u64;
            let after = if rng.below(3) == 0 {
                Duration::from_secs(30)
            } else {
                Duration::from_micros(rng.below(span))
            };
            if let Some(id) = attempt.get(&i).cloned() {
                // DEL the pod's current attempt (valid or not).
                let path = pods[i].path();
                let env = [
                    ("CNI_COMMAND", "DEL"),
                    ("CNI_CONTAINERID", id.as_str()),
                    ("CNI_NETNS", path.as_str()),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_PATH", "/opt/cni/bin"),
                ];
                valid.remove(&i);
                match run_killed(&node, &env, &conf, after, &mut took) {
                    Some(0) => {
                        attempt.remove(&i);
                    }
                    Some(c) => failures.push(format!("{mode}: DEL {id} exited {c}")),
                    None => killed += 1,
                }
            } else {
                let id = format!("p{i}-{ops}");
                let path = pods[i].path();
                let env = [
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", id.as_str()),
                    ("CNI_NETNS", path.as_str()),
                    ("CNI_IFNAME", "eth0"),
                    ("CNI_PATH", "/opt/cni/bin"),
                ];
                attempt.insert(i, id.clone());
                match run_killed(&node, &env, &conf, after, &mut took) {
                    Some(0) => {
                        valid.insert(i, id);
                    }
                    // A killed earlier attempt may have left eth0 in the pod: ADD refuses
                    // (code 103) until GC cleans it; the runtime retries later.
                    Some(_) => {}
                    None => killed += 1,
                }
            }
            if ops % 25 == 0 {
                // The runtime's periodic GC.
                let v: Vec<(&str, &str)> = valid.values().map(|id| (id.as_str(), "eth0")).collect();
                node.gc(&conf, &v).ok();
                gcs += 1;
                attempt.retain(|i, _| valid.contains_key(i));
            }
            assert!(ops < 20 * kills + 100, "too few kills landed mid-command");
        }
        let v: Vec<(&str, &str)> = valid.values().map(|id| (id.as_str(), "eth0")).collect();
        node.gc(&conf, &v).ok();
        gcs += 1;
        total_ops += ops;
        total_kills += killed;

        // Nothing leaked: allocations, host veths and routes are exactly the valid pods'.
        let allocs = alloc_map(&node);
        let want: BTreeSet<String> = valid.values().cloned().collect();
        let have: BTreeSet<String> = allocs.keys().cloned().collect();
        if want != have {
            failures.push(format!("{mode}: allocations {have:?}, valid {want:?}"));
        }
        let veths: BTreeSet<String> = node.host_veths().into_iter().collect();
        let want_veths: BTreeSet<String> = valid
            .values()
            .map(|id| sarasa_cni::naming::host_veth("sarasa-test", id, "eth0"))
            .collect();
        if veths != want_veths {
            failures.push(format!("{mode}: host veths {veths:?}, want {want_veths:?}"));
        }
        let mut nl = node.ns.netlink();
        let links: BTreeMap<u32, String> = nl
            .links()
            .unwrap()
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let prefix = sarasa_cni::naming::network_prefix("sarasa-test");
        for r in nl.routes(None).unwrap() {
            if let Some(name) = r.oif.and_then(|i| links.get(&i)) {
                if name.starts_with(&prefix) && !want_veths.contains(name) {
                    failures.push(format!("{mode}: route {} via leaked {name}", r.dst));
                }
            }
        }
        // No address twice; every valid pod has exactly its allocation; others have none.
        let mut seen: BTreeMap<IpAddr, String> = BTreeMap::new();
        for (id, ips) in &allocs {
            for ip in ips {
                if let Some(other) = seen.insert(*ip, id.clone()) {
                    failures.push(format!("{mode}: {ip} allocated to {other} and {id}"));
                }
            }
        }
        for (i, pod) in pods.iter().enumerate() {
            let mut got = pod_addrs(pod);
            got.sort();
            let mut want = valid
                .get(&i)
                .and_then(|id| allocs.get(id))
                .cloned()
                .unwrap_or_default();
            want.sort();
            if got != want {
                failures.push(format!("{mode}: pod {i} has {got:?}, allocation {want:?}"));
            }
        }
        // Fresh ADDs into the free pods get addresses nobody holds.
        for (i, pod) in pods
            .iter()
            .enumerate()
            .filter(|(i, _)| !valid.contains_key(i))
        {
            let r = node.add(&conf, &format!("fresh{i}"), pod, "eth0").ok();
            for ip in result_ips(&r) {
                if let Some(other) = seen.insert(ip, format!("fresh{i}")) {
                    failures.push(format!("{mode}: fresh ADD got {ip}, held by {other}"));
                }
            }
        }
    }
    println!(
        "fault-cni: seed {seed}, {:.1}s: commands {total_ops}, kills {total_kills}, GC runs {gcs}, \
         leaked interfaces/routes/allocations and duplicate addresses: {}",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
}
