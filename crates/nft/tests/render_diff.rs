//! Pure tests: golden rendering and diffs between models.

mod common;

use common::*;
use sarasa_nft::*;

fn golden(name: &str, actual: &str) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run with UPDATE_GOLDEN=1 to create)"));
    assert_eq!(actual, expected, "golden {name} differs");
}

#[test]
fn renders_sample_table() {
    golden("sample.nft", &sample().render());
}

#[test]
fn diff_from_nothing_creates_everything() {
    let tx = diff_kernel(None, &sample());
    golden("sample-create.nft", &tx.script());
    assert!(tx.commands[0].starts_with("add table inet sarasa"));
    assert_eq!(tx.chains_written.len(), 6);
}

#[test]
fn identical_models_give_empty_transaction() {
    assert!(diff(&sample(), &sample()).is_empty());
}

#[test]
fn changed_chain_is_flushed_and_refilled_only() {
    let old = sample();
    let mut new = sample();
    new.add_chain(ep_chain("ep-a2", "10.244.2.6", 8080));
    let tx = diff(&old, &new);
    assert_eq!(tx.chains_written.iter().collect::<Vec<_>>(), ["ep-a2"]);
    assert!(tx.chains_deleted.is_empty());
    assert_eq!(tx.commands[0], "flush chain inet sarasa ep-a2");
    assert_eq!(tx.commands.len(), 3);
    assert!(!tx.script().contains("flush table"));
}

#[test]
fn element_changes_are_minimal() {
    let old = sample();
    let mut new = sample();
    let m = new.sets.get_mut("services-v4").unwrap();
    m.elements.remove(&svc_key("10.96.0.11", L4Proto::Udp, 53));
    m.insert_verdict(
        svc_key("10.96.0.10", L4Proto::Tcp, 80),
        Verdict::Goto("svc-b".into()),
    );
    m.insert_verdict(
        svc_key("10.96.0.12", L4Proto::Tcp, 443),
        Verdict::Goto("svc-a".into()),
    );
    let tx = diff(&old, &new);
    assert_eq!(
        tx.commands,
        [
            "delete element inet sarasa services-v4 { 10.96.0.10 . tcp . 80, 10.96.0.11 . udp . 53 }",
            "add element inet sarasa services-v4 { 10.96.0.10 . tcp . 80 : goto svc-b, 10.96.0.12 . tcp . 443 : goto svc-a }",
        ]
    );
}

#[test]
fn removed_chain_is_unhooked_before_deletion() {
    let old = sample();
    let mut new = sample();
    new.chains.remove("svc-b");
    new.sets
        .get_mut("services-v4")
        .unwrap()
        .elements
        .remove(&svc_key("10.96.0.11", L4Proto::Udp, 53));
    let tx = diff(&old, &new);
    assert_eq!(
        tx.commands,
        [
            "flush chain inet sarasa svc-b",
            "delete element inet sarasa services-v4 { 10.96.0.11 . udp . 53 }",
            "delete chain inet sarasa svc-b",
        ]
    );
}

#[test]
fn dynamic_set_elements_are_left_to_the_datapath() {
    let old = sample();
    let mut new = sample();
    new.sets
        .get_mut("aff-a")
        .unwrap()
        .insert(Key::one("1.2.3.4".parse::<std::net::IpAddr>().unwrap()));
    assert!(diff(&old, &new).is_empty());
}

#[test]
fn redeclared_set_is_remade_and_its_users_refilled() {
    let old = sample();
    let mut new = sample();
    new.sets.get_mut("cluster-cidrs").unwrap().comment = Some("other".into());
    let tx = diff(&old, &new);
    assert!(tx.sets_deleted.contains("cluster-cidrs"));
    assert!(tx.sets_written.contains("cluster-cidrs"));
    assert_eq!(tx.chains_written.iter().collect::<Vec<_>>(), ["svc-a"]);
    let flush = tx
        .commands
        .iter()
        .position(|c| c == "flush chain inet sarasa svc-a")
        .unwrap();
    let del = tx
        .commands
        .iter()
        .position(|c| c == "delete set inet sarasa cluster-cidrs")
        .unwrap();
    assert!(flush < del);
}

#[test]
fn redefined_base_chain_is_deleted_and_re_added() {
    let old = sample();
    let mut new = sample();
    new.chains
        .get_mut("nat-prerouting")
        .unwrap()
        .base
        .as_mut()
        .unwrap()
        .priority = -99;
    let tx = diff(&old, &new);
    assert!(tx.chains_deleted.contains("nat-prerouting"));
    assert!(tx.commands.contains(
        &"add chain inet sarasa nat-prerouting { type nat hook prerouting priority -99; policy accept; }".to_string()
    ));
}

#[test]
fn validation_names_the_fault() {
    let mut t = sample();
    t.add_chain(Chain::new("x").rule(Rule::new().verdict(Verdict::Jump("nowhere".into()))));
    assert!(t.validate().unwrap_err().to_string().contains("nowhere"));
    let mut t = sample();
    t.add_chain(Chain::new("9bad"));
    assert!(matches!(t.validate(), Err(NftError::InvalidName(_))));
    let mut t = sample();
    t.sets.get_mut("services-v4").unwrap().insert_verdict(
        Key::one("10.0.0.1".parse::<std::net::IpAddr>().unwrap()),
        Verdict::Accept,
    );
    assert!(t
        .validate()
        .unwrap_err()
        .to_string()
        .contains("services-v4"));
    let mut t = sample();
    t.sets.get_mut("cluster-cidrs").unwrap().comment = Some("a \"quoted\" one".into());
    assert!(matches!(t.validate(), Err(NftError::InvalidComment(_))));
}

#[test]
fn recording_backend_reconciles() {
    let mut b = Recording::default();
    let tx = b.reconcile(&sample()).unwrap();
    assert_eq!(b.scripts, [tx.script()]);
}
