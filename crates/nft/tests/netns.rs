//! Privileged tests: apply rulesets with the real `nft` inside a test-made network namespace.
//! They need root and the `nft`, `ip` and `nsenter` tools; they fail (never skip) without them.

mod common;

use common::*;
use sarasa_nft::*;

impl Netns {
    fn backend(&self) -> NftCli {
        NftCli::in_netns(self.path())
    }
}

#[test]
fn apply_then_read_back_gives_empty_diff() {
    let ns = Netns::new("sarasa-t");
    let mut b = ns.backend();
    assert!(b.list_table(Family::Inet, "sarasa").unwrap().is_none());
    let want = sample();
    let tx = b.reconcile(&want).unwrap();
    assert!(!tx.is_empty());
    let k = b.list_table(Family::Inet, "sarasa").unwrap().unwrap();
    assert_eq!(
        k.sets["services-v4"].elements,
        want.sets["services-v4"].elements
    );
    assert_eq!(
        k.sets["cluster-cidrs"].elements,
        want.sets["cluster-cidrs"].elements
    );
    let again = diff_kernel(Some(&k), &want);
    assert!(
        again.is_empty(),
        "second diff not empty:\n{}",
        again.script()
    );
}

#[test]
fn incremental_diffs_apply_and_match_the_kernel() {
    let ns = Netns::new("sarasa-t");
    let mut b = ns.backend();
    let old = sample();
    b.reconcile(&old).unwrap();
    // The datapath adds an affinity element; it must survive the updates below.
    ns.nft(&[
        "add",
        "element",
        "inet",
        "sarasa",
        "aff-a",
        "{ 192.0.2.1 timeout 1h }",
    ]);

    let mut new = sample();
    new.add_chain(ep_chain("ep-a2", "10.244.2.6", 8080));
    new.chains.remove("svc-b");
    let m = new.sets.get_mut("services-v4").unwrap();
    m.elements.remove(&svc_key("10.96.0.11", L4Proto::Udp, 53));
    m.insert_verdict(
        svc_key("10.96.0.10", L4Proto::Tcp, 80),
        Verdict::Jump("ep-a1".into()),
    );
    new.sets.get_mut("cluster-cidrs").unwrap().comment = Some("redeclared".into());
    let tx = diff(&old, &new);
    b.apply(&tx)
        .unwrap_or_else(|e| panic!("{e}\n{}", tx.script()));

    let k = b.list_table(Family::Inet, "sarasa").unwrap().unwrap();
    assert!(!k.chains.contains_key("svc-b"));
    assert_eq!(
        k.sets["services-v4"].elements,
        new.sets["services-v4"].elements
    );
    assert_eq!(k.sets["aff-a"].elements.len(), 1, "affinity element lost");
    let rest = diff_kernel(Some(&k), &new);
    assert!(
        rest.is_empty(),
        "kernel differs from model:\n{}",
        rest.script()
    );
    // A chain changed behind our back is detected and rewritten.
    ns.nft(&["add", "rule", "inet", "sarasa", "ep-a1", "counter"]);
    let k = b.list_table(Family::Inet, "sarasa").unwrap().unwrap();
    let fix = diff_kernel(Some(&k), &new);
    assert_eq!(fix.chains_written.iter().collect::<Vec<_>>(), ["ep-a1"]);
    b.apply(&fix).unwrap();
    let listing = ns.nft(&["list", "chain", "inet", "sarasa", "ep-a1"]);
    assert!(!listing.contains("counter packets"), "{listing}");
}

#[test]
fn nft_errors_are_reported() {
    let ns = Netns::new("sarasa-t");
    let err = ns
        .backend()
        .run_script("add rule inet nosuch table counter\n")
        .unwrap_err();
    assert!(matches!(err, NftError::Nft { .. }), "{err}");
}
