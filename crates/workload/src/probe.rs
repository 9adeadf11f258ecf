//! `sarasa probe`: connects to `tcp://`, `udp://` or `http://` targets, returns the reply, and
//! fails fast on a refused connection. [`hold`] keeps one TCP connection open and checks a
//! reply for every line sent, for tests that must not disturb established connections.

use crate::http;
use crate::reply::ServeReply;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

/// A host (name or IP literal, without brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What to probe: `tcp://H:P`, `udp://H:P` or `http://H:P/path` (IPv6 as `[::1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    Tcp(HostPort),
    Udp(HostPort),
    Http { server: HostPort, path: String },
}

impl ProbeTarget {
    pub fn server(&self) -> &HostPort {
        match self {
            ProbeTarget::Tcp(s) | ProbeTarget::Udp(s) | ProbeTarget::Http { server: s, .. } => s,
        }
    }
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeTarget::Tcp(s) => write!(f, "tcp://{s}"),
            ProbeTarget::Udp(s) => write!(f, "udp://{s}"),
            ProbeTarget::Http { server, path } => write!(f, "http://{server}{path}"),
        }
    }
}

impl FromStr for ProbeTarget {
    type Err = ProbeError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ProbeError::BadTarget {
            target: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("expected tcp://HOST:PORT, udp://HOST:PORT or http://HOST:PORT/PATH")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) if scheme == "http" => (&rest[..i], rest[i..].to_string()),
            Some(_) => return Err(bad("only http:// targets have a path")),
            None => (rest, "/".to_string()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            // `[::1]:80`, or `[::1]` alone where the scheme has a default port (http).
            let (host, port) = match v6.split_once(']') {
                Some((h, "")) => (h, None),
                Some((h, p)) => (
                    h,
                    Some(p.strip_prefix(':').ok_or_else(|| {
                        bad("after the bracketed IPv6 address comes :PORT: [::1]:80")
                    })?),
                ),
                None => return Err(bad("an IPv6 address needs its closing bracket: [::1]:80")),
            };
            host.parse::<Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address inside the brackets"))?;
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(bad("put an IPv6 address in brackets: [::1]:80"))
                }
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match (port, scheme) {
            (Some(p), _) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("port must be a number from 1 to 65535"))?,
            (None, "http") => 80,
            (None, _) => return Err(bad("missing port")),
        };
        let server = HostPort {
            host: host.to_string(),
            port,
        };
        match scheme {
            "tcp" => Ok(ProbeTarget::Tcp(server)),
            "udp" => Ok(ProbeTarget::Udp(server)),
            "http" => Ok(ProbeTarget::Http { server, path }),
            _ => Err(bad("scheme must be tcp, udp or http")),
        }
    }
}

/// A successful probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReply {
    /// The address that answered.
    pub remote: SocketAddr,
    /// HTTP status code (HTTP targets only).
    pub status: Option<u16>,
    /// The reply line (TCP, UDP) or body (HTTP), without the trailing newline.
    pub text: String,
    /// The reply parsed, when it came from `sarasa serve`.
    pub reply: Option<ServeReply>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid target {target:?}: {reason}")]
    BadTarget { target: String, reason: String },
    #[error("cannot resolve {server}: {error}")]
    Resolve { server: String, error: io::Error },
    #[error("{target}: connection refused by {remote}")]
    Refused { target: String, remote: SocketAddr },
    #[error("{target}: no reply within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
    #[error("{target}: connection closed without a reply")]
    Closed { target: String },
    #[error("{target}: {error}")]
    Io { target: String, error: io::Error },
    #[error("{target}: not an HTTP response: {line:?}")]
    BadResponse { target: String, line: String },
    #[error("hold of {target} broke after {after:?} ({replies} replies): {cause}")]
    HoldBroken {
        target: String,
        after: Duration,
        replies: u64,
        cause: Box<ProbeError>,
    },
    #[error("--hold needs a tcp:// target, not {target}")]
    HoldNeedsTcp { target: String },
}

/// Probes once within `timeout` (resolve, connect, request, reply).
pub fn probe(target: &ProbeTarget, timeout: Duration) -> Result<ProbeReply, ProbeError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let addrs = resolve(target)?;
    let mut last_error = None;
    for remote in addrs {
        let attempt = match target {
            ProbeTarget::Tcp(_) => probe_tcp(target, remote, deadline, timeout),
            ProbeTarget::Udp(_) => probe_udp(target, remote, deadline, timeout),
            ProbeTarget::Http { server, path } => {
                probe_http(target, server, path, remote, deadline, timeout)
            }
        };
        match attempt {
            Ok((status, text)) => {
                let text = text.trim_end_matches(['\r', '\n']).to_string();
                return Ok(ProbeReply {
                    remote,
                    status,
                    reply: serde_json::from_str(&text).ok(),
                    text,
                    elapsed: started.elapsed(),
                });
            }
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last_error.unwrap_or_else(|| ProbeError::Timeout {
        target: target.to_string(),
        timeout,
    }))
}

