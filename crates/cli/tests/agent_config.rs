//! `sarasa agent --config FILE`: a bad settings file stops the agent with a message naming the
//! key, before it looks at the node (no namespace, API server or root needed: the binary exits
//! during start-up). Flags on the command line win over the file.

use std::process::Command;

fn agent(file: &str, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, file).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sarasa"))
        .args(["agent", "--node-name", "n1", "--config"])
        .arg(&path)
        .args(extra)
        .env_remove("NODE_NAME")
        .env_remove("SARASA_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_settings_exit_non_zero_naming_the_key() {
    for (file, key) in [
        ("backend: udp\n", "backend: unknown backend \"udp\""),
        ("cniMode: ipvlan\n", "cniMode: unknown CNI mode"),
        ("clusterCIDRs: [10.244.0.0/99]\n", "clusterCIDRs[0]"),
        ("serviceCIDRs: [not-a-cidr]\n", "serviceCIDRs[0]"),
        (
            "clusterCIDRs: [10.0.0.0/8]\nserviceCIDRs: [10.96.0.0/12]\n",
            "overlaps serviceCIDRs",
        ),
        (
            "networkPolicy: true\nnetwrokPolicy: false\n",
            "unknown field `netwrokPolicy`",
        ),
        ("mtu: -1\n", "mtu"),
    ] {
        let (ok, stderr) = agent(file, &[]);
        assert!(!ok, "{file:?} accepted");
        assert!(stderr.contains(key), "{file:?}: {stderr}");
        assert!(stderr.contains("invalid configuration"), "{stderr}");
    }
}

#[test]
fn a_flag_overrides_the_file() {
    // The file's backend is bad, but the command line sets one: the file's is never used, and
    // the agent goes on to its next check (it refuses the machine's root namespace).
    let (ok, stderr) = agent("backend: udp\n", &["--backend", "vxlan"]);
    assert!(!ok);
    assert!(!stderr.contains("backend"), "{stderr}");
    assert!(stderr.contains("root network namespace"), "{stderr}");
}

#[test]
fn a_missing_file_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_sarasa"))
        .args([
            "agent",
            "--node-name",
            "n1",
            "--config",
            "/nonexistent/sarasa.yaml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--config /nonexistent/sarasa.yaml"),
        "{stderr}"
    );
}

/// Deletes the test's namespace, also when the test fails.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// `agent install-cni --sysctls`, as the DaemonSet's init container runs it, inside a fresh
/// network namespace (forwarding starts off there): the plugin lands in the bin directory and
/// forwarding is on in that namespace only. Requires root.
#[test]
fn install_cni_installs_the_plugin_and_turns_forwarding_on() {
    let ns = Netns(format!("sarasa-t{}-instcni", std::process::id()));
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap();
    assert!(ok.success(), "ip netns add (root needed)");
    let forward = || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "cat",
                "/proc/sys/net/ipv4/ip_forward",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(forward(), "0");
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("sarasa-cni");
    std::fs::write(&plugin, b"#!/bin/sh\n").unwrap();
    let bin = dir.path().join("opt-cni-bin");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            env!("CARGO_BIN_EXE_sarasa"),
            "agent",
            "install-cni",
        ])
        .arg("--plugin")
        .arg(&plugin)
        .arg("--cni-bin-dir")
        .arg(&bin)
        .arg("--sysctls")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("net.ipv4.ip_forward=1"), "{stdout}");
    assert_eq!(
        std::fs::read(bin.join("sarasa-cni")).unwrap(),
        b"#!/bin/sh\n"
    );
    assert_eq!(forward(), "1");
}
