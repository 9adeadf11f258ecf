//! Benchmark: agent resident memory at idle with 3 nodes and 100 pods (target: under 30 MB).
//! Builds its own namespaces (`sarasa-b<pid>-...`, removed at the end), runs the lab control
//! plane in-process (listening in the fabric namespace), starts the `agent` example in each
//! node namespace, creates 100 pods, waits until every agent has observed them, idles, and
//! prints each agent's VmRSS/VmHWM.
//!
//! cargo build --release -p sarasa-agent --examples && target/release/examples/memory

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const NODES: usize = 3;
const PODS: usize = 100;

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "ip {}", args.join(" "));
}

struct Cleanup {
    namespaces: Vec<String>,
    agents: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for a in &mut self.agents {
            let _ = a.kill();
            let _ = a.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn bind_in(ns: &str, addr: SocketAddr) -> std::net::TcpListener {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).expect("netns");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let l = std::net::TcpListener::bind(addr).expect("bind");
            l.set_nonblocking(true).expect("nonblocking");
            l
        })
        .join()
        .expect("thread")
    })
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let prefix = format!("sarasa-b{}", std::process::id());
    let mut cleanup = Cleanup {
        namespaces: Vec::new(),
        agents: Vec::new(),
    };
    let fab = format!("{prefix}-fab");
    ip(&["netns", "add", &fab]);
    cleanup.namespaces.push(fab.clone());
    ip(&["-n", &fab, "link", "set", "lo", "up"]);
    ip(&["-n", &fab, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &fab, "addr", "add", "192.168.33.1/24", "dev", "br0"]);
    ip(&["-n", &fab, "link", "set", "br0", "up"]);
    let mut node_ns = Vec::new();
    for i in 1..=NODES {
        let ns = format!("{prefix}-n{i}");
        ip(&["netns", "add", &ns]);
        cleanup.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let port = format!("n{i}");
        ip(&[
            "-n", &fab, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &fab, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("192.168.33.{}/24", 10 + i),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "route", "add", "default", "via", "192.168.33.1"]);
        node_ns.push(ns);
    }

    let state = tempfile::tempdir().expect("tempdir");
    let server =
        sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new(state.path().join("api")))
            .expect("control plane");
    let underlay =
        tokio::net::TcpListener::from_std(bind_in(&fab, "192.168.33.1:6443".parse().unwrap()))
            .unwrap();
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    for l in [underlay, local] {
        let s = server.clone();
        tokio::spawn(async move { s.serve(l).await });
    }

    let agent_bin = std::env::current_exe().unwrap().with_file_name("agent");
    let started = Instant::now();
    for (i, ns) in node_ns.iter().enumerate() {
        let name = format!("node-{}", i + 1);
        let dir = state.path().join(&name);
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&agent_bin)
            .args([
                "--node-name",
                &name,
                "--apiserver",
                "http://192.168.33.1:6443",
            ])
            .arg("--cni-conf-dir")
            .arg(dir.join("net.d"))
            .arg("--ipam-data-dir")
            .arg(dir.join("ipam"))
            .env(
                "RUST_LOG",
                std::env::var("AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("start agent");
        cleanup.agents.push(child);
    }

    let client = kube::Client::try_from(kube::Config::new(
        format!("http://{local_addr}").parse().unwrap(),
    ))
    .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "sarasa-system");
    let wait_rv = |rv: u64| {
        let leases = leases.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let mut ok = 0;
                for i in 1..=NODES {
                    if let Ok(l) = leases.get(&format!("agent-node-{i}")).await {
                        let seen: u64 = l
                            .annotations()
                            .get("sarasa.io/observed-resource-version")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if seen >= rv {
                            ok += 1;
                        }
                    }
                }
                if ok == NODES {
                    return;
                }
                assert!(Instant::now() < deadline, "agents did not report rv {rv}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_rv(1).await;
    println!("agents ready: {:.2} s", started.elapsed().as_secs_f64());

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut last = 0;
    for p in 0..PODS {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("web-{p}"), "labels": {"app": "web"}},
            "spec": {"nodeName": format!("node-{}", p % NODES + 1),
                     "containers": [{"name": "web", "image": "sarasa", "ports": [{"containerPort": 8080}]}]}
        }))
        .unwrap();
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        last = created
            .resource_version()
            .and_then(|v| v.parse().ok())
            .unwrap_or(last);
    }
    let t = Instant::now();
    wait_rv(last).await;
    println!(
        "{PODS} pods observed by every agent in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (i, a) in cleanup.agents.iter().enumerate() {
        let pid = a.id();
        println!(
            "agent node-{}: VmRSS {:.1} MB, VmHWM {:.1} MB",
            i + 1,
            status_kb(pid, "VmRSS:") as f64 / 1024.0,
            status_kb(pid, "VmHWM:") as f64 / 1024.0
        );
    }
    server.shutdown();
}
