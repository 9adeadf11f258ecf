//! Installing and removing sarasa on a node: a bad configuration stops the agent before it
//! touches an already programmed node, and `uninstall` takes off everything the agent put
//! there (and nothing else). Real kernel, node namespaces, the in-memory API server. Requires
//! root (namespaces); fails loudly otherwise.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::{ip, ip_out, netns_path, nft_out, Topology};
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::uninstall::{uninstall, UninstallConfig};
use sarasa_agent::{AgentConfig, AgentHandle, Backend};
use serde_json::json;

async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn config(node: &str, api: std::net::SocketAddr, dir: &Path) -> AgentConfig {
    let mut c = AgentConfig::new(node);
    c.apiserver = Some(format!("http://{api}"));
    c.backend = Backend::Vxlan;
    c.cni_conf_dir = dir.join(node).join("net.d");
    c.ipam_data_dir = dir.join(node).join("state").join("ipam");
    c.health_listen = "127.0.0.1:0".parse().unwrap();
    c
}

/// Two agents on two nodes, both programmed (remote routes, FDB, neighbours on node 1).
async fn programmed_pair(
    api: &FakeApi,
    addr: std::net::SocketAddr,
    dir: &Path,
    nodes: &[common::NodeNs],
) -> Vec<AgentHandle> {
    let mut agents = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let name = format!("node-{}", i + 1);
        let a = sarasa_agent::start(
            config(&name, addr, dir),
            NetnsTarget::Path(netns_path(&n.ns)),
        )
        .await
        .expect("agent starts");
        eventually("node registered", Duration::from_secs(20), || {
            api.get("nodes", &name)?["metadata"]["annotations"]["sarasa.io/vtep-mac"]
                .as_str()
                .map(|_| ())
        })
        .await;
        let cidr = format!("10.244.{}.0/24", i + 1);
        api.patch(
            "nodes",
            &name,
            json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
        );
        agents.push(a);
    }
    for a in &agents {
        eventually("programmed", Duration::from_secs(20), || {
            (a.metrics.programmed.load(Ordering::Relaxed)
                && a.metrics.remote_nodes.load(Ordering::Relaxed) == 1)
                .then_some(())
        })
        .await;
    }
    agents
}

