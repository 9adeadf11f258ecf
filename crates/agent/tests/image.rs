//! The container image as a node runs it: `scripts/build-image.sh` builds it (static binaries
//! of profile `image-test`, or of SARASA_IMAGE_PROFILE), `podman run` shows `sarasa --version`
//! and `agent --help`, then — inside a test node namespace, against an in-memory API server in the fabric
//! namespace — the image's `agent install-cni --sysctls` runs privileged (the DaemonSet's init
//! container), the agent runs with only CAP_NET_ADMIN (as deploy/sarasa.yaml grants) and
//! programs the node, and the image's `agent uninstall` takes it all off again. Requires root
//! and podman (scripts/install-deps.sh); never skipped.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::{in_ns, ip_out, nft_out, Topology};
use serde_json::json;

const PODMAN: [&str; 5] = [
    "podman",
    "--runtime",
    "runc",
    "--cgroup-manager",
    "cgroupfs",
];

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// podman's default rlimits cannot be set in this environment's containers.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nproc=1024:1024",
    "--ulimit",
    "nofile=1024:1024",
];

/// podman inside namespace `ns` (its "host" network is the node's).
fn podman_in(ns: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).args(PODMAN);
    c
}

/// Stops and removes a container, also when the test fails.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new(PODMAN[0])
            .args(&PODMAN[1..])
            .args(["rm", "-f", "-t", "2", &self.0])
            .output();
    }
}

fn build_image() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tag = format!("localhost/sarasa-test:{}", std::process::id());
    // The suite's short form: unoptimised static binaries (SARASA_IMAGE_PROFILE=release runs
    // the test on the shipped build).
    let profile = std::env::var("SARASA_IMAGE_PROFILE").unwrap_or_else(|_| "image-test".into());
    let out = run(Command::new(root.join("scripts/build-image.sh"))
        .arg(&tag)
        .env("SARASA_IMAGE_PROFILE", profile));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!("built {line}");
    tag
}

struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new(PODMAN[0])
            .args(&PODMAN[1..])
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

/// The container's log (for a failure message).
fn logs(ns: &str, name: &str) -> String {
    match podman_in(ns).args(["logs", name]).output() {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("(podman logs: {e})"),
    }
}

/// The names of the links in namespace `ns` (a veth's `@peer` dropped).
fn link_names(ns: &str) -> Vec<String> {
    ip_out(&["-n", ns, "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the agent's log:\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_the_agent_on_a_node_and_uninstalls_it() {
    let image = Image(build_image());
    let tag = image.0.clone();

    let version = run(Command::new(PODMAN[0]).args(&PODMAN[1..]).args([
        "run",
        "--rm",
        "--network",
        "none",
        ULIMITS[0],
        ULIMITS[1],
        ULIMITS[2],
        ULIMITS[3],
        &tag,
        "sarasa",
        "--version",
    ]));
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.starts_with("sarasa "), "{version}");
    let help = run(Command::new(PODMAN[0]).args(&PODMAN[1..]).args([
        "run",
        "--rm",
        "--network",
        "none",
        ULIMITS[0],
        ULIMITS[1],
        ULIMITS[2],
        ULIMITS[3],
        &tag,
        "sarasa",
        "agent",
        "--help",
    ]));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--node-name") && help.contains("--config"),
        "{help}"
    );

    let (topo, nodes) = Topology::new("image", 1);
    let ns = nodes[0].ns.clone();
    let api = FakeApi::new();
    let listener = in_ns(&topo.ns("fab"), || {
        std::net::TcpListener::bind("192.168.33.1:0").expect("bind in fabric")
    });
    let addr = api.serve_on(listener).await;
    let dir = tempfile::tempdir().unwrap();
    for d in ["bin", "net.d", "lib"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let vol = |host: &str, at: &str| format!("{}:{at}", dir.path().join(host).display());
    let ulimits = ULIMITS;

    // The init container: privileged, installs the plugin, turns forwarding on (in the node
    // namespace only).
    run(podman_in(&ns)
        .args(["run", "--rm", "--network", "host", "--privileged"])
        .args(ulimits)
        .args(["-v", &vol("bin", "/host/opt/cni/bin")])
        .args([
            &tag,
            "sarasa",
            "agent",
            "install-cni",
            "--cni-bin-dir=/host/opt/cni/bin",
            "--sysctls",
        ]));
    assert!(dir.path().join("bin/sarasa-cni").exists());

    // The agent: CAP_NET_ADMIN only, read-only root, like the DaemonSet.
    let name = format!("sarasa-t{}-agent", std::process::id());
    let _agent = Container(name.clone());
    run(podman_in(&ns)
        .args(["run", "-d", "--name", &name, "--network", "host"])
        .args(["--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--read-only"])
        .args(ulimits)
        .args(["-v", &vol("net.d", "/etc/cni/net.d")])
        .args(["-v", &vol("lib", "/var/lib/sarasa")])
        .args(["-e", "NODE_NAME=image-1"])
        .args([
            &tag,
            "sarasa",
            "agent",
            "--host-netns",
            &format!("--apiserver=http://{addr}"),
        ]));
    eventually(
        "node registered with its vtep",
        Duration::from_secs(60),
        || {
            api.get("nodes", "image-1")?["metadata"]["annotations"]["sarasa.io/vtep-mac"]
                .as_str()
                .map(|_| ())
        },
        || logs(&ns, &name),
    )
    .await;
    api.patch(
        "nodes",
        "image-1",
        json!({"spec": {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}}),
    );
    eventually(
        "NetworkUnavailable=False",
        Duration::from_secs(60),
        || {
            let n = api.get("nodes", "image-1")?;
            n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "NetworkUnavailable" && c["status"] == "False")
                .then_some(())
        },
        || logs(&ns, &name),
    )
    .await;
    let conflist = std::fs::read_to_string(dir.path().join("net.d/10-sarasa.conflist")).unwrap();
    assert!(conflist.contains("10.244.7.0/24"), "{conflist}");
    assert!(link_names(&ns).contains(&"sarasa.1".to_string()));
    assert!(nft_out(&ns, &["list", "tables"]).contains("sarasa"));

    // SIGTERM: the agent stops, the datapath stays.
    run(podman_in(&ns).args(["stop", "-t", "10", &name]));
    assert!(link_names(&ns).contains(&"sarasa.1".to_string()));

    // The uninstall DaemonSet's container.
    run(podman_in(&ns)
        .args(["run", "--rm", "--network", "host"])
        .args(["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"])
        .args(ulimits)
        .args(["-v", &vol("bin", "/host/opt/cni/bin")])
        .args(["-v", &vol("net.d", "/host/etc/cni/net.d")])
        .args(["-v", &vol("lib", "/host/var/lib/sarasa")])
        .args([
            &tag,
            "sarasa",
            "agent",
            "uninstall",
            "--host-netns",
            "--cni-conf-dir=/host/etc/cni/net.d",
            "--cni-bin-dir=/host/opt/cni/bin",
            "--state-dir=/host/var/lib/sarasa/ipam",
        ]));
    let left: Vec<String> = link_names(&ns)
        .into_iter()
        .filter(|n| n.starts_with("sarasa"))
        .collect();
    assert!(left.is_empty(), "links left: {left:?}");
    assert!(!nft_out(&ns, &["list", "tables"]).contains("sarasa"));
    assert!(!dir.path().join("net.d/10-sarasa.conflist").exists());
    assert!(!dir.path().join("bin/sarasa-cni").exists());
    drop(topo);
}
