//! Netlink plumbing for the nf_tables backend: attribute building and parsing, message framing,
//! and a NETLINK_NETFILTER socket with one reusable receive buffer.

use std::io;
use std::path::{Path, PathBuf};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};

use crate::wire::WireCapture;
use crate::NftError;

pub(crate) const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg` after the netlink header.
pub(crate) const NFGEN_HDRLEN: usize = 4;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
/// Attribute type bits (without the nested / byte-order flags).
const NLA_TYPE_MASK: u16 = 0x3fff;
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// Receive buffer: dump replies come in skbs of at most a few tens of kB.
const RX_BUF: usize = 1 << 20;
/// Socket receive queue asked for.
const RCVBUF: usize = 16 << 20;

/// Netlink attribute builder.
#[derive(Default)]
pub(crate) struct Attrs {
    pub(crate) buf: Vec<u8>,
    /// An attribute (or one nested in it) did not fit the 16-bit length: the bytes are not
    /// a valid message, the encoder must not send them.
    pub(crate) overflow: bool,
}

impl Attrs {
    pub(crate) fn put(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let Ok(len) = u16::try_from(4 + data.len()) else {
            self.overflow = true;
            return self;
        };
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }
    pub(crate) fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut b = Vec::with_capacity(s.len() + 1);
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        self.put(ty, &b)
    }
    pub(crate) fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }
    pub(crate) fn u64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.put(ty, &v.to_be_bytes())
    }
    pub(crate) fn nest(&mut self, ty: u16, inner: Attrs) -> &mut Self {
        self.overflow |= inner.overflow;
        self.put(ty | NLA_F_NESTED, &inner.buf)
    }
    /// Appends already encoded attributes.
    pub(crate) fn extend(&mut self, other: &Attrs) -> &mut Self {
        self.overflow |= other.overflow;
        self.buf.extend_from_slice(&other.buf);
        self
    }
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

/// Appends one nfnetlink message (netlink header, nfgenmsg, attributes) to `buf`.
pub(crate) fn put_msg(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) {
    let len = NLMSG_HDRLEN + NFGEN_HDRLEN + attrs.len();
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(attrs);
}

/// One received netlink message.
pub(crate) struct Msg<'a> {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    /// Everything after the netlink header.
    pub(crate) body: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The errno of an `NLMSG_ERROR` / `NLMSG_DONE` message (0 for an ACK).
    pub(crate) fn errno(&self) -> Result<i32, NftError> {
        let b = self
            .body
            .get(..4)
            .ok_or_else(|| listing("short error message"))?;
        Ok(-i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// nfnetlink family and attributes of an nf_tables message.
    pub(crate) fn nft(&self) -> Result<(u8, &'a [u8]), NftError> {
        if self.body.len() < NFGEN_HDRLEN {
            return Err(listing("short nfnetlink message"));
        }
        Ok((self.body[0], &self.body[NFGEN_HDRLEN..]))
    }
}

/// The messages of one datagram.
pub(crate) struct Msgs<'a>(pub(crate) &'a [u8]);

impl<'a> Iterator for Msgs<'a> {
    type Item = Result<Msg<'a>, NftError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let b = self.0;
        if b.len() < NLMSG_HDRLEN {
            self.0 = &[];
            return Some(Err(listing("truncated netlink header")));
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            self.0 = &[];
            return Some(Err(listing("bad netlink message length")));
        }
        let msg = Msg {
            ty: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            body: &b[NLMSG_HDRLEN..len],
        };
        self.0 = b.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
        Some(Ok(msg))
    }
}

/// The attributes in `buf`, as (type without flags, payload).
pub(crate) struct AttrIter<'a>(pub(crate) &'a [u8]);

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<(u16, &'a [u8]), NftError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let b = self.0;
        if b.len() < 4 {
            self.0 = &[];
            return Some(Err(listing("truncated attribute header")));
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            self.0 = &[];
            return Some(Err(listing("bad attribute length")));
        }
        self.0 = b.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
        Some(Ok((ty, &b[4..len])))
    }
}

/// The attributes in `buf` indexed by type (types from `N` on are ignored; a repeated type
/// keeps its last value).
pub(crate) fn attr_table<const N: usize>(buf: &[u8]) -> Result<[Option<&[u8]>; N], NftError> {
    let mut t = [None; N];
    for a in AttrIter(buf) {
        let (ty, data) = a?;
        if let Some(slot) = t.get_mut(usize::from(ty)) {
            *slot = Some(data);
        }
    }
    Ok(t)
}

pub(crate) fn listing(msg: impl Into<String>) -> NftError {
    NftError::Listing(msg.into())
}

pub(crate) fn be32(b: &[u8]) -> Result<u32, NftError> {
    let a: [u8; 4] = b.try_into().map_err(|_| listing("32-bit attribute"))?;
    Ok(u32::from_be_bytes(a))
}

pub(crate) fn be64(b: &[u8]) -> Result<u64, NftError> {
    let a: [u8; 8] = b.try_into().map_err(|_| listing("64-bit attribute"))?;
    Ok(u64::from_be_bytes(a))
}

/// A NUL-terminated string attribute.
pub(crate) fn cstr(b: &[u8]) -> Result<&str, NftError> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end]).map_err(|_| listing("string attribute is not UTF-8"))
}

/// The value of TLV `ty` in nftnl user data (type byte, length byte, value), if present.
pub(crate) fn udata(buf: &[u8], ty: u8) -> Result<Option<&[u8]>, NftError> {
    let mut rest = buf;
    while rest.len() >= 2 {
        let (t, len) = (rest[0], usize::from(rest[1]));
        let v = rest
            .get(2..2 + len)
            .ok_or_else(|| listing("truncated user data"))?;
        if t == ty {
            return Ok(Some(v));
        }
        rest = &rest[2 + len..];
    }
    Ok(None)
}

/// A NETLINK_NETFILTER socket connected to the kernel.
pub(crate) struct NlSocket {
    sock: Socket,
    rx: Vec<u8>,
    /// Largest message the send buffer takes.
    sndbuf: usize,
    netns: Option<PathBuf>,
    /// Copies of what is sent and received, when asked for (fixtures, debugging).
    pub(crate) capture: Option<WireCapture>,
}

fn io_err(what: &str) -> impl Fn(io::Error) -> NftError + '_ {
    move |source| NftError::Netlink {
        what: what.to_string(),
        source,
    }
}

fn open_here() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_NETFILTER)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    // Errors without a copy of the failed request: a rejected batch of 100k rules would
    // otherwise echo them all.
    s.set_cap_ack(true)?;
    // Room for the error reports of a rejected batch and the answers to pipelined lookups;
    // above rmem_max only with CAP_NET_ADMIN (best effort: callers size by what they got).
    if setsockopt(&s, sockopt::RcvBufForce, &RCVBUF).is_err() {
        let _ = setsockopt(&s, sockopt::RcvBuf, &RCVBUF);
    }
    Ok(s)
}

fn open_in(netns: &Path) -> Result<Socket, NftError> {
    let file = std::fs::File::open(netns).map_err(|source| NftError::Spawn {
        cmd: format!("open {}", netns.display()),
        source,
    })?;
    // setns() moves the calling thread: do it in a short-lived one, the caller stays put.
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                NftError::Spawn {
                    cmd: format!("setns {}", netns.display()),
                    source: io::Error::from(e),
                }
            })?;
            open_here().map_err(io_err("netlink (NETLINK_NETFILTER) socket"))
        })
        .join()
        .unwrap_or_else(|_| Err(NftError::Invalid("netns helper thread panicked".into())))
    })
}

impl NlSocket {
    /// A socket in the caller's namespace, or in the one at `netns` (e.g. `/run/netns/NAME`).
    pub(crate) fn open(netns: Option<&Path>) -> Result<Self, NftError> {
        let sock = match netns {
            None => open_here().map_err(io_err("netlink (NETLINK_NETFILTER) socket"))?,
            Some(p) => open_in(p)?,
        };
        // The kernel reports twice what it counts against a message.
        let sndbuf = nix::sys::socket::getsockopt(&sock, sockopt::SndBuf).unwrap_or(0) / 2;
        Ok(NlSocket {
            sock,
            rx: Vec::with_capacity(RX_BUF),
            sndbuf,
            netns: netns.map(Path::to_path_buf),
            capture: None,
        })
    }

    /// The receive buffer size the kernel granted.
    pub(crate) fn rcvbuf(&self) -> usize {
        self.sock.get_rx_buf_sz().unwrap_or(256 << 10)
    }

    /// A fresh socket in the same namespace, after an I/O error left this one in an unknown
    /// state (half-read replies, a dump still running).
    pub(crate) fn reopen(&mut self) -> Result<(), NftError> {
        let capture = self.capture.take();
        *self = NlSocket::open(self.netns.as_deref())?;
        self.capture = capture;
        Ok(())
    }

    /// Sends `data` as one datagram: one batch must reach the kernel in one piece to be one
    /// transaction, so the send buffer grows to hold it (as `nft` does).
    pub(crate) fn send(&mut self, data: &[u8]) -> Result<(), NftError> {
        let need = data.len() + 4096;
        if need > self.sndbuf {
            // The kernel doubles the value; it must stay within an int.
            if need > (i32::MAX / 2) as usize {
                return Err(NftError::Invalid(format!(
                    "netlink batch of {} bytes is too large for one message",
                    data.len()
                )));
            }
            setsockopt(&self.sock, sockopt::SndBufForce, &need)
                .or_else(|_| setsockopt(&self.sock, sockopt::SndBuf, &need))
                .map_err(|e| NftError::Netlink {
                    what: format!("SO_SNDBUFFORCE {need} (batch of {} bytes)", data.len()),
                    source: io::Error::from(e),
                })?;
            self.sndbuf = need;
        }
        let n = self.sock.send(data, 0).map_err(io_err("netlink send"))?;
        if let Some(c) = &mut self.capture {
            c.sent.extend_from_slice(&data[..n.min(data.len())]);
        }
        if n != data.len() {
            return Err(NftError::Netlink {
                what: format!("netlink send: {n} of {} bytes sent", data.len()),
                source: io::Error::from(io::ErrorKind::WriteZero),
            });
        }
        Ok(())
    }

    /// Receives one datagram (blocking unless `nonblock`).
    pub(crate) fn recv(&mut self, nonblock: bool) -> io::Result<&[u8]> {
        self.rx.clear();
        if self.rx.capacity() < RX_BUF {
            self.rx.reserve(RX_BUF);
        }
        let flags = nix::libc::MSG_TRUNC | if nonblock { nix::libc::MSG_DONTWAIT } else { 0 };
        let n = self.sock.recv(&mut self.rx, flags)?;
        if n > self.rx.len() {
            return Err(io::Error::other(format!(
                "netlink message of {n} bytes truncated to {}",
                self.rx.len()
            )));
        }
        if let Some(c) = &mut self.capture {
            c.received.extend_from_slice(&self.rx);
        }
        Ok(&self.rx)
    }
}
