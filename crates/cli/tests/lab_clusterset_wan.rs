//! Lab end-to-end: the WAN of a cluster set with delay and loss (`clusterset join
//! --wan-delay/--wan-loss`). Bad values are refused naming the flag, with nothing built; a
//! delay of 20 ms makes the round trip between two site routers at least 40 ms (each crossing
//! delayed once, by the set's delay line) and 0 takes it away again, the line's process with
//! it; a loss of 20% per crossing loses about
//! 36% of pings between the sites (request and reply each cross once), a later join without
//! the flags keeps it, one with `--wan-loss 0%` takes it away; `status` shows the values;
//! `delete` leaves nothing behind.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::clusterset::{ok, refused, status, wan_exists, SetGuard};
use common::TestLab;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn set_name() -> String {
    format!("cw{}", std::process::id())
}

/// The delay line processes of set `set` (`sarasa clusterset run-delay SET`).
fn delay_lines(set: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmd| {
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"run-delay" && w[1] == set.as_bytes())
        })
        .count()
}

/// `ping` (iputils) from namespace `ns` to `ip`: its output.
fn ping(ns: &str, ip: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n"])
        .args(args)
        .arg(ip)
        .output()
        .expect("ping");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The loss of `count` pings 10 ms apart, percent.
fn loss(ns: &str, ip: &str, count: u32) -> f64 {
    let text = ping(
        ns,
        ip,
        &["-q", "-c", &count.to_string(), "-i", "0.01", "-W", "1"],
    );
    let at = text
        .find("% packet loss")
        .unwrap_or_else(|| panic!("ping summary: {text}"));
    let start = text[..at].rfind(' ').map_or(0, |i| i + 1);
    text[start..at]
        .parse()
        .unwrap_or_else(|_| panic!("ping summary: {text}"))
}

/// The minimum round trip of 5 pings, milliseconds.
fn min_rtt(ns: &str, ip: &str) -> Option<f64> {
    let text = ping(ns, ip, &["-q", "-c", "5", "-i", "0.2", "-W", "2"]);
    // rtt min/avg/max/mdev = 40.1/40.3/40.9/0.2 ms
    let stats = text.lines().find(|l| l.contains("min/avg/max"))?;
    stats
        .split('=')
        .nth(1)?
        .trim()
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// Each cluster's WAN address, by cluster id, per `status`.
fn wan_ip(st: &Value, cluster: &str) -> String {
    st["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["clusterId"] == cluster))
        .and_then(|c| c["wanIp"].as_str())
        .unwrap_or_else(|| panic!("{cluster} in {st:#}"))
        .to_string()
}

/// `nft list table bridge sarasa-wan` in the set's WAN namespace (None without the table).
fn loss_table(set: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("sarasa-wan-{set}")])
        .args(["nft", "list", "table", "bridge", "sarasa-wan"])
        .output()
        .expect("nft");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn wan_delay_and_loss_between_two_sites() {
    let t0 = Instant::now();
    let east = TestLab::up(&[
        "--nodes",
        "1",
        "--pod-cidr",
        "10.245.0.0/16",
        "--service-cidr",
        "10.112.0.0/16",
        "--cluster-id",
        "east",
    ]);
    let west = TestLab::up(&["--nodes", "1", "--cluster-id", "west"]);
    eprintln!("labs up after {:?}", t0.elapsed());
    let set = set_name();
    let _guard = SetGuard(set.clone());
    let join = |extra: &[&str], accepted: bool| -> String {
        let mut args = vec![
            "join", &set, "--lab", &east.name, "--lab", &west.name, "--cable", "vxlan",
        ];
        args.extend_from_slice(extra);
        if accepted {
            ok(&args)
        } else {
            refused(&args)
        }
    };

    // Bad values: refused naming the flag, nothing built.
    for (flag, value) in [
        ("--wan-loss", "150%"),
        ("--wan-loss", "-1%"),
        ("--wan-loss", "0.125%"),
        ("--wan-loss", "lots"),
        ("--wan-delay", "20"),
        ("--wan-delay", "-20ms"),
        ("--wan-delay", "20parsecs"),
        ("--wan-delay", "1m"),
    ] {
        // `--flag=value`: a value may start with '-'.
        let e = join(&[&format!("{flag}={value}")], false);
        assert!(e.contains(flag) && e.contains(value), "{flag} {value}: {e}");
        assert!(!wan_exists(&set), "{flag} {value} built the WAN");
    }

    // Each crossing delayed once: a round trip between two sites pays it twice.
    join(&["--wan-delay", "20ms"], true);
    let st = status(&set);
    assert_eq!(st["wan"]["delay"], "20ms", "{st:#}");
    assert_eq!(st["wan"]["delayMs"], 20.0, "{st:#}");
    assert_eq!(delay_lines(&set), 1, "one delay line");
    let (e_ns, w_ip) = (east.fabric_netns(), wan_ip(&st, "west"));
    let rtt = east
        .eventually(WAIT, || min_rtt(&e_ns, &w_ip))
        .expect("east's site router reaches west's");
    eprintln!("RTT between the site routers with --wan-delay 20ms: {rtt} ms");
    assert!((40.0..100.0).contains(&rtt), "{rtt} ms");
    join(&["--wan-delay", "0", "--wan-loss", "20%"], true);
    assert_eq!(delay_lines(&set), 0, "no delay line at 0");
    let nf = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("sarasa-wan-{set}"),
            "sysctl",
            "-n",
        ])
        .arg("net.bridge.bridge-nf-call-iptables")
        .output()
        .expect("sysctl");
    assert_eq!(
        String::from_utf8_lossy(&nf.stdout).trim(),
        "0",
        "without a line, bridged frames skip the IPv4 hooks"
    );
    let rtt = east
        .eventually(WAIT, || min_rtt(&e_ns, &w_ip))
        .expect("east's site router reaches west's");
    eprintln!("RTT between the site routers with --wan-delay 0: {rtt} ms");
    assert!(rtt < 20.0, "{rtt} ms");
    let st = status(&set);
    eprintln!("joined after {:?}", t0.elapsed());
    assert_eq!(st["wan"]["loss"], "20%", "{st:#}");
    assert_eq!(st["wan"]["lossPercent"], 20.0, "{st:#}");
    assert_eq!(st["wan"]["delay"], "0", "{st:#}");
    assert_eq!(st["wan"]["netns"], format!("sarasa-wan-{set}"));
    let table = loss_table(&set).expect("the loss table");
    assert!(
        table.contains("numgen random mod 10000 < 2000 drop"),
        "{table}"
    );
    let text = ok(&["status", &set]);
    assert!(text.contains("delay 0, loss 20% per crossing"), "{text}");

    // 20% per crossing, each ping and its reply crossing once: 1 - 0.8² = 36% lost.
    let (e_ns, w_ip) = (east.fabric_netns(), wan_ip(&st, "west"));
    east.eventually(WAIT, || {
        ping(&e_ns, &w_ip, &["-c", "1", "-W", "1"])
            .contains(" 0% packet loss")
            .then_some(())
    })
    .expect("east's site router reaches west's");
    let lost = loss(&e_ns, &w_ip, 300);
    eprintln!("--wan-loss 20%: {lost}% of 300 pings lost");
    assert!((15.0..=60.0).contains(&lost), "{lost}%");

    // A later join without the flags keeps the set's values; one with them replaces them.
    join(&[], true);
    assert_eq!(status(&set)["wan"]["loss"], "20%");
    join(&["--wan-loss", "0%"], true);
    let st = status(&set);
    assert_eq!(st["wan"]["lossPercent"], 0.0, "{st:#}");
    assert!(loss_table(&set).is_none(), "0% leaves no table");
    let lost = loss(&e_ns, &w_ip, 300);
    eprintln!("--wan-loss 0%: {lost}% of 300 pings lost");
    assert!(lost <= 2.0, "{lost}%");

    ok(&["delete", &set]);
    assert!(!wan_exists(&set));
    assert!(refused(&["status", &set]).contains("does not exist"));
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains(&format!("sarasa-wan-{set}")), "{left}");
    assert_eq!(delay_lines(&set), 0);
    eprintln!("done after {:?}", t0.elapsed());
}
