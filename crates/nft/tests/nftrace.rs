//! Privileged test of live tracing: in a network namespace of its own, the helper table marks
//! one UDP flow for tracing, a real packet is sent, and the subscriber sees the kernel's trace
//! events for the chains it crossed (rule handle and verdict as `nft -a` lists them). Needs
//! root and `nft`; fails (never skips) without them.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use common::Netns;
use sarasa_nft::nftrace::*;
use sarasa_nft::{L4Proto, NftCli};

const APP: &str = "table inet sarasa-t-app {
\tchain in {
\t\ttype filter hook input priority 0; policy accept;
\t\tudp dport 5555 counter accept
\t}
\tchain out {
\t\ttype filter hook output priority 0; policy accept;
\t}
}
";

/// Sends one UDP datagram from inside `ns` to 127.0.0.1:`port`.
fn send_udp(ns: &Netns, port: u16) {
    let path = ns.path();
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.send_to(b"trace me", ("127.0.0.1", port)).unwrap();
        })
        .join()
        .unwrap()
    })
}

fn is_traced_rule(e: &TraceEvent, dport: u16) -> bool {
    e.table == "sarasa-t-app"
        && e.chain == "in"
        && e.kind == TraceKind::Rule
        && e.ports().map(|p| p.1) == Some(dport)
}

#[test]
fn a_marked_packet_reports_every_chain_it_crosses() {
    let ns = Netns::new("sarasa-t");
    let st = std::process::Command::new("ip")
        .args(["-n", &ns.0, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(st.success());
    let nft = NftCli::in_netns(ns.path());
    nft.run_script(APP).expect("app table");
    let flow = TraceMatch {
        saddr: "127.0.0.1".parse().unwrap(),
        daddr: "127.0.0.1".parse().unwrap(),
        proto: L4Proto::Udp,
        dport: Some(5555),
    };
    nft.run_script(&trace_table_script(std::slice::from_ref(&flow)))
        .expect("trace table");
    // Installing twice replaces, not duplicates.
    nft.run_script(&trace_table_script(&[flow]))
        .expect("trace table again");
    let listed = ns.nft(&["-a", "list", "table", "inet", TRACE_TABLE]);
    assert_eq!(listed.matches("meta nftrace set 1").count(), 2, "{listed}");
    assert!(
        listed.contains(&format!("priority {TRACE_PRIORITY}"))
            || listed.contains("priority raw - 50"),
        "{listed}"
    );

    let mut sub = TraceSubscriber::open(Some(Path::new(&ns.path()))).expect("subscribe");
    // A flow the helper does not mark, then the marked one: only the second reports.
    send_udp(&ns, 5556);
    send_udp(&ns, 5555);
    let events = sub
        .collect(Duration::from_secs(10), |evs| {
            evs.iter().any(|e| is_traced_rule(e, 5555))
        })
        .expect("collect");
    let hit = events
        .iter()
        .find(|e| is_traced_rule(e, 5555))
        .unwrap_or_else(|| panic!("no trace of the input rule: {events:#?}"));
    assert_eq!(hit.verdict, Some(TraceVerdict::Accept));
    let lo = "127.0.0.1".parse().unwrap();
    assert_eq!(hit.addresses(), Some((lo, lo)));
    // The rule handle is the one `nft -a` lists for `udp dport 5555 counter accept`.
    let app = ns.nft(&["-a", "list", "chain", "inet", "sarasa-t-app", "in"]);
    let handle: u64 = app
        .lines()
        .find(|l| l.contains("udp dport 5555"))
        .and_then(|l| l.rsplit("# handle ").next())
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no handle in\n{app}"));
    assert_eq!(hit.rule_handle, Some(handle));
    // The same packet, earlier (loopback receives it anew, with a new trace id): the helper
    // rule at output, then the empty output chain's end and policy.
    let first = &events[0];
    assert_eq!(
        (first.table.as_str(), first.chain.as_str(), first.kind),
        (TRACE_TABLE, "output", TraceKind::Rule),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| e.table == "sarasa-t-app"
            && e.chain == "out"
            && e.kind == TraceKind::Policy
            && e.policy_accept == Some(true)),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e.ports().map(|p| p.1) == Some(5556)),
        "an unmarked flow was traced: {events:#?}"
    );
    nft.run_script(&delete_trace_table_script()).unwrap();
    nft.run_script(&delete_trace_table_script())
        .expect("delete is idempotent");
}
