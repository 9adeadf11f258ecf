//! Model-level benchmark: 1,000 NetworkPolicies over 5,000 pods in 50 namespaces.
//! Prints the full compile time (every pod, and one node's share), and the time from one pod
//! label change to the nft transaction (recompile + diff), with the machine it ran on.
//!
//! `cargo run --release -p sarasa-policy --example policy_bench`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sarasa_nft::diff;
use sarasa_policy::*;

const NAMESPACES: usize = 50;
const PODS_PER_NS: usize = 100;
const POLICIES_PER_NS: usize = 20;
const NODES: usize = 10;
const TIERS: [&str; 3] = ["frontend", "backend", "db"];

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn pod(ns: usize, i: usize) -> PolicyPod {
    let n = ns * PODS_PER_NS + i;
    PolicyPod {
        namespace: format!("ns-{ns}"),
        name: format!("pod-{i}"),
        labels: labels(&[
            ("app", format!("app-{}", i % 10)),
            ("tier", TIERS[i % 3].to_string()),
            ("version", format!("v{}", i % 4)),
        ]),
        ips: vec![
            format!("10.{}.{}.{}", 244 + n / 65536, (n / 256) % 256, n % 256)
                .parse()
                .unwrap(),
        ],
        ports: vec![
            ContainerPort {
                name: Some("http".into()),
                protocol: Protocol::Tcp,
                port: 8080,
            },
            ContainerPort {
                name: Some("metrics".into()),
                protocol: Protocol::Tcp,
                port: 9090,
            },
        ],
        node: Some(format!("node-{}", n % NODES)),
    }
}

fn policy(ns: usize, j: usize) -> NetworkPolicy {
    let sel = |pairs: &[(&str, String)]| LabelSelector {
        match_labels: labels(pairs),
        match_expressions: vec![],
    };
    let number = |p: u16| PolicyPort {
        protocol: Protocol::Tcp,
        port: Some(PortRef::Number(p)),
        end_port: None,
    };
    let mut ingress = vec![
        PolicyRule {
            peers: vec![Peer::Pods {
                namespace_selector: None,
                pod_selector: Some(sel(&[("tier", TIERS[j % 3].to_string())])),
            }],
            ports: vec![
                number(80),
                PolicyPort {
                    protocol: Protocol::Tcp,
                    port: Some(PortRef::Name("http".into())),
                    end_port: None,
                },
            ],
        },
        PolicyRule {
            peers: vec![
                Peer::Pods {
                    namespace_selector: Some(sel(&[("team", format!("team-{}", j % 5))])),
                    pod_selector: Some(sel(&[("app", format!("app-{}", (j + 1) % 10))])),
                },
                Peer::IpBlock(IpBlock {
                    cidr: format!("172.{}.0.0/16", 16 + j % 16).parse().unwrap(),
                    except: vec![format!("172.{}.1.0/24", 16 + j % 16).parse().unwrap()],
                }),
            ],
            ports: vec![PolicyPort {
                protocol: Protocol::Tcp,
                port: Some(PortRef::Number(30000)),
                end_port: Some(30100),
            }],
        },
    ];
    if j.is_multiple_of(4) {
        ingress.push(PolicyRule {
            peers: vec![Peer::Pods {
                namespace_selector: Some(LabelSelector::default().expression(
                    "team",
                    Operator::In,
                    &["team-1", "team-2"],
                )),
                pod_selector: None,
            }],
            ports: vec![number(9090)],
        });
    }
    let egress = if j.is_multiple_of(2) {
        vec![
            PolicyRule {
                peers: vec![],
                ports: vec![PolicyPort {
                    protocol: Protocol::Udp,
                    port: Some(PortRef::Number(53)),
                    end_port: None,
                }],
            },
            PolicyRule {
                peers: vec![Peer::Pods {
                    namespace_selector: None,
                    pod_selector: Some(sel(&[("tier", "db".to_string())])),
                }],
                ports: vec![PolicyPort {
                    protocol: Protocol::Tcp,
                    port: Some(PortRef::Name("http".into())),
                    end_port: None,
                }],
            },
        ]
    } else {
        vec![]
    };
    NetworkPolicy {
        namespace: format!("ns-{ns}"),
        name: format!("policy-{j}"),
        pod_selector: sel(&[("app", format!("app-{}", j % 10))]),
        policy_types: if egress.is_empty() {
            vec![Direction::Ingress]
        } else {
            vec![Direction::Ingress, Direction::Egress]
        },
        ingress,
        egress,
    }
}

fn build() -> PolicyState {
    let mut s = PolicyState::new();
    for ns in 0..NAMESPACES {
        s.apply_namespace(PolicyNamespace::new(
            format!("ns-{ns}"),
            labels(&[("team", format!("team-{}", ns % 5))]),
        ));
        for i in 0..PODS_PER_NS {
            s.apply_pod(pod(ns, i));
        }
        for j in 0..POLICIES_PER_NS {
            s.apply_policy(policy(ns, j)).expect("valid policy");
        }
    }
    for n in 0..NODES {
        s.apply_node(
            format!("node-{n}"),
            vec![format!("192.168.33.{}", 11 + n).parse().unwrap()],
        );
    }
    s
}

