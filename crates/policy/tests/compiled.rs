//! Tests of the compiled table itself: golden rendering, validity, set sharing, incremental
//! updates (asserted on sarasa-nft's diff), IPv6, and that the interpreter-based agreement
//! check is not vacuous.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use sarasa_nft::interp::{self, CtState, Packet};
use sarasa_nft::{diff, L4Proto, Stmt, Verdict as NftVerdict};
use sarasa_policy::*;
use Direction::{Egress, Ingress};
use Protocol::{Tcp, Udp};

fn web_policy() -> NetworkPolicy {
    P::new("x", "web", sel(&[("pod", "a")]))
        .types(&[Ingress, Egress])
        .ingress(rule(
            vec![
                pods_peer(Some(sel(&[("pod", "b")])), Some(sel(&[("ns", "y")]))),
                block("203.0.113.0/24", &["203.0.113.128/25"]),
            ],
            vec![
                port(Tcp, 80),
                named(Udp, "serve-81-udp"),
                range(Tcp, 1000, 1007),
            ],
        ))
        .egress(rule(
            vec![pods_peer(Some(sel(&[("pod", "c")])), None)],
            vec![named(Tcp, "serve-80-tcp")],
        ))
        .build()
}

fn scenario() -> PolicyState {
    let mut s = cluster();
    s.apply_policy(web_policy()).unwrap();
    s
}

fn all_nodes() -> CompileOptions {
    CompileOptions::default()
}

#[test]
fn golden_node_table() {
    let t = compile(
        &scenario(),
        &CompileOptions {
            node: Some("node-1".into()),
            ..Default::default()
        },
    );
    t.validate().unwrap();
    let got = t.render();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/web-node-1.nft");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).expect("golden file (UPDATE_GOLDEN=1 to write)");
    assert_eq!(got, want, "rendered table differs from {path}");
}

#[test]
fn only_local_pods_get_chains_but_sets_hold_every_node() {
    let s = scenario();
    let n1 = compile(
        &s,
        &CompileOptions {
            node: Some("node-1".into()),
            ..Default::default()
        },
    );
    let n2 = compile(
        &s,
        &CompileOptions {
            node: Some("node-2".into()),
            ..Default::default()
        },
    );
    assert!(n1.chains.contains_key("ing_x_a"));
    assert!(!n2.chains.contains_key("ing_x_a"));
    // y/b lives on node-3 but is in node-1's peer set.
    let yb = pod_ip(1, 1);
    assert!(n1
        .sets
        .values()
        .any(|set| set.elements.contains_key(&sarasa_nft::Key::one(yb))));
}

#[test]
fn identical_selectors_share_one_set() {
    let mut s = cluster();
    for (name, target) in [("p1", "a"), ("p2", "b")] {
        s.apply_policy(
            P::new("x", name, sel(&[("pod", target)]))
                .ingress(rule(
                    vec![pods_peer(None, Some(sel(&[("ns", "y")])))],
                    vec![],
                ))
                .build(),
        )
        .unwrap();
    }
    let t = compile(&s, &all_nodes());
    let pod_sets: Vec<&String> = t.sets.keys().filter(|n| n.starts_with("pods-")).collect();
    assert_eq!(pod_sets.len(), 1, "{pod_sets:?}");
    assert_eq!(t.sets[pod_sets[0]].elements.len(), 3);
}

#[test]
fn pod_label_change_touches_only_set_elements() {
    let s1 = scenario();
    let mut s2 = s1.clone();
    // y/b stops matching `pod=b`: it leaves one peer set; nobody's selection changes.
    let mut yb = make_pod(1, 1);
    yb.labels.insert("pod".into(), "bb".into());
    s2.apply_pod(yb);
    let tx = diff(&compile(&s1, &all_nodes()), &compile(&s2, &all_nodes()));
    assert!(tx.chains_written.is_empty(), "{:?}", tx.chains_written);
    assert!(tx.chains_deleted.is_empty());
    assert!(tx.sets_written.is_empty() && tx.sets_deleted.is_empty());
    assert_eq!(tx.elements_added, BTreeMap::new());
    assert_eq!(
        tx.elements_deleted.values().sum::<usize>(),
        1,
        "{:?}",
        tx.elements_deleted
    );
    assert_eq!(tx.commands.len(), 1, "{}", tx.script());
}

