//! `sarasa serve`: listens on every declared port (TCP and/or UDP, IPv4 and IPv6) and answers
//! each request with a [`ServeReply`](crate::ServeReply).
//!
//! One poll thread accepts connections and answers UDP datagrams; each TCP connection gets its
//! own small thread, up to `max_connections` (more are closed at once). Raw TCP clients get one
//! JSON line per line they send (so a held connection can be checked every 100 ms); HTTP
//! clients get the JSON as the body of a keep-alive `200 OK`.

use crate::http;
use crate::reply::PodIdentity;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::Ipv6V6Only};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufReader, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Transport of a served port: TCP or UDP (a [`PortSpec`] never parses SCTP).
pub use sarasa_model::Protocol;

/// `PORT[/tcp|/udp]`, as a container's `containerPort` + `protocol` (default TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    pub port: u16,
    pub protocol: Protocol,
}

impl FromStr for PortSpec {
    type Err = ServeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ServeError::BadPort {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (port, proto) = input.split_once('/').unwrap_or((input, "tcp"));
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(bad(&format!("protocol {other:?} is not tcp or udp"))),
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("port must be a number from 0 to 65535"))?;
        Ok(PortSpec { port, protocol })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.lowercase())
    }
}

/// What to serve and as whom.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Ports to serve; port 0 picks a free one (see [`Server::local_addrs`]).
    pub ports: Vec<PortSpec>,
    /// Address to bind; `None` binds every address, IPv4 and IPv6.
    pub address: Option<IpAddr>,
    pub identity: PodIdentity,
    /// Concurrent TCP connections; more are closed on accept.
    pub max_connections: usize,
    /// A TCP connection silent for this long is closed.
    pub idle_timeout: Duration,
}

impl ServeConfig {
    /// The given ports, every address, identity from the environment, sane limits.
    pub fn new(ports: Vec<PortSpec>) -> Self {
        ServeConfig {
            ports,
            address: None,
            identity: PodIdentity::from_env(),
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid port {input:?}: {reason}")]
    BadPort { input: String, reason: String },
    #[error("cannot listen on {address} ({}): {error}", .protocol.lowercase())]
    Bind {
        address: SocketAddr,
        protocol: Protocol,
        error: io::Error,
    },
    #[error("server failed: {0}")]
    Io(io::Error),
}

// Display carries the detail, so no `source()` (a `{:#}` chain would say it twice).
impl From<io::Error> for ServeError {
    fn from(error: io::Error) -> Self {
        ServeError::Io(error)
    }
}

/// Serves until SIGTERM or SIGINT, then shuts down cleanly and returns `Ok`.
///
/// The signals are caught with a self-pipe handler, so this works whatever other threads the
/// process has.
pub fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let server = Server::start(config)?;
    for (protocol, addr) in server.local_addrs() {
        eprintln!(
            "sarasa serve: listening on {addr} ({})",
            protocol.lowercase()
        );
    }
    let signal = signals.forever().next();
    eprintln!(
        "sarasa serve: signal {}, shutting down",
        signal.unwrap_or(SIGTERM)
    );
    server.shutdown();
    signals.handle().close();
    Ok(())
}

/// A running server; stops on [`Server::shutdown`] or drop.
pub struct Server {
    shared: Arc<Shared>,
    wake: UnixStream,
    poller: Option<JoinHandle<()>>,
    addrs: Vec<(Protocol, SocketAddr)>,
}

struct Shared {
    stop: AtomicBool,
    identity: PodIdentity,
    idle_timeout: Duration,
    max_connections: usize,
    next_id: AtomicU64,
    /// Open TCP connections (clones), so shutdown can close them.
    connections: Mutex<HashMap<u64, TcpStream>>,
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        // A panicking connection thread must not stop the server.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Server {
    /// Binds every port and starts serving in background threads.
    pub fn start(config: ServeConfig) -> Result<Server, ServeError> {
        let mut sockets = Vec::new();
        for spec in &config.ports {
            sockets.extend(bind(spec, config.address)?);
        }
        let mut addrs = Vec::new();
        for s in &sockets {
            addrs.push(match s {
                Socket::Tcp(l) => (Protocol::Tcp, l.local_addr()?),
                Socket::Udp(u) => (Protocol::Udp, u.local_addr()?),
            });
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            identity: config.identity,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
            next_id: AtomicU64::new(0),
            connections: Mutex::new(HashMap::new()),
        });
        let (wake, wake_rx) = UnixStream::pair()?;
        let poller_shared = shared.clone();
        let poller = thread::Builder::new()
            .name("serve-poll".into())
            .spawn(move || poll_loop(&poller_shared, &sockets, &wake_rx))?;
        Ok(Server {
            shared,
            wake,
            poller: Some(poller),
            addrs,
        })
    }

