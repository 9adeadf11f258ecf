//! The server and the probe against each other on loopback (127.0.0.1 and ::1).

use sarasa_workload::{
    hold, probe, PodIdentity, PortSpec, ProbeError, ProbeTarget, Protocol, ServeConfig, Server,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

fn start(pod_ip: Option<&str>) -> Server {
    let config = ServeConfig {
        ports: vec![
            PortSpec {
                port: 0,
                protocol: Protocol::Tcp,
            },
            PortSpec {
                port: 0,
                protocol: Protocol::Udp,
            },
        ],
        address: None,
        identity: PodIdentity {
            pod: "web-1".into(),
            namespace: "shop".into(),
            pod_ip: pod_ip.map(String::from),
        },
        max_connections: 64,
        idle_timeout: Duration::from_secs(30),
    };
    Server::start(config).expect("server starts")
}

fn target(url: String) -> ProbeTarget {
    url.parse().expect("valid target")
}

const T: Duration = Duration::from_secs(5);

#[test]
fn tcp_reply_names_pod_and_client_over_ipv4_and_ipv6() {
    let server = start(None);
    let port = server.port(Protocol::Tcp).unwrap();
    for (host, ip) in [("127.0.0.1", "127.0.0.1"), ("[::1]", "::1")] {
        let r = probe(&target(format!("tcp://{host}:{port}")), T).unwrap();
        let reply = r.reply.expect("JSON reply");
        assert_eq!(reply.pod, "web-1");
        assert_eq!(reply.namespace, "shop");
        assert_eq!(reply.pod_ip, ip, "falls back to the local address");
        assert_eq!(reply.client_ip().unwrap().to_string(), ip);
        assert_eq!(reply.port, port);
        assert_eq!(reply.protocol, "tcp");
        assert_eq!(reply.path, None);
        assert_eq!(r.status, None);
    }
}

#[test]
fn raw_tcp_client_gets_one_json_line_per_line() {
    let server = start(Some("10.244.1.5"));
    let port = server.port(Protocol::Tcp).unwrap();
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(T)).unwrap();
    let local = conn.local_addr().unwrap();
    conn.write_all(b"one\ntwo\n").unwrap();
    let mut reader = BufReader::new(conn);
    for _ in 0..2 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["podIP"], "10.244.1.5");
        assert_eq!(v["client"], local.to_string());
        assert_eq!(v["protocol"], "tcp");
    }
}

#[test]
fn http_get_answers_any_path_with_json_and_keeps_alive() {
    let server = start(None);
    let port = server.port(Protocol::Tcp).unwrap();
    let r = probe(&target(format!("http://127.0.0.1:{port}/any/path?q=1")), T).unwrap();
    assert_eq!(r.status, Some(200));
    let reply = r.reply.expect("JSON body");
    assert_eq!(reply.path.as_deref(), Some("/any/path?q=1"));
    assert_eq!(reply.pod, "web-1");
    let r = probe(&target(format!("http://[::1]:{port}/hostname")), T).unwrap();
    assert_eq!(r.text, "web-1");

    // Two requests on one connection (HTTP/1.1 keep-alive), then Connection: close.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(T)).unwrap();
    conn.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /clientip HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    conn.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
    assert!(all.contains("\"path\":\"/a\""), "{all}");
    assert!(
        all.ends_with(&conn.local_addr().unwrap().to_string()),
        "{all}"
    );
}

#[test]
fn udp_replies_to_every_datagram() {
    let server = start(Some("10.244.1.5"));
    let port = server.port(Protocol::Udp).unwrap();
    for host in ["127.0.0.1", "[::1]"] {
        let r = probe(&target(format!("udp://{host}:{port}")), T).unwrap();
        let reply = r.reply.expect("JSON reply");
        assert_eq!(reply.protocol, "udp");
        assert_eq!(reply.pod_ip, "10.244.1.5");
        assert_eq!(reply.port, port);
        assert_eq!(reply.namespace, "shop");
    }
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(T)).unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..3 {
        socket.send(b"x").unwrap();
        let n = socket.recv(&mut buf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(v["client"], socket.local_addr().unwrap().to_string());
    }
}

#[test]
fn refused_fails_fast_for_tcp_http_and_udp() {
    let tcp_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in [
        format!("tcp://127.0.0.1:{tcp_port}"),
        format!("http://127.0.0.1:{tcp_port}/"),
        format!("udp://127.0.0.1:{udp_port}"),
    ] {
        let started = Instant::now();
        let e = probe(&target(url.clone()), Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, ProbeError::Refused { .. }), "{url}: {e}");
        assert!(e.to_string().contains("refused"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2), "{url} was slow");
    }
}