#[test]
fn pod_label_change_rewrites_only_chains_whose_selection_changed() {
    let s1 = scenario();
    let mut s2 = s1.clone();
    // x/b becomes `pod=a`: now selected by x/web (gets chains); it also leaves nothing.
    let mut xb = make_pod(0, 1);
    xb.labels.insert("pod".into(), "a".into());
    s2.apply_pod(xb);
    let tx = diff(&compile(&s1, &all_nodes()), &compile(&s2, &all_nodes()));
    assert_eq!(
        tx.chains_written,
        BTreeSet::from(["egr_x_b".to_string(), "ing_x_b".to_string()])
    );
    assert!(tx.chains_deleted.is_empty());
    let maps: BTreeSet<&str> = tx.elements_added.keys().map(String::as_str).collect();
    assert_eq!(maps, BTreeSet::from(["egress-v4", "ingress-v4"]));
    // ... and back: the chains go, the map elements go.
    let back = diff(&compile(&s2, &all_nodes()), &compile(&s1, &all_nodes()));
    assert_eq!(
        back.chains_deleted,
        BTreeSet::from(["egr_x_b".to_string(), "ing_x_b".to_string()])
    );
    assert!(back.chains_written.is_empty());
}

#[test]
fn namespace_label_change_touches_only_set_elements() {
    let s1 = scenario();
    let mut s2 = s1.clone();
    s2.apply_namespace(PolicyNamespace::new("z", labels(&[("ns", "y")])));
    let tx = diff(&compile(&s1, &all_nodes()), &compile(&s2, &all_nodes()));
    assert!(tx.chains_written.is_empty() && tx.chains_deleted.is_empty());
    assert_eq!(tx.elements_added.values().sum::<usize>(), 1, "z/b joins");
    assert!(tx.elements_deleted.is_empty());
}

#[test]
fn a_new_policy_elsewhere_leaves_existing_chains_alone() {
    let s1 = scenario();
    let mut s2 = s1.clone();
    s2.apply_policy(P::new("z", "deny", sel(&[])).types(&[Ingress]).build())
        .unwrap();
    let tx = diff(&compile(&s1, &all_nodes()), &compile(&s2, &all_nodes()));
    assert_eq!(
        tx.chains_written,
        BTreeSet::from(["ing_z_a".into(), "ing_z_b".into(), "ing_z_c".into()])
    );
    assert!(tx.commands.iter().all(|c| !c.contains("ing_x_a")));
}

#[test]
fn long_names_and_selectors_stay_valid_for_nft() {
    let mut s = PolicyState::new();
    let ns = "n".repeat(63);
    s.apply_namespace(PolicyNamespace::new(&ns, labels(&[])));
    let long_pod = format!("p{}", "o".repeat(200));
    s.apply_pod(PolicyPod {
        namespace: ns.clone(),
        name: long_pod.clone(),
        labels: labels(&[("app", "web")]),
        ips: vec!["10.244.1.5".parse().unwrap()],
        ports: vec![],
        node: None,
    });
    let long_value = "v".repeat(63);
    let many: Vec<(String, String)> = (0..10)
        .map(|i| (format!("key-{i}-{}", "k".repeat(40)), long_value.clone()))
        .collect();
    let selector = LabelSelector {
        match_labels: many.into_iter().collect(),
        match_expressions: vec![],
    };
    for i in 0..30 {
        s.apply_policy(
            P::new(&ns, &format!("policy-{i}-{}", "q".repeat(200)), sel(&[]))
                .ingress(rule(vec![pods_peer(Some(selector.clone()), None)], vec![]))
                .build(),
        )
        .unwrap();
    }
    let t = compile(&s, &all_nodes());
    t.validate().unwrap();
    let key = PodKey::new(&ns, &long_pod);
    assert!(t.chains.contains_key(&chain_name(Ingress, &key)));
    let prefix = log_prefix(Ingress, &key);
    assert!(prefix.len() <= 127);
    let ev = drop_event(
        &s,
        &prefix,
        "10.9.9.9".parse().unwrap(),
        "10.244.1.5".parse().unwrap(),
        L4Proto::Tcp,
        80,
    )
    .unwrap();
    assert_eq!(ev.pod, key);
    assert_eq!(ev.policies.len(), 30);
}

