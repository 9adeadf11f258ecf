//! Privileged smoke test: a compiled ruleset applied in a test-made node namespace carries
//! real TCP connections from a client namespace to two "pod" namespaces behind a bridge.
//! Needs root, `ip`, `nft`, `nsenter` and `busybox` (httpd) and `curl`; fails (never skips) without.
//!
//! ```text
//! client 192.168.50.2 ──veth── node 192.168.50.1 │ br0 10.244.1.1 ── pod-a 10.244.1.5:8080
//!                                                 │                 └─ pod-b 10.244.1.6:8080
//! ```

mod common;

use std::net::IpAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::flow::{through_node, NodeAddrs};
use common::*;
use sarasa_model::*;
use sarasa_nft::interp::{Env, HookVerdict, Packet};
use sarasa_nft::{diff_kernel, Backend, Family, L4Proto, NftCli, RejectKind};
use sarasa_proxy::*;

/// The lab's node for the interpreter: its addresses, and masquerade's source per route.
fn lab_node() -> NodeAddrs {
    NodeAddrs {
        local: ["10.244.1.1", "192.168.50.1", "fd00:244:1::1", "fd00:50::1"]
            .map(ip)
            .to_vec(),
        sources: [
            ("10.244.1.0/24", "10.244.1.1"),
            ("0.0.0.0/0", "192.168.50.1"),
            ("fd00:244:1::/64", "fd00:244:1::1"),
            ("::/0", "fd00:50::1"),
        ]
        .map(|(net, src)| (net.parse().unwrap(), ip(src)))
        .to_vec(),
    }
}

/// The interpreter's account of a new TCP connection through the lab's node: for each path,
/// its verdict, the pod DNAT chose and the source the endpoint sees.
fn model(st: &ProxyState, from: &str, to: &str, port: u16) -> Vec<(HookVerdict, String, IpAddr)> {
    let from_node = lab_node().is_local(ip(from));
    let packet = Packet::new(ip(from), ip(to), L4Proto::Tcp, 40000, port);
    through_node(st, &lab_node(), packet, from_node)
        .into_iter()
        .map(|f| {
            let pod = match f.dnat.map(|d| d.0.to_string()).as_deref() {
                Some("10.244.1.5") => "pod-a".to_string(),
                Some("10.244.1.6") => "pod-b".to_string(),
                other => format!("{other:?}"),
            };
            (f.verdict, pod, f.packet.saddr)
        })
        .collect()
}

/// Programs every table (main, then shards), diffing each against the kernel.
fn program(nft: &mut NftCli, st: &ProxyState) {
    for t in st.tables() {
        nft.reconcile(&t)
            .unwrap_or_else(|e| panic!("table {}: {e}", t.name));
    }
}

/// Applies all tables' parts of `u` as one `nft` script (one atomic transaction).
fn apply(nft: &mut NftCli, u: &Update) {
    let tx = merged(u);
    nft.apply(&tx)
        .unwrap_or_else(|e| panic!("{e}\n{}", tx.script()));
}

