//! Test harness: a "node" namespace where the plugin runs (as a runtime would run it on a
//! node), pod namespaces, and a runner for the built `sarasa-cni` binary.
//!
//! Needs root. Every namespace is `sarasa-t<pid>-<tag>-...` and is deleted by a Drop guard;
//! deleting the node namespace takes its bridge, host veths and routes with it.
#![allow(dead_code)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use sarasa_netns::{CommandExt, NetNs, Netlink};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_sarasa-cni");

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create network namespaces and need root"
    );
}

fn ns_name(tag: &str) -> String {
    format!("sarasa-t{}-{tag}", std::process::id())
}

/// A namespace deleted on drop.
pub struct Ns {
    pub ns: NetNs,
    pub name: String,
}

impl Ns {
    pub fn new(tag: &str) -> Ns {
        require_root();
        let name = ns_name(tag);
        let _ = NetNs::delete(&name);
        let ns = NetNs::create(&name).expect("create netns");
        Ns { ns, name }
    }

    pub fn path(&self) -> String {
        self.ns.path().display().to_string()
    }

    pub fn netlink(&self) -> Netlink {
        Netlink::open_in(&self.ns).expect("netlink in ns")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.name);
    }
}

/// The node: a namespace with loopback up and node addresses on lo (192.168.200.1,
/// fd00:200::1), plus a private IPAM data directory.
pub struct Node {
    pub ns: Ns,
    pub tag: String,
    pub data: tempfile::TempDir,
}

pub const NODE_V4: &str = "192.168.200.1";
pub const NODE_V6: &str = "fd00:200::1";

impl Node {
    pub fn new(tag: &str) -> Node {
        let ns = Ns::new(&format!("{tag}-n"));
        let mut nl = ns.netlink();
        let lo = nl.link("lo").unwrap();
        nl.set_up(lo.index).unwrap();
        nl.addr_add(lo.index, format!("{NODE_V4}/32").parse().unwrap())
            .unwrap();
        nl.addr_add(lo.index, format!("{NODE_V6}/128").parse().unwrap())
            .unwrap();
        Node {
            ns,
            tag: tag.to_string(),
            data: tempfile::tempdir().unwrap(),
        }
    }

    pub fn pod(&self, i: usize) -> Ns {
        Ns::new(&format!("{}-p{i}", self.tag))
    }

    pub fn data_dir(&self) -> String {
        self.data.path().join("ipam").display().to_string()
    }

    /// A config for this node.
    pub fn conf(&self, version: &str, mode: &str, dual: bool) -> Value {
        let mut ranges = vec![json!([{"subnet": "10.244.7.0/24"}])];
        if dual {
            ranges.push(json!([{"subnet": "fd00:10:244:7::/64"}]));
        }
        json!({
            "cniVersion": version,
            "name": "sarasa-test",
            "type": "sarasa-cni",
            "mode": mode,
            "mtu": 1450,
            "ipam": {"ranges": ranges, "dataDir": self.data_dir()},
            "dns": {"nameservers": ["10.96.0.10"], "search": ["default.svc.cluster.local"]},
        })
    }

    /// Runs the plugin inside the node namespace.
    pub fn cni(&self, env: &[(&str, &str)], stdin: &str) -> Out {
        run_in(Some(&self.ns.ns), env, stdin)
    }

