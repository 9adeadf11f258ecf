//! Captures the wire-format fixtures of `tests/wire.rs` from the running kernel: programs each
//! representative table into a scratch network namespace through the netlink backend, and
//! saves the batch it sent (`.batch`), the raw replies of reading the table back (`.dump`)
//! and `nft -j list table` (`.json`). Privileged and rewriting committed files, so ignored by
//! default; refresh with `cargo test -p sarasa-nft --test wire_capture -- --ignored` and
//! review the diff.

mod common;

use common::*;
use sarasa_nft::wire::{decode_table, encode_batch};
use sarasa_nft::*;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
#[ignore = "needs root (a scratch netns); rewrites tests/fixtures"]
fn capture_fixtures() {
    for (family, name, table) in [
        (Family::Inet, "varied", varied(Family::Inet, "varied")),
        (Family::Ip6, "varied", varied(Family::Ip6, "varied")),
        (Family::Inet, "datapath", datapath_like("datapath")),
        (Family::Inet, "logged", logged("logged")),
    ] {
        let ns = Netns::new("sarasa-t");
        let mut nl = NetlinkBackend::in_netns(ns.path()).unwrap();
        let tx = diff_kernel(None, &table);

        nl.capture();
        nl.apply_to(family, name, &tx)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let sent = nl.take_capture().sent;
        // A fresh backend numbers its first batch from 1: what `tests/wire.rs` encodes.
        assert_eq!(
            encode_batch(&[(family, name, &tx)], 1).unwrap().unwrap(),
            sent
        );

        nl.capture();
        let listed = nl.list_table(family, name).unwrap();
        let dump = nl.take_capture().received;
        let json = ns.nft(&["-j", "list", "table", family.as_str(), name]);
        assert_eq!(decode_table(family, name, &dump).unwrap(), listed);
        assert_eq!(
            listed,
            Some(KernelTable::parse(&json, family, name).unwrap())
        );

        let base = fixtures().join(format!("{}-{name}", family.as_str()));
        std::fs::write(base.with_extension("batch"), &sent).unwrap();
        std::fs::write(base.with_extension("dump"), &dump).unwrap();
        std::fs::write(base.with_extension("json"), &json).unwrap();
    }
}