/// Every table in the kernel holds exactly the model.
fn assert_kernel_matches(nft: &mut NftCli, st: &ProxyState) {
    for t in st.tables() {
        let k = nft.list_table(Family::Inet, &t.name).unwrap().unwrap();
        let rest = diff_kernel(Some(&k), &t);
        assert!(rest.is_empty(), "{}: {}", t.name, rest.script());
    }
}

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
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let i = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let prefix = format!("sarasa-t{}-px{i}", std::process::id());
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
        lab.run("node", &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        lab.addr("node", "fd00:244:1::1/64", "br0");
        for (role, addr, addr6, host) in [
            ("pod-a", "10.244.1.5/24", "fd00:244:1::5/64", "va"),
            ("pod-b", "10.244.1.6/24", "fd00:244:1::6/64", "vb"),
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
            // As a bridge CNI must: with br_netfilter loaded, a pod reaching itself through a
            // Service is DNATed at the bridge and must be sent back out its own port.
            lab.run(
                "node",
                &[
                    "ip",
                    "link",
                    "set",
                    host,
                    "type",
                    "bridge_slave",
                    "hairpin",
                    "on",
                ],
            );
            lab.run(role, &["ip", "addr", "add", addr, "dev", "eth0"]);
            lab.addr(role, addr6, "eth0");
            lab.run(role, &["ip", "link", "set", "eth0", "up"]);
            lab.run(
                role,
                &["ip", "route", "add", "default", "via", "10.244.1.1"],
            );
            lab.run(
                role,
                &[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    "fd00:244:1::1",
                ],
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
        lab.addr("node", "fd00:50::1/64", "vc");
        lab.run("node", &["ip", "link", "set", "vc", "up"]);
        lab.run(
            "node",
            &["ip", "-6", "route", "add", "default", "via", "fd00:50::2"],
        );
        lab.run(
            "node",
            &["ip", "route", "add", "default", "via", "192.168.50.2"],
        );
        lab.run("node", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab.run(
            "client",
            &["ip", "addr", "add", "192.168.50.2/24", "dev", "eth0"],
        );
        lab.addr("client", "fd00:50::2/64", "eth0");
        lab.run("client", &["ip", "link", "set", "eth0", "up"]);
        lab.run(
            "client",
            &["ip", "route", "add", "default", "via", "192.168.50.1"],
        );
        lab.run(
            "client",
            &["ip", "-6", "route", "add", "default", "via", "fd00:50::1"],
        );
        lab
    }

    /// An IPv6 address usable at once (no duplicate address detection wait).
    fn addr(&self, role: &str, cidr: &str, dev: &str) {
        self.run(
            role,
            &["ip", "-6", "addr", "add", cidr, "dev", dev, "nodad"],
        );
    }

    /// `curl` from `role`: Ok(body) or Err(stderr).
    fn get(&self, role: &str, url: &str) -> Result<String, String> {
        let out = self.exec(role, &["curl", "-gsS", "--max-time", "3", url]);
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
    program(&mut nft, &st);

    // Direct reachability first (servers up), then through the Service.
    lab.wait_get("client", "http://10.244.1.5:8080/");
    lab.wait_get("client", "http://10.244.1.6:8080/");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(lab.wait_get("client", "http://10.96.0.10/"));
    }
    assert_eq!(
        seen.iter().collect::<Vec<_>>(),
        ["pod-a", "pod-b"],
        "spread over endpoints"
    );
    // The interpreter names the same endpoints; an off-cluster client reaching a ClusterIP is
    // masqueraded (it may be sent to another node), in the model as in conntrack.
    let m = model(&st, "192.168.50.2", "10.96.0.10", 80);
    let pods: std::collections::BTreeSet<String> = m.iter().map(|f| f.1.clone()).collect();
    assert_eq!(pods, seen, "interpreter: {m:?}");
    assert!(
        m.iter()
            .all(|f| f.0 == HookVerdict::Accept && f.2 == ip("10.244.1.1")),
        "{m:?}"
    );
    let ct = lab.exec(
        "node",
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--orig-src",
            "192.168.50.2",
            "--orig-dst",
            "10.96.0.10",
        ],
    );
    let ct = String::from_utf8_lossy(&ct.stdout);
    assert!(
        ct.contains(" dst=10.244.1.1 "),
        "client not masqueraded: {ct}"
    );
    assert!(model(&st, "10.244.1.1", "10.96.0.10", 80)
        .iter()
        .all(|f| f.0 == HookVerdict::Accept && f.1.starts_with("pod-")));
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
    let m = model(&st, "192.168.50.2", "10.96.0.11", 80);
    assert!(
        m.iter()
            .all(|f| f.0 == HookVerdict::Reject(RejectKind::TcpReset)),
        "interpreter: {m:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));

    // The kernel holds exactly the model.
    assert_kernel_matches(&mut nft, &st);

    // Session affinity: once set, one client keeps reaching the same pod.
    let mut sticky = services[0].clone();
    sticky.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    let update = st.upsert_service(sticky);
    apply(&mut nft, &update);
    let first = lab.wait_get("client", "http://10.96.0.10/");
    for _ in 0..15 {
        assert_eq!(
            lab.wait_get("client", "http://10.96.0.10/"),
            first,
            "affinity broken"
        );
    }
    // (affinity sets hold the datapath's entries; the diff leaves them alone)
    assert_kernel_matches(&mut nft, &st);
    let update = st.upsert_service(services[0].clone());
    apply(&mut nft, &update);

    // An endpoint goes away: one small transaction, and only pod-a answers.
    let mut one = sl.clone();
    one.endpoints.retain(|e| e.addresses[0] == ip("10.244.1.5"));
    let update = st.upsert_endpoint_slice(one);
    assert_eq!(update.transactions.len(), 1, "only web's shard");
    apply(&mut nft, &update);
    for _ in 0..10 {
        assert_eq!(lab.wait_get("client", "http://10.96.0.10/"), "pod-a");
    }
    assert_kernel_matches(&mut nft, &st);

    // Hairpin: pod-a reaching itself through its Service works because it is masqueraded
    // (the reply goes back through the node, which undoes the DNAT).
    assert_eq!(lab.wait_get("pod-a", "http://10.96.0.10/"), "pod-a");
    let ct = lab.exec(
        "node",
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--orig-src",
            "10.244.1.5",
            "--orig-dst",
            "10.96.0.10",
        ],
    );
    let ct = String::from_utf8_lossy(&ct.stdout);
    assert!(
        ct.contains("src=10.244.1.5 dst=10.244.1.1"),
        "hairpin not masqueraded: {ct}"
    );
    assert_eq!(
        model(&st, "10.244.1.5", "10.96.0.10", 80),
        [(HookVerdict::Accept, "pod-a".to_string(), ip("10.244.1.1"))],
        "interpreter: hairpin masqueraded"
    );

    // Another pod → ClusterIP: never masqueraded, the endpoint sees the pod's address.
    assert_eq!(lab.wait_get("pod-b", "http://10.96.0.10/"), "pod-a");
    let ct = lab.exec(
        "node",
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--orig-src",
            "10.244.1.6",
            "--orig-dst",
            "10.96.0.10",
        ],
    );
    let ct = String::from_utf8_lossy(&ct.stdout);
    assert!(
        ct.contains("src=10.244.1.5 dst=10.244.1.6"),
        "pod traffic masqueraded: {ct}"
    );
    assert_eq!(
        model(&st, "10.244.1.6", "10.96.0.10", 80),
        [(HookVerdict::Accept, "pod-a".to_string(), ip("10.244.1.6"))],
        "interpreter: pod traffic keeps its source"
    );

    // External client → NodePort (Cluster policy): masqueraded to the node's address.
    lab.wait_get("client", "http://192.168.50.1:30080/");
    let ct = lab.exec(
        "node",
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--orig-src",
            "192.168.50.2",
            "--orig-port-dst",
            "30080",
        ],
    );
    let ct = String::from_utf8_lossy(&ct.stdout);
    assert!(
        ct.contains("src=10.244.1.5 dst=10.244.1.1"),
        "NodePort not masqueraded: {ct}"
    );
    assert_eq!(
        model(&st, "192.168.50.2", "192.168.50.1", 30080),
        [(HookVerdict::Accept, "pod-a".to_string(), ip("10.244.1.1"))],
        "interpreter: NodePort masqueraded"
    );
}