    pub fn add(&self, conf: &Value, id: &str, pod: &Ns, ifname: &str) -> Out {
        self.cni(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &pod.path()),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &conf.to_string(),
        )
    }

    pub fn del(&self, conf: &Value, id: &str, netns: Option<&str>, ifname: &str) -> Out {
        let mut env = vec![
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", ifname),
            ("CNI_PATH", "/opt/cni/bin"),
        ];
        if let Some(n) = netns {
            env.push(("CNI_NETNS", n));
        }
        self.cni(&env, &conf.to_string())
    }

    pub fn check(&self, conf: &Value, prev: &Value, id: &str, pod: &Ns, ifname: &str) -> Out {
        let mut c = conf.clone();
        c["prevResult"] = prev.clone();
        self.cni(
            &[
                ("CNI_COMMAND", "CHECK"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &pod.path()),
                ("CNI_IFNAME", ifname),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            &c.to_string(),
        )
    }

    pub fn gc(&self, conf: &Value, valid: &[(&str, &str)]) -> Out {
        let mut c = conf.clone();
        c["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|(id, ifn)| json!({"containerID": id, "ifname": ifn}))
            .collect();
        self.cni(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
            &c.to_string(),
        )
    }

    pub fn status(&self, conf: &Value) -> Out {
        self.cni(
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
            &conf.to_string(),
        )
    }

    /// Host veths of this network (name prefix `sa`, kind veth), once DEL's reapers are done:
    /// a host end DEL detached (down) is waited for, up to 10 s, and listed if still there.
    pub fn host_veths(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let links = self.host_links();
            if links.iter().all(|l| l.up) || std::time::Instant::now() >= deadline {
                return links.into_iter().map(|l| l.name).collect();
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Host veths of this network as they are now, detached ones included.
    pub fn host_links(&self) -> Vec<sarasa_netns::Link> {
        self.ns
            .netlink()
            .links()
            .unwrap()
            .into_iter()
            .filter(|l| l.kind.as_deref() == Some("veth") && l.name.starts_with("sa"))
            .collect()
    }

    pub fn routes(&self) -> Vec<String> {
        let mut r: Vec<String> = self
            .ns
            .netlink()
            .routes(None)
            .unwrap()
            .into_iter()
            .map(|r| format!("{} {:?} {:?}", r.dst, r.gateway, r.oif))
            .collect();
        r.sort();
        r
    }

    pub fn allocations(&self) -> Value {
        let p = PathBuf::from(self.data_dir()).join("allocations.json");
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice::<Value>(&b).unwrap()["allocations"].clone(),
            Err(_) => json!([]),
        }
    }
}

/// A finished plugin run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Asserts success and returns the JSON result (or Null for empty stdout).
    pub fn ok(&self) -> Value {
        assert_eq!(self.code, 0, "plugin failed: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts a CNI error with `code` and returns it.
    pub fn err(&self, code: u64) -> Value {
        assert_ne!(self.code, 0, "expected failure: {self:?}");
        let j = self.json();
        assert_eq!(j["code"], code, "wrong code: {self:?}");
        assert!(j["msg"].is_string() && j["cniVersion"].is_string(), "{j}");
        assert!(j.get("details").is_some(), "{j}");
        j
    }
}

/// Runs the binary with exactly `env` (plus PATH), optionally inside `ns`.
pub fn run_in(ns: Option<&NetNs>, env: &[(&str, &str)], stdin: &str) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(ns) = ns {
        cmd.netns(ns);
    }
    let mut child = cmd.spawn().expect("spawn sarasa-cni");
    {
        let mut si = child.stdin.take().unwrap();
        let _ = si.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The pod's addresses from an ADD result.
pub fn result_ips(r: &Value) -> Vec<IpAddr> {
    r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| {
            ip["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// Opens a TCP connection from inside `from` to `to` and returns the client address the
/// server (listening inside `server_ns` on `to`'s address) saw.
pub fn peer_seen(from: &NetNs, server_ns: &NetNs, to: IpAddr) -> Result<IpAddr, String> {
    let bind: SocketAddr = SocketAddr::new(to, 0);
    let listener: TcpListener = server_ns
        .run(move || TcpListener::bind(bind))
        .unwrap()
        .map_err(|e| format!("bind {bind}: {e}"))?;
    let target = listener.local_addr().unwrap();
    let accept = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        listener.accept().map(|(_, peer)| peer.ip())
    });
    let connected = from
        .run(move || TcpStream::connect_timeout(&target, Duration::from_secs(3)))
        .unwrap();
    match connected {
        Ok(_stream) => accept.join().unwrap().map_err(|e| format!("accept: {e}")),
        Err(e) => {
            // Unblock the acceptor with a local connection so the thread ends.
            let _ =
                server_ns.run(move || TcpStream::connect_timeout(&target, Duration::from_secs(1)));
            let _ = accept.join();
            Err(format!("connect to {target}: {e}"))
        }
    }
}
