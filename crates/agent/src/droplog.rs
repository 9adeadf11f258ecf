//! Policy drop events: reads the packets the policy table logs to its nflog group (a
//! `NETLINK_NETFILTER` socket bound in the node's namespace), names their pods and isolating
//! policies with [`sarasa_policy::LoggedPacket::event`], and writes each as one structured line
//! on stderr: `policy-drop {"direction":"ingress","pod":"x/a",...}`.
//!
//! Rate limits: the kernel logs a (source, destination) pair at most once per
//! `log_interval_secs` (the compiler's rate-limit set); here at most [`MAX_PER_SECOND`] events
//! are written per second, and the number suppressed is reported with the next line written.
//!
//! Every event also goes into a [`DropRing`] (the newest [`RING_CAPACITY`], with addresses and
//! the time read) that the health endpoint serves as JSON at `GET /drops?since=SEQ`; that is
//! what `sarasa drops` reads. Why a ring served over HTTP rather than the CLI reading the log
//! files: it works wherever the agent runs (a real node has no lab log directory), it is typed
//! (one [`DropRecord`] serialised by the agent and parsed by the CLI, not text scraped from a
//! log that also carries everything else and may be rotated or truncated), it is not subject to
//! the per-second line limit above, and the sequence number lets `--follow` ask only for what
//! is new. What it gives up: events from before an agent restart are gone (the log keeps them);
//! the page says when the agent started so a reader notices the sequence began again.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use sarasa_policy::{bind_request, parse_messages, DropEvent, Endpoint};
use tokio::io::unix::AsyncFd;

use crate::health::Metrics;
use crate::netns::{run_in, NetnsTarget};
use crate::policy::SharedPolicyState;

/// Events written per second at most.
pub const MAX_PER_SECOND: u32 = 20;

/// Drop events kept for `GET /drops`.
pub const RING_CAPACITY: usize = 1024;

/// One drop event as `GET /drops` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DropRecord {
    /// Position in this agent's sequence (1, 2, ...; begins again when the agent restarts).
    pub seq: u64,
    /// When the agent read the event, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `ingress` (dropped at the destination pod) or `egress` (at the source pod).
    pub direction: String,
    /// `namespace/name` of the pod whose policy chain dropped the packet.
    pub pod: String,
    pub src: DropEndpoint,
    pub dst: DropEndpoint,
    /// `tcp`, `udp`, `sctp`.
    pub protocol: String,
    pub port: u16,
    /// `namespace/name` of the policies that isolate `pod` in `direction`.
    pub policies: Vec<String>,
}

/// An end of a dropped packet: its address, and its pod when it is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropEndpoint {
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// The answer to `GET /drops?since=SEQ`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DropPage {
    /// When this agent started (ms since the epoch): a new value means the sequence restarted.
    pub agent_start_ms: u64,
    /// The highest sequence number so far (0: none yet).
    pub latest: u64,
    /// Events after `since` that were evicted before this read.
    pub missed: u64,
    /// Events after `since`, oldest first.
    pub events: Vec<DropRecord>,
}

/// The newest drop events, in memory.
#[derive(Debug)]
pub struct DropRing {
    start_ms: u64,
    capacity: usize,
    inner: Mutex<RingInner>,
}

#[derive(Debug, Default)]
struct RingInner {
    latest: u64,
    events: VecDeque<DropRecord>,
}

