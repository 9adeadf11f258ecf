//! The upstream e2e NetworkPolicy scenarios (test/e2e/network/netpol) as model tests:
//! namespaces x, y, z with pods a, b, c serving TCP and UDP on 80 and 81, over three nodes.
//! Each scenario states the expected matrix by hand (as upstream does), checks the evaluator
//! against it, and then checks every pair, port and protocol of the compiled per-node tables
//! against the evaluator, with drop logs naming the isolating policies (`common::check`).

mod common;

use common::*;
use sarasa_policy::*;
use Direction::{Egress, Ingress};
use Protocol::{Sctp, Tcp, Udp};

fn apply(s: &mut PolicyState, p: P) {
    s.apply_policy(p.build()).unwrap();
}

fn deny_ingress_to_a(expect: &mut Reach) {
    expect.expect(any(), pod("x", "a"), false).allow_loopback();
}

#[test]
fn default_deny_ingress() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "deny-ingress", sel(&[])).types(&[Ingress]),
    );
    let mut r = Reach::new(true);
    r.expect(any(), ns("x"), false).allow_loopback();
    check(&s, 80, Tcp, &r);
    check(&s, 81, Udp, &r);
}

#[test]
fn default_deny_all() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "deny-all", sel(&[])).types(&[Ingress, Egress]),
    );
    let mut r = Reach::new(true);
    r.expect(any(), ns("x"), false)
        .expect(ns("x"), any(), false)
        .allow_loopback();
    check(&s, 80, Tcp, &r);
}

#[test]
fn allow_from_pods_within_namespace_by_pod_selector() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "allow-b", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(Some(sel(&[("pod", "b")])), None)],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(pod("x", "b"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn allow_ingress_for_a_target_over_namespace_default_deny() {
    let mut s = cluster();
    apply(&mut s, P::new("x", "deny", sel(&[])).types(&[Ingress]));
    apply(
        &mut s,
        P::new("x", "allow-a", sel(&[("pod", "a")])).ingress(PolicyRule::allow_all()),
    );
    let mut r = Reach::new(true);
    r.expect(any(), ns("x"), false)
        .expect(any(), pod("x", "a"), true)
        .allow_loopback();
    check(&s, 80, Tcp, &r);
}

#[test]
fn allow_ingress_from_pods_in_all_namespaces_but_not_outside() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "all-ns", sel(&[("pod", "a")]))
            .ingress(rule(vec![pods_peer(None, Some(sel(&[])))], vec![])),
    );
    check(&s, 80, Tcp, &Reach::new(true));
    let ext = Endpoint::External(EXTERNAL.parse().unwrap());
    let v = allowed(&s, &ext, &Endpoint::Pod(PodKey::new("x", "a")), Tcp, 80).unwrap();
    assert!(
        !v.allowed,
        "an empty namespaceSelector selects pods, not outside addresses"
    );
}

