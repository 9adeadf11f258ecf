//! Strings from API objects (policy and Service names in comments, log prefixes, chain and set
//! names) cannot inject nftables commands, whatever the API validated: the renderer quotes and
//! rewrites them itself. Unit checks on the text, and (privileged) the real `nft -f` in a
//! test-made namespace: the rendering loads, nothing else in the namespace is touched, benign
//! comments round-trip exactly and hostile ones come back as rewritten.

mod common;

use common::*;
use sarasa_nft::text::{ident, sanitize, MAX_COMMENT};
use sarasa_nft::*;

const HOSTILE: &[&str] = &[
    "x\" ; flush ruleset ; add table ip pwned ; \"",
    "line\ndelete table inet keep\n",
    "}; add chain inet keep evil { type filter hook input priority 0; policy drop; }; {",
    "semi;colon $var \\back",
];

fn hostile_table() -> Table {
    let mut t = Table::new(Family::Inet, "sarasa-hostile");
    let mut set = Set::new("peers; flush ruleset", vec![DataType::Ipv4Addr]);
    set.comment = Some(HOSTILE[0].into());
    let mut key = Key::one(ip("10.0.0.1"));
    set.insert(key.clone());
    set.elements.get_mut(&key).unwrap().comment = Some(HOSTILE[1].into());
    key = Key::one(ip("10.0.0.2"));
    set.insert(key.clone());
    set.elements.get_mut(&key).unwrap().comment = Some("allow default/web ingress[0]".into());
    t.add_set(set);
    let target = "ing_ns_pod}; flush ruleset; {";
    t.add_chain(
        Chain::base(
            "forward",
            ChainType::Filter,
            Hook::Forward,
            0,
            Policy::Accept,
        )
        .rule(
            Rule::new()
                .eq(
                    Expr::Payload(Field::IpSaddr),
                    Expr::Set("peers; flush ruleset".into()),
                )
                .verdict(Verdict::Jump(target.into()))
                .comment(HOSTILE[2]),
        )
        .rule(
            Rule::new()
                .then(Stmt::Log {
                    prefix: Some(format!("np in {} ", HOSTILE[3])),
                    group: None,
                })
                .comment("a benign comment: ns/name ingress[1]"),
        ),
    );
    t.add_chain(
        Chain::new(target).rule(
            Rule::new()
                .counter()
                .verdict(Verdict::Accept)
                .comment(HOSTILE[3]),
        ),
    );
    t
}

#[test]
fn rendering_keeps_every_hostile_string_inside_its_token() {
    let text = hostile_table().render();
    // One statement per line, as rendered: nothing broke out of a quoted string.
    for l in text.lines() {
        assert!(!l.contains("flush ruleset;") || l.contains('"'), "{l}");
        assert_eq!(l.matches('"').count() % 2, 0, "unbalanced quotes: {l}");
    }
    // The injected commands exist only inside quoted comments: no line starts one.
    for l in text.lines().map(str::trim) {
        for cmd in ["add ", "delete ", "flush "] {
            assert!(!l.starts_with(cmd), "{l}");
        }
    }
    assert_eq!(text.lines().filter(|l| l.starts_with("table ")).count(), 1);
    // Diff commands too.
    let tx = diff(
        &Table::new(Family::Inet, "sarasa-hostile"),
        &hostile_table(),
    );
    for c in &tx.commands {
        assert_eq!(c.matches('"').count() % 2, 0, "{c}");
        assert!(!c.contains('\n'), "{c}");
    }
    assert_eq!(
        sanitize(HOSTILE[1], MAX_COMMENT),
        "line_delete table inet keep_"
    );
    assert!(ident("peers; flush ruleset").starts_with("_peers__flush_ruleset_"));
}

#[test]
fn nft_loads_the_rendering_and_comments_round_trip() {
    let ns = Netns::new("sarasa-th");
    // Something the table must not touch.
    ns.nft(&["add", "table", "inet", "keep"]);
    let mut b = NftCli::in_netns(ns.path());
    let want = hostile_table();
    let tx = b
        .reconcile(&want)
        .unwrap_or_else(|e| panic!("nft -f refused the rendering: {e}"));
    assert!(!tx.is_empty());

    let listing = ns.nft(&["list", "ruleset"]);
    // The other table is untouched (still empty), no table was added.
    assert!(listing.contains("table inet keep {\n}"), "{listing}");
    let tables: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("table "))
        .collect();
    assert_eq!(tables, ["table inet keep {", "table inet sarasa-hostile {"]);
    assert!(
        // The last rule's comment also carries the chain's content hash.
        listing.contains("comment \"a benign comment: ns/name ingress[1] sarasa:"),
        "{listing}"
    );
    assert!(
        listing.contains(&format!(
            "comment \"{}\"",
            sanitize(HOSTILE[2], MAX_COMMENT)
        )),
        "{listing}"
    );
    assert!(
        listing.contains("log prefix \"np in semi;colon _var _back \""),
        "{listing}"
    );

    let k = b
        .list_table(Family::Inet, "sarasa-hostile")
        .unwrap()
        .expect("table listed");
    let set = &k.sets[&*ident("peers; flush ruleset")];
    let benign = &set.elements[&Key::one(ip("10.0.0.2"))];
    assert_eq!(
        benign.comment.as_deref(),
        Some("allow default/web ingress[0]")
    );
    let hostile = &set.elements[&Key::one(ip("10.0.0.1"))];
    assert_eq!(
        hostile.comment.as_deref(),
        Some(&*sanitize(HOSTILE[1], MAX_COMMENT))
    );
}
