//! Real kernel behaviour (root): UDP conntrack entries made by real datagrams between two
//! scratch namespaces are listed and deleted over ctnetlink; an unrelated entry survives.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sarasa_conntrack::wire::{Family, IPPROTO_UDP};
use sarasa_conntrack::{Conntrack, Entry, Filter};

/// A network namespace made by the test and removed on drop, also when the test fails.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "sarasa-t{}-ct{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name]);
        Netns(name)
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.0))
    }
    fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend_from_slice(args);
        run("ip", &a);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} (are we root?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread inside the namespace at `path`.
fn in_netns<R: Send>(path: &Path, f: impl FnOnce() -> R + Send) -> R {
    let file = std::fs::File::open(path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// Client `a` (10.99.0.1) and server `b` (10.99.0.2) on a veth pair; `b` tracks connections
/// (an nft rule using conntrack) and listens on UDP 5353 and 5354 (so no ICMP error ends the
/// exchange).
struct Pair {
    a: Netns,
    b: Netns,
    _listeners: Vec<UdpSocket>,
}

fn pair() -> Pair {
    let a = Netns::new("a");
    let b = Netns::new("b");
    a.ip(&[
        "link", "add", "ct-a", "type", "veth", "peer", "name", "ct-b", "netns", &b.0,
    ]);
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", "ct-a"]);
    a.ip(&["link", "set", "ct-a", "up"]);
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", "ct-b"]);
    b.ip(&["link", "set", "ct-b", "up"]);
    run(
        "ip",
        &[
            "netns", "exec", &b.0, "nft",
            "add table inet t; add chain inet t in { type filter hook input priority 0; }; add rule inet t in ct state new counter",
        ],
    );
    let listeners = in_netns(&b.path(), || {
        [5353, 5354]
            .map(|p| UdpSocket::bind(("10.99.0.2", p)).unwrap())
            .into()
    });
    Pair {
        a,
        b,
        _listeners: listeners,
    }
}

fn send_from(ns: &Netns, to: &str) {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(&ns.path(), || {
        let s = UdpSocket::bind("10.99.0.1:0").unwrap();
        s.send_to(b"hi", to).unwrap();
    });
}

fn udp_to(ct: &mut Conntrack, port: u16) -> Vec<Entry> {
    ct.list(Family::V4)
        .unwrap()
        .into_iter()
        .filter(|e| e.orig.proto == IPPROTO_UDP && e.orig.dst_port == Some(port))
        .collect()
}

/// Polls until the entries to both ports exist (bounded).
fn wait_entries(ct: &mut Conntrack, ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ports.iter().any(|p| udp_to(ct, *p).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "no conntrack entries for {ports:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn deletes_the_matching_udp_entry_and_keeps_the_unrelated_one() {
    let p = pair();
    send_from(&p.a, "10.99.0.2:5353");
    send_from(&p.a, "10.99.0.2:5354");
    // Opened from outside: the socket lives in b, the test process stays where it is.
    let mut ct = Conntrack::open(Some(&p.b.path())).unwrap();
    wait_entries(&mut ct, &[5353, 5354]);
    let e = udp_to(&mut ct, 5353)[0];
    assert_eq!(e.orig.src, "10.99.0.1".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(
        e.reply.src,
        "10.99.0.2".parse::<std::net::IpAddr>().unwrap()
    );

    let stale = Filter {
        family: Family::V4,
        proto: IPPROTO_UDP,
        orig_dst: Some("10.99.0.2".parse().unwrap()),
        orig_dst_port: Some(5353),
        reply_src: None,
    };
    assert_eq!(ct.delete_matching(&stale).unwrap(), 1);
    assert!(udp_to(&mut ct, 5353).is_empty(), "the entry survived");
    assert_eq!(udp_to(&mut ct, 5354).len(), 1, "the unrelated entry went");
    // Deleting again finds nothing; a gone entry is not an error.
    assert_eq!(ct.delete_matching(&stale).unwrap(), 0);
    assert!(!ct.delete(&e).unwrap());

    // --reply-src: another endpoint's entries are left alone, this one's go.
    let other_ep = Filter {
        orig_dst_port: Some(5354),
        reply_src: Some("10.99.0.3".parse().unwrap()),
        ..stale
    };
    assert_eq!(ct.delete_matching(&other_ep).unwrap(), 0);
    assert_eq!(udp_to(&mut ct, 5354).len(), 1);
    let this_ep = Filter {
        reply_src: Some("10.99.0.2".parse().unwrap()),
        ..other_ep
    };
    assert_eq!(ct.delete_matching(&this_ep).unwrap(), 1);
    assert!(udp_to(&mut ct, 5354).is_empty());

    // The client's namespace tracks nothing (no conntrack hook there): its table is empty,
    // and a socket there sees only its own namespace's entries.
    let mut in_a = Conntrack::open(Some(&p.a.path())).unwrap();
    assert!(in_a.list(Family::V4).unwrap().is_empty());
}