#[test]
fn ipv6_pods_and_blocks() {
    let mut s = PolicyState::new();
    s.apply_namespace(PolicyNamespace::new("x", labels(&[])));
    for (name, v4, v6) in [
        ("a", "10.244.1.2", "fd00:10:244:1::2"),
        ("b", "10.244.1.3", "fd00:10:244:1::3"),
    ] {
        s.apply_pod(PolicyPod {
            namespace: "x".into(),
            name: name.into(),
            labels: labels(&[("pod", name)]),
            ips: vec![v4.parse().unwrap(), v6.parse().unwrap()],
            ports: vec![],
            node: Some("node-1".into()),
        });
    }
    s.apply_policy(
        P::new("x", "p", sel(&[("pod", "a")]))
            .ingress(rule(
                vec![
                    pods_peer(Some(sel(&[("pod", "b")])), None),
                    block("2001:db8::/32", &["2001:db8:1::/48"]),
                ],
                vec![port(Tcp, 80)],
            ))
            .build(),
    )
    .unwrap();
    let opts = CompileOptions {
        ipv6: true,
        ..Default::default()
    };
    let t = compile(&s, &opts);
    t.validate().unwrap();
    let xa6: std::net::IpAddr = "fd00:10:244:1::2".parse().unwrap();
    for (src, want) in [
        ("fd00:10:244:1::3", true),
        ("2001:db8::1", true),
        ("2001:db8:1::1", false),
        ("2001:db9::1", false),
        ("10.244.1.3", true),
    ] {
        let src: std::net::IpAddr = src.parse().unwrap();
        let dst = if src.is_ipv6() {
            xa6
        } else {
            "10.244.1.2".parse().unwrap()
        };
        let packet = Packet::new(src, dst, L4Proto::Tcp, 40000, 80);
        let tr = forward(&t, &packet);
        assert_eq!(tr.accepted, want, "{src}: {tr:?}");
        let from = match s.pod_by_ip(src) {
            Some(p) => Endpoint::Pod(p.key()),
            None => Endpoint::External(src),
        };
        let v = allowed(&s, &from, &Endpoint::Pod(PodKey::new("x", "a")), Tcp, 80).unwrap();
        assert_eq!(v.allowed, want, "evaluator, {src}");
    }
}

#[test]
fn established_packets_pass_and_unisolated_pods_miss_the_maps() {
    let mut s = cluster();
    s.apply_policy(
        P::new("x", "deny", sel(&[("pod", "a")]))
            .types(&[Ingress])
            .build(),
    )
    .unwrap();
    let t = compile(&s, &all_nodes());
    let mut p = Packet::new(pod_ip(1, 0), pod_ip(0, 0), L4Proto::Tcp, 40000, 80);
    let tr = forward(&t, &p);
    assert!(!tr.accepted);
    assert_eq!(tr.chains, vec![FORWARD_CHAIN, "ing_x_a"]);
    assert_eq!(tr.logs, vec!["np in x/a "]);
    // The drop names the pod's chain and its policies, and the dynamic set was updated.
    let last = tr.path.steps.last().unwrap();
    assert_eq!(last.chain, "ing_x_a");
    assert_eq!(last.event, interp::Event::Verdict(NftVerdict::Drop));
    assert!(tr.path.steps.iter().any(|s| matches!(
        &s.event,
        interp::Event::UpdateSet { set, .. } if set == logged_set_name(false)
    )));
    p.ct = CtState::Established;
    assert_eq!(forward(&t, &p).decided_by.as_deref(), Some("forward#0"));
    p.ct = CtState::New;
    p.daddr = pod_ip(0, 1);
    let tr = forward(&t, &p);
    assert!(tr.accepted && tr.decided_by.is_none() && tr.chains == vec![FORWARD_CHAIN]);
}

#[test]
fn the_agreement_check_catches_a_broken_table() {
    let mut s = cluster();
    s.apply_policy(
        P::new("x", "from-b", sel(&[("pod", "a")]))
            .ingress(rule(
                vec![pods_peer(Some(sel(&[("pod", "b")])), None)],
                vec![],
            ))
            .build(),
    )
    .unwrap();
    let mut t = compile(&s, &all_nodes());
    let p = Packet::new(pod_ip(0, 1), pod_ip(0, 0), L4Proto::Tcp, 40000, 80);
    assert!(forward(&t, &p).accepted);
    // Break it: drop the accept rule.
    let chain = t.chains.get_mut("ing_x_a").unwrap();
    chain
        .rules
        .retain(|r| !r.stmts.contains(&Stmt::Verdict(NftVerdict::Accept)));
    assert!(!forward(&t, &p).accepted);
}
