//! The UDP serving loop: one plain thread per SO_REUSEPORT socket, each reading batches of
//! datagrams with `recvmmsg` and writing the fast path's answers back with one `sendmmsg`, as
//! NSD and Knot serve. A standard query whose answer the [`AnswerCache`] holds is answered on
//! the thread from pre-encoded bytes ([`crate::fastpath`]); every other datagram (errors,
//! upstream names, pod names, aliases, anything the cache declines) is handed, as received, to
//! the tokio runtime, where the hickory path ([`DnsHandler`]) answers it exactly as hickory's
//! own UDP server would (a readable header with an unreadable body gets FORMERR, responses and
//! runts are dropped).
//!
//! A worker stops within [`POLL`] of its [`Workers`] guard being dropped.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};

use crate::answer_cache::AnswerCache;
use crate::fastpath;
use crate::handler::DnsHandler;
use crate::metrics::FastCounters;

/// Datagrams read (and answers written) per system call.
const BATCH: usize = 32;
/// The receive buffer per datagram (hickory's UDP receive size).
const DATAGRAM: usize = 4096;
/// How often a blocked worker looks at its stop flag.
pub const POLL: Duration = Duration::from_millis(200);

/// The running workers; dropping this stops them (each within [`POLL`]).
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts one worker per socket. `cache: None` turns the fast path off (every datagram takes
/// the hickory path, still through this loop). Slow-path datagrams run on `rt`.
pub fn spawn(
    sockets: Vec<UdpSocket>,
    handler: DnsHandler,
    cache: Option<Arc<AnswerCache>>,
    rt: tokio::runtime::Handle,
) -> io::Result<Workers> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().enumerate() {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(POLL))?;
        let worker = Worker {
            socket: Arc::new(socket),
            counters: handler.metrics.fast_counters(),
            handler: handler.clone(),
            cache: cache.clone(),
            rt: rt.clone(),
            stop: stop.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || worker.run())?,
        );
    }
    Ok(Workers { stop, threads })
}

struct Worker {
    socket: Arc<UdpSocket>,
    handler: DnsHandler,
    cache: Option<Arc<AnswerCache>>,
    counters: Arc<FastCounters>,
    rt: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
}

/// A source address as the kernel wrote it.
fn socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family is AF_INET and the kernel wrote a whole sockaddr_in;
            // sockaddr_storage is large and aligned enough for any sockaddr.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for AF_INET6 and sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Addresses hickory's server refuses to answer (port 0, unspecified, broadcast).
fn answerable(src: &SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(ip) => !ip.is_unspecified() && !ip.is_broadcast(),
            IpAddr::V6(ip) => !ip.is_unspecified(),
        }
}