#[test]
fn allow_only_from_a_different_namespace_by_namespace_selector() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "from-y", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(None, Some(sel(&[("ns", "y")])))],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(ns("y"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn pod_selector_with_match_expressions() {
    let mut s = cluster();
    let from = LabelSelector::default().expression("pod", Operator::In, &["b"]);
    apply(
        &mut s,
        P::new("x", "expr", sel(&[("pod", "a")]))
            .ingress(rule(vec![pods_peer(Some(from), None)], vec![])),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(pod("x", "b"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn namespace_selector_with_match_expressions() {
    let mut s = cluster();
    let from = LabelSelector::default().expression("ns", Operator::In, &["y"]);
    apply(
        &mut s,
        P::new("x", "expr", sel(&[("pod", "a")]))
            .ingress(rule(vec![pods_peer(None, Some(from))], vec![])),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(ns("y"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn pod_selector_or_namespace_selector() {
    let mut s = cluster();
    let not_x = LabelSelector::default().expression("ns", Operator::NotIn, &["x"]);
    apply(
        &mut s,
        P::new("x", "or", sel(&[("pod", "a")])).ingress(rule(
            vec![
                pods_peer(None, Some(not_x)),
                pods_peer(Some(sel(&[("pod", "b")])), None),
            ],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(ns("y"), pod("x", "a"), true)
        .expect(ns("z"), pod("x", "a"), true)
        .expect(pod("x", "b"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn pod_selector_and_namespace_selector() {
    let mut s = cluster();
    let not_x = LabelSelector::default().expression("ns", Operator::NotIn, &["x"]);
    apply(
        &mut s,
        P::new("x", "and", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(Some(sel(&[("pod", "b")])), Some(not_x))],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(pod("y", "b"), pod("x", "a"), true)
        .expect(pod("z", "b"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn multiple_pod_selectors_and_namespace_selectors() {
    let mut s = cluster();
    let not_x = LabelSelector::default().expression("ns", Operator::NotIn, &["x"]);
    let b_or_c = LabelSelector::default().expression("pod", Operator::In, &["b", "c"]);
    apply(
        &mut s,
        P::new("x", "multi", sel(&[("pod", "a")]))
            .ingress(rule(vec![pods_peer(Some(b_or_c), Some(not_x))], vec![])),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    for n in ["y", "z"] {
        for p in ["b", "c"] {
            r.expect(pod(n, p), pod("x", "a"), true);
        }
    }
    check(&s, 80, Tcp, &r);
}

#[test]
fn any_of_several_pod_selectors() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "any", sel(&[("pod", "a")])).ingress(rule(
            vec![
                pods_peer(Some(sel(&[("pod", "b")])), None),
                pods_peer(Some(sel(&[("pod", "c")])), None),
            ],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(pod("x", "b"), pod("x", "a"), true)
        .expect(pod("x", "c"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn only_from_a_pod_in_a_different_namespace() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "ya", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(
                Some(sel(&[("pod", "a")])),
                Some(sel(&[("ns", "y")])),
            )],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(pod("y", "a"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn ports() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "port-81", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(None, Some(sel(&[("ns", "y")])))],
            vec![port(Tcp, 81)],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
    check(&s, 81, Udp, &r);
    r.expect(ns("y"), pod("x", "a"), true);
    check(&s, 81, Tcp, &r);
}

#[test]
fn multiple_stacked_policies_with_overlapping_pod_selectors() {
    let mut s = cluster();
    for p in [80, 81] {
        apply(
            &mut s,
            P::new("x", &format!("allow-{p}"), sel(&[("pod", "a")])).ingress(rule(
                vec![pods_peer(None, Some(sel(&[("ns", "y")])))],
                vec![port(Tcp, p)],
            )),
        );
    }
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(ns("y"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
    check(&s, 81, Tcp, &r);
}

#[test]
fn allow_all() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "allow-all", sel(&[])).ingress(PolicyRule::allow_all()),
    );
    check(&s, 80, Tcp, &Reach::new(true));
    let ext = Endpoint::External(EXTERNAL.parse().unwrap());
    assert!(
        allowed(&s, &ext, &Endpoint::Pod(PodKey::new("x", "b")), Udp, 81)
            .unwrap()
            .allowed
    );
}

#[test]
fn ingress_on_one_named_port() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "named", sel(&[])).ingress(rule(vec![], vec![named(Tcp, "serve-81-tcp")])),
    );
    check(&s, 81, Tcp, &Reach::new(true));
    let mut r = Reach::new(true);
    r.expect(any(), ns("x"), false).allow_loopback();
    check(&s, 80, Tcp, &r);
    // The name is of a TCP port: UDP 81 is not allowed by it.
    check(&s, 81, Udp, &r);
}

#[test]
fn ingress_from_namespace_on_one_named_port() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "named", sel(&[])).ingress(rule(
            vec![pods_peer(None, Some(sel(&[("ns", "y")])))],
            vec![named(Tcp, "serve-80-tcp")],
        )),
    );
    let mut r = Reach::new(true);
    r.expect(any(), ns("x"), false).allow_loopback();
    check(&s, 81, Tcp, &r);
    r.expect(ns("y"), ns("x"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn egress_on_one_named_port() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "named", sel(&[])).types(&[Egress]).egress(rule(
            vec![],
            vec![named(Tcp, "serve-80-tcp"), port(Udp, 53)],
        )),
    );
    check(&s, 80, Tcp, &Reach::new(true));
    let mut r = Reach::new(true);
    r.expect(ns("x"), any(), false).allow_loopback();
    check(&s, 81, Tcp, &r);
    check(&s, 80, Udp, &r);
}

#[test]
fn named_port_without_a_match_matches_nothing() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "nope", sel(&[("pod", "a")])).ingress(rule(vec![], vec![named(Tcp, "nope")])),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
    check(&s, 81, Tcp, &r);
}

#[test]
fn updated_policy_is_enforced() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "p", sel(&[])).ingress(rule(vec![], vec![port(Tcp, 81)])),
    );
    let mut deny_x = Reach::new(true);
    deny_x.expect(any(), ns("x"), false).allow_loopback();
    check(&s, 80, Tcp, &deny_x);
    check(&s, 81, Tcp, &Reach::new(true));
    apply(
        &mut s,
        P::new("x", "p", sel(&[])).ingress(rule(vec![], vec![port(Tcp, 80)])),
    );
    check(&s, 80, Tcp, &Reach::new(true));
    check(&s, 81, Tcp, &deny_x);
}

#[test]
fn ingress_from_updated_namespace() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "p", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(None, Some(sel(&[("ns2", "updated")])))],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
    s.apply_namespace(PolicyNamespace::new(
        "y",
        labels(&[("ns", "y"), ("ns2", "updated")]),
    ));
    r.expect(ns("y"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn ingress_from_updated_pod() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "p", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(Some(sel(&[("pod2", "updated")])), None)],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
    let mut b = make_pod(0, 1);
    b.labels.insert("pod2".into(), "updated".into());
    s.apply_pod(b);
    r.expect(pod("x", "b"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn deny_ingress_from_pods_in_other_namespaces() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "same-ns", sel(&[]))
            .ingress(rule(vec![pods_peer(Some(sel(&[])), None)], vec![])),
    );
    let mut r = Reach::new(true);
    r.expect(any(), ns("x"), false)
        .expect(ns("x"), ns("x"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn deny_ingress_to_updated_pod() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "isolate", sel(&[("target", "isolated")])).types(&[Ingress]),
    );
    check(&s, 80, Tcp, &Reach::new(true));
    let mut a = make_pod(0, 0);
    a.labels.insert("target".into(), "isolated".into());
    s.apply_pod(a);
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
}

#[test]
fn deny_egress_by_pod_selector() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "deny-egress-a", sel(&[("pod", "a")])).types(&[Egress]),
    );
    let mut r = Reach::new(true);
    r.expect(pod("x", "a"), any(), false).allow_loopback();
    check(&s, 80, Tcp, &r);
}

#[test]
fn deny_egress_from_all_pods_in_a_namespace() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "deny-egress", sel(&[])).types(&[Egress]),
    );
    let mut r = Reach::new(true);
    r.expect(ns("x"), any(), false).allow_loopback();
    check(&s, 80, Tcp, &r);
    check(&s, 81, Udp, &r);
}

#[test]
fn ingress_and_egress_together() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "both", sel(&[("pod", "a")]))
            .types(&[Ingress, Egress])
            .ingress(rule(
                vec![pods_peer(Some(sel(&[("pod", "b")])), None)],
                vec![],
            ))
            .egress(rule(
                vec![pods_peer(None, Some(sel(&[("ns", "y")])))],
                vec![],
            )),
    );
    let mut r = Reach::new(true);
    r.expect(any(), pod("x", "a"), false)
        .expect(pod("x", "b"), pod("x", "a"), true)
        .expect(pod("x", "a"), any(), false)
        .expect(pod("x", "a"), ns("y"), true)
        .allow_loopback();
    check(&s, 80, Tcp, &r);
}

#[test]
fn egress_denied_on_the_client_even_if_the_server_allows() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "deny-egress-a", sel(&[("pod", "a")])).types(&[Egress]),
    );
    apply(
        &mut s,
        P::new("y", "from-x", sel(&[])).ingress(rule(
            vec![pods_peer(None, Some(sel(&[("ns", "x")])))],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    r.expect(any(), ns("y"), false)
        .expect(ns("x"), ns("y"), true)
        .expect(pod("x", "a"), any(), false)
        .allow_loopback();
    check(&s, 80, Tcp, &r);
}

#[test]
fn egress_to_a_server_in_another_namespace_by_pod_and_namespace_selector() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "to-yb", sel(&[("pod", "a")]))
            .types(&[Egress])
            .egress(rule(
                vec![pods_peer(
                    Some(sel(&[("pod", "b")])),
                    Some(sel(&[("ns", "y")])),
                )],
                vec![],
            )),
    );
    let mut r = Reach::new(true);
    r.expect(pod("x", "a"), any(), false)
        .expect(pod("x", "a"), pod("y", "b"), true)
        .allow_loopback();
    check(&s, 80, Tcp, &r);
}

