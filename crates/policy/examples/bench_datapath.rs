//! Data-plane benchmark (needs root): new-connection latency to a policed pod with 1 policy and
//! with 1,000 policies present (over 5,000 pods in 50 namespaces), side by side.
//!
//! Builds a node-like network namespace with a bridge and two pod namespaces (client, server),
//! applies the compiled table with `nft` inside the node namespace, and times TCP connects
//! client → server:80 (allowed by policy, so every SYN walks the policy chain). The two tables
//! are swapped in 20 paired rounds, ABBA order so machine load affects both alike. Everything is made in
//! namespaces `sarasa-t<pid>-bench-*` and removed at the end (also on panic).
//!
//! `cargo run --release -p sarasa-policy --example bench_datapath`

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use sarasa_nft::{Backend, NftCli};
use sarasa_policy::*;

struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("sarasa-t{}-bench-{role}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend_from_slice(args);
        run("ip", &a);
    }
    fn exec(&self, args: &[&str]) {
        let mut a = vec!["netns", "exec", self.0.as_str()];
        a.extend_from_slice(args);
        run("ip", &a);
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
    fn enter(&self) {
        let file = File::open(self.path()).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(ns: &str, name: &str, ip: &str, app: &str) -> PolicyPod {
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(&[("app", app)]),
        ips: vec![ip.parse().expect("ip")],
        ports: vec![],
        node: Some("node-b".into()),
    }
}

fn allow_from(ns: &str, name: &str, target: &str, from: LabelSelector, port: u16) -> NetworkPolicy {
    NetworkPolicy {
        namespace: ns.into(),
        name: name.into(),
        pod_selector: LabelSelector::labels([("app", target)]),
        policy_types: vec![Direction::Ingress],
        ingress: vec![PolicyRule {
            peers: vec![Peer::Pods {
                namespace_selector: None,
                pod_selector: Some(from),
            }],
            ports: vec![PolicyPort {
                protocol: Protocol::Tcp,
                port: Some(PortRef::Number(port)),
                end_port: None,
            }],
        }],
        egress: vec![],
    }
}

/// The two states: the server's policy alone, and with 999 more over 5,000 other pods.
fn states() -> (PolicyState, PolicyState) {
    let mut one = PolicyState::new();
    one.apply_namespace(PolicyNamespace::new("x", labels(&[])));
    one.apply_pod(pod("x", "client", "10.250.0.11", "client"));
    one.apply_pod(pod("x", "server", "10.250.0.12", "server"));
    one.apply_policy(allow_from(
        "x",
        "server",
        "server",
        LabelSelector::labels([("app", "client")]),
        80,
    ))
    .expect("valid");
    let mut many = one.clone();
    for n in 0..50 {
        let ns = format!("ns-{n}");
        many.apply_namespace(PolicyNamespace::new(&ns, labels(&[])));
        for i in 0..100 {
            let k = n * 100 + i;
            let mut p = pod(
                &ns,
                &format!("pod-{i}"),
                &format!("10.251.{}.{}", k / 250, k % 250 + 1),
                &format!("app-{}", i % 10),
            );
            // Half of them on this node: they get chains too.
            if k % 2 == 1 {
                p.node = Some("other".into());
            }
            many.apply_pod(p);
        }
        for j in 0..if n < 49 { 20 } else { 0 } {
            many.apply_policy(allow_from(
                &ns,
                &format!("policy-{j}"),
                &format!("app-{}", j % 10),
                LabelSelector::labels([("app", format!("app-{}", (j + 1) % 10).as_str())]),
                80 + j as u16,
            ))
            .expect("valid");
        }
    }
    // Policies in the server's own namespace selecting other pods, up to 1,000 in all.
    for j in 0..1000usize.saturating_sub(many.policies().count()) {
        many.apply_policy(allow_from(
            "x",
            &format!("other-{j}"),
            &format!("app-{j}"),
            LabelSelector::labels([("app", "client")]),
            8000 + j as u16,
        ))
        .expect("valid");
    }
    (one, many)
}

fn connect_times(client: &Netns, to: SocketAddr, n: usize) -> Vec<Duration> {
    std::thread::scope(|s| {
        s.spawn(|| {
            client.enter();
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t0 = Instant::now();
                let c = TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect");
                v.push(t0.elapsed());
                drop(c);
            }
            v
        })
        .join()
        .expect("client thread")
    })
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let node = Netns::new("node");
    node.ip(&["link", "add", "br0", "type", "bridge"]);
    node.ip(&["addr", "add", "10.250.0.1/24", "dev", "br0"]);
    node.ip(&["link", "set", "br0", "up"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.conf.br0.send_redirects=0"]);
    let client = Netns::new("client");
    let server = Netns::new("server");
    for (i, (p, addr)) in [(&client, "10.250.0.11"), (&server, "10.250.0.12")]
        .into_iter()
        .enumerate()
    {
        let host_if = format!("vp{i}");
        node.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &p.0,
        ]);
        node.ip(&["link", "set", &host_if, "master", "br0", "up"]);
        p.ip(&["addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
        p.ip(&["link", "set", "eth0", "up"]);
        p.ip(&["route", "add", "10.250.0.1", "dev", "eth0"]);
        p.ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.250.0.1",
            "dev",
            "eth0",
        ]);
    }
    // Server: accept and close, on its own thread for the whole run.
    let listener = std::thread::scope(|s| {
        s.spawn(|| {
            server.enter();
            TcpListener::bind("10.250.0.12:80").expect("bind")
        })
        .join()
        .expect("server thread")
    });
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });

    let (one, many) = states();
    let opts = CompileOptions {
        node: Some("node-b".into()),
        ..CompileOptions::default()
    };
    let many_name = format!("{} policies", many.policies().count());
    let tables = [
        ("1 policy".to_string(), compile(&one, &opts)),
        (many_name, compile(&many, &opts)),
    ];
    for (what, t) in &tables {
        let rules: usize = t.chains.values().map(|c| c.rules.len()).sum();
        let elems: usize = t.sets.values().map(|s| s.elements.len()).sum();
        let server_chain = t.chains.get("ing_x_server").map_or(0, |c| c.rules.len());
        println!(
            "{what}: {} chains, {rules} rules, {} sets/maps, {elems} elements; server chain {server_chain} rules",
            t.chains.len(),
            t.sets.len()
        );
    }
    let mut nft = NftCli::in_netns(node.path());
    let to: SocketAddr = "10.250.0.12:80".parse().expect("addr");
    let mut results: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    let mut round_ratios = Vec::new();
    // Warm up (ARP, caches).
    nft.reconcile(&tables[0].1).expect("apply");
    connect_times(&client, to, 200);
    for round in 0..20 {
        // ABBA order so drift in machine load falls on both alike.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut p50 = [Duration::ZERO; 2];
        for i in order {
            nft.reconcile(&tables[i].1).expect("apply");
            let v = connect_times(&client, to, 200);
            p50[i] = pct(&v, 0.5);
            results.entry(i).or_default().extend(v);
        }
        round_ratios.push(p50[1].as_secs_f64() / p50[0].as_secs_f64());
    }
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {nproc} CPUs; {} connects per case, 20 paired rounds, ABBA order",
        results[&0].len()
    );
    for (i, (what, _)) in tables.iter().enumerate() {
        let v = &results[&i];
        println!(
            "new TCP connection to the policed pod, {what}: p50 {} p90 {} p99 {}",
            us(pct(v, 0.5)),
            us(pct(v, 0.9)),
            us(pct(v, 0.99))
        );
    }
    let ratio = pct(&results[&1], 0.5).as_secs_f64() / pct(&results[&0], 0.5).as_secs_f64();
    round_ratios.sort_by(f64::total_cmp);
    println!(
        "p50 ratio {} / {}: {ratio:.3} overall, {:.3} median of 20 paired rounds (min {:.3}, max {:.3})",
        tables[1].0,
        tables[0].0,
        round_ratios[round_ratios.len() / 2],
        round_ratios[0],
        round_ratios[round_ratios.len() - 1]
    );

    // Change to programmed: one pod label change -> incremental compile -> `nft -f -` applied.
    let mut pc = PolicyCompiler::new(many.clone(), opts.clone());
    nft.reconcile(pc.table()).expect("apply");
    let mut times = Vec::new();
    let mut sizes = Vec::new();
    for k in 0..21 {
        let ns = format!("ns-{}", (k * 7) % 49);
        let name = format!("pod-{}", (k * 2) % 100); // even: on this node
        let mut p = many.pod(&PodKey::new(&ns, &name)).cloned().expect("pod");
        p.labels
            .insert("app".into(), format!("app-{}", (k + 5) % 10));
        let t0 = Instant::now();
        pc.apply_pod(p);
        let tx = pc.take_transaction();
        nft.apply(&tx).expect("apply change");
        times.push(t0.elapsed());
        sizes.push(tx.commands.len());
    }
    println!(
        "pod label change -> programmed with the nft CLI ({} table): p50 {} p90 {}; commands per transaction {:?}",
        tables[1].0,
        us(pct(&times, 0.5)),
        us(pct(&times, 0.9)),
        sizes
    );
}
