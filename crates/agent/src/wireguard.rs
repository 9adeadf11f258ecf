//! The WireGuard cable between cluster-set gateways (issue 12), in userspace: this kernel has
//! no WireGuard module, so the active gateway runs boringtun's sans-IO WireGuard (one `Tunn`
//! per peer gateway) between a TUN device [`DEVICE`] in the node's namespace and a UDP socket
//! on its WAN address, port [`PORT`]. Peers are chosen as WireGuard chooses them (cryptokey
//! routing): a packet leaving goes to the peer whose allowed ranges hold its destination (the
//! longest prefix), and a decrypted packet is delivered only when its source is in the sending
//! peer's ranges. Each gateway makes its key pair when its agent starts; the public key goes
//! through the broker (the Node annotation `sarasa.io/gateway-public-key`, the cluster's record,
//! the other clusters' ConfigMap). A peer is greeted with a handshake as soon as it is
//! configured, so a cable is up as soon as both ends know each other.
//!
//! The TUN device is opened by hand (`/dev/net/tun` and one `TUNSETIFF` ioctl): it has to be
//! made from a thread inside the node's namespace, and the crates that wrap TUN also configure
//! the device's addresses and routes on their own paths, which the gateway does over netlink
//! with the rest of its state.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::netns::NetnsTarget;

/// The cable's TUN device.
pub const DEVICE: &str = "sarasa-wg";
/// The UDP port gateways listen on (Submariner's cable port).
pub const PORT: u16 = sarasa_plan::WIREGUARD_PORT;
/// WireGuard over IPv4: outer IP (20), UDP (8), data header (16) and authentication tag (16).
pub const OVERHEAD: u32 = 60;
/// How often the peers' timers run (handshake retries, rekeying, keepalives).
const TIMER_TICK: Duration = Duration::from_millis(250);
const MAX_PACKET: usize = 65535;
/// Room for WireGuard's framing around a packet (and never less than a handshake).
const FRAMING: usize = 148;
/// Socket buffers for the cable's UDP socket: a burst of a fast TCP flow must not be dropped
/// between two reads.
const SOCKET_BUFFER: usize = 4 << 20;

/// A gateway's WireGuard key pair.
#[derive(Clone)]
pub struct Keypair {
    secret: StaticSecret,
    public: PublicKey,
}

impl Keypair {
    pub fn generate() -> Self {
        let secret = StaticSecret::from(rand::random::<[u8; 32]>());
        let public = PublicKey::from(&secret);
        Keypair { secret, public }
    }

    /// The public key in base64, as `wg` prints it.
    pub fn public_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.public.as_bytes())
    }
}

/// A public key from its base64 form; `what` names where it came from.
pub fn parse_public_key(text: &str, what: &str) -> Result<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            Error::Config(format!(
                "{what}: {text:?} is not a WireGuard public key (32 bytes in base64)"
            ))
        })
}

/// One peer gateway: its key, where it listens and what it may send and receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub public_key: [u8; 32],
    pub endpoint: SocketAddrV4,
    pub allowed: Vec<IpNet>,
}

struct Peer {
    spec: PeerSpec,
    tunn: Tunn,
}

impl Peer {
    fn allows(&self, ip: IpAddr) -> bool {
        self.spec.allowed.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Default)]
struct Peers {
    list: Vec<Peer>,
    next_index: u32,
}

impl Peers {
    /// The peer whose allowed ranges hold `dst` most closely.
    fn by_destination(&mut self, dst: IpAddr) -> Option<&mut Peer> {
        self.list
            .iter_mut()
            .filter_map(|p| {
                let best = p
                    .spec
                    .allowed
                    .iter()
                    .filter(|n| n.contains(&dst))
                    .map(|n| n.prefix_len())
                    .max()?;
                Some((best, p))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, p)| p)
    }

    fn by_endpoint(&mut self, from: SocketAddrV4) -> Option<&mut Peer> {
        self.list.iter_mut().find(|p| p.spec.endpoint == from)
    }
}

