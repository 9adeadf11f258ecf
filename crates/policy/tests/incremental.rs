//! The incremental compiler against the full compile: after every change of a long
//! pseudo-random sequence (pods relabelled, moved, re-addressed, deleted and re-added;
//! namespaces relabelled; policies created, updated and deleted), the incremental table equals
//! a full compile of the same state, and its transaction equals the full diff.

mod common;

use common::*;
use sarasa_nft::diff;
use sarasa_policy::*;
use Direction::{Egress, Ingress};
use Protocol::{Tcp, Udp};

/// A small deterministic generator (no dependency, reproducible failures).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

fn policies(ns: &str) -> Vec<NetworkPolicy> {
    vec![
        P::new(ns, "p0", sel(&[("pod", "a")]))
            .ingress(rule(
                vec![pods_peer(Some(sel(&[("pod", "b")])), None)],
                vec![],
            ))
            .build(),
        P::new(ns, "p1", sel(&[]))
            .ingress(rule(
                vec![pods_peer(None, Some(sel(&[("team", "blue")])))],
                vec![port(Tcp, 80), named(Udp, "serve-81-udp")],
            ))
            .build(),
        P::new(ns, "p2", sel(&[("pod", "c")]))
            .types(&[Ingress, Egress])
            .build(),
        P::new(ns, "p3", sel(&[("extra", "yes")]))
            .types(&[Egress])
            .egress(rule(
                vec![pods_peer(Some(sel(&[("pod", "a")])), Some(sel(&[])))],
                vec![named(Tcp, "serve-80-tcp")],
            ))
            .egress(rule(
                vec![block("10.244.0.0/16", &["10.244.2.0/24"])],
                vec![],
            ))
            .build(),
        P::new(ns, "p1", sel(&[("pod", "b")]))
            .ingress(rule(
                vec![pods_peer(
                    Some(LabelSelector::default().expression("pod", Operator::NotIn, &["a"])),
                    Some(LabelSelector::default().expression("team", Operator::Exists, &[])),
                )],
                vec![range(Tcp, 80, 81)],
            ))
            .build(),
        P::new(ns, "p4", sel(&[]))
            .types(&[Egress])
            .egress(rule(
                vec![],
                vec![named(Tcp, "serve-81-tcp"), port(Udp, 53)],
            ))
            .build(),
    ]
}

