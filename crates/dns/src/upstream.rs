//! Names outside the cluster zone: forwarded to the upstream resolvers as a recursive
//! forwarder does (RD set, UDP first, the same question again over TCP when the reply is
//! truncated), with a bounded cache of positive and negative answers that respects their TTLs.
//!
//! - Upstreams are tried in order, each once, each with [`ATTEMPT_TIMEOUT`]; when every one
//!   fails the caller answers SERVFAIL, so a query never waits longer than
//!   `upstreams × 2 × ATTEMPT_TIMEOUT`.
//! - Positive answers are cached for their smallest TTL, negative ones (NXDOMAIN, NODATA) for
//!   min(SOA TTL, SOA minimum) (RFC 2308); a negative answer without an SOA, and SERVFAIL, are
//!   not cached. TTLs are capped ([`MAX_TTL`], [`MAX_NEGATIVE_TTL`]) and served decremented by
//!   the time spent in the cache.
//! - The cache holds at most `--cache-size` entries; when full the oldest insertion goes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets for one transport.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// The longest a positive upstream answer is cached.
pub const MAX_TTL: u32 = 3600;
/// The longest a negative upstream answer is cached.
pub const MAX_NEGATIVE_TTL: u32 = 300;
/// The EDNS payload size this forwarder offers upstream (the DNS Flag Day 2020 value).
pub const UPSTREAM_PAYLOAD: u16 = 1232;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolvers configured")]
    NoUpstreams,
    #[error("every upstream failed; last: {0}")]
    AllFailed(String),
}

/// An upstream's answer to one question, as the client gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarded {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// Served from the cache.
    pub cached: bool,
}

type CacheKey = (Name, RecordType, DNSClass);

#[derive(Debug)]
struct Entry {
    answer: Forwarded,
    stored: Instant,
    ttl: u32,
}

/// A bounded cache of upstream answers.
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    entries: HashMap<CacheKey, Entry>,
    order: VecDeque<CacheKey>,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached answer with its TTLs decremented by its age, unless expired.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Forwarded> {
        let entry = self.entries.get(key)?;
        let age = now.saturating_duration_since(entry.stored).as_secs();
        let Some(left) = u64::from(entry.ttl).checked_sub(age).filter(|l| *l > 0) else {
            self.entries.remove(key);
            return None;
        };
        let mut answer = entry.answer.clone();
        let age = age as u32;
        for r in answer
            .answers
            .iter_mut()
            .chain(&mut answer.authorities)
            .chain(&mut answer.additionals)
        {
            r.ttl = r.ttl.saturating_sub(age).min(left as u32);
        }
        answer.cached = true;
        Some(answer)
    }

    /// Stores `answer` for its TTL (see the module doc); returns whether it was cacheable.
    pub fn put(&mut self, key: CacheKey, answer: &Forwarded, now: Instant) -> bool {
        let Some(ttl) = cache_ttl(answer).filter(|t| *t > 0) else {
            return false;
        };
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.capacity {
                match self.order.pop_front() {
                    Some(old) => {
                        self.entries.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(key.clone());
        }
        let mut answer = answer.clone();
        answer.cached = false;
        self.entries.insert(
            key,
            Entry {
                answer,
                stored: now,
                ttl,
            },
        );
        // Keys replaced or expired stay in `order` until popped; keep it bounded too.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order.retain(|k| entries.contains_key(k));
        }
        true
    }
}

/// How long an answer may be cached: `None` when it must not be.
pub fn cache_ttl(answer: &Forwarded) -> Option<u32> {
    let negative = answer.rcode == ResponseCode::NXDomain
        || (answer.rcode == ResponseCode::NoError && answer.answers.is_empty());
    if negative {
        return answer
            .authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .map(|t| t.min(MAX_NEGATIVE_TTL));
    }
    if answer.rcode != ResponseCode::NoError {
        return None;
    }
    answer
        .answers
        .iter()
        .map(|r| r.ttl)
        .min()
        .map(|t| t.min(MAX_TTL))
}

/// The forwarder: upstream resolvers and the cache.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<Cache>,
}

/// What a resolution did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    /// Went upstream and took this long.
    Upstream(Duration),
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, cache_size: usize) -> Self {
        Forwarder {
            upstreams,
            cache: Mutex::new(Cache::new(cache_size)),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        match self.cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The answer to `name`/`qtype`/`qclass`, from the cache or the first upstream that answers.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> Result<(Forwarded, Source), UpstreamError> {
        if self.upstreams.is_empty() {
            return Err(UpstreamError::NoUpstreams);
        }
        let key = (name.to_lowercase(), qtype, qclass);
        if let Some(hit) = self.cache().get(&key, Instant::now()) {
            return Ok((hit, Source::Cache));
        }
        let started = Instant::now();
        let mut last = String::new();
        for upstream in &self.upstreams {
            match exchange(*upstream, name, qtype, qclass).await {
                Ok(answer) => {
                    self.cache().put(key, &answer, Instant::now());
                    return Ok((answer, Source::Upstream(started.elapsed())));
                }
                Err(e) => {
                    tracing::debug!(%upstream, error = %e, "upstream failed");
                    last = format!("{upstream}: {e}");
                }
            }
        }
        Err(UpstreamError::AllFailed(last))
    }

    pub fn cache_len(&self) -> usize {
        self.cache().len()
    }
}

/// One question to one upstream: UDP, then TCP when the UDP reply is truncated.
async fn exchange(
    upstream: SocketAddr,
    name: &Name,
    qtype: RecordType,
    qclass: DNSClass,
) -> Result<Forwarded, String> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    let mut q = Query::query(name.clone(), qtype);
    q.set_query_class(qclass);
    query.add_query(q);
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_PAYLOAD);
    query.set_edns(edns);
    let bytes = query.to_vec().map_err(|e| e.to_string())?;
    let id = query.metadata.id;

    let reply = tokio::time::timeout(ATTEMPT_TIMEOUT, udp_exchange(upstream, &bytes, id))
        .await
        .map_err(|_| "UDP timeout".to_string())??;
    let reply = if reply.metadata.truncation {
        tokio::time::timeout(ATTEMPT_TIMEOUT, tcp_exchange(upstream, &bytes, id))
            .await
            .map_err(|_| "TCP timeout".to_string())??
    } else {
        reply
    };
    check_reply(&reply, name, qtype)?;
    if matches!(
        reply.metadata.response_code,
        ResponseCode::ServFail
            | ResponseCode::Refused
            | ResponseCode::NotImp
            | ResponseCode::FormErr
    ) {
        return Err(format!("answered {}", reply.metadata.response_code));
    }
    Ok(Forwarded {
        rcode: reply.metadata.response_code,
        answers: reply.answers,
        authorities: reply.authorities,
        additionals: reply.additionals,
        cached: false,
    })
}