/// A ruleset using every feature is accepted by the kernel's nft and reads back equal.
#[test]
fn every_feature_is_accepted_by_nft() {
    let lab = Lab::new();
    let mut st = ProxyState::new(config(), node()).unwrap();
    let mut lb = svc(
        "lb",
        "10.96.0.20",
        vec![
            port("http", Protocol::Tcp, 80),
            port("dns", Protocol::Udp, 53),
            port("sig", Protocol::Sctp, 3868),
        ],
    );
    lb.cluster_ips.push(ip("fd00:96::20"));
    lb.ip_families = vec![IpFamily::V4, IpFamily::V6];
    lb.type_ = ServiceType::LoadBalancer;
    lb.ports[0].node_port = Some(30080);
    lb.ports[1].node_port = Some(30053);
    lb.load_balancer_ips = vec![ip("192.168.34.1"), ip("fd00:34::1")];
    lb.load_balancer_source_ranges = vec![
        "203.0.113.0/24".parse().unwrap(),
        "2001:db8::/32".parse().unwrap(),
    ];
    lb.external_ips = vec![ip("198.51.100.7")];
    lb.external_traffic_policy = TrafficPolicy::Local;
    lb.internal_traffic_policy = TrafficPolicy::Local;
    lb.health_check_node_port = Some(32000);
    lb.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 30,
    };
    let ports: &[(&str, Protocol, u16)] = &[
        ("http", Protocol::Tcp, 8080),
        ("dns", Protocol::Udp, 5353),
        ("sig", Protocol::Sctp, 3868),
    ];
    let many: Vec<(String, &str)> = (1..=10)
        .map(|i| (format!("10.244.2.{i}"), "node-2"))
        .collect();
    let mut v4: Vec<(&str, &str)> = many.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    v4.push(("10.244.1.9", "node-1"));
    st.upsert_service(lb);
    st.upsert_endpoint_slice(slice("lb", "lb-v4", ports, &v4));
    st.upsert_endpoint_slice(slice(
        "lb",
        "lb-v6",
        ports,
        &[("fd00:244:1::9", "node-1"), ("fd00:244:2::9", "node-2")],
    ));
    st.upsert_service(svc(
        "empty",
        "10.96.0.21",
        vec![port("http", Protocol::Tcp, 80)],
    ));
    for t in st.tables() {
        t.validate().unwrap();
    }
    let mut nft = NftCli::in_netns(format!("/run/netns/{}", lab.ns("node")));
    program(&mut nft, &st);
    assert_kernel_matches(&mut nft, &st);
    // Take it all apart again, incrementally, in one transaction over the tables.
    let mut u = st.delete_service("default", "lb");
    u.append(st.delete_service("default", "empty"));
    apply(&mut nft, &u);
    assert_kernel_matches(&mut nft, &st);
    for name in st.config().table_names() {
        let k = nft.list_table(Family::Inet, &name).unwrap().unwrap();
        assert!(
            !k.chains.keys().any(|c| c.contains("-default-")),
            "{name}: {:?}",
            k.chains.keys()
        );
    }
}