fn run(opts: CompileOptions, seed: u64, steps: usize) {
    let mut rng = Lcg(seed);
    let mut pc = PolicyCompiler::new(cluster(), opts.clone());
    let mut prev = compile(pc.state(), &opts);
    assert_eq!(pc.table(), &prev);
    let pod_labels = ["a", "b", "c", "d"];
    let (mut nonempty, mut chain_changes, mut set_changes) = (0, 0, 0);
    for step in 0..steps {
        let i = rng.next(3);
        let j = rng.next(4); // pod d (j = 3) comes and goes
        let what = rng.next(9);
        let desc;
        match what {
            0 | 1 => {
                let mut p = pc
                    .state()
                    .pod(&PodKey::new(
                        NAMESPACES[i],
                        if j < 3 { PODS[j] } else { "d" },
                    ))
                    .cloned()
                    .unwrap_or_else(|| extra_pod(i));
                p.labels
                    .insert("pod".into(), pod_labels[rng.next(4)].into());
                if rng.next(2) == 0 {
                    p.labels.insert("extra".into(), "yes".into());
                } else {
                    p.labels.remove("extra");
                }
                desc = format!("relabel {}/{} {:?}", p.namespace, p.name, p.labels);
                pc.apply_pod(p);
            }
            2 => {
                let mut p = pc
                    .state()
                    .pod(&PodKey::new(NAMESPACES[i], PODS[j % 3]))
                    .cloned()
                    .unwrap_or_else(|| make_pod(i, j % 3));
                // Move to another node, sometimes onto an address another pod had.
                p.node = Some(NODES[rng.next(3)].to_string());
                p.ips = vec![format!("10.244.{}.{}", rng.next(3) + 1, 10 + rng.next(12))
                    .parse()
                    .unwrap()];
                desc = format!(
                    "move {}/{} to {:?} {:?}",
                    p.namespace, p.name, p.node, p.ips
                );
                pc.apply_pod(p);
            }
            3 => {
                let mut p = pc
                    .state()
                    .pod(&PodKey::new(NAMESPACES[i], PODS[j % 3]))
                    .cloned()
                    .unwrap_or_else(|| make_pod(i, j % 3));
                if p.ports.is_empty() {
                    p.ports = container_ports();
                } else {
                    p.ports.remove(rng.next(p.ports.len()));
                }
                desc = format!("ports of {}/{}", p.namespace, p.name);
                pc.apply_pod(p);
            }
            4 => {
                let k = PodKey::new(NAMESPACES[i], if j < 3 { PODS[j] } else { "d" });
                desc = format!("delete {k}");
                pc.delete_pod(&k);
            }
            5 => {
                let p = if j < 3 { make_pod(i, j) } else { extra_pod(i) };
                desc = format!("add {}/{}", p.namespace, p.name);
                pc.apply_pod(p);
            }
            6 => {
                let team = ["blue", "red"][rng.next(2)];
                desc = format!("namespace {} team={team}", NAMESPACES[i]);
                pc.apply_namespace(PolicyNamespace::new(
                    NAMESPACES[i],
                    labels(&[("ns", NAMESPACES[i]), ("team", team)]),
                ));
            }
            7 => {
                let ps = policies(NAMESPACES[i]);
                let p = ps[rng.next(ps.len())].clone();
                desc = format!("policy {}/{}", p.namespace, p.name);
                pc.apply_policy(p).unwrap();
            }
            _ => {
                let k = PodKey::new(NAMESPACES[i], format!("p{}", rng.next(5)));
                desc = format!("delete policy {k}");
                pc.delete_policy(&k);
            }
        }
        let tx = pc.take_transaction();
        nonempty += usize::from(!tx.is_empty());
        chain_changes +=
            usize::from(!tx.chains_written.is_empty() || !tx.chains_deleted.is_empty());
        set_changes +=
            usize::from(!tx.elements_added.is_empty() || !tx.elements_deleted.is_empty());
        let full = compile(pc.state(), &opts);
        assert!(
            pc.table() == &full,
            "step {step} ({desc}): incremental table differs from a full compile\nincremental:\n{}\nfull:\n{}",
            pc.table().render(),
            full.render()
        );
        let want = diff(&prev, &full);
        assert_eq!(
            tx.commands, want.commands,
            "step {step} ({desc}): transaction differs from the full diff"
        );
        full.validate().unwrap();
        prev = full;
    }
    // The sequence must exercise the interesting paths, not mostly no-ops.
    assert!(
        nonempty > steps / 4 && chain_changes > steps / 10 && set_changes > steps / 10,
        "non-empty {nonempty}, chain changes {chain_changes}, element changes {set_changes}"
    );
    eprintln!("non-empty {nonempty}, chain changes {chain_changes}, element changes {set_changes}");
}

fn extra_pod(i: usize) -> PolicyPod {
    let mut p = make_pod(i, 0);
    p.name = "d".into();
    p.labels = labels(&[("pod", "d")]);
    p.ips = vec![format!("10.244.2.{}", 50 + i).parse().unwrap()];
    p.node = Some("node-2".into());
    p
}

#[test]
fn incremental_matches_full_compile_every_pod() {
    run(CompileOptions::default(), 1, 400);
}

#[test]
fn incremental_matches_full_compile_one_node() {
    run(
        CompileOptions {
            node: Some("node-1".into()),
            ..CompileOptions::default()
        },
        7,
        400,
    );
}

#[test]
fn invalid_policy_changes_nothing() {
    let mut pc = PolicyCompiler::new(cluster(), CompileOptions::default());
    let mut bad = P::new("x", "bad", sel(&[])).ingress(rule(vec![], vec![range(Tcp, 90, 80)]));
    bad.0.policy_types = vec![Ingress];
    let e = pc.apply_policy(bad.0).unwrap_err();
    assert_eq!(e.field, "spec.ingress[0].ports[0].endPort");
    assert!(pc.take_transaction().is_empty());
}

#[test]
fn invalid_update_keeps_the_previous_version() {
    let mut pc = PolicyCompiler::new(cluster(), CompileOptions::default());
    let good = P::new("x", "p", sel(&[("pod", "a")]))
        .ingress(rule(vec![], vec![port(Tcp, 80)]))
        .build();
    pc.apply_policy(good.clone()).unwrap();
    assert!(pc.table().chains.contains_key("ing_x_a"));
    let _ = pc.take_transaction();
    let mut bad = good.clone();
    bad.ingress[0]
        .peers
        .push(block("10.0.0.0/16", &["10.1.0.0/24"]));
    let e = pc.apply_policy(bad).unwrap_err();
    assert_eq!(e.field, "spec.ingress[0].from[0].ipBlock.except[0]");
    assert_eq!(pc.state().policy(&PodKey::new("x", "p")), Some(&good));
    assert!(pc.take_transaction().is_empty());
}