fn resolve(target: &ProbeTarget) -> Result<Vec<SocketAddr>, ProbeError> {
    let server = target.server();
    let resolve_err = |error| ProbeError::Resolve {
        server: server.to_string(),
        error,
    };
    let addrs: Vec<SocketAddr> = (server.host.as_str(), server.port)
        .to_socket_addrs()
        .map_err(resolve_err)?
        .collect();
    if addrs.is_empty() {
        return Err(resolve_err(io::Error::new(
            io::ErrorKind::NotFound,
            "no addresses",
        )));
    }
    Ok(addrs)
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Maps socket errors to the probe's vocabulary.
fn io_error(
    target: &ProbeTarget,
    remote: SocketAddr,
    timeout: Duration,
    e: io::Error,
) -> ProbeError {
    let target = target.to_string();
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeError::Refused { target, remote },
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            ProbeError::Timeout { target, timeout }
        }
        io::ErrorKind::UnexpectedEof => ProbeError::Closed { target },
        _ => ProbeError::Io { target, error: e },
    }
}

fn connect(
    target: &ProbeTarget,
    remote: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, ProbeError> {
    let timed_out = || ProbeError::Timeout {
        target: target.to_string(),
        timeout,
    };
    let left = remaining(deadline).ok_or_else(timed_out)?;
    let stream = TcpStream::connect_timeout(&remote, left)
        .map_err(|e| io_error(target, remote, timeout, e))?;
    let left = remaining(deadline).ok_or_else(timed_out)?;
    let setup = || -> io::Result<()> {
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))?;
        stream.set_nodelay(true)
    };
    setup().map_err(|e| io_error(target, remote, timeout, e))?;
    Ok(stream)
}

