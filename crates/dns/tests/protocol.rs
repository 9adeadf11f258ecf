//! Protocol behaviour on the wire: EDNS(0), truncation (TC over UDP, complete over TCP), and
//! every error class (FORMERR, NOTIMP, REFUSED, BADVERS) — with `dig` where it can send the
//! request, raw UDP packets where it cannot — and a fuzz run of random and mutated packets
//! after which the server still answers.

mod common;

use std::time::Duration;

use common::{dig, poll, Fixture};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// A query packet: id, flags, the question count as written, one question
/// (`name`/`qtype`/`qclass`) repeated `questions` times.
fn packet(
    id: u16,
    opcode: u8,
    questions: u16,
    labels: &[&[u8]],
    qtype: u16,
    qclass: u16,
) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.push((opcode << 3) | 0x01); // RD
    p.push(0);
    p.extend_from_slice(&questions.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    for _ in 0..questions.max(1) {
        for l in labels {
            p.push(l.len() as u8);
            p.extend_from_slice(l);
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&qclass.to_be_bytes());
    }
    p
}

const WEB: &[&[u8]] = &[b"kubernetes", b"default", b"svc", b"cluster", b"local"];

/// Sends one packet over UDP in the namespace; the reply's (id, flags byte 2, rcode) or None.
fn exchange(fx: &Fixture, p: Vec<u8>) -> Option<(u16, u8, u8, Vec<u8>)> {
    fx.run(async move {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&p, "127.0.0.1:53").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        buf.truncate(n);
        (n >= 12).then(|| {
            (
                u16::from_be_bytes([buf[0], buf[1]]),
                buf[2],
                buf[3] & 0x0f,
                buf.clone(),
            )
        })
    })
}

const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const NOTIMP: u8 = 4;
const REFUSED: u8 = 5;

#[test]
fn error_classes_get_their_rcodes_and_the_server_keeps_serving() {
    let fx = Fixture::start("proto", common::settings(vec![]));
    // A valid query first (the `kubernetes` Service the API server makes).
    let (id, flags, rcode, _) = exchange(&fx, packet(7, 0, 1, WEB, 1, 1)).expect("answer");
    assert_eq!((id, rcode), (7, NOERROR));
    assert!(
        flags & 0x80 != 0 && flags & 0x04 != 0,
        "QR and AA set: {flags:#x}"
    );

    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        ("two questions", packet(1, 0, 2, WEB, 1, 1), FORMERR),
        (
            "no question",
            packet(2, 0, 0, &[], 1, 1)[..12].to_vec(),
            FORMERR,
        ),
        ("opcode STATUS", packet(3, 2, 1, WEB, 1, 1), NOTIMP),
        ("opcode NOTIFY", packet(4, 4, 1, WEB, 6, 1), NOTIMP),
        ("opcode UPDATE", packet(5, 5, 1, WEB, 6, 1), NOTIMP),
        ("class CH", packet(6, 0, 1, WEB, 1, 3), NOTIMP),
        ("class 999", packet(8, 0, 1, WEB, 1, 999), NOTIMP),
        (
            "AXFR",
            packet(9, 0, 1, &[b"cluster", b"local"], 252, 1),
            REFUSED,
        ),
        (
            "IXFR",
            packet(10, 0, 1, &[b"cluster", b"local"], 251, 1),
            REFUSED,
        ),
        (
            "label of 64 bytes",
            packet(11, 0, 1, &[&[b'a'; 64]], 1, 1),
            FORMERR,
        ),
        (
            "name over 255 bytes",
            packet(12, 0, 1, &[&[b'a'; 63][..]; 5], 1, 1),
            FORMERR,
        ),
        (
            "question cut short",
            packet(13, 0, 1, WEB, 1, 1)[..20].to_vec(),
            FORMERR,
        ),
        ("unknown type", packet(14, 0, 1, WEB, 65280, 1), NOERROR),
    ];
    for (what, p, want) in cases {
        let got = exchange(&fx, p);
        let (_, flags, rcode, reply) = got.unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(rcode, want, "{what}: {reply:?}");
        assert!(flags & 0x80 != 0, "{what}: QR");
    }
    // Shorter than a header: dropped (nothing to answer to).
    assert!(exchange(&fx, vec![0, 1, 2]).is_none());
    // A response (QR set) is never answered (no reflection).
    let mut response = packet(15, 0, 1, WEB, 1, 1);
    response[2] |= 0x80;
    assert!(exchange(&fx, response).is_none());

    // dig's view of the same classes.
    let d = dig(&fx.ns, &["-c", "CH", "version.bind", "TXT"]);
    assert_eq!(d.status, "NOTIMP", "{}", d.raw);
    let out = fx.ns.exec(
        "dig",
        &["@127.0.0.1", "+tries=1", "+time=3", "cluster.local", "AXFR"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Transfer failed") || text.contains("REFUSED"),
        "{text}"
    );
    let d = dig(
        &fx.ns,
        &["+opcode=status", "kubernetes.default.svc.cluster.local"],
    );
    assert_eq!(d.status, "NOTIMP", "{}", d.raw);
    let d = dig(
        &fx.ns,
        &["kubernetes.default.svc.cluster.local", "TYPE65280"],
    );
    assert_eq!(
        (d.status.as_str(), d.answer.len()),
        ("NOERROR", 0),
        "{}",
        d.raw
    );
}

