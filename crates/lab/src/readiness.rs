//! Readiness probes as the kubelet runs them: `exec` inside the pod's network namespace,
//! `tcpSocket` and `httpGet` from the node's namespace to the pod IP. Parameters default as in
//! Kubernetes (period 10 s, timeout 1 s, success threshold 1, failure threshold 3, no initial
//! delay); a probed container is not ready until its first success.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sarasa_netns::NetNs;

use crate::LabError;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Run this command inside the pod's network namespace; exit status 0 is success.
    Exec(Vec<String>),
    /// Open a TCP connection to the pod IP on this port.
    TcpSocket { port: u16 },
    /// `GET path` on the pod IP; a status in 200..400 is success.
    HttpGet { port: u16, path: String },
}

/// A container's readinessProbe with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessProbe {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// The readinessProbe of `c`, or None without one. Named ports resolve against the container's
/// `ports`; a probe that names no action or an unknown port is an error naming the field.
pub fn readiness_probe(c: &Container) -> Result<Option<ReadinessProbe>, LabError> {
    match &c.readiness_probe {
        Some(p) => parse_probe(c, p, "readinessProbe").map(Some),
        None => Ok(None),
    }
}

/// The livenessProbe of `c` (same defaults; its successThreshold is always 1).
pub fn liveness_probe(c: &Container) -> Result<Option<ReadinessProbe>, LabError> {
    let Some(p) = &c.liveness_probe else {
        return Ok(None);
    };
    let mut probe = parse_probe(c, p, "livenessProbe")?;
    probe.success_threshold = 1;
    Ok(Some(probe))
}

