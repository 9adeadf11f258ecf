//! Privileged test: the userspace WireGuard cable ([`sarasa_agent::wireguard`]) between two
//! node namespaces. TCP crosses it both ways; on the wire between the nodes there is only
//! WireGuard's UDP (the payload's marker never appears in a capture of the underlay, while
//! a capture of the TUN device shows it); a peer cannot send from outside its allowed ranges
//! (cryptokey routing); a new key for a peer (its gateway restarted) is taken up.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{in_ns, ip, netns_path, NodeNs, Topology};
use sarasa_agent::netns::NetnsTarget;
use sarasa_agent::wireguard::{parse_public_key, Cable, Keypair, PeerSpec, DEVICE, PORT};

const MARKER: &[u8] = b"sarasa-plaintext-marker-7f3a";

fn spec(key: &Keypair, node: &NodeNs, allowed: &[&str]) -> PeerSpec {
    PeerSpec {
        public_key: parse_public_key(&key.public_base64(), "test").unwrap(),
        endpoint: SocketAddr::new(node.underlay.parse().unwrap(), PORT)
            .to_string()
            .parse()
            .unwrap(),
        allowed: allowed.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

fn start(node: &NodeNs, key: &Keypair) -> Cable {
    Cable::start(
        &NetnsTarget::Path(netns_path(&node.ns)),
        key,
        node.underlay.parse().unwrap(),
    )
    .expect("start the cable")
}

/// The TUN device's inner address and the route to the other side through it.
fn inner(node: &NodeNs, addr: &str, other: &str) {
    ip(&["-n", &node.ns, "addr", "add", addr, "dev", DEVICE]);
    ip(&["-n", &node.ns, "link", "set", DEVICE, "up"]);
    ip(&["-n", &node.ns, "route", "add", other, "dev", DEVICE]);
}

/// Connects from `src` in `ns` to `dst` and echoes `MARKER` through a listener the caller runs;
/// polled until it works or `deadline`.
fn connect_from(ns: &str, src: &str, dst: &str) -> std::io::Result<TcpStream> {
    let src: SocketAddr = format!("{src}:0").parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    in_ns(ns, || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&src.into())?;
        s.connect_timeout(&dst.into(), Duration::from_millis(500))?;
        Ok(s.into())
    })
}

fn exchange(ns: &str, src: &str, dst: &str, listener: &std::net::TcpListener) -> bool {
    let Ok(mut c) = connect_from(ns, src, dst) else {
        return false;
    };
    let (mut s, _) = listener.accept().expect("accept");
    c.write_all(MARKER).unwrap();
    let mut got = vec![0u8; MARKER.len()];
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.read_exact(&mut got).is_ok() && got == MARKER
}

fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// tcpdump writing to a file (in the test's temporary directory) in a namespace, stopped (by
/// its pid) on drop.
struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(ns: &str, dev: &str, file: std::path::PathBuf) -> Capture {
        // tcpdump's messages go to a file: a pipe closed under it would end it at its first
        // word.
        let log = file.with_extension("log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns_path(ns).display()))
            .args(["tcpdump", "-n", "-U", "--immediate-mode", "-i", dev, "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("capture log"))
            .spawn()
            .expect("tcpdump (scripts/install-deps.sh installs it)");
        let mut cap = Capture { child, file };
        until("tcpdump listening", Duration::from_secs(10), || {
            assert!(
                cap.child.try_wait().unwrap().is_none(),
                "tcpdump exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on"))
        });
        cap
    }

    /// Stops the capture and returns the file's bytes.
    fn finish(mut self) -> Vec<u8> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
        std::fs::read(&self.file).expect("capture file")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What `tcpdump -r` prints of a capture for a filter.
fn read_capture(file: &std::path::Path, filter: &str) -> String {
    let out = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(file)
        .arg(filter)
        .output()
        .expect("tcpdump -r");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_talk_through_the_userspace_wireguard_cable() {
    let (topo, nodes) = Topology::new("wg", 2);
    let (a, b) = (&nodes[0], &nodes[1]);
    let (ka, kb) = (Keypair::generate(), Keypair::generate());
    let cable_a = start(a, &ka);
    let cable_b = start(b, &kb);
    inner(a, "10.1.0.1/16", "10.2.0.0/16");
    inner(b, "10.2.0.1/16", "10.1.0.0/16");
    cable_a.set_peers(&[spec(&kb, b, &["10.2.0.0/16"])]);
    cable_b.set_peers(&[spec(&ka, a, &["10.1.0.0/16"])]);

    let dir = tempfile::tempdir().unwrap();
    let wire = Capture::start(&b.ns, "eth0", dir.path().join("wire.pcap"));
    let tun = Capture::start(&b.ns, DEVICE, dir.path().join("tun.pcap"));
    let listener_b = common::listen(&b.ns, "10.2.0.1:7000");
    let (ns_a, ns_b) = (a.ns.clone(), b.ns.clone());
    tokio::task::spawn_blocking(move || {
        until("a → b through the cable", Duration::from_secs(10), || {
            exchange(&ns_a, "10.1.0.1", "10.2.0.1:7000", &listener_b)
        });
        let listener_a = common::listen(&ns_a, "10.1.0.1:7000");
        until("b → a through the cable", Duration::from_secs(10), || {
            exchange(&ns_b, "10.2.0.1", "10.1.0.1:7000", &listener_a)
        });
    })
    .await
    .unwrap();
    let tun_bytes = tun.finish();
    let wire_file = wire.file.clone();
    let wire_bytes = wire.finish();
    assert!(
        contains(&tun_bytes, MARKER),
        "the marker crossed the device in the clear (the capture works)"
    );
    assert!(
        !contains(&wire_bytes, MARKER),
        "plaintext on the wire between the gateways"
    );
    let tcp_on_wire = read_capture(&wire_file, "tcp");
    assert!(tcp_on_wire.is_empty(), "TCP on the wire:\n{tcp_on_wire}");
    let udp = read_capture(&wire_file, &format!("udp port {PORT}"));
    assert!(udp.lines().count() >= 4, "WireGuard's UDP:\n{udp}");

    // Cryptokey routing: b sends from an address outside its allowed ranges, then from
    // inside them; a delivers only the second (the tunnel keeps their order).
    ip(&["-n", &b.ns, "addr", "add", "10.3.0.1/16", "dev", DEVICE]);
    let inbox = in_ns(&a.ns, || {
        std::net::UdpSocket::bind("10.1.0.1:7001").unwrap()
    });
    inbox
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    in_ns(&b.ns, || {
        for (src, what) in [("10.3.0.1:0", "forged"), ("10.2.0.1:0", "genuine")] {
            let s = std::net::UdpSocket::bind(src).unwrap();
            for _ in 0..3 {
                s.send_to(what.as_bytes(), "10.1.0.1:7001").unwrap();
            }
        }
    });
    let mut buf = [0u8; 64];
    let (n, from) = inbox.recv_from(&mut buf).expect("the genuine datagram");
    assert_eq!(
        (&buf[..n], from.ip().to_string().as_str()),
        (&b"genuine"[..], "10.2.0.1"),
        "a delivered a packet from outside b's allowed ranges"
    );

    // b's gateway restarts with a new key: a takes the new key up and talks again.
    cable_b.close().await;
    let kb2 = Keypair::generate();
    let cable_b = start(b, &kb2);
    inner(b, "10.2.0.1/16", "10.1.0.0/16");
    cable_b.set_peers(&[spec(&ka, a, &["10.1.0.0/16"])]);
    cable_a.set_peers(&[spec(&kb2, b, &["10.2.0.0/16"])]);
    let listener_b = common::listen(&b.ns, "10.2.0.1:7002");
    let ns_a = a.ns.clone();
    tokio::task::spawn_blocking(move || {
        until("a → b with b's new key", Duration::from_secs(10), || {
            exchange(&ns_a, "10.1.0.1", "10.2.0.1:7002", &listener_b)
        });
    })
    .await
    .unwrap();
    cable_a.close().await;
    cable_b.close().await;

    // The device name is one per namespace: a second cable beside a running one is refused
    // (after a bounded wait), and one started while the old one is going takes over.
    let first = start(a, &ka);
    let target = NetnsTarget::Path(netns_path(&a.ns));
    let underlay: std::net::Ipv4Addr = a.underlay.parse().unwrap();
    let refused = Cable::start(&target, &ka, underlay)
        .err()
        .expect("a second cable");
    assert!(refused.to_string().contains("busy"), "{refused}");
    let closing = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        first.close().await;
    });
    let next = tokio::task::spawn_blocking(move || Cable::start(&target, &ka, underlay))
        .await
        .unwrap()
        .expect("the cable waits for the old device to go");
    closing.await.unwrap();
    next.close().await;
    drop(topo);
}
