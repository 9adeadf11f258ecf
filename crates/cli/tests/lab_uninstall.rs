//! Lab end-to-end: `sarasa agent uninstall` on a lab node (issue 11, "Uninstall on a lab node
//! removes everything sarasa added"). With the node's agent stopped, the node namespace is
//! dumped (`ip -d link`, `ip addr`, `ip route` for both families, `nft list ruleset`, the
//! node's CNI config and IPAM files), uninstall runs inside that namespace, and the dumps are
//! compared: everything sarasa added (its tables, the VXLAN device, the node bridge, the pod
//! veths, its routes, the conflist, the IPAM store) is gone, and every other line of the
//! dumps (the uplink, its address, the node's own routes) is still there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{sarasa_bin, TestLab};

const PODS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 4
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: sarasa/serve
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#;

/// The route protocol number sarasa marks its routes with (agent/src/datapath.rs).
const SARASA_PROTO: &str = "83";

fn in_ns(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the node namespace holds, one item per line, with the lines that vary by themselves
/// (counters, ages) left out.
#[derive(Debug)]
struct Dump {
    links: Vec<String>,
    addrs: Vec<String>,
    routes: Vec<String>,
    ruleset: String,
    files: Vec<PathBuf>,
}

fn link_lines(ns: &str) -> Vec<String> {
    // `-o`: one line per link; the name and kind are what identify it.
    in_ns(ns, &["ip", "-d", "-o", "link", "show"])
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.nth(1).unwrap_or("").trim_end_matches(':');
            let name = name.split('@').next().unwrap_or(name).to_string();
            let kind = ["vxlan", "bridge", "veth", "dummy", "loopback"]
                .into_iter()
                .find(|k| l.contains(&format!(" {k} ")) || l.contains(&format!("link/{k}")))
                .unwrap_or("other");
            format!("{name} {kind}")
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        }
        out.push(p);
    }
    out.sort();
    out
}

fn dump(ns: &str, node_dir: &Path) -> Dump {
    let mut routes: Vec<String> = Vec::new();
    for fam in ["-4", "-6"] {
        routes.extend(
            in_ns(ns, &["ip", fam, "route", "show", "table", "all"])
                .lines()
                .map(|l| format!("{fam} {}", l.trim())),
        );
    }
    Dump {
        links: link_lines(ns),
        addrs: in_ns(ns, &["ip", "-o", "addr", "show"])
            .lines()
            .map(|l| {
                // index, name, family, address: enough to identify it.
                l.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
            })
            .collect(),
        routes,
        ruleset: in_ns(ns, &["nft", "list", "ruleset"]),
        files: files_under(node_dir),
    }
}

fn is_sarasa_link(l: &str) -> bool {
    let name = l.split(' ').next().unwrap_or("");
    name == "sarasa0" || name == "sarasa.1" || (name.starts_with("sa") && name.len() == 15)
}