    /// Every bound socket (a dual-stack `[::]` socket serves IPv4 too).
    pub fn local_addrs(&self) -> &[(Protocol, SocketAddr)] {
        &self.addrs
    }

    /// The first bound port of that protocol (useful with port 0).
    pub fn port(&self, protocol: Protocol) -> Option<u16> {
        self.addrs
            .iter()
            .find(|(p, _)| *p == protocol)
            .map(|(_, a)| a.port())
    }

    /// Open TCP connections right now.
    pub fn active_connections(&self) -> usize {
        self.shared.connections().len()
    }

    /// Stops accepting, closes every connection and waits (bounded) for their threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.write_all(b"x");
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
        for conn in self.shared.connections().values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.active_connections() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.poller.is_some() {
            self.stop();
        }
    }
}

/// Binds one port: a given address, or `[::]` dual-stack (plus `0.0.0.0` when the system
/// makes `[::]` IPv6-only, or only `0.0.0.0` without IPv6).
fn bind(spec: &PortSpec, address: Option<IpAddr>) -> Result<Vec<Socket>, ServeError> {
    let bind_one = |addr: SocketAddr| -> Result<Socket, ServeError> {
        let sock = match spec.protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(Socket::Tcp),
            Protocol::Udp => UdpSocket::bind(addr).map(Socket::Udp),
            Protocol::Sctp => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SCTP is not served",
            )),
        };
        let sock = sock.map_err(|error| ServeError::Bind {
            address: addr,
            protocol: spec.protocol,
            error,
        })?;
        match &sock {
            Socket::Tcp(l) => l.set_nonblocking(true)?,
            Socket::Udp(u) => u.set_nonblocking(true)?,
        }
        Ok(sock)
    };
    if let Some(ip) = address {
        return Ok(vec![bind_one(SocketAddr::new(ip, spec.port))?]);
    }
    let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), spec.port);
    let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), spec.port);
    match bind_one(any6) {
        Ok(sock) => {
            let (v6only, port) = match &sock {
                Socket::Tcp(l) => (getsockopt(l, Ipv6V6Only), l.local_addr()?.port()),
                Socket::Udp(u) => (getsockopt(u, Ipv6V6Only), u.local_addr()?.port()),
            };
            if v6only.unwrap_or(false) {
                let v4 = bind_one(SocketAddr::new(any4.ip(), port))?;
                return Ok(vec![sock, v4]);
            }
            Ok(vec![sock])
        }
        Err(ServeError::Bind { error, .. })
            if error.kind() == io::ErrorKind::AddrInUse
                || error.kind() == io::ErrorKind::PermissionDenied =>
        {
            Err(ServeError::Bind {
                address: any6,
                protocol: spec.protocol,
                error,
            })
        }
        // No IPv6 in this namespace: IPv4 only.
        Err(_) => Ok(vec![bind_one(any4)?]),
    }
}