#[test]
fn ingress_allow_all_policy_takes_precedence() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "from-b-80", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(Some(sel(&[("pod", "b")])), None)],
            vec![port(Tcp, 80)],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(pod("x", "b"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
    apply(
        &mut s,
        P::new("x", "allow-all", sel(&[("pod", "a")])).ingress(PolicyRule::allow_all()),
    );
    check(&s, 80, Tcp, &Reach::new(true));
    check(&s, 81, Tcp, &Reach::new(true));
}

#[test]
fn egress_allow_all_policy_takes_precedence() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "to-b-80", sel(&[("pod", "a")]))
            .types(&[Egress])
            .egress(rule(
                vec![pods_peer(Some(sel(&[("pod", "b")])), None)],
                vec![port(Tcp, 80)],
            )),
    );
    let mut r = Reach::new(true);
    r.expect(pod("x", "a"), any(), false)
        .expect(pod("x", "a"), pod("x", "b"), true)
        .allow_loopback();
    check(&s, 80, Tcp, &r);
    apply(
        &mut s,
        P::new("x", "allow-all", sel(&[("pod", "a")]))
            .types(&[Egress])
            .egress(PolicyRule::allow_all()),
    );
    check(&s, 80, Tcp, &Reach::new(true));
}

#[test]
fn stop_enforcing_after_delete() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "deny-all", sel(&[])).types(&[Ingress, Egress]),
    );
    let mut r = Reach::new(true);
    r.expect(any(), ns("x"), false)
        .expect(ns("x"), any(), false)
        .allow_loopback();
    check(&s, 80, Tcp, &r);
    s.delete_policy(&PodKey::new("x", "deny-all")).unwrap();
    check(&s, 80, Tcp, &Reach::new(true));
}

