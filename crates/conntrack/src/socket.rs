//! The ctnetlink socket: open in a network namespace, dump a family's entries, delete entries
//! one by one, each acknowledged. The bytes are [`crate::wire`]'s.

use std::io;
use std::path::Path;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::wire::{self, Entry, Family, Filter, Reply};
use crate::ConntrackError;

/// Receive buffer: dump replies come in skbs of at most a few tens of kB.
const RX_BUF: usize = 256 << 10;
const ENOENT: i32 = 2;

/// A ctnetlink connection in one network namespace.
pub struct Conntrack {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl std::fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conntrack").field("seq", &self.seq).finish()
    }
}

fn io_err(what: &str) -> impl Fn(io::Error) -> ConntrackError + '_ {
    move |source| ConntrackError::Io {
        what: what.to_string(),
        source,
    }
}

fn open_here() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_NETFILTER)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    Ok(s)
}

impl Conntrack {
    /// A connection in the caller's namespace, or in the one at `netns` (e.g.
    /// `/run/netns/NAME`): the socket is opened from a short-lived thread that enters it, so
    /// the caller does not move; a socket stays bound to the namespace it was made in.
    pub fn open(netns: Option<&Path>) -> Result<Self, ConntrackError> {
        let sock = match netns {
            None => open_here().map_err(io_err("ctnetlink socket"))?,
            Some(path) => {
                let file = std::fs::File::open(path)
                    .map_err(io_err(&format!("open {}", path.display())))?;
                std::thread::scope(|s| {
                    s.spawn(|| {
                        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                            |e| ConntrackError::Io {
                                what: format!("setns {}", path.display()),
                                source: io::Error::from(e),
                            },
                        )?;
                        open_here().map_err(io_err("ctnetlink socket"))
                    })
                    .join()
                    .unwrap_or_else(|_| {
                        Err(ConntrackError::Io {
                            what: "netns helper thread".into(),
                            source: io::Error::other("panicked"),
                        })
                    })
                })?
            }
        };
        Ok(Conntrack {
            sock,
            seq: 1,
            rx: Vec::with_capacity(RX_BUF),
        })
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    fn send(&mut self, msg: &[u8]) -> Result<(), ConntrackError> {
        let n = self.sock.send(msg, 0).map_err(io_err("ctnetlink send"))?;
        if n != msg.len() {
            return Err(ConntrackError::Io {
                what: format!("ctnetlink send: {n} of {} bytes", msg.len()),
                source: io::Error::from(io::ErrorKind::WriteZero),
            });
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<Vec<(u32, Reply)>, ConntrackError> {
        self.rx.clear();
        if self.rx.capacity() < RX_BUF {
            self.rx.reserve(RX_BUF);
        }
        let n = self
            .sock
            .recv(&mut self.rx, nix::libc::MSG_TRUNC)
            .map_err(io_err("ctnetlink receive"))?;
        if n > self.rx.len() {
            return Err(ConntrackError::Decode(format!(
                "message of {n} bytes truncated to {}",
                self.rx.len()
            )));
        }
        wire::replies(&self.rx)
    }

    /// Every entry of `family`.
    pub fn list(&mut self, family: Family) -> Result<Vec<Entry>, ConntrackError> {
        let seq = self.next_seq();
        self.send(&wire::dump_request(family, seq))?;
        let mut out = Vec::new();
        loop {
            for (s, r) in self.recv()? {
                if s != seq {
                    continue; // a late answer to an earlier request
                }
                match r {
                    Reply::Entry(e) => out.push(e),
                    Reply::Done | Reply::Status(0) => return Ok(out),
                    Reply::Status(errno) => {
                        return Err(ConntrackError::Kernel {
                            what: "dump conntrack entries".into(),
                            source: io::Error::from_raw_os_error(errno),
                        })
                    }
                    Reply::Other => {}
                }
            }
        }
    }

    /// Deletes `e`; false when it was already gone (expired, or deleted by someone else).
    pub fn delete(&mut self, e: &Entry) -> Result<bool, ConntrackError> {
        let seq = self.next_seq();
        self.send(&wire::delete_request(e, seq))?;
        loop {
            for (s, r) in self.recv()? {
                match r {
                    Reply::Status(0) if s == seq => return Ok(true),
                    Reply::Status(ENOENT) if s == seq => return Ok(false),
                    Reply::Status(errno) if s == seq => {
                        return Err(ConntrackError::Kernel {
                            what: format!(
                                "delete conntrack entry {}:{} -> {}:{}",
                                e.orig.src,
                                e.orig.src_port.unwrap_or(0),
                                e.orig.dst,
                                e.orig.dst_port.unwrap_or(0)
                            ),
                            source: io::Error::from_raw_os_error(errno),
                        })
                    }
                    _ => {}
                }
            }
        }
    }

    /// Deletes every entry `f` matches (as `conntrack -D` with the same options); returns how
    /// many were deleted.
    pub fn delete_matching(&mut self, f: &Filter) -> Result<usize, ConntrackError> {
        let mut n = 0;
        for e in self.list(f.family)? {
            if f.matches(&e) && self.delete(&e)? {
                n += 1;
            }
        }
        Ok(n)
    }
}