impl Worker {
    fn run(self) {
        let fd = self.socket.as_raw_fd();
        let mut bufs = vec![0u8; BATCH * DATAGRAM];
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all-zero
        // bytes are a valid value.
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut out: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
        let mut out_iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut out_msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        while !self.stop.load(Ordering::Relaxed) {
            for i in 0..BATCH {
                iovs[i].iov_base = bufs[i * DATAGRAM..].as_mut_ptr().cast();
                iovs[i].iov_len = DATAGRAM;
                let h = &mut msgs[i].msg_hdr;
                h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                msgs[i].msg_len = 0;
            }
            // SAFETY: every mmsghdr points at live buffers owned by this frame (`bufs`,
            // `addrs`, `iovs`) of the sizes it states, and BATCH matches the array length.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted => {}
                    _ => {
                        tracing::warn!(error = %e, "receiving UDP queries");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                continue;
            }
            let mut replies = 0;
            for i in 0..n as usize {
                let len = msgs[i].msg_len as usize;
                let Some(src) = socket_addr(&addrs[i], msgs[i].msg_hdr.msg_namelen) else {
                    continue;
                };
                if !answerable(&src) {
                    continue;
                }
                let packet = &bufs[i * DATAGRAM..i * DATAGRAM + len];
                let truncated = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                if !truncated && self.fast(packet, &mut out[replies]) {
                    let h = &mut out_msgs[replies].msg_hdr;
                    out_iovs[replies].iov_base = out[replies].as_mut_ptr().cast();
                    out_iovs[replies].iov_len = out[replies].len();
                    h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                    h.msg_namelen = msgs[i].msg_hdr.msg_namelen;
                    h.msg_iov = &mut out_iovs[replies];
                    h.msg_iovlen = 1;
                    replies += 1;
                } else {
                    self.slow(packet.to_vec(), src);
                }
            }
            let mut sent = 0;
            while sent < replies {
                // SAFETY: the first `replies` out_msgs point at live answers (`out`,
                // `out_iovs`) and at source addresses in `addrs`, none touched until this
                // loop ends.
                let r = unsafe {
                    libc::sendmmsg(
                        fd,
                        out_msgs[sent..].as_mut_ptr(),
                        (replies - sent) as libc::c_uint,
                        0,
                    )
                };
                if r <= 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // A full send buffer or an unreachable client: the rest of the batch is
                    // lost, as a dropped datagram would be; the client retries.
                    tracing::debug!(error = %e, "sending UDP answers");
                    break;
                }
                sent += r as usize;
            }
        }
    }

    /// Answers `packet` into `out` from the cache; false when it is not the fast path's.
    fn fast(&self, packet: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let Some(q) = fastpath::parse(packet) else {
            return false;
        };
        let Some((answer, serial)) = cache.get(&q) else {
            return false;
        };
        fastpath::respond(&q, &answer, serial, out);
        self.counters.count(q.qtype, answer.rcode());
        true
    }

    /// Hands a datagram to the hickory path on the runtime.
    fn slow(&self, packet: Vec<u8>, src: SocketAddr) {
        let handler = self.handler.clone();
        let reply = UdpReply {
            socket: self.socket.clone(),
            dst: src,
        };
        self.rt
            .spawn(async move { hickory_path(handler, packet, src, reply).await });
    }
}

/// What hickory's server does with one UDP datagram (`handle_request` in hickory-server).
pub async fn hickory_path<R: ResponseHandler>(
    handler: DnsHandler,
    packet: Vec<u8>,
    src: SocketAddr,
    mut reply: R,
) {
    let Ok(header) = Header::read(&mut BinDecoder::new(&packet)) else {
        // Shorter than a header: not a DNS message, no answer.
        return;
    };
    match Request::from_bytes(packet, src, Protocol::Udp) {
        Ok(request) => {
            if request.metadata.message_type == MessageType::Response {
                return;
            }
            handler
                .handle_request::<_, TokioTime>(&request, reply)
                .await;
        }
        Err(error) => {
            tracing::debug!(%src, %error, "unreadable query: FORMERR");
            // No question is echoed: the body could not be read.
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return;
            };
            let response = MessageResponseBuilder::new(&queries, None)
                .error_msg(&header, ResponseCode::FormErr);
            if let Err(e) = reply.send_response(response).await {
                tracing::debug!(error = %e, "sending FORMERR failed");
            }
        }
    }
}

/// Sends the hickory path's response from the worker's socket.
#[derive(Clone)]
struct UdpReply {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let id = response.metadata().id;
        let max = response.edns().map_or(
            hickory_server::net::udp::MAX_RECEIVE_BUFFER_SIZE as u16,
            |e| e.max_payload(),
        );
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                // As hickory does: a response that cannot be encoded becomes SERVFAIL.
                tracing::error!(%error, "encoding a response");
                bytes.clear();
                let mut encoder = BinEncoder::new(&mut bytes);
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header {
                    metadata,
                    counts: Default::default(),
                };
                header.emit(&mut encoder)?;
                ResponseInfo::from(header)
            }
        };
        // The socket is blocking (the worker's); a UDP send only waits for buffer space.
        self.socket.send_to(&bytes, self.dst)?;
        Ok(info)
    }
}
