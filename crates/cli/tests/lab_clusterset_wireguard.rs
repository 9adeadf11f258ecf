//! Lab end-to-end: a cluster set of three labs with the default cable, WireGuard (userspace,
//! boringtun, between the clusters' active gateways; a peer per other cluster). A pod reaches the other cluster's pod and
//! its own ClusterSetIP of that pod's export with its address kept, so the other cluster's
//! NetworkPolicy admits it by address and no other pod; 10 MB cross intact; a
//! capture on the WAN shows only WireGuard's UDP between the gateways, no IP fragment, and
//! never the plaintext a capture of the gateway's WireGuard device shows; `status` reports the
//! cables; stopping the active gateway's agent moves the cable to the standby within 10 s, for
//! pods on any node (the cable lives in the agent's process, so the old gateway's own pods go
//! through the new one); `leave` takes the device and routes off the nodes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::clusterset::{
    active_gateway, cluster_set_ip, export_web, nothing_of_the_set_left, ok, reached_from, status,
    wan_exists, SetGuard,
};
use common::{sarasa_bin, serve_pod, TestLab};

const WAIT: Duration = Duration::from_secs(30);
const MARKER: &str = "sarasa-plaintext-marker-5b1e";
const WG_PORT: &str = "4500";

/// tcpdump into a file in a namespace; stopped by its pid.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    fn start(netns: &str, dev: &str, file: PathBuf) -> Capture {
        let log = file.with_extension("log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["tcpdump", "-n", "-U", "--immediate-mode", "-i", dev, "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("capture log"))
            .spawn()
            .expect("tcpdump (scripts/install-deps.sh installs it)");
        let mut cap = Capture { child, file };
        let t0 = Instant::now();
        while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on")) {
            assert!(
                cap.child.try_wait().unwrap().is_none() && t0.elapsed() < WAIT,
                "tcpdump on {netns} {dev}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cap
    }

    fn stop(&mut self) -> Vec<u8> {
        // SIGINT: tcpdump writes out what it has and exits.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::fs::read(&self.file).expect("capture file")
    }

    /// `tcpdump -r` of the capture with a filter: one line per packet.
    fn read(&self, filter: &str) -> String {
        let out = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&self.file)
            .arg(filter)
            .output()
            .expect("tcpdump -r");
        assert!(
            out.status.success(),
            "tcpdump -r {filter}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

/// Python's HTTP file server in pod `pod` for `dir`, for one request (or a minute without
/// one): it ends on its own, and its `sarasa exec` is stopped by its pid on drop.
struct FileServer(Child);

const ONE_REQUEST: &str = "import functools, http.server, sys\n\
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
server = http.server.HTTPServer(('', 8081), handler)\n\
server.timeout = 60\n\
server.handle_request()\n";

impl FileServer {
    fn start(lab: &TestLab, pod: &str, dir: &Path) -> FileServer {
        let child = Command::new(sarasa_bin())
            .args(["--lab", &lab.name, "exec", pod, "--"])
            .args(["timeout", "90", "python3", "-c", ONE_REQUEST])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sarasa exec python3");
        FileServer(child)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_wireguard_cable_carries_the_clusters_traffic_encrypted() {
    let east = TestLab::up(&[
        "--nodes",
        "2",
        "--pod-cidr",
        "10.245.0.0/16",
        "--service-cidr",
        "10.112.0.0/16",
        "--cluster-id",
        "east",
    ]);
    let west = TestLab::up(&["--nodes", "2", "--cluster-id", "west"]);
    let north = TestLab::up(&[
        "--nodes",
        "1",
        "--pod-cidr",
        "10.246.0.0/16",
        "--service-cidr",
        "10.113.0.0/16",
        "--cluster-id",
        "north",
    ]);
    let set = format!("wg{}", std::process::id());
    let _guard = SetGuard(set.clone());
    // WireGuard is the default cable.
    let joined = ok(&[
        "join",
        &set,
        "--lab",
        &east.name,
        "--lab",
        &west.name,
        "--lab",
        &north.name,
    ]);
    assert!(joined.contains("wireguard cable"), "{joined}");

    // east exports web (on node-2); west's client (node-1) reaches it through the cable.
    export_web(&east, "node-2");
    west.apply(&serve_pod("client", "node-1", "client"));
    west.apply(&serve_pod("other", "node-2", "other"));
    let east_pod = east.pod_ip("web");
    let client = west.pod_ip("client");
    let other = west.pod_ip("other");
    let set_ip = cluster_set_ip(&west, "web")
        .unwrap_or_else(|| panic!("west imports web:\n{}", ok(&["status", &set])));
    for target in [
        format!("tcp://{east_pod}:8080"),
        format!("tcp://{set_ip}:80"),
    ] {
        let seen = reached_from(&west, "client", &target, "web", &set);
        assert_eq!(seen, client, "{target}: source kept");
    }
    // A third cluster: each gateway has a peer per other cluster, and WireGuard picks the
    // peer by destination.
    north.apply(&serve_pod("visitor", "node-1", "visitor"));
    let visitor = north.pod_ip("visitor");
    let north_set_ip = cluster_set_ip(&north, "web").expect("north imports web");
    for target in [
        format!("tcp://{east_pod}:8080"),
        format!("tcp://{north_set_ip}:80"),
        format!("tcp://{client}:8080"),
    ] {
        let reply = north
            .eventually(WAIT, || north.probe("visitor", &target))
            .unwrap_or_else(|| panic!("{target} from north:\n{}", ok(&["status", &set])));
        assert_eq!(common::client_ip(&reply), visitor, "{target}: source kept");
    }
    let st = status(&set);
    assert_eq!(st["cable"], "wireguard");
    let cables = st["cables"].as_array().unwrap();
    assert_eq!(cables.len(), 6, "{st:#}");
    assert!(
        cables.iter().all(|c| c["cable"] == "wireguard"
            && c["state"] == "connected"
            && c["rttMs"].as_f64().is_some()
            && c["txBytes"].as_u64().unwrap_or(0) > 0),
        "{st:#}"
    );
    let gateway_ip = |cluster: &str| {
        let node = active_gateway(&st, cluster).expect("an active gateway");
        let g = st["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["clusterId"] == cluster && g["node"] == node.as_str())
            .unwrap()
            .clone();
        (node, g["wanIp"].as_str().unwrap().to_string())
    };
    let (east_gw, east_wan) = gateway_ip("east");
    let (_, west_wan) = gateway_ip("west");

    // On the WAN: only WireGuard's UDP between the gateways, no fragment, no plaintext; on
    // the gateway's WireGuard device, the plaintext (the capture sees what crossed).
    let dir = tempfile::tempdir().unwrap();
    let mut wan = Capture::start(
        &format!("sarasa-wan-{set}"),
        "any",
        dir.path().join("wan.pcap"),
    );
    let mut clear = Capture::start(
        &format!("sarasa-{}-{east_gw}", east.name),
        "sarasa-wg",
        dir.path().join("wg.pcap"),
    );
    west.eventually(WAIT, || {
        west.probe("client", &format!("http://{east_pod}:8080/{MARKER}"))
    })
    .expect("the marked request");
    // 10 MB through the cable, byte for byte.
    let blob: Vec<u8> = (0..10u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("blob"), &blob).unwrap();
    let got = dir.path().join("got");
    let _server = FileServer::start(&east, "web", dir.path());
    let url = format!("http://{east_pod}:8081/blob");
    let fetched = west.eventually(WAIT, || {
        let out = west.run(&[
            "exec",
            "client",
            "--",
            "curl",
            "-sSf",
            "--max-time",
            "60",
            "-o",
            got.to_str().unwrap(),
            &url,
        ]);
        out.status.success().then_some(())
    });
    assert!(fetched.is_some(), "10 MB from {url}");
    assert!(
        std::fs::read(&got).unwrap() == blob,
        "the 10 MB arrived changed"
    );
    let plain = clear.stop();
    let wire = wan.stop();
    assert!(
        contains(&plain, MARKER.as_bytes()),
        "the marked request crossed east's WireGuard device"
    );
    assert!(!contains(&wire, MARKER.as_bytes()), "plaintext on the WAN");
    let between = format!("host {east_wan} and host {west_wan}");
    let cable = wan.read(&format!("{between} and udp port {WG_PORT}"));
    assert!(
        cable.lines().count() > 7_000,
        "10 MB through the cable is thousands of WireGuard packets: {}",
        cable.lines().count()
    );
    let not_wireguard = wan.read(&format!("{between} and not udp port {WG_PORT}"));
    assert!(
        not_wireguard.is_empty(),
        "not WireGuard between the gateways:\n{not_wireguard}"
    );
    let fragments = wan.read("ip[6:2] & 0x3fff != 0");
    assert!(
        fragments.is_empty(),
        "IP fragments on the WAN:\n{fragments}"
    );

    // NetworkPolicy in east applies to west's pods by their addresses (kept through the
    // cable): web admits west's client and no other west pod.
    let target = format!("tcp://{east_pod}:8080");
    west.eventually(WAIT, || west.probe("other", &target))
        .expect("other reaches web before the policy");
    east.apply(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: from-client}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  policyTypes: [Ingress]\n\
         \x20 ingress:\n  - from: [{{ipBlock: {{cidr: {client}/32}}}}]\n"
    ));
    west.eventually(WAIT, || {
        west.probe("other", &target).is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("the policy denies west's other pod ({other})"));
    let reply = west
        .probe("client", &target)
        .expect("the policy admits west's client");
    assert_eq!(common::client_ip(&reply), client);
    east.ok(&["delete", "networkpolicy", "from-client"]);

    // Failover: east's active gateway's agent stops. Its device goes with it; the standby
    // takes the Lease and cables; new connections work again, also from the old gateway's
    // own node (web runs on node-2, so either way one side of the path is a gateway node).
    let stopped = Instant::now();
    east.ok(&["lab", "agent", "stop", &east_gw]);
    let after = east
        .eventually(WAIT, || {
            active_gateway(&status(&set), "east").filter(|a| *a != east_gw)
        })
        .expect("the standby takes over");
    west.eventually(WAIT, || west.probe("client", &target))
        .unwrap_or_else(|| panic!("{target} after the failover to {after}"));
    let took = stopped.elapsed();
    eprintln!("wireguard gateway failover {east_gw} -> {after}: new connections after {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    east.ok(&["lab", "agent", "start", &east_gw]);
    // And back: whichever of the two hosts web, one failover stopped its node's agent.
    let stopped = Instant::now();
    east.ok(&["lab", "agent", "stop", &after]);
    west.eventually(WAIT, || {
        active_gateway(&status(&set), "east")
            .filter(|a| *a != after)
            .and_then(|_| west.probe("client", &target))
    })
    .unwrap_or_else(|| panic!("{target} after the failover back from {after}"));
    let took = stopped.elapsed();
    eprintln!("wireguard gateway failover {after} -> {east_gw}: new connections after {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    east.ok(&["lab", "agent", "start", &after]);
    let st = status(&set);
    assert!(
        st["cables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] == "connected"),
        "{st:#}"
    );

    // west leaves: nothing of the set stays on its nodes.
    ok(&["leave", &set, "--lab", &west.name]);
    nothing_of_the_set_left(&west, &["node-1", "node-2"]);
    // The others keep their cable to each other.
    let reply = north
        .eventually(WAIT, || {
            north.probe("visitor", &format!("tcp://{east_pod}:8080"))
        })
        .expect("north still reaches east after west left");
    assert_eq!(common::client_ip(&reply), visitor);
    ok(&["delete", &set]);
    assert!(!wan_exists(&set));
    nothing_of_the_set_left(&east, &["node-1", "node-2"]);
    nothing_of_the_set_left(&north, &["node-1"]);
}
