//! The lab's external name server, end to end: NSD started as the lab starts it (config and
//! zone from `sarasa_lab::nsd`, a `Daemon` in a network namespace) answers every record of the
//! zone to the real `dig`, over UDP and TCP, with NXDOMAIN + SOA for a missing name. Needs root
//! and Debian's `nsd` and `dig`; the namespace `sarasa-t<pid>-nsd` is deleted by a Drop guard.

use std::process::Command;
use std::time::Duration;

use sarasa_lab::process::{Daemon, ProcessRecord};
use sarasa_netns::{NetNs, Netlink};

const IP: &str = "203.0.113.10";

struct Guard {
    netns: String,
    nsd: Option<ProcessRecord>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.nsd.take() {
            let _ = p.stop(Duration::from_secs(2));
        }
        let _ = NetNs::delete(&self.netns);
    }
}

fn dig(netns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "dig",
            "@203.0.113.10",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("running dig (dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nsd_serves_the_lab_zone_over_udp_and_tcp() {
    let name = format!("sarasa-t{}-nsd", std::process::id());
    let mut guard = Guard {
        netns: name.clone(),
        nsd: None,
    };
    let ns = NetNs::create(&name).expect("create netns (needs root)");
    ns.run(|| {
        let mut nl = Netlink::current().expect("netlink");
        let lo = nl.link("lo").expect("lo");
        nl.set_up(lo.index).expect("lo up");
    })
    .expect("enter netns");
    let status = Command::new("ip")
        .args(["-n", &name, "addr", "add", &format!("{IP}/32"), "dev", "lo"])
        .status()
        .expect("ip addr add");
    assert!(status.success());

    let dir = tempfile::tempdir().expect("tempdir");
    let (program, args) = sarasa_lab::nsd::prepare(dir.path(), IP.parse().unwrap()).expect("nsd");
    let netns_path = std::path::PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&name);
    guard.nsd = Some(
        Daemon {
            program,
            args,
            env: Vec::new(),
            netns: Some(&netns_path),
            mounts: &[],
            log: dir.path().join("nsd.log"),
        }
        .spawn()
        .expect("start nsd"),
    );
    sarasa_lab::nsd::wait_answering(&name, IP.parse().unwrap(), Duration::from_secs(10))
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                std::fs::read_to_string(dir.path().join("nsd.log")).unwrap_or_default()
            )
        });
    assert!(dir.path().join("nsd.db").exists() || dir.path().join("nsd.pid").exists());

    for transport in ["+notcp", "+tcp"] {
        let short = |q: &[&str]| {
            let mut a = vec![transport, "+short"];
            a.extend_from_slice(q);
            dig(&name, &a).trim().to_string()
        };
        assert_eq!(short(&["www.example.com", "A"]), IP, "{transport}");
        assert_eq!(short(&["www.example.com", "AAAA"]), "2001:db8::10");
        assert_eq!(
            short(&["web.example.com", "A"]),
            format!("www.example.com.\n{IP}")
        );
        assert_eq!(short(&["example.com", "MX"]), "10 mail.example.com.");
        assert_eq!(
            short(&["info.example.com", "TXT"]),
            "\"sarasa lab internet\""
        );
        let missing = dig(&name, &[transport, "missing.example.com", "A"]);
        assert!(missing.contains("status: NXDOMAIN"), "{missing}");
        assert!(
            missing.contains("SOA\tns1.example.com. hostmaster.example.com."),
            "{missing}"
        );
        assert!(missing.contains(" aa"), "authoritative: {missing}");
    }
}