#[test]
fn ipv6_cluster_ip_carries_real_connections() {
    let lab = Lab::new();
    let mut web = Service {
        ports: vec![port("http", Protocol::Tcp, 80)],
        ..Service::cluster_ip("default", "web6", vec![ip("fd00:96::10")])
    };
    web.type_ = ServiceType::NodePort;
    web.ports[0].node_port = Some(30080);
    let sl = slice(
        "web6",
        "web6-1",
        &[("http", Protocol::Tcp, 8080)],
        &[("fd00:244:1::5", "node-1"), ("fd00:244:1::6", "node-1")],
    );
    let st = compile(config(), node(), &[web], &[sl]).unwrap();
    let mut nft = NftCli::in_netns(format!("/run/netns/{}", lab.ns("node")));
    program(&mut nft, &st);
    lab.wait_get("client", "http://[fd00:244:1::5]:8080/");
    lab.wait_get("client", "http://[fd00:244:1::6]:8080/");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(lab.wait_get("client", "http://[fd00:96::10]/"));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["pod-a", "pod-b"]);
    assert!(lab
        .wait_get("client", "http://[fd00:50::1]:30080/")
        .starts_with("pod-"));
    // The client is outside the cluster CIDR: masqueraded to the node's bridge address.
    let ct = lab.exec(
        "node",
        &[
            "conntrack",
            "-L",
            "-f",
            "ipv6",
            "-p",
            "tcp",
            "--orig-src",
            "fd00:50::2",
            "--orig-dst",
            "fd00:96::10",
        ],
    );
    let ct = String::from_utf8_lossy(&ct.stdout);
    assert!(ct.contains("dst=fd00:244:1::1 "), "not masqueraded: {ct}");
}

