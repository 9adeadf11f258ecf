//! Names outside the cluster zone, forwarded to a real authoritative server (NSD, run in the
//! test namespace on 127.0.0.2 with a generated zone): answers relayed as a recursive
//! forwarder does, negative answers with their SOA, the TCP retry for a truncated upstream
//! reply, ExternalName chased through the upstream, the cache serving while the upstream is
//! gone, and SERVFAIL within a bounded time when no upstream answers.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{dig, poll, Fixture, TestNs};
use serde_json::json;

/// NSD in the namespace; killed (by its pid) on drop.
struct Nsd {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nsd {
    fn drop(&mut self) {
        // SIGTERM lets NSD stop its server and xfrd children; SIGKILL only if it hangs.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nsd(ns: &TestNs) -> Nsd {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let big: String = (0..10)
        .map(|i| format!("big IN TXT \"{}\"\n", format!("{i}").repeat(250)))
        .collect();
    std::fs::write(
        dir.path().join("example.test.zone"),
        format!(
            "$ORIGIN example.test.\n$TTL 300\n\
             @ IN SOA ns.example.test. admin.example.test. 1 3600 900 604800 60\n\
             @ IN NS ns\nns IN A 127.0.0.2\nwww IN A 192.0.2.10\nwww IN AAAA 2001:db8::10\n{big}"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("nsd.conf"),
        format!(
            "server:\n  ip-address: 127.0.0.2\n  port: 53\n  username: \"\"\n  chroot: \"\"\n\
             \x20 zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n\
             \x20 xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n\
             \x20 logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 1\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: example.test\n  zonefile: example.test.zone\n"
        ),
    )
    .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nsd", "-d", "-c"])
        .arg(dir.path().join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nsd");
    let nsd = Nsd { child, _dir: dir };
    poll(Duration::from_secs(10), "NSD answers", || {
        let out = ns.exec(
            "dig",
            &[
                "@127.0.0.2",
                "+short",
                "+tries=1",
                "+time=1",
                "www.example.test",
                "A",
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim() == "192.0.2.10"
    });
    nsd
}

fn upstream_fixture(tag: &str) -> (Fixture, Nsd) {
    let fx = Fixture::start(tag, common::settings(vec!["127.0.0.2:53".parse().unwrap()]));
    let nsd = start_nsd(&fx.ns);
    (fx, nsd)
}

#[test]
fn forwarding_relays_answers_negative_answers_and_large_answers() {
    let (fx, _nsd) = upstream_fixture("fwd");
    for t in ["+notcp", "+tcp"] {
        let d = dig(&fx.ns, &["www.example.test", "A", t]);
        assert_eq!(
            (d.status.as_str(), d.data("A")),
            ("NOERROR", vec!["192.0.2.10".to_string()]),
            "{t} {}",
            d.raw
        );
        // A recursive forwarder's flags: RA set, not authoritative, RD echoed.
        assert!(
            d.has_flag("ra") && d.has_flag("rd") && !d.has_flag("aa"),
            "{t} {:?}",
            d.flags
        );
        let d = dig(&fx.ns, &["www.example.test", "AAAA", t]);
        assert_eq!(d.data("AAAA"), ["2001:db8::10"], "{t}");
        let d = dig(&fx.ns, &["nope.example.test", "A", t]);
        assert_eq!(d.status, "NXDOMAIN", "{t} {}", d.raw);
        assert!(
            d.authority
                .iter()
                .any(|r| r.rtype == "SOA" && r.name == "example.test."),
            "{t} {}",
            d.raw
        );
        // NODATA from upstream: NOERROR, empty answer, SOA.
        let d = dig(&fx.ns, &["www.example.test", "MX", t]);
        assert_eq!(
            (d.status.as_str(), d.answer.len()),
            ("NOERROR", 0),
            "{t} {}",
            d.raw
        );
    }
    // 10 × 250-byte TXT records do not fit the forwarder's 1232-byte EDNS payload: NSD
    // truncates, the forwarder asks again over TCP, the client gets all of them.
    let d = dig(&fx.ns, &["big.example.test", "TXT", "+bufsize=4096"]);
    assert_eq!(d.data("TXT").len(), 10, "{}", d.raw);
    assert!(!d.has_flag("tc"));
    // PTR of an address the cluster does not own goes upstream too (NSD refuses it: not its
    // zone, so every upstream failed and the client gets SERVFAIL).
    let d = dig(&fx.ns, &["-x", "192.0.2.99"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
}

#[test]
fn external_name_is_chased_through_the_upstream() {
    let (fx, _nsd) = upstream_fixture("extn");
    fx.create(
        "Service",
        "default",
        json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "www.example.test"}}),
    );
    poll(Duration::from_secs(5), "ExternalName CNAME", || {
        !dig(&fx.ns, &["ext.default.svc.cluster.local", "A"])
            .data("CNAME")
            .is_empty()
    });
    let d = dig(&fx.ns, &["ext.default.svc.cluster.local", "A"]);
    assert_eq!(d.data("CNAME"), ["www.example.test."], "{}", d.raw);
    assert_eq!(d.data("A"), ["192.0.2.10"], "{}", d.raw);
    assert!(d.has_flag("aa"), "the CNAME is the cluster zone's");
}

#[test]
fn cache_answers_without_the_upstream_and_servfail_is_bounded() {
    let (fx, nsd) = upstream_fixture("cache");
    let first = dig(&fx.ns, &["www.example.test", "A"]);
    assert_eq!(first.data("A"), ["192.0.2.10"]);
    assert_eq!(dig(&fx.ns, &["nope.example.test", "A"]).status, "NXDOMAIN");
    drop(nsd); // the upstream is gone
               // Positive and negative answers come from the cache, TTLs not above what was served.
    let d = dig(&fx.ns, &["www.example.test", "A"]);
    assert_eq!(d.data("A"), ["192.0.2.10"], "{}", d.raw);
    assert!(d.answer[0].ttl <= first.answer[0].ttl);
    let d = dig(&fx.ns, &["nope.example.test", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "negative answer cached: {}", d.raw);
    // Not cached, no upstream: SERVFAIL, within the bound.
    let t = Instant::now();
    let d = dig(&fx.ns, &["other.example.test", "A"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let (_, metrics) = fx.http_get("/metrics");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    assert_eq!(value("sarasa_dns_cache_hits_total"), 2.0);
    assert_eq!(value("sarasa_dns_upstream_failures_total"), 1.0);
    assert!(value("sarasa_dns_upstream_duration_seconds_count") >= 2.0);
}
