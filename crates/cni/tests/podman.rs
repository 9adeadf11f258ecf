//! A real container runtime: Podman (CNI backend) starts a busybox container on a sarasa
//! conflist inside a test node namespace; the container gets its address, reaches the
//! gateway, and stopping it releases the address. The work is in
//! `scripts/podman-cni-check.sh`; this test fails when the script fails (it is never skipped).

mod common;

use std::process::Command;

#[test]
fn podman_drives_sarasa_cni() {
    common::require_root();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/podman-cni-check.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .arg(common::BIN)
        .output()
        .expect("run scripts/podman-cni-check.sh");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "podman check failed:\n{text}");
    assert!(text.contains("podman-cni-check: PASS"), "{text}");
}