/// CPU time of this thread: what the work costs, whatever else the (shared) machine runs.
fn cpu_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Wall and CPU time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (w, c) = (Instant::now(), cpu_now());
    let out = f();
    (out, w.elapsed(), cpu_now().saturating_sub(c))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {nproc} CPUs, {cpu}");
    let state = build();
    println!(
        "input: {} namespaces, {} pods, {} policies, {} nodes",
        NAMESPACES,
        state.pods().count(),
        state.policies().count(),
        NODES
    );

    let all = CompileOptions::default();
    let node0 = CompileOptions {
        node: Some("node-0".into()),
        ..CompileOptions::default()
    };
    for (what, opts) in [("every pod", &all), ("one node (node-0)", &node0)] {
        let mut times = Vec::new();
        let mut cpu = Vec::new();
        let mut table = None;
        for _ in 0..5 {
            let (t, wall, c) = timed(|| compile(&state, opts));
            times.push(wall);
            cpu.push(c);
            table = Some(t);
        }
        let t = table.expect("compiled");
        let elems: usize = t.sets.values().map(|s| s.elements.len()).sum();
        let rules: usize = t.chains.values().map(|c| c.rules.len()).sum();
        let t0 = Instant::now();
        let script = t.render();
        let render = t0.elapsed();
        println!(
            "full compile, {what}: cpu median {}, wall median {} (min {}, max {}) -> {} chains, {} rules, {} sets/maps, {} elements; render {} ({} KiB)",
            ms(median(cpu)),
            ms(median(times.clone())),
            ms(*times.iter().min().expect("runs")),
            ms(*times.iter().max().expect("runs")),
            t.chains.len(),
            rules,
            t.sets.len(),
            elems,
            ms(render),
            script.len() / 1024
        );
    }

    // One pod label change -> nft transaction, for several pods: (a) with the incremental
    // compiler, (b) by full recompile + diff.
    for (what, opts) in [("every pod", &all), ("node-0", &node0)] {
        let (mut pc, w, c) = timed(|| PolicyCompiler::new(state.clone(), opts.clone()));
        println!(
            "incremental compiler start ({what}): cpu {}, wall {}",
            ms(c),
            ms(w)
        );
        let mut inc = Vec::new();
        let mut inc_wall = Vec::new();
        let mut sizes = BTreeMap::new();
        for k in 0..101 {
            let p = changed_pod(k);
            let (tx, w, c) = timed(|| {
                pc.apply_pod(p);
                pc.take_transaction()
            });
            inc.push(c);
            inc_wall.push(w);
            *sizes.entry(tx.commands.len()).or_insert(0) += 1;
        }
        println!(
            "pod label change -> transaction, incremental ({what}, 101 changes): cpu p50 {} p90 {} max {}, wall p50 {}; commands per transaction {:?}",
            ms(pct(&inc, 0.5)),
            ms(pct(&inc, 0.9)),
            ms(pct(&inc, 1.0)),
            ms(pct(&inc_wall, 0.5)),
            sizes
        );
        let mut current = state.clone();
        let mut table = compile(&current, opts);
        let mut total = Vec::new();
        let mut wall = Vec::new();
        for k in 0..11 {
            current.apply_pod(changed_pod(k));
            let (next, w1, c1) = timed(|| compile(&current, opts));
            let (_tx, w2, c2) = timed(|| diff(&table, &next));
            total.push(c1 + c2);
            wall.push(w1 + w2);
            table = next;
        }
        println!(
            "pod label change -> transaction, full recompile + diff ({what}, 11 changes): cpu p50 {}, wall p50 {}",
            ms(pct(&total, 0.5)),
            ms(pct(&wall, 0.5)),
        );
    }
    let mut pc = PolicyCompiler::new(state.clone(), node0.clone());
    let mut pol = Vec::new();
    for k in 0..11 {
        let mut p = policy((k * 3) % NAMESPACES, k % POLICIES_PER_NS);
        p.ingress.pop();
        let (_, _, c) = timed(|| {
            pc.apply_policy(p).expect("valid");
            pc.take_transaction()
        });
        pol.push(c);
    }
    println!(
        "policy update -> transaction, incremental (node-0, 11 updates): cpu p50 {}",
        ms(pct(&pol, 0.5))
    );
}

/// Pod `k` of a sequence of label changes spread over namespaces.
fn changed_pod(k: usize) -> PolicyPod {
    let ns = (k * 7) % NAMESPACES;
    let i = (k * 13) % PODS_PER_NS;
    let mut p = pod(ns, i);
    p.labels
        .insert("tier".into(), TIERS[(i + 1 + k) % 3].to_string());
    p.labels
        .insert("app".into(), format!("app-{}", (i + 3) % 10));
    p
}