fn yb_cidr() -> String {
    format!("{}/32", pod_ip(1, 1))
}

#[test]
fn egress_to_server_in_cidr_block() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "cidr", sel(&[("pod", "a")]))
            .types(&[Egress])
            .egress(rule(vec![block(&yb_cidr(), &[])], vec![])),
    );
    let mut r = Reach::new(true);
    r.expect(pod("x", "a"), any(), false)
        .expect(pod("x", "a"), pod("y", "b"), true)
        .allow_loopback();
    check(&s, 80, Tcp, &r);
}

#[test]
fn except_clause_in_egress_cidr_block() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "cidr", sel(&[("pod", "a")]))
            .types(&[Egress])
            .egress(rule(vec![block("10.244.0.0/16", &[&yb_cidr()])], vec![])),
    );
    let mut r = Reach::new(true);
    r.expect(pod("x", "a"), pod("y", "b"), false);
    check(&s, 80, Tcp, &r);
    let ext = Endpoint::External(EXTERNAL.parse().unwrap());
    assert!(
        !allowed(&s, &Endpoint::Pod(PodKey::new("x", "a")), &ext, Tcp, 80)
            .unwrap()
            .allowed
    );
}

#[test]
fn ip_in_both_cidr_and_except_of_different_blocks_is_allowed() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "cidr", sel(&[("pod", "a")]))
            .types(&[Egress])
            .egress(rule(vec![block("10.244.0.0/16", &[&yb_cidr()])], vec![]))
            .egress(rule(vec![block(&yb_cidr(), &[])], vec![])),
    );
    check(&s, 80, Tcp, &Reach::new(true));
}

