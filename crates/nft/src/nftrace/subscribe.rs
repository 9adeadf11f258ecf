//! The I/O half of live tracing: a NETLINK_NETFILTER socket in a given network namespace,
//! joined to `NFNLGRP_NFTRACE`, collecting trace events until a deadline or until the caller
//! has what it needs. Joining needs CAP_NET_ADMIN in that namespace.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::decode::{parse_trace_messages, TraceEvent, NFNLGRP_NFTRACE};
use crate::NftError;

/// Longest wait in one receive, so the deadline is checked often.
const POLL: Duration = Duration::from_millis(100);

/// A subscription to the kernel's nf_tables trace events of one network namespace.
pub struct TraceSubscriber {
    sock: Socket,
    lost: bool,
}

const ENOBUFS: i32 = 105;

fn netlink_err(what: &str) -> impl Fn(io::Error) -> NftError + '_ {
    move |source| NftError::Netlink {
        what: what.to_string(),
        source,
    }
}

/// Receive buffer: one packet through every sarasa table (main + 32 shards + policy) makes a
/// few hundred events, and a TCP connection several such packets at once.
const RCVBUF: usize = 8 << 20;

fn subscribe_here() -> Result<Socket, NftError> {
    let mut s = Socket::new(NETLINK_NETFILTER).map_err(netlink_err("NETLINK_NETFILTER socket"))?;
    s.bind_auto().map_err(netlink_err("bind netlink socket"))?;
    // Past net.core.rmem_max only with CAP_NET_ADMIN (SO_RCVBUFFORCE); the plain size is
    // the fallback.
    if setsockopt(&s, sockopt::RcvBufForce, &RCVBUF).is_err() {
        s.set_rx_buf_sz(RCVBUF)
            .map_err(netlink_err("SO_RCVBUF on the trace socket"))?;
    }
    s.add_membership(NFNLGRP_NFTRACE)
        .map_err(netlink_err("join NFNLGRP_NFTRACE (needs CAP_NET_ADMIN)"))?;
    Ok(s)
}

impl TraceSubscriber {
    /// Subscribes in the caller's namespace, or in the one at `netns` (`/run/netns/NAME`):
    /// the socket is made on a short-lived thread that entered it, and stays there.
    pub fn open(netns: Option<&Path>) -> Result<Self, NftError> {
        let sock = match netns {
            None => subscribe_here()?,
            Some(path) => {
                let file = std::fs::File::open(path).map_err(|source| NftError::Spawn {
                    cmd: format!("open {}", path.display()),
                    source,
                })?;
                std::thread::scope(|s| {
                    s.spawn(|| {
                        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                            |e| NftError::Spawn {
                                cmd: format!("setns {}", path.display()),
                                source: io::Error::from(e),
                            },
                        )?;
                        subscribe_here()
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(NftError::Invalid("netns helper thread panicked".into()))
                    })
                })?
            }
        };
        Ok(TraceSubscriber { sock, lost: false })
    }

    /// True when the kernel dropped events because the socket buffer was full.
    pub fn lost_events(&self) -> bool {
        self.lost
    }

    /// Collects events until `timeout` has passed or `done` (given everything so far) says
    /// the caller has enough.
    pub fn collect(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[TraceEvent]) -> bool,
    ) -> Result<Vec<TraceEvent>, NftError> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || done(&events) {
                return Ok(events);
            }
            let wait = TimeVal::new(0, left.min(POLL).as_micros().max(1) as i64);
            setsockopt(&self.sock, sockopt::ReceiveTimeout, &wait)
                .map_err(|e| netlink_err("SO_RCVTIMEO")(io::Error::from(e)))?;
            buf.clear();
            match self.sock.recv(&mut buf, 0) {
                Ok(_) => events.extend(parse_trace_messages(&buf)?),
                // The kernel dropped events the buffer could not hold: what arrives next is
                // still worth reading; the caller sees the gap as missing events.
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => self.lost = true,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(netlink_err("receive trace events")(e)),
            }
        }
    }
}