fn parse_probe(c: &Container, p: &Probe, kind: &str) -> Result<ReadinessProbe, LabError> {
    let field = |f: &str| format!("container {:?} {kind}.{f}", c.name);
    let action = probe_action(c, p, &field)?;
    let secs = |v: Option<i32>, default: i32, min: i32| -> Duration {
        Duration::from_secs(v.unwrap_or(default).max(min) as u64)
    };
    Ok(ReadinessProbe {
        action,
        initial_delay: secs(p.initial_delay_seconds, 0, 0),
        period: secs(p.period_seconds, 10, 1),
        timeout: secs(p.timeout_seconds, 1, 1),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

fn probe_action(
    c: &Container,
    p: &Probe,
    field: &dyn Fn(&str) -> String,
) -> Result<ProbeAction, LabError> {
    if let Some(e) = &p.exec {
        let cmd = e.command.clone().unwrap_or_default();
        if cmd.is_empty() {
            return Err(LabError::Invalid(format!(
                "{}: empty command",
                field("exec.command")
            )));
        }
        return Ok(ProbeAction::Exec(cmd));
    }
    if let Some(t) = &p.tcp_socket {
        let port = resolve_port(c, &t.port)
            .map_err(|e| LabError::Invalid(format!("{}: {e}", field("tcpSocket.port"))))?;
        return Ok(ProbeAction::TcpSocket { port });
    }
    if let Some(h) = &p.http_get {
        let port = resolve_port(c, &h.port)
            .map_err(|e| LabError::Invalid(format!("{}: {e}", field("httpGet.port"))))?;
        if h.scheme
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
        {
            return Err(LabError::Invalid(format!(
                "{}: only HTTP is supported",
                field("httpGet.scheme")
            )));
        }
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        return Ok(ProbeAction::HttpGet { port, path });
    }
    Err(LabError::Invalid(format!(
        "{}: needs exec, tcpSocket or httpGet",
        field("")
    )))
}

fn resolve_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{n} is not a port (1-65535)")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// Consecutive results turned into a readiness verdict, with the thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProbeState {
    pub ready: bool,
    successes: u32,
    failures: u32,
}

impl ProbeState {
    /// A liveness verdict starts passing: only failures past the threshold flip it.
    pub fn passing() -> ProbeState {
        ProbeState {
            ready: true,
            ..ProbeState::default()
        }
    }

    /// Records one result; returns true when readiness changed.
    pub fn record(&mut self, ok: bool, probe: &ReadinessProbe) -> bool {
        let before = self.ready;
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= probe.success_threshold {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= probe.failure_threshold {
                self.ready = false;
            }
        }
        before != self.ready
    }
}

/// Where a probe runs: the pod's namespace (exec) and the node's (network probes).
pub struct ProbeTarget<'a> {
    pub pod_netns: &'a Path,
    pub node: &'a NetNs,
    pub pod_ip: IpAddr,
}

/// Runs one probe (blocking, bounded by its timeout); true on success.
pub fn run_probe(probe: &ReadinessProbe, target: &ProbeTarget<'_>) -> bool {
    match &probe.action {
        ProbeAction::Exec(cmd) => run_exec(cmd, target.pod_netns, probe.timeout),
        ProbeAction::TcpSocket { port } => {
            let addr = SocketAddr::new(target.pod_ip, *port);
            target
                .node
                .run(|| TcpStream::connect_timeout(&addr, probe.timeout).is_ok())
                .unwrap_or(false)
        }
        ProbeAction::HttpGet { port, path } => {
            let addr = SocketAddr::new(target.pod_ip, *port);
            target
                .node
                .run(|| {
                    http_get(addr, path, probe.timeout).is_some_and(|s| (200..400).contains(&s))
                })
                .unwrap_or(false)
        }
    }
}

pub(crate) fn run_exec(cmd: &[String], netns: &Path, timeout: Duration) -> bool {
    let Some((program, args)) = cmd.split_first() else {
        return false;
    };
    let mut command = Command::new(program);
    command
        .env_remove(crate::process::DAEMON_TAG)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(_keep) = crate::process::enter_before_exec(&mut command, Some(netns), &[], false) else {
        return false;
    };
    let Ok(mut child) = command.spawn() else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// The status code of `GET path` (HTTP/1.0, so the server closes), or None.
fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left)).ok()?;
    s.set_write_timeout(Some(left)).ok()?;
    let host = match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    // One write: the request goes out in one segment.
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}:{}\r\nUser-Agent: kube-probe/sarasa\r\n\r\n",
        addr.port()
    );
    s.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    parse_status_line(&head[..n])
}

fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?;
    let mut parts = line.split_ascii_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(probe: serde_json::Value) -> Container {
        serde_json::from_value(json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": probe,
        }))
        .expect("container")
    }

    #[test]
    fn defaults_are_kubernetes_defaults() {
        let p = readiness_probe(&container(json!({"tcpSocket": {"port": "http"}})))
            .expect("valid")
            .expect("probe");
        assert_eq!(p.action, ProbeAction::TcpSocket { port: 8080 });
        assert_eq!(p.period, Duration::from_secs(10));
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert_eq!(p.initial_delay, Duration::ZERO);
        assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
    }

    #[test]
    fn http_and_exec_probes_parse() {
        let p = readiness_probe(&container(
            json!({"httpGet": {"port": 9000}, "periodSeconds": 1, "failureThreshold": 1}),
        ))
        .expect("valid")
        .expect("probe");
        assert_eq!(
            p.action,
            ProbeAction::HttpGet {
                port: 9000,
                path: "/".into()
            }
        );
        assert_eq!((p.period, p.failure_threshold), (Duration::from_secs(1), 1));
        let p = readiness_probe(&container(
            json!({"exec": {"command": ["test", "-e", "/x"]}}),
        ))
        .expect("valid")
        .expect("probe");
        assert_eq!(
            p.action,
            ProbeAction::Exec(vec!["test".into(), "-e".into(), "/x".into()])
        );
        let none: Container = serde_json::from_value(json!({"name": "a"})).expect("container");
        assert_eq!(readiness_probe(&none).expect("valid"), None);
    }

    #[test]
    fn bad_probes_name_the_field() {
        for (probe, field) in [
            (
                json!({"tcpSocket": {"port": "nope"}}),
                "readinessProbe.tcpSocket.port",
            ),
            (
                json!({"httpGet": {"port": 0}}),
                "readinessProbe.httpGet.port",
            ),
            (
                json!({"exec": {"command": []}}),
                "readinessProbe.exec.command",
            ),
            (json!({"periodSeconds": 1}), "readinessProbe."),
        ] {
            let e = readiness_probe(&container(probe.clone())).expect_err("invalid");
            assert!(e.to_string().contains(field), "{probe}: {e}");
        }
    }

    #[test]
    fn thresholds_gate_transitions() {
        let mut p = readiness_probe(&container(json!({"tcpSocket": {"port": 1}})))
            .expect("valid")
            .expect("probe");
        p.success_threshold = 2;
        let mut s = ProbeState::default();
        assert!(!s.record(true, &p), "one success of two needed");
        assert!(s.record(true, &p));
        assert!(s.ready);
        assert!(!s.record(false, &p));
        assert!(!s.record(false, &p));
        assert!(!s.record(true, &p), "a success resets the failure count");
        assert!(!s.record(false, &p));
        assert!(!s.record(false, &p));
        assert!(s.record(false, &p), "third consecutive failure");
        assert!(!s.ready);
    }

    #[test]
    fn status_line_parses() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"SSH-2.0"), None);
        assert_eq!(parse_status_line(b""), None);
    }
}

/// Privileged: probes run where a kubelet runs them, in a namespace this test creates.
#[cfg(test)]
mod netns_tests {
    use super::*;
    use std::net::TcpListener;

    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = NetNs::delete(&self.0);
        }
    }

    fn probe(action: ProbeAction) -> ReadinessProbe {
        ReadinessProbe {
            action,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 1,
        }
    }

    #[test]
    fn exec_tcp_and_http_probes_run_in_the_right_namespace() {
        let name = format!("sarasa-t{}-probes", std::process::id());
        let ns = NetNs::create(&name).expect("creating a namespace (needs root)");
        let _guard = Guard(name);
        crate::topology::ns_lo_up(&ns).expect("lo up");
        // A server inside the namespace on 127.0.0.1: one HTTP answer per connection.
        let listener = ns
            .run(|| TcpListener::bind("127.0.0.1:0"))
            .expect("enter")
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let status = if buf.starts_with(b"GET /ok ") {
                    200
                } else {
                    503
                };
                let _ = write!(s, "HTTP/1.0 {status} X\r\n\r\n");
            }
        });
        let target = ProbeTarget {
            pod_netns: ns.path(),
            node: &ns,
            pod_ip: "127.0.0.1".parse().expect("ip"),
        };
        assert!(run_probe(&probe(ProbeAction::TcpSocket { port }), &target));
        let ok = ProbeAction::HttpGet {
            port,
            path: "/ok".into(),
        };
        let bad = ProbeAction::HttpGet {
            port,
            path: "/bad".into(),
        };
        assert!(run_probe(&probe(ok), &target));
        assert!(!run_probe(&probe(bad), &target), "503 is a failure");
        // The same port in the test's own namespace is not the server: exec proves where it ran.
        let sh = |script: String| ProbeAction::Exec(vec!["/bin/sh".into(), "-c".into(), script]);
        let in_ns = "ip -o link show | grep -qv ' lo:' && exit 1; exit 0".to_string();
        assert!(
            run_probe(&probe(sh(in_ns)), &target),
            "exec ran outside the pod namespace"
        );
        assert!(!run_probe(&probe(sh("exit 3".into())), &target));
        let slow = probe(sh("sleep 5".into()));
        let started = Instant::now();
        assert!(!run_probe(&slow, &target), "a probe past its timeout fails");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