#[test]
fn local_traffic_policy_and_source_ranges_on_real_packets() {
    let lab = Lab::new();
    let mut lb = svc("lb", "10.96.0.30", vec![port("http", Protocol::Tcp, 80)]);
    lb.type_ = ServiceType::LoadBalancer;
    lb.ports[0].node_port = Some(30081);
    lb.load_balancer_ips = vec![ip("192.168.34.1")];
    lb.load_balancer_source_ranges = vec!["192.168.50.0/24".parse().unwrap()];
    lb.external_traffic_policy = TrafficPolicy::Local;
    // pod-b is "on another node": only pod-a may serve external traffic here.
    let sl = slice(
        "lb",
        "lb-1",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.244.1.5", "node-1"), ("10.244.1.6", "node-2")],
    );
    let mut st = compile(config(), node(), std::slice::from_ref(&lb), &[sl]).unwrap();
    let mut nft = NftCli::in_netns(format!("/run/netns/{}", lab.ns("node")));
    program(&mut nft, &st);
    lab.wait_get("client", "http://10.244.1.5:8080/");
    for url in ["http://192.168.50.1:30081/", "http://192.168.34.1/"] {
        for _ in 0..8 {
            assert_eq!(lab.wait_get("client", url), "pod-a", "{url}");
        }
    }
    // The client's address is preserved (no masquerade with Local policy).
    let ct = lab.exec(
        "node",
        &[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--orig-src",
            "192.168.50.2",
            "--orig-port-dst",
            "30081",
        ],
    );
    let ct = String::from_utf8_lossy(&ct.stdout);
    assert!(
        ct.contains("src=10.244.1.5 dst=192.168.50.2"),
        "source not preserved: {ct}"
    );
    for (to, port) in [("192.168.50.1", 30081), ("192.168.34.1", 80)] {
        assert_eq!(
            model(&st, "192.168.50.2", to, port),
            [(HookVerdict::Accept, "pod-a".to_string(), ip("192.168.50.2"))],
            "interpreter: {to}:{port}"
        );
    }

    // Source ranges that exclude the client: the LB IP drops it (NodePorts are not filtered).
    lb.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    let update = st.upsert_service(lb);
    // Only the firewall chain changes: main table only.
    assert_eq!(
        update.transactions.keys().collect::<Vec<_>>(),
        ["sarasa"],
        "{update:?}"
    );
    apply(&mut nft, &update);
    let err = lab.get("client", "http://192.168.34.1/").unwrap_err();
    assert!(err.contains("(28)"), "expected a timeout (dropped): {err}");
    assert_eq!(
        lab.wait_get("client", "http://192.168.50.1:30081/"),
        "pod-a"
    );
    let refused = model(&st, "192.168.50.2", "192.168.34.1", 80);
    assert!(
        refused.iter().all(|f| f.0 == HookVerdict::Drop),
        "interpreter: {refused:?}"
    );
    assert!(model(&st, "192.168.50.2", "192.168.50.1", 30081)
        .iter()
        .all(|f| f.0 == HookVerdict::Accept && f.1 == "pod-a"));
}

