//! Policy drop events: reads the packets the policy table logs to its nflog group (a
//! `NETLINK_NETFILTER` socket bound in the node's namespace), names their pods and isolating
//! policies with [`sarasa_policy::LoggedPacket::event`], and writes each as one structured line
//! on stderr: `policy-drop {"direction":"ingress","pod":"x/a",...}`.
//!
//! Rate limits: the kernel logs a (source, destination) pair at most once per
//! `log_interval_secs` (the compiler's rate-limit set); here at most [`MAX_PER_SECOND`] events
//! are written per second, and the number suppressed is reported with the next line written.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use sarasa_policy::{bind_request, parse_messages, DropEvent, Endpoint};
use tokio::io::unix::AsyncFd;

use crate::health::Metrics;
use crate::netns::{run_in, NetnsTarget};
use crate::policy::SharedPolicyState;

/// Events written per second at most.
pub const MAX_PER_SECOND: u32 = 20;

fn endpoint(e: &Endpoint) -> serde_json::Value {
    match e {
        Endpoint::Pod(k) => serde_json::json!({"pod": k.to_string()}),
        Endpoint::External(ip) => serde_json::json!({"ip": ip.to_string()}),
    }
}

/// The JSON of one drop event.
pub fn event_json(e: &DropEvent) -> serde_json::Value {
    serde_json::json!({
        "direction": match e.direction {
            sarasa_policy::Direction::Ingress => "ingress",
            sarasa_policy::Direction::Egress => "egress",
        },
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