fn lock(peers: &Mutex<Peers>) -> MutexGuard<'_, Peers> {
    peers.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running cable: the device, the socket and the tasks between them. Dropping it stops the
/// tasks and closes the device (a TUN device lives as long as its descriptor).
pub struct Cable {
    local: Ipv4Addr,
    keypair: Keypair,
    udp: Arc<UdpSocket>,
    peers: Arc<Mutex<Peers>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cable {
    /// Opens the device and the socket on `local` in the namespace of `target` and starts
    /// moving packets. Must be called inside a Tokio runtime.
    pub fn start(target: &NetnsTarget, keypair: &Keypair, local: Ipv4Addr) -> Result<Cable> {
        let (tun, udp) = crate::netns::run_in_sync(target, || {
            let tun = while_busy(libc::EBUSY, || open_tun(DEVICE))
                .map_err(|e| Error::Config(format!("opening TUN device {DEVICE}: {e}")))?;
            let udp = while_busy(libc::EADDRINUSE, || {
                bind_udp(SocketAddrV4::new(local, PORT))
            })
            .map_err(|e| Error::Config(format!("binding the cable to {local}:{PORT}: {e}")))?;
            Ok((tun, udp))
        })?;
        // SAFETY: the `File` owns its descriptor, which stays open and the same for as long
        // as the `AsyncFd` that takes the `File` lives.
        let tun = unsafe { AsyncFd::register(tun) }
            .map_err(|e| Error::Config(format!("polling {DEVICE}: {e}")))?;
        let tun = Arc::new(tun);
        let udp = Arc::new(
            UdpSocket::from_std(udp)
                .map_err(|e| Error::Config(format!("the cable's socket: {e}")))?,
        );
        let peers = Arc::new(Mutex::new(Peers::default()));
        let tasks = vec![
            tokio::spawn(outbound(tun.clone(), udp.clone(), peers.clone())),
            tokio::spawn(inbound(tun, udp.clone(), peers.clone())),
            tokio::spawn(timers(udp.clone(), peers.clone())),
        ];
        Ok(Cable {
            local,
            keypair: keypair.clone(),
            udp,
            peers,
            tasks,
        })
    }

    /// The WAN address the cable is bound to.
    pub fn local(&self) -> Ipv4Addr {
        self.local
    }

    /// The configured peers.
    pub fn peers(&self) -> Vec<PeerSpec> {
        lock(&self.peers)
            .list
            .iter()
            .map(|p| p.spec.clone())
            .collect()
    }

    /// Makes the peers `specs`: a peer whose key and endpoint are unchanged keeps its session
    /// (its ranges are updated); a new or changed one gets a fresh session and a handshake.
    pub fn set_peers(&self, specs: &[PeerSpec]) {
        let mut peers = lock(&self.peers);
        let mut old = std::mem::take(&mut peers.list);
        let mut greet = Vec::new();
        for spec in specs {
            let kept = old.iter().position(|p| {
                p.spec.public_key == spec.public_key && p.spec.endpoint == spec.endpoint
            });
            let peer = match kept {
                Some(i) => {
                    let mut p = old.swap_remove(i);
                    p.spec.allowed = spec.allowed.clone();
                    p
                }
                None => {
                    peers.next_index = (peers.next_index + 1) & 0x00ff_ffff;
                    let mut tunn = Tunn::new(
                        self.keypair.secret.clone(),
                        PublicKey::from(spec.public_key),
                        None,
                        None,
                        peers.next_index,
                        None,
                    );
                    let mut buf = [0u8; FRAMING];
                    if let TunnResult::WriteToNetwork(b) =
                        tunn.format_handshake_initiation(&mut buf, false)
                    {
                        greet.push((b.to_vec(), spec.endpoint));
                    }
                    tracing::info!(peer = %spec.endpoint, "WireGuard cable: new peer");
                    Peer {
                        spec: spec.clone(),
                        tunn,
                    }
                }
            };
            peers.list.push(peer);
        }
        drop(peers);
        for (b, to) in greet {
            let _ = self.udp.try_send_to(&b, SocketAddr::V4(to));
        }
    }
}

impl Cable {
    /// Stops the tasks and waits until they are gone, so the device and the socket are
    /// closed when this returns (a new cable can then take the same device name and port).
    pub async fn close(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Cable {
    /// Without [`Cable::close`]: the tasks are told to stop and go at their next wake-up (the
    /// device closes with the last of them).
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How long a starting cable waits for a previous one's device and port to go.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `open()` again while it fails with `busy` (bounded by [`BUSY_WAIT`]): the kernel detaches a
/// TUN device's queue, and removes the device, when the last reference to its file goes, and
/// frees a port with its socket's, which can be a moment after the previous cable closed them
/// (a process forked while they were open holds them until it execs; a cable closing while
/// the next starts lets go of the device before the socket). Any other error, or `busy` past
/// the wait, is returned.
fn while_busy<T>(busy: i32, mut open: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_WAIT;
    loop {
        match open() {
            Err(e) if e.raw_os_error() == Some(busy) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Opens a TUN device (no packet information header), non-blocking.
fn open_tun(name: &str) -> std::io::Result<File> {
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        flags: libc::c_short,
        // The rest of `struct ifreq`'s union (24 bytes in all on 64-bit).
        _pad: [u8; 22],
    }
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("device name {name:?} is too long"),
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` (the name, the flags and the rest
    // of its union: 40 bytes), which `req` is laid out as and outlives the call; the
    // descriptor is an open /dev/net/tun that `file` owns.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

fn bind_udp(addr: SocketAddrV4) -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: the kernel caps them at net.core.[rw]mem_max.
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    Ok(s.into())
}

async fn read_tun(tun: &AsyncFd<File>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = tun.readable().await?;
        let mut file: &File = tun.get_ref();
        match guard.try_io(|_| file.read(buf)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// Device → peers: encrypt each packet for the peer that owns its destination.
async fn outbound(tun: Arc<AsyncFd<File>>, udp: Arc<UdpSocket>, peers: Arc<Mutex<Peers>>) {
    let mut packet = vec![0u8; MAX_PACKET];
    let mut out = vec![0u8; MAX_PACKET + FRAMING];
    loop {
        let n = match read_tun(&tun, &mut packet).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "WireGuard cable: reading {DEVICE}");
                return;
            }
        };
        let Some(dst) = Tunn::dst_address(&packet[..n]) else {
            continue;
        };
        let send = {
            let mut peers = lock(&peers);
            let Some(peer) = peers.by_destination(dst) else {
                continue;
            };
            let to = peer.spec.endpoint;
            match peer.tunn.encapsulate(&packet[..n], &mut out) {
                TunnResult::WriteToNetwork(b) => Some((b.len(), to)),
                _ => None,
            }
        };
        if let Some((len, to)) = send {
            let _ = udp.send_to(&out[..len], SocketAddr::V4(to)).await;
        }
    }
}

/// Hands a decrypted packet to the kernel (a TUN write does not block; a full queue drops it,
/// as a full link would).
fn deliver(tun: &AsyncFd<File>, packet: &[u8]) {
    let mut file: &File = tun.get_ref();
    let _ = file.write(packet);
}

/// Peers → device: decrypt what a known peer sent and deliver what its ranges allow.
async fn inbound(tun: Arc<AsyncFd<File>>, udp: Arc<UdpSocket>, peers: Arc<Mutex<Peers>>) {
    let mut datagram = vec![0u8; MAX_PACKET];
    let mut out = vec![0u8; MAX_PACKET];
    loop {
        let (n, from) = match udp.recv_from(&mut datagram).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "WireGuard cable: receiving");
                return;
            }
        };
        let SocketAddr::V4(from) = from else {
            continue;
        };
        let mut peers = lock(&peers);
        let Some(peer) = peers.by_endpoint(from) else {
            continue;
        };
        let mut input: &[u8] = &datagram[..n];
        loop {
            match peer
                .tunn
                .decapsulate(Some(IpAddr::V4(*from.ip())), input, &mut out)
            {
                // A handshake answer, or a packet queued until the session was up: send it
                // and ask again until nothing is left.
                TunnResult::WriteToNetwork(b) => {
                    let _ = udp.try_send_to(b, SocketAddr::V4(from));
                    input = &[];
                }
                TunnResult::WriteToTunnelV4(p, src) => {
                    if peer.allows(IpAddr::V4(src)) {
                        deliver(&tun, p);
                    }
                    break;
                }
                TunnResult::WriteToTunnelV6(p, src) => {
                    if peer.allows(IpAddr::V6(src)) {
                        deliver(&tun, p);
                    }
                    break;
                }
                TunnResult::Done | TunnResult::Err(_) => break,
            }
        }
    }
}

/// Runs every peer's timers: handshake retries, rekeying and keepalives.
async fn timers(udp: Arc<UdpSocket>, peers: Arc<Mutex<Peers>>) {
    let mut out = vec![0u8; MAX_PACKET];
    let mut tick = tokio::time::interval(TIMER_TICK);
    loop {
        tick.tick().await;
        let mut sends = Vec::new();
        for p in lock(&peers).list.iter_mut() {
            if let TunnResult::WriteToNetwork(b) = p.tunn.update_timers(&mut out) {
                sends.push((b.to_vec(), p.spec.endpoint));
            }
        }
        for (b, to) in sends {
            let _ = udp.send_to(&b, SocketAddr::V4(to)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: u8, ep: &str, allowed: &[&str]) -> PeerSpec {
        PeerSpec {
            public_key: [key; 32],
            endpoint: ep.parse().unwrap(),
            allowed: allowed.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn peers(specs: &[PeerSpec]) -> Peers {
        let me = Keypair::generate();
        Peers {
            list: specs
                .iter()
                .enumerate()
                .map(|(i, s)| Peer {
                    spec: s.clone(),
                    tunn: Tunn::new(
                        me.secret.clone(),
                        PublicKey::from(s.public_key),
                        None,
                        None,
                        i as u32,
                        None,
                    ),
                })
                .collect(),
            next_index: specs.len() as u32,
        }
    }

    #[test]
    fn a_packet_goes_to_the_peer_with_the_longest_matching_range() {
        let mut p = peers(&[
            spec(1, "172.30.0.100:4500", &["10.0.0.0/8"]),
            spec(
                2,
                "172.30.0.101:4500",
                &["10.245.0.0/16", "241.30.0.101/32"],
            ),
        ]);
        let to = |p: &mut Peers, ip: &str| {
            p.by_destination(ip.parse().unwrap())
                .map(|p| p.spec.public_key[0])
        };
        assert_eq!(to(&mut p, "10.245.1.2"), Some(2));
        assert_eq!(to(&mut p, "10.246.1.2"), Some(1));
        assert_eq!(to(&mut p, "241.30.0.101"), Some(2));
        assert_eq!(to(&mut p, "192.168.1.1"), None);
        let from = p.by_endpoint("172.30.0.101:4500".parse().unwrap()).unwrap();
        assert!(from.allows("10.245.3.4".parse().unwrap()));
        assert!(
            !from.allows("10.246.3.4".parse().unwrap()),
            "cryptokey routing: another peer's range"
        );
        assert!(p
            .by_endpoint("172.30.0.101:4501".parse().unwrap())
            .is_none());
    }

    #[test]
    fn public_keys_round_trip_and_bad_ones_name_their_source() {
        let k = Keypair::generate();
        let text = k.public_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(parse_public_key(&text, "x").unwrap(), *k.public.as_bytes());
        let e = parse_public_key("bm90IGEga2V5", "cluster east's record").unwrap_err();
        assert!(e.to_string().contains("cluster east's record"), "{e}");
    }
}