#[test]
fn ingress_from_external_ip_block() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "ext", sel(&[("pod", "a")])).ingress(rule(
            vec![block("203.0.113.0/24", &["203.0.113.128/25"])],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
    let xa = Endpoint::Pod(PodKey::new("x", "a"));
    let from = |ip: &str| {
        allowed(&s, &Endpoint::External(ip.parse().unwrap()), &xa, Tcp, 80)
            .unwrap()
            .allowed
    };
    assert!(from("203.0.113.10"));
    assert!(!from("203.0.113.200"));
}

#[test]
fn ingress_and_egress_controlled_independently() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "a-to-b", sel(&[("pod", "a")]))
            .types(&[Egress])
            .egress(rule(
                vec![pods_peer(Some(sel(&[("pod", "b")])), None)],
                vec![],
            )),
    );
    apply(
        &mut s,
        P::new("x", "deny-b", sel(&[("pod", "b")])).types(&[Ingress]),
    );
    let mut r = Reach::new(true);
    r.expect(pod("x", "a"), any(), false)
        .expect(any(), pod("x", "b"), false)
        .allow_loopback();
    check(&s, 80, Tcp, &r);
}

#[test]
fn sctp_is_not_tcp() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "sctp", sel(&[("pod", "a")])).ingress(rule(vec![], vec![port(Sctp, 80)])),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
    check(&s, 80, Udp, &r);
    check(&s, 80, Sctp, &Reach::new(true));
}

#[test]
fn tcp_not_allowed_when_policy_names_only_udp() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "udp", sel(&[("pod", "a")])).ingress(rule(vec![], vec![port(Udp, 81)])),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 81, Tcp, &r);
    check(&s, 81, Udp, &Reach::new(true));
}

#[test]
fn namespace_selector_with_default_namespace_label() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "by-name", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(None, Some(sel(&[(NAMESPACE_NAME_LABEL, "y")])))],
            vec![],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    r.expect(ns("y"), pod("x", "a"), true);
    check(&s, 80, Tcp, &r);
}

#[test]
fn namespace_selector_match_expressions_with_default_namespace_label() {
    let mut s = cluster();
    let not_y = LabelSelector::default().expression(NAMESPACE_NAME_LABEL, Operator::NotIn, &["y"]);
    apply(
        &mut s,
        P::new("x", "not-y", sel(&[("pod", "a")]))
            .ingress(rule(vec![pods_peer(None, Some(not_y))], vec![])),
    );
    let mut r = Reach::new(true);
    r.expect(ns("y"), pod("x", "a"), false);
    check(&s, 80, Tcp, &r);
}

#[test]
fn any_port_of_one_protocol() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "udp-any", sel(&[("pod", "a")])).ingress(rule(vec![], vec![any_port(Udp)])),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
    check(&s, 81, Tcp, &r);
    check(&s, 80, Udp, &Reach::new(true));
    check(&s, 81, Udp, &Reach::new(true));
}

#[test]
fn end_port_ranges() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "range", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(None, Some(sel(&[("ns", "y")])))],
            vec![range(Tcp, 81, 90)],
        )),
    );
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
    r.expect(ns("y"), pod("x", "a"), true);
    check(&s, 81, Tcp, &r);
    apply(
        &mut s,
        P::new("x", "range", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(None, Some(sel(&[("ns", "y")])))],
            vec![range(Tcp, 79, 81)],
        )),
    );
    check(&s, 80, Tcp, &r);
    check(&s, 81, Tcp, &r);
}

#[test]
fn egress_to_dns_port_and_one_namespace() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "dns", sel(&[("pod", "a")]))
            .types(&[Egress])
            .egress(rule(vec![], vec![port(Udp, 53), port(Tcp, 53)]))
            .egress(rule(
                vec![pods_peer(None, Some(sel(&[("ns", "y")])))],
                vec![port(Tcp, 80)],
            )),
    );
    let mut r = Reach::new(true);
    r.expect(pod("x", "a"), any(), false).allow_loopback();
    check(&s, 80, Udp, &r);
    r.expect(pod("x", "a"), ns("y"), true);
    check(&s, 80, Tcp, &r);
    let ext = Endpoint::External("8.8.8.8".parse().unwrap());
    let xa = Endpoint::Pod(PodKey::new("x", "a"));
    assert!(allowed(&s, &xa, &ext, Udp, 53).unwrap().allowed);
    assert!(!allowed(&s, &xa, &ext, Udp, 54).unwrap().allowed);
}