#[test]
fn stale_udp_conntrack_arguments_delete_the_entries() {
    let lab = Lab::new();
    let dns = svc("dns", "10.96.0.53", vec![port("dns", Protocol::Udp, 53)]);
    let sl = slice(
        "dns",
        "dns-1",
        &[("dns", Protocol::Udp, 5353)],
        &[("10.244.1.5", "node-1")],
    );
    let mut st = compile(config(), node(), &[dns], std::slice::from_ref(&sl)).unwrap();
    let mut nft = NftCli::in_netns(format!("/run/netns/{}", lab.ns("node")));
    program(&mut nft, &st);
    // One datagram creates a DNATed conntrack entry (no server needed).
    lab.run(
        "client",
        &["bash", "-c", "echo hi > /dev/udp/10.96.0.53/53"],
    );
    let list = |lab: &Lab| {
        let out = lab.exec(
            "node",
            &["conntrack", "-L", "-p", "udp", "--orig-dst", "10.96.0.53"],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        list(&lab).contains("src=10.244.1.5"),
        "no entry: {}",
        list(&lab)
    );
    // The endpoint goes away: the update names the entry, and its arguments delete it.
    let mut gone = sl;
    gone.endpoints.clear();
    let update = st.upsert_endpoint_slice(gone);
    apply(&mut nft, &update);
    assert_eq!(update.stale_udp.len(), 1, "{:?}", update.stale_udp);
    let args = update.stale_udp[0].conntrack_args();
    let mut cmd = vec!["conntrack"];
    cmd.extend(args.iter().map(String::as_str));
    lab.run("node", &cmd);
    assert!(
        !list(&lab).contains("10.244.1.5"),
        "entry survived: {}",
        list(&lab)
    );
}

/// The netlink backend writes exactly what `nft` writes: the same updates applied through
/// each, in two namespaces, leave identical listings.
#[test]
fn netlink_backend_matches_nft() {
    let lab = Lab::new();
    let a_path = format!("/run/netns/{}", lab.ns("pod-a"));
    let b_path = format!("/run/netns/{}", lab.ns("pod-b"));
    let mut cli = NftCli::in_netns(&a_path);
    let mut native = sarasa_nft::NetlinkBackend::in_netns(&b_path).unwrap();

    let mut lb = svc(
        "lb",
        "10.96.0.20",
        vec![
            port("http", Protocol::Tcp, 80),
            port("dns", Protocol::Udp, 53),
        ],
    );
    lb.cluster_ips.push(ip("fd00:96::20"));
    lb.ip_families = vec![IpFamily::V4, IpFamily::V6];
    lb.type_ = ServiceType::LoadBalancer;
    lb.ports[0].node_port = Some(30080);
    lb.load_balancer_ips = vec![ip("192.168.34.1")];
    lb.external_traffic_policy = TrafficPolicy::Local;
    let ports: &[(&str, Protocol, u16)] =
        &[("http", Protocol::Tcp, 8080), ("dns", Protocol::Udp, 5353)];
    let v4 = slice(
        "lb",
        "lb-v4",
        ports,
        &[("10.244.1.5", "node-1"), ("10.244.2.5", "node-2")],
    );
    let v6 = slice("lb", "lb-v6", ports, &[("fd00:244:1::9", "node-1")]);
    let mut st = compile(
        config(),
        node(),
        std::slice::from_ref(&lb),
        &[v4.clone(), v6],
    )
    .unwrap();
    program(&mut cli, &st);
    program(&mut NftCli::in_netns(&b_path), &st);

    let mut updates = Vec::new();
    // Endpoint changes (the common case).
    let mut three = v4.clone();
    three
        .endpoints
        .push(Endpoint::ready(ip("10.244.3.5"), Some("node-3")));
    updates.push(st.upsert_endpoint_slice(three));
    updates.push(st.upsert_endpoint_slice(v4.clone()));
    // A new Service with session affinity (sets made in the batch), then one without endpoints.
    let mut sticky = svc(
        "sticky",
        "10.96.0.40",
        vec![port("http", Protocol::Tcp, 80)],
    );
    sticky.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 600,
    };
    updates.push(st.upsert_service(sticky));
    updates.push(st.upsert_endpoint_slice(slice(
        "sticky",
        "sticky-1",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.244.1.7", "node-1"), ("10.244.1.8", "node-1")],
    )));
    updates.push(st.upsert_service(svc(
        "empty",
        "10.96.0.41",
        vec![port("http", Protocol::Tcp, 80)],
    )));
    // Traffic policy change, then deletions.
    lb.external_traffic_policy = TrafficPolicy::Cluster;
    updates.push(st.upsert_service(lb));
    updates.push(st.delete_endpoint_slice("default", "sticky-1"));
    updates.push(st.delete_service("default", "empty"));

    // All tables (the namespaces hold nothing else).
    let listing = |path: &str| {
        let out = Command::new("nsenter")
            .args([&format!("--net={path}"), "nft", "list", "ruleset"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    for (i, u) in updates.iter().enumerate() {
        apply(&mut cli, u);
        // All tables' parts in one batch.
        let parts: Vec<_> = u
            .transactions
            .iter()
            .map(|(table, tx)| (Family::Inet, table.as_str(), tx))
            .collect();
        native
            .apply_batch(&parts)
            .unwrap_or_else(|e| panic!("update {i}: {e}\n{}", merged(u).script()));
        let (a, b) = (listing(&a_path), listing(&b_path));
        if a != b {
            for (x, y) in a.lines().zip(b.lines()) {
                if x != y {
                    panic!("update {i}: listings differ:\n nft:     {x}\n netlink: {y}");
                }
            }
            panic!("update {i}: listings differ in length");
        }
    }
    println!("{native:?}");
    assert!(native.native_count >= 6, "{native:?}");
    // Batches over the main table and a shard were among them.
    assert!(updates.iter().filter(|u| u.transactions.len() > 1).count() >= 2);
    assert_kernel_matches(&mut NftCli::in_netns(&b_path), &st);
}

/// Two Services in different shards on the same local address and port: one by externalIP,
/// the other by NodePort. As in one table, the IP match wins — also when the IP's shard
/// table is programmed later or earlier than the NodePort's (hook order among equal
/// priorities follows creation order, so both orders are tried), and also when the IP match
/// does not DNAT (externalTrafficPolicy Local without local endpoints: dropped, not handed
/// to the NodePort).
#[test]
fn ip_match_wins_over_node_port_across_shards() {
    let lab = Lab::new();
    let probe = ProxyState::new(config(), node()).unwrap();
    let shard = |n: &str| shard_of(&probe, n);
    // A pair of unused names (externalIP Service, NodePort Service) whose shards compare so.
    let pick = |ip_later: bool, used: &[String]| -> (String, String) {
        let names: Vec<String> = (0..64)
            .map(|i| format!("prec-{i}"))
            .filter(|n| !used.contains(n))
            .collect();
        for a in &names {
            for b in &names {
                let (sa, sb) = (shard(a), shard(b));
                if sa != sb && (sa > sb) == ip_later {
                    return (a.clone(), b.clone());
                }
            }
        }
        panic!("no two names in different shards");
    };
    let (a1, b1) = pick(true, &[]);
    let (a2, b2) = pick(false, &[a1.clone(), b1.clone()]);
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for (i, (a, b, p)) in [(&a1, &b1, 30091u16), (&a2, &b2, 30092)]
        .into_iter()
        .enumerate()
    {
        let mut ext = svc(
            a,
            &format!("10.96.1.{}", 10 + i),
            vec![port("http", Protocol::Tcp, p)],
        );
        ext.external_ips = vec![ip("192.168.50.1")];
        let mut np = svc(
            b,
            &format!("10.96.2.{}", 10 + i),
            vec![port("http", Protocol::Tcp, 80)],
        );
        np.type_ = ServiceType::NodePort;
        np.ports[0].node_port = Some(p);
        services.extend([ext, np]);
        let eps = |pod: &'static str| [(pod, "node-1")];
        slices.push(slice(
            a,
            &format!("{a}-1"),
            &[("http", Protocol::Tcp, 8080)],
            &eps("10.244.1.5"),
        ));
        slices.push(slice(
            b,
            &format!("{b}-1"),
            &[("http", Protocol::Tcp, 8080)],
            &eps("10.244.1.6"),
        ));
    }
    let mut st = compile(config(), node(), &services, &slices).unwrap();
    assert!(st.shard_of(&services[0].key()) > st.shard_of(&services[1].key()));
    assert!(st.shard_of(&services[2].key()) < st.shard_of(&services[3].key()));
    let mut nft = NftCli::in_netns(format!("/run/netns/{}", lab.ns("node")));
    program(&mut nft, &st);
    lab.wait_get("client", "http://10.244.1.5:8080/");
    lab.wait_get("client", "http://10.244.1.6:8080/");
    for port in [30091, 30092] {
        for _ in 0..5 {
            assert_eq!(
                lab.wait_get("client", &format!("http://192.168.50.1:{port}/")),
                "pod-a",
                "port {port}: the NodePort took an externalIP match"
            );
        }
        // The NodePort still serves the node's other address.
        assert_eq!(
            lab.wait_get("client", &format!("http://10.244.1.1:{port}/")),
            "pod-b"
        );
        // The interpreter takes the same ways.
        for (to, pod) in [("192.168.50.1", "pod-a"), ("10.244.1.1", "pod-b")] {
            let m = model(&st, "192.168.50.2", to, port);
            assert!(
                !m.is_empty() && m.iter().all(|f| f.0 == HookVerdict::Accept && f.1 == pod),
                "interpreter: {to}:{port}: {m:?}"
            );
        }
    }

    // The externalIP Service keeps only a remote endpoint under Local policy: its match falls
    // through its ext chain, and must not reach the NodePort of the other shard.
    let mut local = services[0].clone();
    local.external_traffic_policy = TrafficPolicy::Local;
    let mut remote = slices[0].clone();
    remote.endpoints[0].node_name = Some("node-2".into());
    let mut u = st.upsert_service(local);
    u.append(st.upsert_endpoint_slice(remote));
    apply(&mut nft, &u);
    assert_kernel_matches(&mut nft, &st);
    let err = lab.get("client", "http://192.168.50.1:30091/").unwrap_err();
    assert!(err.contains("(28)"), "expected a timeout (dropped): {err}");
    assert_eq!(lab.wait_get("client", "http://10.244.1.1:30091/"), "pod-b");
    let m = model(&st, "192.168.50.2", "192.168.50.1", 30091);
    assert!(
        m.iter().all(|f| f.0 == HookVerdict::Drop),
        "interpreter: {m:?}"
    );
}