impl Default for DropRing {
    fn default() -> Self {
        DropRing::new(RING_CAPACITY)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl DropRing {
    pub fn new(capacity: usize) -> DropRing {
        DropRing {
            start_ms: now_ms(),
            capacity: capacity.max(1),
            inner: Mutex::new(RingInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RingInner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Records an event read at `time_ms` from a packet `saddr` → `daddr`; returns its seq.
    pub fn push(&self, time_ms: u64, e: &DropEvent, saddr: IpAddr, daddr: IpAddr) -> u64 {
        let end = |ep: &Endpoint, ip: IpAddr| DropEndpoint {
            ip,
            pod: match ep {
                Endpoint::Pod(k) => Some(k.to_string()),
                Endpoint::External(_) => None,
            },
        };
        let mut inner = self.lock();
        inner.latest += 1;
        let record = DropRecord {
            seq: inner.latest,
            time_ms,
            direction: direction(e.direction).to_string(),
            pod: e.pod.to_string(),
            src: end(&e.src, saddr),
            dst: end(&e.dst, daddr),
            protocol: e.protocol.as_str().to_string(),
            port: e.port,
            policies: e.policies.iter().map(|p| p.to_string()).collect(),
        };
        if inner.events.len() == self.capacity {
            inner.events.pop_front();
        }
        inner.events.push_back(record);
        inner.latest
    }

    /// The events after sequence number `since`.
    pub fn since(&self, since: u64) -> DropPage {
        let inner = self.lock();
        let events: Vec<DropRecord> = inner
            .events
            .iter()
            .filter(|r| r.seq > since)
            .cloned()
            .collect();
        let first_kept = inner.events.front().map_or(inner.latest + 1, |r| r.seq);
        DropPage {
            agent_start_ms: self.start_ms,
            latest: inner.latest,
            missed: first_kept.saturating_sub(since + 1),
            events,
        }
    }
}

fn direction(d: sarasa_policy::Direction) -> &'static str {
    match d {
        sarasa_policy::Direction::Ingress => "ingress",
        sarasa_policy::Direction::Egress => "egress",
    }
}

fn endpoint(e: &Endpoint) -> serde_json::Value {
    match e {
        Endpoint::Pod(k) => serde_json::json!({"pod": k.to_string()}),
        Endpoint::External(ip) => serde_json::json!({"ip": ip.to_string()}),
    }
}

/// The JSON of one drop event.
pub fn event_json(e: &DropEvent) -> serde_json::Value {
    serde_json::json!({
        "direction": direction(e.direction),
        "pod": e.pod.to_string(),
        "src": endpoint(&e.src),
        "dst": endpoint(&e.dst),
        "protocol": e.protocol.as_str(),
        "port": e.port,
        "policies": e.policies.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })
}

/// A per-second budget of lines.
#[derive(Debug)]
pub struct RateLimit {
    window: Instant,
    used: u32,
    /// Events suppressed since the last line written.
    pub suppressed: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            window: Instant::now(),
            used: 0,
            suppressed: 0,
        }
    }
}

impl RateLimit {
    /// True when a line may be written at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        if self.used < MAX_PER_SECOND {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

fn open(group: u16) -> std::io::Result<Socket> {
    let mut s = Socket::new(NETLINK_NETFILTER)?;
    s.bind_auto()?;
    s.send(&bind_request(group, 1), 0)?;
    Ok(s)
}

/// Binds nflog `group` in the node's namespace and reports drops until the task is aborted.
pub async fn spawn(
    target: NetnsTarget,
    group: u16,
    state: SharedPolicyState,
    metrics: Arc<Metrics>,
) -> crate::Result<tokio::task::JoinHandle<()>> {
    let socket = run_in(&target, move || Ok(open(group)?)).await?;
    socket.set_non_blocking(true)?;
    // `new` is deprecated because a `T` could hand out a descriptor it does not own; the
    // netlink `Socket` owns its descriptor and moves into the AsyncFd, so that cannot happen.
    #[allow(deprecated)]
    let socket = AsyncFd::new(socket)?;
    Ok(tokio::spawn(read_loop(socket, state, metrics)))
}

async fn read_loop(socket: AsyncFd<Socket>, state: SharedPolicyState, metrics: Arc<Metrics>) {
    let mut limit = RateLimit::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let mut guard = match socket.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "policy drop log socket failed; drop events stop");
                return;
            }
        };
        let n = match guard.try_io(|s| s.get_ref().recv(&mut &mut buf[..], 0)) {
            Err(_would_block) => continue,
            Ok(Ok(n)) => n,
            Ok(Err(e))
                if e.kind() == std::io::ErrorKind::Interrupted
                    // ENOBUFS: the kernel dropped log messages in a burst; keep reading.
                    || e.raw_os_error() == Some(nix::libc::ENOBUFS) =>
            {
                continue
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "policy drop log socket failed; drop events stop");
                return;
            }
        };
        for packet in parse_messages(&buf[..n]) {
            let event = {
                let guard = match state.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                packet.event(&guard)
            };
            let Some(event) = event else { continue };
            metrics.policy_drops.fetch_add(1, Ordering::Relaxed);
            metrics
                .drops
                .push(now_ms(), &event, packet.saddr, packet.daddr);
            if limit.allow(Instant::now()) {
                let mut json = event_json(&event);
                if limit.suppressed > 0 {
                    json["suppressedBefore"] = limit.suppressed.into();
                    limit.suppressed = 0;
                }
                eprintln!("policy-drop {json}");
                if let Ok(mut last) = metrics.last_policy_drop.lock() {
                    *last = Some(json.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_nft::L4Proto;
    use sarasa_policy::{Direction, PodKey};

    #[test]
    fn event_is_one_json_object_naming_pods_and_policies() {
        let e = DropEvent {
            direction: Direction::Ingress,
            pod: PodKey::new("x", "a"),
            src: Endpoint::Pod(PodKey::new("y", "b")),
            dst: Endpoint::Pod(PodKey::new("x", "a")),
            protocol: L4Proto::Tcp,
            port: 80,
            policies: vec![PodKey::new("x", "deny-all")],
        };
        assert_eq!(
            event_json(&e).to_string(),
            r#"{"direction":"ingress","dst":{"pod":"x/a"},"pod":"x/a","policies":["x/deny-all"],"port":80,"protocol":"tcp","src":{"pod":"y/b"}}"#
        );
    }

    fn event(n: u16) -> DropEvent {
        DropEvent {
            direction: Direction::Egress,
            pod: PodKey::new("y", "b"),
            src: Endpoint::Pod(PodKey::new("y", "b")),
            dst: Endpoint::External("203.0.113.10".parse().unwrap()),
            protocol: L4Proto::Udp,
            port: n,
            policies: vec![PodKey::new("y", "deny-egress")],
        }
    }

    #[test]
    fn ring_records_addresses_pods_and_policies() {
        let ring = DropRing::new(4);
        let seq = ring.push(
            1_000,
            &event(53),
            "10.244.1.5".parse().unwrap(),
            "203.0.113.10".parse().unwrap(),
        );
        assert_eq!(seq, 1);
        let page = ring.since(0);
        assert_eq!(page.latest, 1);
        assert_eq!(page.missed, 0);
        assert_eq!(
            serde_json::to_value(&page.events[0]).unwrap(),
            serde_json::json!({
                "seq": 1, "timeMs": 1000, "direction": "egress", "pod": "y/b",
                "src": {"ip": "10.244.1.5", "pod": "y/b"}, "dst": {"ip": "203.0.113.10"},
                "protocol": "udp", "port": 53, "policies": ["y/deny-egress"]
            })
        );
        let back: DropPage = serde_json::from_str(&serde_json::to_string(&page).unwrap()).unwrap();
        assert_eq!(back, page);
    }

    #[test]
    fn ring_keeps_the_newest_and_counts_what_a_reader_missed() {
        let ring = DropRing::new(3);
        let (s, d) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for port in 1..=5 {
            ring.push(u64::from(port), &event(port), s, d);
        }
        let page = ring.since(0);
        let ports: Vec<u16> = page.events.iter().map(|e| e.port).collect();
        assert_eq!(ports, [3, 4, 5]);
        assert_eq!((page.latest, page.missed), (5, 2));
        let page = ring.since(4);
        assert_eq!(page.events.len(), 1);
        assert_eq!((page.events[0].seq, page.missed), (5, 0));
        assert!(ring.since(5).events.is_empty());
    }

    #[test]
    fn rate_limit_counts_what_it_suppresses() {
        let mut l = RateLimit::default();
        let t = Instant::now();
        let allowed = (0..30).filter(|_| l.allow(t)).count();
        assert_eq!(allowed, MAX_PER_SECOND as usize);
        assert_eq!(l.suppressed, 10);
        assert!(l.allow(t + Duration::from_secs(1)));
    }
}