fn probe_tcp(
    target: &ProbeTarget,
    remote: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<(Option<u16>, String), ProbeError> {
    let mut stream = connect(target, remote, deadline, timeout)?;
    let err = |e| io_error(target, remote, timeout, e);
    stream.write_all(b"probe\n").map_err(err)?;
    let mut reader = BufReader::new(stream);
    match http::read_line(&mut reader).map_err(err)? {
        Some(line) => Ok((None, line)),
        None => Err(ProbeError::Closed {
            target: target.to_string(),
        }),
    }
}

fn probe_http(
    target: &ProbeTarget,
    server: &HostPort,
    path: &str,
    remote: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<(Option<u16>, String), ProbeError> {
    let mut stream = connect(target, remote, deadline, timeout)?;
    let err = |e| io_error(target, remote, timeout, e);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nUser-Agent: sarasa-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(err)?;
    let mut reader = BufReader::new(stream);
    let status_line =
        http::read_line(&mut reader)
            .map_err(err)?
            .ok_or_else(|| ProbeError::Closed {
                target: target.to_string(),
            })?;
    let status = http::parse_status_line(&status_line).ok_or_else(|| ProbeError::BadResponse {
        target: target.to_string(),
        line: status_line.trim_end().to_string(),
    })?;
    let headers = http::read_headers(&mut reader).map_err(err)?;
    let body = http::read_body(&mut reader, &headers, true).map_err(err)?;
    Ok((Some(status), String::from_utf8_lossy(&body).into_owned()))
}

fn probe_udp(
    target: &ProbeTarget,
    remote: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<(Option<u16>, String), ProbeError> {
    let err = |e| io_error(target, remote, timeout, e);
    let local: SocketAddr = if remote.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(err)?;
    // Connected, so an ICMP port unreachable comes back as ECONNREFUSED: fail fast.
    socket.connect(remote).map_err(err)?;
    // Datagrams get lost: resend a few times within the timeout.
    let per_attempt = (timeout / 4).max(Duration::from_millis(100));
    let mut buf = vec![0u8; 65536];
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(ProbeError::Timeout {
                target: target.to_string(),
                timeout,
            });
        };
        socket.send(b"probe\n").map_err(err)?;
        socket
            .set_read_timeout(Some(per_attempt.min(left)))
            .map_err(err)?;
        match socket.recv(&mut buf) {
            Ok(n) => return Ok((None, String::from_utf8_lossy(&buf[..n]).into_owned())),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::TimedOut
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
}

/// The outcome of a successful [`hold`].
#[derive(Debug, Clone, PartialEq)]
pub struct HoldReport {
    /// The first reply on the held connection.
    pub first: ProbeReply,
    /// Replies received (one per line sent).
    pub replies: u64,
    pub held: Duration,
}

/// Keeps one TCP connection to `target` open for `duration`, sending a line every `interval`
/// and failing as soon as a reply is missing for longer than `timeout`, the connection breaks,
/// or the replies start coming from another pod.
pub fn hold(
    target: &ProbeTarget,
    duration: Duration,
    interval: Duration,
    timeout: Duration,
) -> Result<HoldReport, ProbeError> {
    let ProbeTarget::Tcp(_) = target else {
        return Err(ProbeError::HoldNeedsTcp {
            target: target.to_string(),
        });
    };
    let started = Instant::now();
    let remote = *resolve(target)?.first().ok_or_else(|| ProbeError::Closed {
        target: target.to_string(),
    })?;
    let stream = connect(target, remote, started + timeout, timeout)?;
    let mut writer = stream
        .try_clone()
        .map_err(|e| io_error(target, remote, timeout, e))?;
    let mut reader = BufReader::new(stream);
    let mut first: Option<ProbeReply> = None;
    let mut replies = 0u64;
    let broken = |replies, cause| ProbeError::HoldBroken {
        target: target.to_string(),
        after: started.elapsed(),
        replies,
        cause: Box::new(cause),
    };
    loop {
        let sent = Instant::now();
        let exchange = exchange_line(target, remote, timeout, &mut writer, &mut reader, replies);
        let text = exchange.map_err(|e| broken(replies, e))?;
        replies += 1;
        let reply: Option<ServeReply> = serde_json::from_str(&text).ok();
        match &first {
            None => {
                first = Some(ProbeReply {
                    remote,
                    status: None,
                    text,
                    reply,
                    elapsed: started.elapsed(),
                })
            }
            Some(f) if f.reply.as_ref().map(|r| &r.pod) != reply.as_ref().map(|r| &r.pod) => {
                let cause = ProbeError::BadResponse {
                    target: target.to_string(),
                    line: format!("reply from another server: {text}"),
                };
                return Err(broken(replies, cause));
            }
            Some(_) => {}
        }
        if started.elapsed() >= duration {
            break;
        }
        let next = sent + interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    Ok(HoldReport {
        first: first.ok_or_else(|| ProbeError::Closed {
            target: target.to_string(),
        })?,
        replies,
        held: started.elapsed(),
    })
}

fn exchange_line(
    target: &ProbeTarget,
    remote: SocketAddr,
    timeout: Duration,
    writer: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    seq: u64,
) -> Result<String, ProbeError> {
    let err = |e| io_error(target, remote, timeout, e);
    writer
        .write_all(format!("hold {seq}\n").as_bytes())
        .map_err(err)?;
    reader
        .get_ref()
        .set_read_timeout(Some(timeout))
        .map_err(err)?;
    let mut line = String::new();
    match reader.read_line(&mut line).map_err(err)? {
        0 => Err(ProbeError::Closed {
            target: target.to_string(),
        }),
        _ => Ok(line.trim_end().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn parses_targets() {
        assert_eq!(
            "tcp://10.244.1.5:80".parse::<ProbeTarget>().unwrap(),
            ProbeTarget::Tcp(hp("10.244.1.5", 80))
        );
        assert_eq!(
            "udp://[fd00::1]:53".parse::<ProbeTarget>().unwrap(),
            ProbeTarget::Udp(hp("fd00::1", 53))
        );
        assert_eq!(
            "http://web.default:8080/hostname?x=1"
                .parse::<ProbeTarget>()
                .unwrap(),
            ProbeTarget::Http {
                server: hp("web.default", 8080),
                path: "/hostname?x=1".into()
            }
        );
        assert_eq!(
            "http://[::1]:80".parse::<ProbeTarget>().unwrap(),
            ProbeTarget::Http {
                server: hp("::1", 80),
                path: "/".into()
            }
        );
        assert_eq!(
            "http://[::1]:80/x"
                .parse::<ProbeTarget>()
                .unwrap()
                .to_string(),
            "http://[::1]:80/x"
        );
        // http's default port with a bracketed IPv6 address, as in any URL.
        assert_eq!(
            "http://[fd00:10:96::2]/x".parse::<ProbeTarget>().unwrap(),
            ProbeTarget::Http {
                server: hp("fd00:10:96::2", 80),
                path: "/x".into()
            }
        );
    }

    #[test]
    fn rejects_bad_targets_with_a_reason() {
        for (bad, why) in [
            ("10.0.0.1:80", "expected tcp://"),
            ("tcp://10.0.0.1", "missing port"),
            ("tcp://10.0.0.1:99999", "port must be"),
            ("tcp://::1:80", "brackets"),
            ("tcp://[::1]", "missing port"),
            ("tcp://[::1]80", "comes :PORT"),
            ("tcp://[::1:80", "closing bracket"),
            ("sctp://10.0.0.1:80", "scheme"),
            ("tcp://10.0.0.1:80/x", "path"),
            ("tcp://:80", "missing host"),
        ] {
            let e = bad.parse::<ProbeTarget>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }
}
