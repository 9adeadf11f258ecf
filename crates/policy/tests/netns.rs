//! Privileged test with real packets: a node-like network namespace with a bridge and three pod
//! namespaces, the compiled table applied over netlink inside the node namespace as the agent
//! does (its `log` statements included: no `nft -f`), and TCP connections that must pass or
//! be dropped. Needs root, `ip` and `nft`; it fails (never
//! skips) without them. Everything lives in namespaces named `sarasa-t<pid>-...`, removed by
//! Drop guards also when the test fails.

mod common;

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{labels, pods_peer, port, rule, sel, PolicyNode, P};
use sarasa_nft::interp::{run_hook, HookVerdict, Packet};
use sarasa_nft::{
    diff_kernel, Backend, Family, Hook, L4Proto, NetlinkBackend, NetlinkTableBackend, Table,
};
use sarasa_policy::*;

/// A network namespace, removed on drop.
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("sarasa-t{}-pol-{role}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend_from_slice(args);
        run("ip", &a);
    }
    fn exec(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", self.0.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
    /// Runs `f` on a thread that has entered this namespace (sockets made there stay in it).
    fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let file = File::open(&path).expect("open netns");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("netns thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (needs root and iproute2/nftables)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const NODE_IP: &str = "10.250.0.1";

fn pod_addr(i: usize) -> String {
    format!("10.250.0.{}", 11 + i)
}

/// Can `from` open a TCP connection to `to:port`? A dropped SYN times out.
fn connects(from: &Netns, to: &str, port: u16) -> bool {
    let addr = SocketAddr::new(to.parse().unwrap(), port);
    let timeout = Duration::from_millis(1500);
    from.run_in(move || TcpStream::connect_timeout(&addr, timeout).is_ok())
}

/// The interpreter's verdict on a new TCP connection's first packet at `hook` of the node (the
/// table hooks only forward; input and output see none of its chains).
fn interp_allows(table: &Table, hook: Hook, from: &str, to: &str, port: u16) -> bool {
    let packet = Packet::new(
        from.parse().unwrap(),
        to.parse().unwrap(),
        L4Proto::Tcp,
        40000,
        port,
    );
    let paths = run_hook(&[table], hook, &packet, &PolicyNode).expect("interpreter");
    assert_eq!(paths.len(), 1, "{paths:#?}");
    paths[0].verdict == HookVerdict::Accept
}

/// A real connection's fate and the interpreter's verdict for it: pod `from` (or the node when
/// `from` is `None`) to `to:port`, judged by the model at `hook`.
fn fate(
    table: &Table,
    from: &Netns,
    from_addr: &str,
    to: &str,
    port: u16,
    hook: Hook,
) -> (bool, bool) {
    (
        connects(from, to, port),
        interp_allows(table, hook, from_addr, to, port),
    )
}

fn pod(ns: &str, name: &str, i: usize, pod_label: &str) -> PolicyPod {
    PolicyPod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels(&[("pod", pod_label)]),
        ips: vec![pod_addr(i).parse().unwrap()],
        ports: vec![],
        node: Some("node-t".into()),
    }
}

#[test]
fn compiled_policy_filters_real_packets_and_logs_drops() {
    // Node: a bridge holding the pod gateway; pods: /32 addresses routed through the node, so
    // pod-to-pod traffic crosses the node's forward hook even on one bridge.
    let node = Netns::new("node");
    node.ip(&["link", "add", "br0", "type", "bridge"]);
    node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "br0"]);
    node.ip(&["link", "set", "br0", "up"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.conf.br0.send_redirects=0"]);
    let pods: Vec<Netns> = ["a", "b", "c"].iter().map(|r| Netns::new(r)).collect();
    for (i, p) in pods.iter().enumerate() {
        let host_if = format!("vp{i}");
        node.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &p.0,
        ]);
        node.ip(&["link", "set", &host_if, "master", "br0", "up"]);
        p.ip(&["addr", "add", &format!("{}/32", pod_addr(i)), "dev", "eth0"]);
        p.ip(&["link", "set", "eth0", "up"]);
        p.ip(&["route", "add", NODE_IP, "dev", "eth0"]);
        p.ip(&["route", "add", "default", "via", NODE_IP, "dev", "eth0"]);
    }
    // Servers on 80 and 81 in pod a and c: the kernel completes handshakes into the backlog,
    // so listening is enough.
    let listeners: Vec<TcpListener> = [0usize, 2]
        .iter()
        .flat_map(|&i| {
            [80u16, 81].map(|port| {
                let addr: IpAddr = pod_addr(i).parse().unwrap();
                pods[i].run_in(move || TcpListener::bind((addr, port)).expect("bind"))
            })
        })
        .collect();
    let node_listener = node.run_in(|| TcpListener::bind((NODE_IP, 8080)).expect("bind"));
    assert!(connects(&pods[1], &pod_addr(0), 80), "no policy: b -> a");
    assert!(connects(&pods[2], &pod_addr(0), 81), "no policy: c -> a");

    // x/a accepts only x/b on TCP 80; y/c is elsewhere.
    let mut state = PolicyState::new();
    state.apply_namespace(PolicyNamespace::new("x", labels(&[])));
    state.apply_namespace(PolicyNamespace::new("y", labels(&[("team", "y")])));
    state.apply_pod(pod("x", "a", 0, "a"));
    state.apply_pod(pod("x", "b", 1, "b"));
    state.apply_pod(pod("y", "c", 2, "c"));
    state.apply_node("node-t", vec![NODE_IP.parse().unwrap()]);
    let policy = |extra_ns: bool| {
        let mut peers = vec![pods_peer(Some(sel(&[("pod", "b")])), None)];
        if extra_ns {
            peers.push(pods_peer(None, Some(sel(&[("team", "y")]))));
        }
        P::new("x", "a-from-b", sel(&[("pod", "a")]))
            .ingress(rule(peers, vec![port(Protocol::Tcp, 80)]))
            .build()
    };
    state.apply_policy(policy(false)).unwrap();
    let opts = CompileOptions {
        node: Some("node-t".into()),
        ..CompileOptions::default()
    };
    // The agent's path: a long-lived compiler, reconciled against the kernel at start.
    let mut compiler = PolicyCompiler::new(state.clone(), opts.clone());
    assert_eq!(compiler.table(), &compile(&state, &opts));
    let mut nft = NetlinkTableBackend {
        inner: NetlinkBackend::in_netns(node.path()).expect("netlink socket in the node"),
        family: Family::Inet,
        table: TABLE.to_string(),
    };
    nft.reconcile(compiler.table())
        .expect("apply compiled table");
    let kernel = nft.list_table(Family::Inet, TABLE).unwrap().unwrap();
    let again = diff_kernel(Some(&kernel), compiler.table());
    assert!(
        again.is_empty(),
        "kernel differs from the model:\n{}",
        again.script()
    );

    // Listen for drop logs in the node namespace, as the agent does.
    let group = opts.log_group;
    let nflog = node.run_in(move || {
        let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)
            .expect("netlink socket");
        s.bind_auto().expect("bind netlink");
        s.send(&bind_request(group, 1), 0)
            .expect("bind nflog group");
        s
    });
    nflog.set_non_blocking(true).unwrap();

    // Real packets and the interpreter agree on each of these.
    let t = compiler.table();
    let (a, b, c) = (pod_addr(0), pod_addr(1), pod_addr(2));
    let fwd = Hook::Forward;
    assert_eq!(
        fate(t, &pods[1], &b, &a, 80, fwd),
        (true, true),
        "x/b -> x/a:80 allowed"
    );
    assert_eq!(
        fate(t, &pods[1], &b, &a, 81, fwd),
        (false, false),
        "x/b -> x/a:81 denied"
    );
    assert_eq!(
        fate(t, &pods[2], &c, &a, 80, fwd),
        (false, false),
        "y/c -> x/a:80 denied"
    );
    assert_eq!(
        fate(t, &pods[0], &a, &c, 81, fwd),
        (true, true),
        "x/a -> y/c: no egress policy"
    );
    assert_eq!(
        fate(t, &node, NODE_IP, &a, 81, Hook::Output),
        (true, true),
        "node -> its own pod is always allowed"
    );
    assert_eq!(
        fate(t, &pods[0], &a, NODE_IP, 8080, Hook::Input),
        (true, true),
        "pod -> its own node is always allowed"
    );
    // Evaluator agrees on each of those.
    let ep = |ns: &str, n: &str| Endpoint::Pod(PodKey::new(ns, n));
    assert!(
        allowed(&state, &ep("x", "b"), &ep("x", "a"), Protocol::Tcp, 80)
            .unwrap()
            .allowed
    );
    assert!(
        !allowed(&state, &ep("x", "b"), &ep("x", "a"), Protocol::Tcp, 81)
            .unwrap()
            .allowed
    );
    assert!(
        !allowed(&state, &ep("y", "c"), &ep("x", "a"), Protocol::Tcp, 80)
            .unwrap()
            .allowed
    );

    // The drop was logged: the log rule's counter moved and the pair is in the rate-limit set.
    let chain = node.exec(&["nft", "list", "chain", "inet", TABLE, "ing_x_a"]);
    let log_line = chain
        .lines()
        .find(|l| l.contains("log prefix \"np in x/a \""))
        .unwrap_or_else(|| panic!("no log rule in\n{chain}"));
    let packets: u64 = log_line
        .split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(packets >= 2, "log rule counter: {log_line}");
    let logged = node.exec(&["nft", "list", "set", "inet", TABLE, "logged-v4"]);
    assert!(
        logged.contains(&format!("{} . {}", pod_addr(2), pod_addr(0))),
        "y/c . x/a not in logged-v4:\n{logged}"
    );
    // The nflog messages name the pods and, through the state, the policy.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    while Instant::now() < deadline && events.len() < 2 {
        match nflog.recv_from_full() {
            Ok((buf, _)) => {
                events.extend(parse_messages(&buf).iter().filter_map(|p| p.event(&state)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("nflog: {e}"),
        }
    }
    let from_c = events
        .iter()
        .find(|e| e.src == ep("y", "c"))
        .unwrap_or_else(|| panic!("no drop event from y/c: {events:?}"));
    assert_eq!(from_c.dst, ep("x", "a"));
    assert_eq!((from_c.direction, from_c.port), (Direction::Ingress, 80));
    assert_eq!(from_c.policies, vec![PodKey::new("x", "a-from-b")]);
    let from_b = events
        .iter()
        .find(|e| e.src == ep("x", "b"))
        .unwrap_or_else(|| panic!("no drop event from x/b: {events:?}"));
    assert_eq!(from_b.port, 81);

    // Incremental update: also allow namespace y; only x/a's chain and a new set change.
    compiler.apply_policy(policy(true)).unwrap();
    let tx = compiler.take_transaction();
    assert_eq!(
        tx.chains_written.iter().collect::<Vec<_>>(),
        vec!["ing_x_a"]
    );
    nft.apply(&tx).expect("apply update");
    assert_eq!(nft.inner.native_count, 2, "two netlink batches");
    let t = compiler.table();
    assert_eq!(
        fate(t, &pods[2], &c, &a, 80, fwd),
        (true, true),
        "y/c -> x/a:80 after update"
    );
    assert_eq!(
        fate(t, &pods[2], &c, &a, 81, fwd),
        (false, false),
        "y/c -> x/a:81 still denied"
    );
    let kernel = nft.list_table(Family::Inet, TABLE).unwrap().unwrap();
    let again = diff_kernel(Some(&kernel), compiler.table());
    assert!(
        again.is_empty(),
        "kernel differs after the update:\n{}",
        again.script()
    );
    drop(listeners);
    drop(node_listener);
}
