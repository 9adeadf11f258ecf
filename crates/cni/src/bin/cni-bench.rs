//! `cni-bench`: CNI ADD and DEL latency, as a runtime sees it (process start to exit), for
//! sarasa-cni (bridge mode; and routed with a vpc warm pool, as `--ipam vpc` renders it) and for
//! the reference `bridge` + `host-local` plugins in the same run.
//!
//! For each plugin, in its own throw-away node namespace: N sequential pods (ADD each, then
//! DEL each) and C concurrent pods (all ADDs at once, then all DELs; R rounds). The plugins
//! are interleaved pod by pod so machine load weighs on both alike. Prints p50/p99 and the
//! machine. Needs root; every namespace is `sarasa-bench<pid>-...` and is deleted at the end.
//!
//! Usage: cni-bench [--sarasa PATH] [--reference-dir DIR] [--pods N] [--concurrent C]
//!                  [--rounds R] [--sarasa-before PATH]
//!
//! `--sarasa-before` adds another sarasa-cni build (e.g. the previous commit's) in bridge mode,
//! interleaved with the others, for a before/after ratio from one run.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sarasa_netns::{CommandExt, NetNs};

struct Ns(NetNs, String);

impl Ns {
    fn new(name: String) -> Ns {
        let _ = NetNs::delete(&name);
        let ns = NetNs::create(&name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
        Ns(ns, name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.1);
    }
}

struct Plugin {
    label: &'static str,
    exe: PathBuf,
    cni_path: String,
    conf: String,
}

fn invoke(p: &Plugin, node: &NetNs, cmd: &str, id: &str, pod: &NetNs) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(&p.exe)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &p.cni_path)
        .netns(node)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", p.exe.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(p.conf.as_bytes())
        .expect("write config");
    let out = child.wait_with_output().expect("wait");
    let took = start.elapsed();
    if !out.status.success() {
        panic!(
            "{} {cmd} {id} failed: {}{}",
            p.label,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    took
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let idx = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[idx].as_secs_f64() * 1000.0
}

struct Figures {
    label: &'static str,
    rows: Vec<(String, f64, f64, Option<f64>)>,
}

/// One plugin's node namespace and pod namespaces.
struct Bed {
    node: Ns,
    seq: Vec<Ns>,
    conc: Vec<Ns>,
}

impl Bed {
    fn new(p: &Plugin, tag: &str, pods: usize, concurrent: usize) -> Bed {
        let base = format!("sarasa-bench{}-{tag}", std::process::id());
        let node = Ns::new(format!("{base}-node"));
        node.0
            .run(|| {
                let mut nl = sarasa_netns::Netlink::current().expect("netlink");
                let lo = nl.link("lo").expect("lo");
                nl.set_up(lo.index).expect("lo up");
            })
            .expect("node setup");
        let seq: Vec<Ns> = (0..pods).map(|i| Ns::new(format!("{base}-s{i}"))).collect();
        let conc: Vec<Ns> = (0..concurrent)
            .map(|i| Ns::new(format!("{base}-c{i}")))
            .collect();
        // warm-up (bridge creation, page cache) outside the figures
        invoke(p, &node.0, "ADD", "warm", &seq[0].0);
        invoke(p, &node.0, "DEL", "warm", &seq[0].0);
        Bed { node, seq, conc }
    }

    fn all_at_once(&self, p: &Plugin, cmd: &str, round: usize) -> Vec<Duration> {
        std::thread::scope(|s| {
            let hs: Vec<_> = self
                .conc
                .iter()
                .enumerate()
                .map(|(i, pod)| {
                    let node = &self.node.0;
                    s.spawn(move || invoke(p, node, cmd, &format!("conc{round}-{i}"), &pod.0))
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("join")).collect()
        })
    }
}

/// Measures all plugins interleaved (pod by pod, round by round), so that whatever else the
/// machine is doing weighs on every plugin alike.
fn measure(plugins: &[Plugin], pods: usize, concurrent: usize, rounds: usize) -> Vec<Figures> {
    let beds: Vec<Bed> = plugins
        .iter()
        .enumerate()
        .map(|(i, p)| Bed::new(p, &format!("p{i}"), pods, concurrent))
        .collect();
    let n = plugins.len();
    let mut samples: Vec<[Vec<Duration>; 4]> = (0..n).map(|_| Default::default()).collect();
    // CPU time (user + system) of the plugin and its children, sequential runs only: the
    // cost of an invocation without the waiting a loaded machine adds.
    let mut cpu: Vec<[Vec<Duration>; 2]> = (0..n).map(|_| Default::default()).collect();
    for i in 0..pods {
        for k in 0..n {
            let j = (i + k) % n;
            let before = children_cpu();
            let d = invoke(
                &plugins[j],
                &beds[j].node.0,
                "ADD",
                &format!("seq{i}"),
                &beds[j].seq[i].0,
            );
            cpu[j][0].push(children_cpu().saturating_sub(before));
            samples[j][0].push(d);
        }
    }
    for i in 0..pods {
        for k in 0..n {
            let j = (i + k) % n;
            let before = children_cpu();
            let d = invoke(
                &plugins[j],
                &beds[j].node.0,
                "DEL",
                &format!("seq{i}"),
                &beds[j].seq[i].0,
            );
            cpu[j][1].push(children_cpu().saturating_sub(before));
            samples[j][1].push(d);
        }
    }
    for round in 0..rounds {
        for k in 0..n {
            let j = (round + k) % n;
            samples[j][2].extend(beds[j].all_at_once(&plugins[j], "ADD", round));
            samples[j][3].extend(beds[j].all_at_once(&plugins[j], "DEL", round));
        }
    }
    let ops = [
        format!("ADD, {pods} sequential"),
        format!("DEL, {pods} sequential"),
        format!("ADD, {concurrent} concurrent x{rounds}"),
        format!("DEL, {concurrent} concurrent x{rounds}"),
    ];
    plugins
        .iter()
        .zip(samples.iter_mut().zip(cpu.iter_mut()))
        .map(|(p, (s, c))| Figures {
            label: p.label,
            rows: ops
                .iter()
                .zip(s.iter_mut())
                .enumerate()
                .map(|(k, (op, v))| {
                    let cpu50 = c.get_mut(k).map(|c| pct(c, 0.5));
                    (op.clone(), pct(v, 0.5), pct(v, 0.99), cpu50)
                })
                .collect(),
        })
        .collect()
}

/// CPU time used so far by reaped children (and their reaped children).
fn children_cpu() -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter for getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("nproc={nproc}, cpu={model}, kernel={kernel}, loadavg at start={load}")
}

fn main() {
    let mut sarasa = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("sarasa-cni")))
        .unwrap_or_else(|| PathBuf::from("sarasa-cni"));
    let mut refdir = PathBuf::from("/usr/lib/cni");
    let mut pods = 200usize;
    let mut concurrent = 20usize;
    let mut rounds = 3usize;
    let mut before: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--sarasa" => sarasa = PathBuf::from(val()),
            "--reference-dir" => refdir = PathBuf::from(val()),
            "--pods" => pods = val().parse().expect("--pods N"),
            "--concurrent" => concurrent = val().parse().expect("--concurrent N"),
            "--rounds" => rounds = val().parse().expect("--rounds N"),
            "--sarasa-before" => before = Some(PathBuf::from(val())),
            other => panic!("unknown argument {other}"),
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("cni-bench needs root (it creates network namespaces)");
        std::process::exit(2);
    }
    let data = std::env::temp_dir().join(format!("sarasa-bench{}", std::process::id()));
    let _ = std::fs::create_dir_all(&data);
    let sarasa_conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "bench-sarasa", "type": "sarasa-cni",
        "mode": "bridge", "bridge": "sarasa0", "mtu": 1500,
        "ipam": {"ranges": [[{"subnet": "10.231.0.0/16"}]],
                 "dataDir": data.join("sarasa").display().to_string()}
    });
    // The vpc backend's conflist: routed, each address the cloud assigned the node a
    // one-address range (a warm pool as large as the pods the run holds at once).
    let pool: Vec<serde_json::Value> = (0..(pods.max(concurrent) as u32))
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 233, 0, 4)) + i);
            serde_json::json!({"subnet": "10.233.0.0/16", "rangeStart": ip.to_string(), "rangeEnd": ip.to_string()})
        })
        .collect();
    let vpc_conf = serde_json::json!({
        "cniVersion": "1.1.0", "name": "bench-vpc", "type": "sarasa-cni",
        "mode": "routed", "mtu": 1500, "vpc": {"addressLimit": pool.len()},
        "ipam": {"ranges": [pool], "dataDir": data.join("vpc").display().to_string()}
    });
    let ref_conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "bench-reference", "type": "bridge",
        "bridge": "cni0", "isGateway": true, "ipMasq": false, "mtu": 1500,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.232.0.0/16"}]],
                 "dataDir": data.join("host-local").display().to_string()}
    });
    let mut plugins = vec![
        Plugin {
            label: "sarasa-cni (bridge mode, built-in IPAM)",
            exe: sarasa.clone(),
            cni_path: sarasa
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            conf: sarasa_conf.to_string(),
        },
        Plugin {
            label: "sarasa-cni (--ipam vpc: routed, warm pool)",
            exe: sarasa.clone(),
            cni_path: sarasa
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            conf: vpc_conf.to_string(),
        },
        Plugin {
            label: "reference bridge + host-local",
            exe: refdir.join("bridge"),
            cni_path: refdir.display().to_string(),
            conf: ref_conf.to_string(),
        },
    ];
    if let Some(exe) = before {
        let conf = serde_json::json!({
            "cniVersion": "1.1.0", "name": "bench-before", "type": "sarasa-cni",
            "mode": "bridge", "bridge": "sarasa0", "mtu": 1500,
            "ipam": {"ranges": [[{"subnet": "10.234.0.0/16"}]],
                     "dataDir": data.join("before").display().to_string()}
        });
        plugins.insert(
            1,
            Plugin {
                label: "sarasa-cni BEFORE (bridge mode)",
                cni_path: exe
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                exe,
                conf: conf.to_string(),
            },
        );
    }
    println!("machine: {}", machine());
    println!("latency = process start to exit, as a runtime sees it; cpu = user+system time of");
    println!("the plugin process and its children (sequential runs); milliseconds\n");
    let all = measure(&plugins, pods, concurrent, rounds);
    println!(
        "{:<44} {:<22} {:>9} {:>9} {:>12}",
        "plugin", "operation", "p50 ms", "p99 ms", "cpu p50 ms"
    );
    for f in &all {
        for (op, p50, p99, cpu) in &f.rows {
            let cpu = cpu.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into());
            println!(
                "{:<44} {:<22} {:>9.2} {:>9.2} {:>12}",
                f.label, op, p50, p99, cpu
            );
        }
    }
    let _ = std::fs::remove_dir_all(&data);
}