#[test]
fn edns_is_answered_in_kind_and_badvers_for_newer_versions() {
    let fx = Fixture::start("edns", common::settings(vec![]));
    let name = "kubernetes.default.svc.cluster.local";
    let d = dig(&fx.ns, &[name, "+edns=0", "+bufsize=1400"]);
    assert_eq!(d.status, "NOERROR");
    let opt = d
        .opt
        .unwrap_or_else(|| panic!("no OPT in reply: {}", d.raw));
    assert!(
        opt.contains("version: 0") && opt.contains("udp: 1400"),
        "{opt}"
    );
    let d = dig(&fx.ns, &[name, "+noedns"]);
    assert!(d.opt.is_none(), "OPT without EDNS in the query: {}", d.raw);
    assert_eq!(d.status, "NOERROR");
    let d = dig(&fx.ns, &[name, "+edns=1", "+noednsneg"]);
    assert_eq!(d.status, "BADVERS", "{}", d.raw);
    assert!(
        d.opt.as_deref().is_some_and(|o| o.contains("version: 0")),
        "{}",
        d.raw
    );
    assert!(d.answer.is_empty());
}

#[test]
fn large_answers_are_truncated_over_udp_and_complete_over_tcp() {
    let fx = Fixture::start("trunc", common::settings(vec![]));
    fx.create(
        "Service",
        "default",
        json!({"metadata": {"name": "many"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
    );
    let endpoints: Vec<_> = (1..=60)
        .map(|i| json!({"addresses": [format!("10.244.9.{i}")], "conditions": {"ready": true}}))
        .collect();
    fx.create(
        "EndpointSlice",
        "default",
        json!({"metadata": {"name": "many-1", "labels": {"kubernetes.io/service-name": "many"}},
               "addressType": "IPv4", "endpoints": endpoints, "ports": [{"port": 80}]}),
    );
    let name = "many.default.svc.cluster.local";
    poll(Duration::from_secs(10), "60 endpoints over TCP", || {
        dig(&fx.ns, &[name, "A", "+tcp"]).answer.len() == 60
    });
    // 60 A records (~16 bytes each with compression) do not fit 512 bytes: TC, no partial RRset.
    let d = dig(&fx.ns, &[name, "A", "+noedns", "+ignore"]);
    assert!(d.has_flag("tc"), "{}", d.raw);
    assert!(d.answer.is_empty(), "no partial RRset: {}", d.raw);
    // With EDNS the client's payload size is honoured.
    let d = dig(&fx.ns, &[name, "A", "+bufsize=4096", "+ignore"]);
    assert!(!d.has_flag("tc"), "{}", d.raw);
    assert_eq!(d.answer.len(), 60);
    let d = dig(&fx.ns, &[name, "A", "+bufsize=512", "+ignore"]);
    assert!(d.has_flag("tc"), "{}", d.raw);
    // dig retries a truncated UDP answer over TCP by default and gets all of it.
    let d = dig(&fx.ns, &[name, "A", "+noedns"]);
    assert_eq!(d.answer.len(), 60, "{}", d.raw);
    assert!(!d.has_flag("tc"));
}

#[test]
fn fuzz_random_and_mutated_packets_do_not_stop_the_server() {
    let fx = Fixture::start("fuzz", common::settings(vec![]));
    let seeds: Vec<Vec<u8>> = vec![
        packet(1, 0, 1, WEB, 1, 1),
        packet(
            2,
            0,
            1,
            &[
                b"_https",
                b"_tcp",
                b"kubernetes",
                b"default",
                b"svc",
                b"cluster",
                b"local",
            ],
            33,
            1,
        ),
        packet(
            3,
            0,
            1,
            &[b"1", b"0", b"96", b"10", b"in-addr", b"arpa"],
            12,
            1,
        ),
        packet(4, 0, 1, &[b"nope", b"cluster", b"local"], 28, 1),
        // With an OPT record (EDNS0, payload 1232).
        {
            let mut p = packet(5, 0, 1, WEB, 1, 1);
            p[11] = 1;
            p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
            p
        },
    ];
    const PACKETS: usize = 100_000;
    let sent = fx.run(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5a5a_d05e);
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.connect("127.0.0.1:53").await.unwrap();
        let mut buf = vec![0u8; 65535];
        let mut replies = 0usize;
        for i in 0..PACKETS {
            let p: Vec<u8> = if i % 4 == 0 {
                let len = rng.random_range(0..600);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut p = seeds[i % seeds.len()].clone();
                for _ in 0..rng.random_range(1..6) {
                    match rng.random_range(0..4) {
                        0 => {
                            let at = rng.random_range(0..p.len());
                            p[at] = rng.random();
                        }
                        1 => {
                            let at = rng.random_range(0..p.len());
                            p[at] ^= 1 << rng.random_range(0..8);
                        }
                        2 => p.truncate(rng.random_range(0..p.len().max(1))),
                        _ => p.extend((0..rng.random_range(1..40)).map(|_| rng.random::<u8>())),
                    }
                    if p.is_empty() {
                        p.push(0);
                    }
                }
                p
            };
            let _ = s.send(&p).await;
            // Drain what came back so far (keeps the socket buffer from filling).
            while let Ok(n) = s.try_recv(&mut buf) {
                let _ = n;
                replies += 1;
            }
            if i % 256 == 0 {
                tokio::task::yield_now().await;
            }
        }
        (PACKETS, replies)
    });
    assert_eq!(sent.0, PACKETS);
    assert!(sent.1 > 0, "the server answered none of the fuzz packets");
    assert!(!fx.dns.is_finished(), "the server stopped");
    poll(
        Duration::from_secs(10),
        "answers after the fuzz run",
        || {
            exchange(&fx, packet(99, 0, 1, WEB, 1, 1))
                .is_some_and(|(id, _, rcode, _)| id == 99 && rcode == NOERROR)
        },
    );
    let d = dig(
        &fx.ns,
        &["kubernetes.default.svc.cluster.local", "A", "+tcp"],
    );
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    eprintln!("fuzz: {} packets sent, {} replies read", sent.0, sent.1);
}