#[test]
fn silent_servers_time_out_within_the_timeout() {
    // A listener that never accepts: the connection completes, no reply ever comes.
    let silent_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let timeout = Duration::from_millis(400);
    for url in [
        format!("tcp://{}", silent_tcp.local_addr().unwrap()),
        format!("udp://{}", silent_udp.local_addr().unwrap()),
    ] {
        let started = Instant::now();
        let e = probe(&target(url.clone()), timeout).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e, ProbeError::Timeout { .. }), "{url}: {e}");
        assert!(took >= timeout, "{url} gave up early: {took:?}");
        assert!(took < timeout * 5, "{url} overran: {took:?}");
    }
    // The UDP probe retried within its timeout.
    let mut buf = [0u8; 64];
    silent_udp.set_nonblocking(true).unwrap();
    let mut datagrams = 0;
    while silent_udp.recv(&mut buf).is_ok() {
        datagrams += 1;
    }
    assert!(datagrams >= 2, "only {datagrams} datagram(s) sent");
}

#[test]
fn hold_checks_every_reply_on_one_connection() {
    let server = start(None);
    let url = target(format!(
        "tcp://127.0.0.1:{}",
        server.port(Protocol::Tcp).unwrap()
    ));
    let report = hold(
        &url,
        Duration::from_millis(500),
        Duration::from_millis(50),
        T,
    )
    .unwrap();
    assert!(report.replies >= 5, "{} replies", report.replies);
    assert!(report.held >= Duration::from_millis(500));
    assert_eq!(report.first.reply.unwrap().pod, "web-1");
}

#[test]
fn hold_fails_when_the_connection_breaks() {
    let server = start(None);
    let url = target(format!(
        "tcp://127.0.0.1:{}",
        server.port(Protocol::Tcp).unwrap()
    ));
    let holder = thread::spawn(move || {
        hold(
            &url,
            Duration::from_secs(20),
            Duration::from_millis(50),
            Duration::from_secs(2),
        )
    });
    let deadline = Instant::now() + T;
    while server.active_connections() == 0 {
        assert!(Instant::now() < deadline, "hold never connected");
        thread::sleep(Duration::from_millis(10));
    }
    server.shutdown();
    let started = Instant::now();
    let e = holder.join().unwrap().unwrap_err();
    assert!(matches!(e, ProbeError::HoldBroken { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn hold_needs_tcp() {
    let e = hold(
        &target("udp://127.0.0.1:9".into()),
        Duration::from_secs(1),
        Duration::from_millis(100),
        T,
    )
    .unwrap_err();
    assert!(matches!(e, ProbeError::HoldNeedsTcp { .. }), "{e}");
}

#[test]
fn many_concurrent_connections_are_served() {
    let server = start(None);
    let port = server.port(Protocol::Tcp).unwrap();
    // 50 connections open at once, each answered while the others stay open.
    let mut conns: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for c in &mut conns {
        c.set_read_timeout(Some(T)).unwrap();
        c.write_all(b"hi\n").unwrap();
    }
    for c in conns {
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).unwrap();
        assert!(line.contains("\"pod\":\"web-1\""), "{line}");
    }
}

#[test]
fn connections_over_the_limit_are_closed() {
    let mut config = ServeConfig::new(vec!["0/tcp".parse().unwrap()]);
    config.max_connections = 2;
    let server = Server::start(config).unwrap();
    let port = server.port(Protocol::Tcp).unwrap();
    let _a = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _b = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let deadline = Instant::now() + T;
    while server.active_connections() < 2 {
        assert!(Instant::now() < deadline, "connections not registered");
        thread::sleep(Duration::from_millis(10));
    }
    let e = probe(&target(format!("tcp://127.0.0.1:{port}")), T).unwrap_err();
    assert!(
        matches!(e, ProbeError::Closed { .. } | ProbeError::Io { .. }),
        "{e}"
    );
}

#[test]
fn ipv4_and_ipv6_share_one_port() {
    let server = start(None);
    let port = server.port(Protocol::Tcp).unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(TcpStream::connect(("::1", port)).is_ok());
}

#[test]
fn a_port_in_use_is_named_once() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut config = ServeConfig::new(vec![format!("{port}/tcp").parse().unwrap()]);
    config.address = Some("127.0.0.1".parse().unwrap());
    let e = Server::start(config).err().expect("port is taken");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("cannot listen on 127.0.0.1:{port} (tcp): ")),
        "{shown}"
    );
    // The message carries the cause; no source() to print it twice in a `{:#}` chain.
    assert!(std::error::Error::source(&e).is_none());
}

#[test]
fn idle_connections_are_closed_and_http_1_0_closes_after_the_reply() {
    let mut config = ServeConfig::new(vec!["0/tcp".parse().unwrap()]);
    config.idle_timeout = Duration::from_millis(200);
    let server = Server::start(config).unwrap();
    let port = server.port(Protocol::Tcp).unwrap();

    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.set_read_timeout(Some(T)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "server closed the idle connection"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut old = TcpStream::connect(("127.0.0.1", port)).unwrap();
    old.set_read_timeout(Some(T)).unwrap();
    old.write_all(b"HEAD /x HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    old.read_to_string(&mut all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("Connection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\n"), "HEAD has no body: {all}");
}