/// Everything observable of a node's datapath.
fn datapath(ns: &str, conf_dir: &Path) -> String {
    let mut s = String::new();
    s += &ip_out(&["-n", ns, "-d", "link", "show"]);
    s += &ip_out(&["-n", ns, "addr", "show"]);
    s += &ip_out(&["-n", ns, "route", "show", "table", "all"]);
    s += &ip_out(&["-n", ns, "neigh", "show", "nud", "permanent"]);
    s += &nft_out(ns, &["list", "ruleset"]);
    s += &std::fs::read_to_string(conf_dir.join("10-sarasa.conflist")).unwrap_or_default();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_stops_the_agent_and_leaves_the_node_programmed() {
    let (_topo, nodes) = Topology::new("badcfg", 2);
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApi::new();
    let addr = api.serve().await;
    let agents = programmed_pair(&api, addr, dir.path(), &nodes).await;
    drop(agents); // the agents stop (as on SIGTERM); the datapath stays
    let ns = &nodes[0].ns;
    let conf_dir = dir.path().join("node-1").join("net.d");
    let before = datapath(ns, &conf_dir);
    assert!(before.contains("sarasa.1") && before.contains("table inet sarasa"));

    let target = || NetnsTarget::Path(netns_path(ns));
    // An MTU the uplink (1500) cannot carry under VXLAN (50 bytes).
    let mut c = config("node-1", addr, dir.path());
    c.mtu = Some(1480);
    let err = sarasa_agent::start(c, target())
        .await
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("mtu 1480") && msg.contains("at most 1450"),
        "{msg}"
    );

    // A pod CIDR overlapping the Service CIDR.
    let mut c = config("node-1", addr, dir.path());
    c.service_cidr = vec!["10.244.0.0/20".parse().unwrap()];
    let msg = sarasa_agent::start(c, target())
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        msg.contains("clusterCIDRs") && msg.contains("serviceCIDRs"),
        "{msg}"
    );

    // An unknown key in the settings file.
    let file = sarasa_agent::config_file::ConfigFile::parse("backend: vxlan\nmtuu: 1400\n");
    assert!(file.expect_err("must fail").to_string().contains("`mtuu`"));

    assert_eq!(datapath(ns, &conf_dir), before, "the datapath changed");

    // A good MTU below the maximum is what the pods get.
    let mut c = config("node-1", addr, dir.path());
    c.mtu = Some(1400);
    let a = sarasa_agent::start(c, target()).await.expect("starts");
    eventually(
        "pod MTU 1400 in the conflist",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(conf_dir.join("10-sarasa.conflist"))
                .ok()
                .filter(|s| s.contains("\"mtu\": 1400") || s.contains("\"mtu\":1400"))
        },
    )
    .await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_removes_everything_sarasa_added_and_nothing_else() {
    let (_topo, nodes) = Topology::new("uninst", 2);
    let dir = tempfile::tempdir().unwrap();
    let api = FakeApi::new();
    let addr = api.serve().await;
    let agents = programmed_pair(&api, addr, dir.path(), &nodes).await;
    drop(agents);
    let ns = &nodes[0].ns;
    let node_dir = dir.path().join("node-1");

    // What the DaemonSet's init container installs, a pod's host veth as sarasa-cni names it,
    // and things that are not sarasa's.
    let bin_dir = node_dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::write(bin_dir.join("sarasa-cni"), b"plugin").unwrap();
    std::fs::write(bin_dir.join("bridge"), b"another plugin").unwrap();
    std::fs::write(node_dir.join("net.d").join("99-other.conflist"), b"{}").unwrap();
    std::fs::create_dir_all(node_dir.join("state").join("ipam").join("sarasa")).unwrap();
    let veth = sarasa_cni::naming::host_veth("sarasa", "c0ffee", "eth0");
    ip(&[
        "-n", ns, "link", "add", &veth, "type", "veth", "peer", "name", "podside",
    ]);
    ip(&[
        "-n", ns, "link", "add", "keep0", "type", "veth", "peer", "name", "keep1",
    ]);
    ip(&["-n", ns, "route", "add", "198.51.100.0/24", "dev", "eth0"]);
    let nft = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "add table inet keepme"])
        .status()
        .unwrap();
    assert!(nft.success());

    let before = datapath(ns, &node_dir.join("net.d"));
    assert!(before.contains("sarasa.1") && before.contains("proto 83"));
    assert!(before.contains("table inet sarasa-node"), "{before}");

    let cfg = UninstallConfig {
        cni_conf_dir: node_dir.join("net.d"),
        cni_bin_dir: bin_dir.clone(),
        state_dir: node_dir.join("state"),
        host_netns: false,
        wait: false,
    };
    let target = NetnsTarget::Path(netns_path(ns));
    let report = uninstall(&cfg, &target).expect("uninstall");
    assert!(report.links.contains(&"sarasa.1".to_string()), "{report:?}");
    assert!(report.links.contains(&veth), "{report:?}");
    assert!(report.routes >= 1, "{report:?}");

    let links = ip_out(&["-n", ns, "link", "show"]);
    for gone in ["sarasa.1", "sarasa0", veth.as_str(), "podside"] {
        assert!(!links.contains(gone), "{gone} left: {links}");
    }
    assert!(links.contains("keep0") && links.contains("eth0"), "{links}");
    let routes = ip_out(&["-n", ns, "route", "show", "table", "all"]);
    assert!(
        !routes.contains("proto 83") && !routes.contains("10.244."),
        "{routes}"
    );
    assert!(routes.contains("198.51.100.0/24"), "{routes}");
    let neigh = ip_out(&["-n", ns, "neigh", "show", "nud", "permanent"]);
    assert!(!neigh.contains("10.244."), "{neigh}");
    let tables = nft_out(ns, &["list", "tables"]);
    assert_eq!(tables.trim(), "table inet keepme", "{tables}");
    assert!(!node_dir.join("net.d").join("10-sarasa.conflist").exists());
    assert!(node_dir.join("net.d").join("99-other.conflist").exists());
    assert!(!bin_dir.join("sarasa-cni").exists());
    assert!(bin_dir.join("bridge").exists());
    assert!(!node_dir.join("state").exists());

    // Idempotent: a second run finds nothing and succeeds.
    let again = uninstall(&cfg, &target).expect("second uninstall");
    assert!(again.is_empty(), "{again:?}");
}
