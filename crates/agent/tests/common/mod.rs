//! Privileged test topology: a fabric namespace (bridge = underlay switch + router), node
//! namespaces on it, an `external` namespace behind the fabric, and pod-like namespaces. Every
//! name is `sarasa-t<pid>-<tag>-...`; the Drop guard deletes them even when a test fails.
//! `ip` is used here only to build the test's own scaffolding; the product code under test
//! uses sarasa-netns's netlink client.

#![allow(dead_code)]

pub mod fake_api;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn nft_out(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread inside namespace `ns` (sockets created there stay there).
pub fn in_ns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    let path = netns_path(ns);
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("ns thread")
    })
}

pub fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(ns)
}

pub fn listen(ns: &str, addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, || TcpListener::bind(addr).expect("bind"))
}

pub fn connect(ns: &str, addr: &str) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, || {
        TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))
    })
}

pub struct Topology {
    pub prefix: String,
    namespaces: Vec<String>,
}

pub struct NodeNs {
    pub ns: String,
    pub underlay: String,
    pub index: usize,
}

impl Topology {
    /// Fabric + `nodes` node namespaces on 192.168.33.0/24 (.11, .12, ...) + external
    /// (203.0.113.10, reachable from the nodes through the fabric; no route to pod addresses).
    pub fn new(tag: &str, nodes: usize) -> (Topology, Vec<NodeNs>) {
        let prefix = format!("sarasa-t{}-{tag}", std::process::id());
        let mut t = Topology {
            prefix: prefix.clone(),
            namespaces: Vec::new(),
        };
        let fab = t.add_ns("fab");
        ip(&["-n", &fab, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &fab, "link", "set", "br0", "up"]);
        ip(&["-n", &fab, "addr", "add", "192.168.33.1/24", "dev", "br0"]);
        ip(&[
            "netns",
            "exec",
            &fab,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let ext = t.add_ns("ext");
        ip(&[
            "-n", &fab, "link", "add", "ext", "type", "veth", "peer", "name", "eth0", "netns", &ext,
        ]);
        ip(&["-n", &fab, "addr", "add", "203.0.113.1/24", "dev", "ext"]);
        ip(&["-n", &fab, "link", "set", "ext", "up"]);
        ip(&["-n", &ext, "addr", "add", "203.0.113.10/24", "dev", "eth0"]);
        ip(&["-n", &ext, "link", "set", "eth0", "up"]);
        ip(&[
            "-n",
            &ext,
            "route",
            "add",
            "192.168.33.0/24",
            "via",
            "203.0.113.1",
        ]);
        let mut out = Vec::new();
        for i in 1..=nodes {
            let ns = t.add_ns(&format!("n{i}"));
            let port = format!("n{i}");
            let underlay = format!("192.168.33.{}", 10 + i);
            ip(&[
                "-n", &fab, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &fab, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{underlay}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "route", "add", "default", "via", "192.168.33.1"]);
            out.push(NodeNs {
                ns,
                underlay,
                index: i,
            });
        }
        (t, out)
    }

    pub fn add_ns(&mut self, role: &str) -> String {
        let name = format!("{}-{role}", self.prefix);
        ip(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }

    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// A pod-like namespace on `node` with `addr` (in the node's podCIDR, /24), its gateway the
    /// node side of the veth at `<net>.1`.
    pub fn add_pod(&mut self, node: &NodeNs, name: &str, addr: &str) -> String {
        let pod = self.add_ns(name);
        let host_if = format!("v{name}");
        let gw = {
            let mut o: Vec<&str> = addr.split('.').collect();
            o[3] = "1";
            o.join(".")
        };
        ip(&[
            "-n", &node.ns, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
            "netns", &pod,
        ]);
        ip(&[
            "-n",
            &node.ns,
            "addr",
            "add",
            &format!("{gw}/24"),
            "dev",
            &host_if,
        ]);
        ip(&["-n", &node.ns, "link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &pod,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &pod, "link", "set", "eth0", "up"]);
        ip(&["-n", &pod, "route", "add", "default", "via", &gw]);
        pod
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Polls `f` until it yields a value; panics naming `what` after `timeout`.
pub async fn eventually_within<T, F, Fut>(what: &str, timeout: std::time::Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Waits until Node `name` says its network is ready (NetworkUnavailable=False, set by its
/// agent after the first program) and returns it.
pub async fn network_ready(
    nodes: &kube::Api<k8s_openapi::api::core::v1::Node>,
    name: &str,
    timeout: std::time::Duration,
) -> k8s_openapi::api::core::v1::Node {
    eventually_within("node network ready", timeout, || async {
        let n = nodes.get(name).await.ok()?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "NetworkUnavailable" && c.status == "False");
        ready.then_some(n)
    })
    .await
}