#[test]
fn egress_named_port_towards_ip_block_resolves_on_pods_only() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "named-cidr", sel(&[("pod", "a")]))
            .types(&[Egress])
            .egress(rule(
                vec![block("0.0.0.0/0", &[])],
                vec![named(Tcp, "serve-81-tcp")],
            )),
    );
    check(&s, 81, Tcp, &Reach::new(true));
    let mut r = Reach::new(true);
    r.expect(pod("x", "a"), any(), false).allow_loopback();
    check(&s, 80, Tcp, &r);
    let ext = Endpoint::External(EXTERNAL.parse().unwrap());
    let xa = Endpoint::Pod(PodKey::new("x", "a"));
    assert!(!allowed(&s, &xa, &ext, Tcp, 81).unwrap().allowed);
}

#[test]
fn egress_only_policy_ignores_its_ingress_rules() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "egress-only", sel(&[("pod", "a")]))
            .types(&[Egress])
            .ingress(rule(
                vec![pods_peer(Some(sel(&[("pod", "b")])), None)],
                vec![],
            ))
            .egress(PolicyRule::allow_all()),
    );
    check(&s, 80, Tcp, &Reach::new(true));
}

#[test]
fn node_traffic_to_its_own_pods_is_always_allowed() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "deny-all", sel(&[])).types(&[Ingress, Egress]),
    );
    let xa = PodKey::new("x", "a");
    let own = node_ip(node_of(0, 0));
    let other = node_ip((node_of(0, 0) + 1) % 3);
    let v = |src: &Endpoint, dst: &Endpoint| allowed(&s, src, dst, Tcp, 80).unwrap().allowed;
    let pod_ep = Endpoint::Pod(xa);
    assert!(v(&Endpoint::External(own), &pod_ep));
    assert!(v(&pod_ep, &Endpoint::External(own)));
    assert!(!v(&Endpoint::External(other), &pod_ep));
    assert!(!v(&pod_ep, &Endpoint::External(other)));
    agree(&s);
}

#[test]
fn new_pod_matching_a_selector_is_covered() {
    let mut s = cluster();
    apply(
        &mut s,
        P::new("x", "deny", sel(&[("pod", "a")])).types(&[Ingress]),
    );
    apply(
        &mut s,
        P::new("x", "from-b", sel(&[("pod", "a")])).ingress(rule(
            vec![pods_peer(Some(sel(&[("pod", "b")])), None)],
            vec![],
        )),
    );
    // A second pod labelled pod=b appears in x, on another node.
    let mut d = make_pod(0, 1);
    d.name = "d".into();
    d.ips = vec!["10.244.3.99".parse().unwrap()];
    d.node = Some("node-3".into());
    s.apply_pod(d);
    let v = allowed(
        &s,
        &Endpoint::Pod(PodKey::new("x", "d")),
        &Endpoint::Pod(PodKey::new("x", "a")),
        Tcp,
        80,
    )
    .unwrap();
    assert!(v.allowed);
    assert_eq!(
        v.ingress_isolated_by,
        vec![PodKey::new("x", "deny"), PodKey::new("x", "from-b")]
    );
    agree(&s);
}

#[test]
fn egress_rules_without_policy_types_isolate_ingress_too() {
    let mut s = cluster();
    let p = P::new("x", "implicit", sel(&[("pod", "a")])).egress(PolicyRule::allow_all());
    let p = p.build();
    assert_eq!(p.policy_types, vec![Ingress, Egress]);
    s.apply_policy(p).unwrap();
    let mut r = Reach::new(true);
    deny_ingress_to_a(&mut r);
    check(&s, 80, Tcp, &r);
}
