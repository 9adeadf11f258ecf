//! Privileged test: the cluster-set MSS clamp of `inet sarasa-node`, programmed over netlink
//! in a test-made router namespace, carries a real TCP connection whose server sees the
//! cable's MSS; without it the server sees the pods' MSS. Needs root and `ip`; fails (never
//! skips) without them. Nothing runs in the caller's namespace: every device, address and
//! socket is made inside the three namespaces, which are removed on drop (also on failure).
//!
//! ```text
//! client 10.10.1.2 ──── 10.10.1.1 router 10.10.2.1 ──── 10.10.2.2 server
//!       eth0, MTU 1500               sarasa-cable, MTU 1400     eth0, MTU 1500
//! ```

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{getsockopt, sockopt::TcpMaxSeg};
use sarasa_nft::{Backend, Family, NetlinkBackend, NetlinkTableBackend};
use sarasa_plan::masquerade::{table, TABLE_NAME};
use sarasa_plan::Masquerade;

/// A network namespace made by the test and removed on drop, also when the test fails.
struct Netns(String);

impl Netns {
    /// `sx-mss<pid>-<n>-<role>`: unique per test process and call.
    fn new(role: &str) -> Netns {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "sx-mss{}-{}-{role}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name} (are we root?)");
        Netns(name)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// `ip -n <ns> ARGS` (or `ip netns exec <ns> ARGS` for other tools); panics on failure.
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: ip {args:?}: {}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a thread inside the namespace: what it opens stays in there.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = File::open(self.path()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Lab {
    client: Netns,
    router: Netns,
    server: Netns,
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab {
            client: Netns::new("client"),
            router: Netns::new("router"),
            server: Netns::new("server"),
        };
        let (c, r, s) = (&lab.client, &lab.router, &lab.server);
        // Both links made from the router's namespace, their far ends moved straight into the
        // client's and the server's.
        r.ip(&[
            "link",
            "add",
            "to-client",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &c.0,
        ]);
        r.ip(&[
            "link",
            "add",
            "sarasa-cable",
            "mtu",
            "1400",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &s.0,
        ]);
        for (ns, dev, addr) in [
            (c, "eth0", "10.10.1.2/24"),
            (r, "to-client", "10.10.1.1/24"),
            (r, "sarasa-cable", "10.10.2.1/24"),
            (s, "eth0", "10.10.2.2/24"),
        ] {
            ns.ip(&["addr", "add", addr, "dev", dev]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        for ns in [c, r, s] {
            ns.ip(&["link", "set", "lo", "up"]);
        }
        s.ip(&["link", "set", "eth0", "mtu", "1500"]);
        c.ip(&["route", "add", "default", "via", "10.10.1.1"]);
        s.ip(&["route", "add", "default", "via", "10.10.2.1"]);
        r.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
            .unwrap();
        lab
    }

    /// Programs the router's `inet sarasa-node` as the agent does (netlink, a diff against
    /// what the kernel holds).
    fn program(&self, clamp_mss: bool) {
        let m = Masquerade {
            pod_cidrs: vec!["10.10.1.0/24".parse().unwrap()],
            // The far side is another cluster of the set: reached unmasqueraded.
            cluster_cidrs: vec![
                "10.10.1.0/24".parse().unwrap(),
                "10.10.2.0/24".parse().unwrap(),
            ],
            clamp_mss,
            global_snat: Vec::new(),
            untracked: Vec::new(),
        };
        let mut nl = NetlinkTableBackend {
            inner: NetlinkBackend::in_netns(self.router.path()).unwrap(),
            family: Family::Inet,
            table: TABLE_NAME.into(),
        };
        nl.reconcile(&table(&m)).unwrap();
        let k = nl.list_table(Family::Inet, TABLE_NAME).unwrap().unwrap();
        assert_eq!(k.chains.contains_key("forward"), clamp_mss);
    }

    /// Connects from the client to a fresh listener of the server; the MSS the server's end
    /// of the connection uses (`TCP_MAXSEG`: the client's SYN option, less TCP options).
    fn server_mss(&self) -> u32 {
        let listener = self
            .server
            .run(|| TcpListener::bind("10.10.2.2:0"))
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let to: SocketAddr = listener.local_addr().unwrap();
        // The first SYN may wait for ARP on both links: connect's own timeout bounds it.
        let _client = self
            .client
            .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("connect {to}: {e}"));
        // The client's ACK may still be on its way: poll the accept queue, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        let conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection to accept on {to}");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept on {to}: {e}"),
            }
        };
        getsockopt(&conn, TcpMaxSeg).unwrap()
    }
}

#[test]
fn syns_through_the_cable_get_the_cable_mss_only_with_the_clamp() {
    let lab = Lab::new();
    // Outside a cluster set: the client's SYN reaches the server with the MSS of its own
    // 1500-byte link (1460, 1448 with timestamps), too big for the cable.
    lab.program(false);
    let unclamped = lab.server_mss();
    assert!(unclamped > 1360, "unclamped MSS {unclamped}");
    // In a cluster set: clamped to the cable's 1400 less 40 bytes of headers.
    lab.program(true);
    let clamped = lab.server_mss();
    assert!(clamped <= 1360, "clamped MSS {clamped}");
    // Leaving the set removes the clamp again.
    lab.program(false);
    assert_eq!(lab.server_mss(), unclamped);
}
