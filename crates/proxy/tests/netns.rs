//! Privileged smoke test: a compiled ruleset applied in a test-made node namespace carries
//! real TCP connections from a client namespace to two "pod" namespaces behind a bridge.
//! Needs root, `ip`, `nft`, `nsenter` and `busybox` (httpd) and `curl`; fails (never skips) without.
//!
//! ```text
//! client 192.168.50.2 ──veth── node 192.168.50.1 │ br0 10.244.1.1 ── pod-a 10.244.1.5:8080
//!                                                 │                 └─ pod-b 10.244.1.6:8080
//! ```

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sarasa_model::*;
use sarasa_nft::{diff_kernel, Backend, Family, NftCli};
use sarasa_proxy::*;

/// Namespaces and processes of one test, removed on drop (also when the test fails).
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    servers: Vec<Child>,
    _docs: tempfile::TempDir,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn exec(&self, role: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {args:?}: {e}"))
    }

    fn run(&self, role: &str, args: &[&str]) {
        let out = self.exec(role, args);
        assert!(
            out.status.success(),
            "{role}: {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn new() -> Lab {
        let prefix = format!("sarasa-t{}-px", std::process::id());
        let docs = tempfile::tempdir().unwrap();
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
            servers: Vec::new(),
            _docs: docs,
        };
        for role in ["node", "pod-a", "pod-b", "client"] {
            let name = lab.ns(role);
            let st = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap();
            assert!(st.success(), "ip netns add {name} (are we root?)");
            lab.namespaces.push(name);
            lab.run(role, &["ip", "link", "set", "lo", "up"]);
        }
        lab.run("node", &["ip", "link", "add", "br0", "type", "bridge"]);
        lab.run(
            "node",
            &["ip", "addr", "add", "10.244.1.1/24", "dev", "br0"],
        );
        lab.run("node", &["ip", "link", "set", "br0", "up"]);
        for (role, addr, host) in [
            ("pod-a", "10.244.1.5/24", "va"),
            ("pod-b", "10.244.1.6/24", "vb"),
        ] {
            let pod_ns = lab.ns(role);
            lab.run(
                "node",
                &[
                    "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns",
                    &pod_ns,
                ],
            );
            lab.run("node", &["ip", "link", "set", host, "master", "br0", "up"]);
            lab.run(role, &["ip", "addr", "add", addr, "dev", "eth0"]);
            lab.run(role, &["ip", "link", "set", "eth0", "up"]);
            lab.run(
                role,
                &["ip", "route", "add", "default", "via", "10.244.1.1"],
            );
            let dir = lab._docs.path().join(role);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("index.html"), role).unwrap();
            let child = Command::new("ip")
                .args([
                    "netns", "exec", &pod_ns, "busybox", "httpd", "-f", "-p", "8080", "-h",
                ])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            lab.servers.push(child);
        }
        let client_ns = lab.ns("client");
        lab.run(
            "node",
            &[
                "ip", "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns",
                &client_ns,
            ],
        );
        lab.run(
            "node",
            &["ip", "addr", "add", "192.168.50.1/24", "dev", "vc"],
        );
        lab.run("node", &["ip", "link", "set", "vc", "up"]);
        lab.run(
            "node",
            &["ip", "route", "add", "default", "via", "192.168.50.2"],
        );
        lab.run("node", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab.run(
            "client",
            &["ip", "addr", "add", "192.168.50.2/24", "dev", "eth0"],
        );
        lab.run("client", &["ip", "link", "set", "eth0", "up"]);
        lab.run(
            "client",
            &["ip", "route", "add", "default", "via", "192.168.50.1"],
        );
        lab
    }

    /// `curl` from `role`: Ok(body) or Err(stderr).
    fn get(&self, role: &str, url: &str) -> Result<String, String> {
        let out = self.exec(role, &["curl", "-sS", "--max-time", "3", url]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Polls until `url` answers (servers are starting), bounded.
    fn wait_get(&self, role: &str, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.get(role, url) {
                Ok(body) => return body,
                Err(e) if Instant::now() > deadline => panic!("{role} → {url}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn objects() -> (Vec<Service>, EndpointSlice) {
    let mut web = svc("web", "10.96.0.10", vec![port("http", Protocol::Tcp, 80)]);
    web.type_ = ServiceType::NodePort;
    web.ports[0].node_port = Some(30080);
    let empty = svc("empty", "10.96.0.11", vec![port("http", Protocol::Tcp, 80)]);
    let sl = slice(
        "web",
        "web-1",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.244.1.5", "node-1"), ("10.244.1.6", "node-1")],
    );
    (vec![web, empty], sl)
}

#[test]
fn cluster_ip_and_node_port_carry_real_connections() {
    let lab = Lab::new();
    let (services, sl) = objects();
    let mut st = compile(config(), node(), &services, std::slice::from_ref(&sl)).unwrap();
    let mut nft = NftCli::in_netns(format!("/run/netns/{}", lab.ns("node")));
    nft.reconcile(&st.table()).unwrap();

    // Direct reachability first (servers up), then through the Service.
    lab.wait_get("client", "http://10.244.1.5:8080/");
    lab.wait_get("client", "http://10.244.1.6:8080/");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(lab.wait_get("client", "http://10.96.0.10/"));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["pod-a", "pod-b"],
        "spread over endpoints"
    );
    // From the node itself, and through the NodePort.
    assert!(lab
        .wait_get("node", "http://10.96.0.10/")
        .starts_with("pod-"));
    assert!(lab
        .wait_get("client", "http://192.168.50.1:30080/")
        .starts_with("pod-"));

    // No endpoints: refused at once, not left to time out.
    let t = Instant::now();
    let err = lab.get("client", "http://10.96.0.11/").unwrap_err();
    // curl exit 7: could not connect (a TCP reset), within milliseconds.
    assert!(err.contains("(7)"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2));

    // The kernel holds exactly the model.
    let k = nft.list_table(Family::Inet, "sarasa").unwrap().unwrap();
    let rest = diff_kernel(Some(&k), &st.table());
    assert!(rest.is_empty(), "{}", rest.script());

    // Session affinity: once set, one client keeps reaching the same pod.
    let mut sticky = services[0].clone();
    sticky.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    let update = st.upsert_service(sticky);
    nft.apply(&update.transaction).unwrap();
    let first = lab.wait_get("client", "http://10.96.0.10/");
    for _ in 0..15 {
        assert_eq!(
            lab.wait_get("client", "http://10.96.0.10/"),
            first,
            "affinity broken"
        );
    }
    let k = nft.list_table(Family::Inet, "sarasa").unwrap().unwrap();
    assert!(
        diff_kernel(Some(&k), &st.table()).is_empty(),
        "affinity sets were touched"
    );
    let update = st.upsert_service(services[0].clone());
    nft.apply(&update.transaction).unwrap();

    // An endpoint goes away: one small transaction, and only pod-a answers.
    let mut one = sl.clone();
    one.endpoints.retain(|e| e.addresses[0] == ip("10.244.1.5"));
    let update = st.upsert_endpoint_slice(one);
    nft.apply(&update.transaction).unwrap();
    for _ in 0..10 {
        assert_eq!(lab.wait_get("client", "http://10.96.0.10/"), "pod-a");
    }
    let k = nft.list_table(Family::Inet, "sarasa").unwrap().unwrap();
    assert!(diff_kernel(Some(&k), &st.table()).is_empty());
}
