//! The nf_tables wire format from bytes alone (no socket, no root): fixtures captured from a
//! real kernel by `tests/wire_capture.rs` decode to the same table `nft -j` showed and to the
//! model that was programmed; the model encodes to the very bytes that were sent; what is
//! encoded decodes back to the model; and truncated, garbled or extended buffers give an
//! error or the same table, never a panic.
//!
//! Netlink headers are in host byte order: the fixtures are little-endian.

mod common;

use common::*;
use sarasa_nft::wire::{decode_logs, decode_table, encode_batch};
use sarasa_nft::*;

struct Fixture {
    family: Family,
    name: &'static str,
    model: Table,
    batch: Vec<u8>,
    dump: Vec<u8>,
    json: String,
}

fn fixtures() -> Vec<Fixture> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    [
        (Family::Inet, "varied", varied(Family::Inet, "varied")),
        (Family::Ip6, "varied", varied(Family::Ip6, "varied")),
        (Family::Inet, "datapath", datapath_like("datapath")),
        (Family::Inet, "logged", logged("logged")),
    ]
    .into_iter()
    .map(|(family, name, model)| {
        let base = dir.join(format!("{}-{name}", family.as_str()));
        let read = |ext: &str| {
            let p = base.with_extension(ext);
            std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        Fixture {
            family,
            name,
            batch: read("batch"),
            dump: read("dump"),
            json: String::from_utf8(read("json")).unwrap(),
            model,
        }
    })
    .collect()
}

/// Offsets where the netlink messages of `buf` start, and its end.
fn boundaries(buf: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        at += len.div_ceil(4) * 4;
        out.push(at.min(buf.len()));
    }
    out
}

#[test]
fn captured_dumps_decode_to_what_nft_listed() {
    for f in fixtures() {
        let decoded = decode_table(f.family, f.name, &f.dump).unwrap();
        let json = KernelTable::parse(&f.json, f.family, f.name).unwrap();
        assert_eq!(decoded.as_ref(), Some(&json), "{}", f.name);
        // ... and to the model that was programmed: nothing to change.
        let tx = diff_kernel(decoded.as_ref(), &f.model);
        assert!(
            tx.is_empty(),
            "{} {}: {}",
            f.family.as_str(),
            f.name,
            tx.script()
        );
        // Not some other table.
        assert_eq!(decode_table(f.family, "other", &f.dump).unwrap(), None);
    }
}

#[test]
fn models_encode_to_the_captured_request_bytes() {
    for f in fixtures() {
        let tx = diff_kernel(None, &f.model);
        let bytes = encode_batch(&[(f.family, f.name, &tx)], 1)
            .unwrap()
            .unwrap();
        assert!(
            bytes == f.batch,
            "{} {}: encoding changed ({} bytes, fixture {}); if intended, recapture with \
             `cargo test -p sarasa-nft --test wire_capture -- --ignored`",
            f.family.as_str(),
            f.name,
            bytes.len(),
            f.batch.len()
        );
    }
}

#[test]
fn encoded_batches_decode_back_to_the_model() {
    for f in fixtures() {
        let tx = diff_kernel(None, &f.model);
        let bytes = encode_batch(&[(f.family, f.name, &tx)], 1)
            .unwrap()
            .unwrap();
        let decoded = decode_table(f.family, f.name, &bytes).unwrap();
        assert!(decoded.is_some(), "{}", f.name);
        let again = diff_kernel(decoded.as_ref(), &f.model);
        assert!(again.is_empty(), "{}: {}", f.name, again.script());
    }
}

/// `log` statements by chain, rule order kept within each chain.
fn by_chain(mut logs: Vec<(String, Stmt)>) -> Vec<(String, Stmt)> {
    logs.sort_by(|a, b| a.0.cmp(&b.0));
    logs
}

#[test]
fn log_statements_survive_the_kernel_and_the_encoder() {
    let mut seen = 0;
    for f in fixtures() {
        let want = log_statements(&f.model);
        seen += want.len();
        // What the kernel listed back (its own serialisation of the expressions) ...
        let listed = decode_logs(f.family, f.name, &f.dump).unwrap();
        assert_eq!(by_chain(listed), want, "{} (kernel dump)", f.name);
        // ... and what the encoder sent.
        let sent = decode_logs(f.family, f.name, &f.batch).unwrap();
        assert_eq!(by_chain(sent), want, "{} (captured batch)", f.name);
    }
    assert_eq!(seen, 4, "the logged fixture's four log statements");
    // nft shows them as the model renders them.
    let logged = fixtures().into_iter().find(|f| f.name == "logged").unwrap();
    for needle in [
        r#""prefix": "sarasa-pol I 1a2b3c4d""#,
        r#""group": 100"#,
        r#""prefix": "plain syslog""#,
        r#""group": 7"#,
    ] {
        assert!(logged.json.contains(needle), "{needle} not in nft -j");
    }
}

#[test]
fn every_prefix_decodes_or_fails_cleanly() {
    for f in fixtures() {
        for buf in [&f.dump, &f.batch] {
            let whole = boundaries(buf);
            for n in 0..buf.len() {
                let r = decode_table(f.family, f.name, &buf[..n]);
                if !whole.contains(&n) {
                    assert!(r.is_err(), "{}: prefix of {n} bytes decoded", f.name);
                }
            }
        }
    }
}

#[test]
fn garbled_bytes_never_panic() {
    for f in fixtures() {
        let mut buf = f.dump.clone();
        for i in 0..buf.len() {
            for x in [0xff, 0x01] {
                buf[i] ^= x;
                let _ = decode_table(f.family, f.name, &buf);
                let _ = decode_logs(f.family, f.name, &buf);
                buf[i] ^= x;
            }
        }
    }
}

#[test]
fn unknown_attributes_are_skipped() {
    for f in fixtures() {
        // An attribute of a type no kernel has sent yet, appended to every message.
        let extra = [8u8, 0, 0xf0, 0x3f, 1, 2, 3, 4];
        let mut out = Vec::with_capacity(f.dump.len() * 2);
        let b = boundaries(&f.dump);
        for w in b.windows(2) {
            let msg = &f.dump[w[0]..w[1]];
            let len = u32::from_ne_bytes(msg[..4].try_into().unwrap()) as usize;
            let mut m = msg[..len].to_vec();
            // Only nf_tables messages carry attributes after the 4-byte nfgenmsg.
            if u16::from_ne_bytes([m[4], m[5]]) >> 8 == 10 {
                m.extend_from_slice(&extra);
                let new_len = (m.len() as u32).to_ne_bytes();
                m[..4].copy_from_slice(&new_len);
            }
            out.extend_from_slice(&m);
        }
        assert_eq!(
            decode_table(f.family, f.name, &out).unwrap(),
            decode_table(f.family, f.name, &f.dump).unwrap(),
            "{}",
            f.name
        );
    }
}