fn sarasa_tables(ruleset: &str) -> Vec<String> {
    ruleset
        .lines()
        .filter(|l| l.starts_with("table "))
        .filter(|l| {
            let name = l.split_whitespace().nth(2).unwrap_or("");
            name == "sarasa" || name.starts_with("sarasa-")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn uninstall_on_a_lab_node_removes_everything_sarasa_added() {
    let lab = TestLab::up(&["--nodes", "2"]);
    lab.apply(PODS);
    let pods = lab.pods("default", "app", "web");
    let node = "node-1";
    assert!(
        pods.iter().any(|p| p.2 == node),
        "a pod on {node}: {pods:?}"
    );
    lab.ok(&["lab", "agent", "stop", node]);

    let ns = format!("sarasa-{}-{node}", lab.name);
    // The node's filesystem (the DaemonSet's hostPaths live under it).
    let paths = sarasa_lab::LabPaths::new(&lab.name);
    let node_dir = paths.node_root(node);
    let cni_conf = paths.cni_conf_dir(node);
    let cni_bin = paths.cni_bin_dir(node);
    let state = paths.node_state_dir(node);
    let ipam = paths.ipam_dir(node);
    assert!(
        cni_bin.join("sarasa-cni").exists(),
        "the install-cni init container put the plugin on the node"
    );

    let before = dump(&ns, &node_dir);
    // sarasa's pieces are there to remove.
    assert!(
        before.links.iter().any(|l| l.starts_with("sarasa.1 vxlan")),
        "{:?}",
        before.links
    );
    assert!(
        before.links.iter().any(|l| l.starts_with("sarasa0 bridge")),
        "{:?}",
        before.links
    );
    assert!(
        before.links.iter().filter(|l| is_sarasa_link(l)).count() > 2,
        "pod veths: {:?}",
        before.links
    );
    let tables = sarasa_tables(&before.ruleset);
    assert!(tables.len() >= 3, "{tables:?}");
    assert!(
        before
            .files
            .iter()
            .any(|f| f.ends_with("10-sarasa.conflist")),
        "{:?}",
        before.files
    );
    assert!(
        before.files.iter().any(|f| f.starts_with(&ipam)),
        "{:?}",
        before.files
    );
    let proto_routes = in_ns(&ns, &["ip", "route", "show", "proto", SARASA_PROTO]);
    assert!(
        !proto_routes.trim().is_empty(),
        "sarasa's routes to the other node"
    );

    let out = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(sarasa_bin())
        .args(["agent", "uninstall", "--cni-conf-dir"])
        .arg(&cni_conf)
        .arg("--cni-bin-dir")
        .arg(&cni_bin)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run uninstall");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "uninstall failed: {report}");
    println!("uninstall on {node}:\n{report}");

    let after = dump(&ns, &node_dir);
    // Nothing of sarasa's is left...
    assert_eq!(
        sarasa_tables(&after.ruleset),
        Vec::<String>::new(),
        "{}",
        after.ruleset
    );
    let left: Vec<&String> = after.links.iter().filter(|l| is_sarasa_link(l)).collect();
    assert!(left.is_empty(), "links left: {left:?}");
    let proto_routes = in_ns(&ns, &["ip", "route", "show", "proto", SARASA_PROTO]);
    assert!(
        proto_routes.trim().is_empty(),
        "routes left: {proto_routes}"
    );
    let proto_routes6 = in_ns(&ns, &["ip", "-6", "route", "show", "proto", SARASA_PROTO]);
    assert!(
        proto_routes6.trim().is_empty(),
        "routes left: {proto_routes6}"
    );
    assert!(!cni_conf.join("10-sarasa.conflist").exists());
    assert!(!ipam.exists(), "IPAM state left: {:?}", after.files);
    assert!(!state.exists(), "state left: {:?}", after.files);
    assert!(!cni_bin.join("sarasa-cni").exists());
    // ...and everything else is as it was: each line gone from a dump was sarasa's.
    for l in &before.links {
        assert!(
            is_sarasa_link(l) || after.links.contains(l),
            "link {l} lost"
        );
    }
    // A line naming one of sarasa's links (an address on it, a route through it).
    let sarasa_dev = |l: &str| {
        l.split_whitespace()
            .any(|w| is_sarasa_link(w.trim_end_matches(':')))
    };
    for a in &before.addrs {
        assert!(sarasa_dev(a) || after.addrs.contains(a), "address {a} lost");
    }
    for r in &before.routes {
        let sarasas = sarasa_dev(r) || r.contains(&format!("proto {SARASA_PROTO}"));
        assert!(sarasas || after.routes.contains(r), "route {r} lost");
    }
    for f in &before.files {
        let sarasas = f.starts_with(&state)
            || f.ends_with("10-sarasa.conflist")
            || *f == cni_bin.join("sarasa-cni");
        assert!(
            sarasas || after.files.contains(f),
            "file {} lost",
            f.display()
        );
    }
    let non_sarasa_before = before
        .ruleset
        .lines()
        .filter(|l| l.starts_with("table "))
        .filter(|l| !sarasa_tables(l).contains(&l.to_string()))
        .count();
    let non_sarasa_after = after
        .ruleset
        .lines()
        .filter(|l| l.starts_with("table "))
        .count();
    assert_eq!(non_sarasa_before, non_sarasa_after, "other tables kept");
    println!(
        "before: {} links, {} routes, {} sarasa tables, {} files; after: {} links, {} routes, 0 sarasa tables, {} files",
        before.links.len(),
        before.routes.len(),
        tables.len(),
        before.files.len(),
        after.links.len(),
        after.routes.len(),
        after.files.len()
    );

    // Idempotent: a second run finds nothing left and succeeds.
    let again = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(sarasa_bin())
        .args(["agent", "uninstall", "--cni-conf-dir"])
        .arg(&cni_conf)
        .arg("--cni-bin-dir")
        .arg(&cni_bin)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run uninstall again");
    assert!(again.status.success());
}
