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
