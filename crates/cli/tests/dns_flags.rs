//! `sarasa dns` rejects bad flags before it starts: non-zero exit, the flag named.

use std::process::Command;

fn dns(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sarasa"))
        .arg("dns")
        .args(["--apiserver", "http://127.0.0.1:1"])
        .args(args)
        .output()
        .expect("run sarasa dns");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() {
    for (args, flag) in [
        (&["--cluster-domain", "a..b"][..], "--cluster-domain"),
        (
            &["--cluster-domain", "bad_label.local"][..],
            "--cluster-domain",
        ),
        (&["--listen", "nowhere"][..], "--listen"),
        (&["--metrics-listen", "1.2.3.4"][..], "--metrics-listen"),
        (&["--upstream", "not-an-ip"][..], "--upstream"),
        (&["--pods", "sometimes"][..], "--pods"),
        (&["--cache-size", "0"][..], "--cache-size"),
        (&["--ttl", "999999999"][..], "--ttl"),
        (&["--apiserver", "no-scheme"][..], "--apiserver"),
        (&["--clusterset-domain", "a..b"][..], "--clusterset-domain"),
        (
            &["--clusterset-domain", "set.cluster.local"][..],
            "--clusterset-domain",
        ),
    ] {
        let (ok, stderr) = dns(args);
        assert!(!ok, "{args:?} accepted");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}