fn poll_loop(shared: &Arc<Shared>, sockets: &[Socket], wake: &UnixStream) {
    loop {
        let ready: Vec<bool> = {
            let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            for s in sockets {
                let fd = match s {
                    Socket::Tcp(l) => l.as_fd(),
                    Socket::Udp(u) => u.as_fd(),
                };
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => fds.iter().map(|f| f.any().unwrap_or(false)).collect(),
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    eprintln!("sarasa serve: poll failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        };
        if ready[0] || shared.stop.load(Ordering::SeqCst) {
            return;
        }
        for (socket, _) in sockets.iter().zip(&ready[1..]).filter(|(_, r)| **r) {
            match socket {
                Socket::Tcp(l) => accept_all(shared, l),
                Socket::Udp(u) => answer_datagrams(shared, u),
            }
        }
    }
}

fn accept_all(shared: &Arc<Shared>, listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => start_connection(shared, stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                // e.g. out of file descriptors: back off instead of spinning.
                eprintln!("sarasa serve: accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                return;
            }
        }
    }
}

fn start_connection(shared: &Arc<Shared>, stream: TcpStream) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut conns = shared.connections();
        if conns.len() >= shared.max_connections {
            return; // dropping the stream closes it
        }
        match stream.try_clone() {
            Ok(clone) => conns.insert(id, clone),
            Err(_) => return,
        };
    }
    let conn_shared = shared.clone();
    let spawned = thread::Builder::new()
        .name("serve-conn".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            // Errors end this connection only (client went away, idle timeout, garbage).
            let _ = serve_connection(&conn_shared, stream);
            conn_shared.connections().remove(&id);
        });
    if spawned.is_err() {
        shared.connections().remove(&id);
    }
}

fn serve_connection(shared: &Shared, stream: TcpStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(shared.idle_timeout))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(line) = http::read_line(&mut reader)? {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Some(request) = http::parse_request_line(&line) else {
            let reply = shared.identity.reply(local, peer, "tcp", None);
            writer.write_all(format!("{}\n", json(&reply)).as_bytes())?;
            continue;
        };
        let headers = http::read_headers(&mut reader)?;
        http::read_body(&mut reader, &headers, false)?;
        let connection = http::header(&headers, "connection")
            .unwrap_or("")
            .to_ascii_lowercase();
        let close = connection.contains("close")
            || (request.version == "HTTP/1.0" && !connection.contains("keep-alive"));
        let path = request.path.split('?').next().unwrap_or("/");
        let reply = shared
            .identity
            .reply(local, peer, "tcp", Some(request.path.clone()));
        // agnhost-style plain endpoints; everything else gets the JSON.
        let (content_type, body) = match path {
            "/hostname" => ("text/plain", reply.pod.clone()),
            "/clientip" => ("text/plain", reply.client.clone()),
            _ => ("application/json", format!("{}\n", json(&reply))),
        };
        let head_only = request.method == "HEAD";
        writer.write_all(&http::response(
            "200 OK",
            content_type,
            &body,
            head_only,
            close,
        ))?;
        if close {
            break;
        }
    }
    Ok(())
}

fn answer_datagrams(shared: &Shared, socket: &UdpSocket) {
    let mut buf = [0u8; 65536];
    let Ok(local) = socket.local_addr() else {
        return;
    };
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, peer)) => {
                let reply = shared.identity.reply(local, peer, "udp", None);
                // A lost reply is the client's to retry, as with any UDP service.
                let _ = socket.send_to(format!("{}\n", json(&reply)).as_bytes(), peer);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // WouldBlock: drained. Other errors (e.g. ICMP noise) end this round.
            Err(_) => return,
        }
    }
}

fn json(reply: &crate::ServeReply) -> String {
    // Serializing a struct of strings and integers cannot fail.
    serde_json::to_string(reply).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs_parse_like_container_ports() {
        assert_eq!(
            "80".parse::<PortSpec>().unwrap(),
            PortSpec {
                port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            "53/UDP".parse::<PortSpec>().unwrap(),
            PortSpec {
                port: 53,
                protocol: Protocol::Udp
            }
        );
        let e = "80/sctp".parse::<PortSpec>().unwrap_err().to_string();
        assert!(e.contains("80/sctp") && e.contains("sctp"), "{e}");
        let e = "70000/tcp".parse::<PortSpec>().unwrap_err().to_string();
        assert!(e.contains("70000"), "{e}");
    }

    #[test]
    fn sctp_port_is_refused_by_name() {
        // The shared Protocol has SCTP; the server binds TCP and UDP only and says so.
        let spec = PortSpec {
            port: 0,
            protocol: Protocol::Sctp,
        };
        assert_eq!(spec.to_string(), "0/sctp");
        let Err(e) = bind(&spec, Some(IpAddr::V4(Ipv4Addr::LOCALHOST))) else {
            panic!("SCTP bound");
        };
        let e = e.to_string();
        assert!(e.contains("(sctp)") && e.contains("not served"), "{e}");
    }
}
