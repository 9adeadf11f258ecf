//! Lab end-to-end, issue 14: objects that would hijack the network are refused by the lab's
//! API server and the rest of the cluster is unaffected. The short form of
//! scripts/fault-hostile.sh (one round), and the issue's own attack: a Service with externalIPs
//! 192.168.33.1 port 6443 (the API server's address), 127.0.0.1 and 169.254.169.254.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{sarasa_bin, unique_lab, TestLab};

#[test]
fn fault_hostile_short_form_refuses_everything_and_the_service_keeps_answering() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fault-hostile.sh");
    let lab = unique_lab();
    let out = Command::new(&script)
        .env("ROUNDS", "1")
        .env("FAULT_LAB", &lab)
        .env("SARASA", sarasa_bin())
        .env("WATCHDOG_SECS", "300")
        .output()
        .expect("running scripts/fault-hostile.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fault-hostile failed:\n{stdout}\n{stderr}"
    );
    let figure = |label: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{stdout}"))
            .trim()
            .to_string()
    };
    assert_eq!(figure("hostile objects injected:"), "13");
    assert_eq!(figure("refused (422 naming the field):"), "13");
    assert_eq!(figure("accepted:"), "0");
    assert_eq!(figure("hostile objects stored:"), "0");
    assert_eq!(figure("service probes answered:"), "8/8");
}

fn external_ip_service(ip: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: hijack}}\nspec:\n  externalIPs: [\"{ip}\"]\n  ports: [{{port: {port}}}]\n"
    )
}

#[test]
fn the_issues_external_ip_attack_is_refused() {
    let lab = TestLab::up(&["--nodes", "2"]);
    for (ip, port, why) in [
        ("192.168.33.1", 6443, "may not be the API server's address"),
        ("127.0.0.1", 80, "may not be a loopback address"),
        ("169.254.169.254", 80, "may not be a link-local address"),
    ] {
        let err = lab.apply_err(&external_ip_service(ip, port));
        assert!(err.contains("spec.externalIPs[0]"), "{ip}: {err}");
        assert!(err.contains(why), "{ip}: {err}");
        assert!(
            lab.object("services", "default", "hijack").is_none(),
            "{ip} stored"
        );
    }
    // The lab's externalIP range is still open.
    lab.apply(&external_ip_service("192.0.2.60", 8081));
    assert!(lab.object("services", "default", "hijack").is_some());
}