fn check_reply(reply: &Message, name: &Name, qtype: RecordType) -> Result<(), String> {
    if reply.metadata.message_type != MessageType::Response
        || reply.metadata.op_code != OpCode::Query
    {
        return Err("not a query response".into());
    }
    match reply.queries.as_slice() {
        [q] if q.name() == name && q.query_type() == qtype => Ok(()),
        _ => Err("reply is for another question".into()),
    }
}

async fn udp_exchange(upstream: SocketAddr, query: &[u8], id: u16) -> Result<Message, String> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket.connect(upstream).await.map_err(|e| e.to_string())?;
    socket.send(query).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
        // A reply with another id (or unparsable) is not ours: keep waiting until the timeout.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if m.metadata.id == id {
                return Ok(m);
            }
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, query: &[u8], id: u16) -> Result<Message, String> {
    let mut stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let len = u16::try_from(query.len()).map_err(|_| "query too long".to_string())?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let m = Message::from_vec(&buf).map_err(|e| e.to_string())?;
    if m.metadata.id != id {
        return Err("TCP reply with another id".into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn a(ttl: u32) -> Record {
        Record::from_rdata(name("x.example."), ttl, RData::A(A([192, 0, 2, 1].into())))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        Record::from_rdata(
            name("example."),
            ttl,
            RData::SOA(SOA::new(
                name("ns.example."),
                name("h.example."),
                1,
                1,
                1,
                1,
                minimum,
            )),
        )
    }

    fn answer(rcode: ResponseCode, answers: Vec<Record>, authorities: Vec<Record>) -> Forwarded {
        Forwarded {
            rcode,
            answers,
            authorities,
            additionals: vec![],
            cached: false,
        }
    }

    #[test]
    fn ttls_positive_negative_and_uncacheable() {
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NoError, vec![a(60), a(20)], vec![])),
            Some(20)
        );
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NoError, vec![a(90_000)], vec![])),
            Some(MAX_TTL)
        );
        // Negative: min(SOA TTL, SOA minimum), capped.
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NXDomain, vec![], vec![soa(100, 40)])),
            Some(40)
        );
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NoError, vec![], vec![soa(10, 40)])),
            Some(10)
        );
        assert_eq!(
            cache_ttl(&answer(
                ResponseCode::NXDomain,
                vec![],
                vec![soa(9000, 9000)]
            )),
            Some(MAX_NEGATIVE_TTL)
        );
        // Negative without SOA, and SERVFAIL: not cached.
        assert_eq!(
            cache_ttl(&answer(ResponseCode::NXDomain, vec![], vec![])),
            None
        );
        assert_eq!(
            cache_ttl(&answer(ResponseCode::ServFail, vec![a(60)], vec![])),
            None
        );
    }

    #[test]
    fn cache_expires_decrements_and_stays_bounded() {
        let mut c = Cache::new(2);
        let t0 = Instant::now();
        let key = |n: &str| (name(n), RecordType::A, DNSClass::IN);
        assert!(c.put(
            key("a."),
            &answer(ResponseCode::NoError, vec![a(10)], vec![]),
            t0
        ));
        let hit = c.get(&key("A."), t0 + Duration::from_secs(4)).unwrap();
        assert!(hit.cached);
        assert_eq!(hit.answers[0].ttl, 6, "TTL decremented by the age");
        assert!(
            c.get(&key("a."), t0 + Duration::from_secs(10)).is_none(),
            "expired"
        );
        assert!(!c.put(
            key("s."),
            &answer(ResponseCode::ServFail, vec![], vec![]),
            t0
        ));
        for n in ["b.", "c.", "d."] {
            c.put(
                key(n),
                &answer(ResponseCode::NoError, vec![a(10)], vec![]),
                t0,
            );
        }
        assert_eq!(c.len(), 2, "bounded");
        assert!(c.get(&key("b."), t0).is_none(), "oldest evicted");
        assert!(c.get(&key("d."), t0).is_some());
    }

    #[tokio::test]
    async fn every_upstream_failing_is_an_error_within_the_bound() {
        // A port nothing listens on (bound, then closed): refused at once.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let f = Forwarder::new(vec![closed], 10);
        let t = Instant::now();
        let r = f
            .resolve(&name("example."), RecordType::A, DNSClass::IN)
            .await;
        assert!(matches!(r, Err(UpstreamError::AllFailed(_))), "{r:?}");
        assert!(t.elapsed() < ATTEMPT_TIMEOUT * 2);
        let none = Forwarder::new(vec![], 10);
        let r = none
            .resolve(&name("example."), RecordType::A, DNSClass::IN)
            .await;
        assert!(matches!(r, Err(UpstreamError::NoUpstreams)));
    }
}
