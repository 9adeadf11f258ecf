//! Decoding tests from captured bytes: the kernel's trace messages for one UDP datagram to
//! 127.0.0.1:5555 in a namespace with the helper table and a small app table (captured by
//! `tests/nftrace.rs`'s setup, one datagram per line, hex).

use super::*;

const CAPTURED: &str = include_str!("testdata/loopback-udp.hex");

fn datagrams() -> Vec<Vec<u8>> {
    CAPTURED
        .lines()
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn captured_trace_messages_decode_to_the_chains_the_packet_crossed() {
    let events: Vec<TraceEvent> = datagrams()
        .iter()
        .flat_map(|d| parse_trace_messages(d).unwrap())
        .collect();
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}/{} {:?} {:?} {:?} {:?}",
                e.table, e.chain, e.kind, e.rule_handle, e.verdict, e.policy_accept
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            "sarasa-trace/output Rule Some(4) Some(Continue) None",
            // The end of a chain's rules: a rule event without a handle.
            "sarasa-trace/output Rule None Some(Continue) None",
            "sarasa-trace/output Policy None None Some(true)",
            "sarasa-t-app/out Rule None Some(Continue) None",
            "sarasa-t-app/out Policy None None Some(true)",
            "sarasa-trace/prerouting Rule Some(3) Some(Continue) None",
            "sarasa-trace/prerouting Rule None Some(Continue) None",
            "sarasa-trace/prerouting Policy None None Some(true)",
            "sarasa-t-app/in Rule Some(3) Some(Accept) None",
        ]
    );
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.addresses(), Some((lo, lo)));
    assert_eq!(last.ports().map(|p| p.1), Some(5555));
    assert_eq!(
        (last.family, last.nfproto),
        (1, Some(2)),
        "inet table, IPv4 packet"
    );
    // One packet, one id per pass through the stack (loopback receives it anew).
    assert!(events[..5].iter().all(|e| e.id == events[0].id));
    assert!(events[5..].iter().all(|e| e.id == events[5].id));
}

#[test]
fn other_messages_are_skipped_and_truncation_is_an_error() {
    let d = &datagrams()[0];
    // An NLMSG_DONE in front of the trace message: skipped.
    let mut done = vec![
        20u8, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    done.extend_from_slice(d);
    assert_eq!(parse_trace_messages(&done).unwrap().len(), 1);
    assert!(parse_trace_messages(&d[..d.len() - 9]).is_err());
}

#[test]
fn the_helper_table_marks_only_the_flow() {
    let flow = TraceMatch {
        saddr: "10.244.1.5".parse().unwrap(),
        daddr: "10.96.0.10".parse().unwrap(),
        proto: crate::L4Proto::Tcp,
        dport: Some(80),
    };
    let s = trace_table_script(&[flow]);
    assert!(
        s.starts_with("table inet sarasa-trace\ndelete table inet sarasa-trace\n"),
        "{s}"
    );
    assert_eq!(
        s.matches("ip saddr 10.244.1.5 ip daddr 10.96.0.10 meta l4proto tcp th dport 80 meta nftrace set 1").count(),
        2,
        "{s}"
    );
    assert!(
        s.contains("type filter hook prerouting priority -350;"),
        "{s}"
    );
    assert!(s.contains("type filter hook output priority -350;"), "{s}");
    let icmp6 = TraceMatch {
        saddr: "fd00::1".parse().unwrap(),
        daddr: "fd00::2".parse().unwrap(),
        proto: crate::L4Proto::Icmpv6,
        dport: Some(1),
    };
    let s = trace_table_script(&[icmp6]);
    assert!(
        s.contains("ip6 saddr fd00::1 ip6 daddr fd00::2 meta l4proto ipv6-icmp meta nftrace set 1"),
        "{s}"
    );
}
