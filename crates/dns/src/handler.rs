//! One DNS request → one response: the protocol rules (opcode, question count, class, EDNS
//! version, zone transfers, truncation) around the cluster zone's [`crate::answer`] and the
//! [`crate::upstream`] forwarder. Implements hickory's `RequestHandler`, so hickory's `Server`
//! runs it for UDP and TCP; malformed messages with a readable header get FORMERR from
//! hickory before they reach it.
//!
//! Truncation is decided here, not left to the encoder: a UDP answer larger than the client's
//! limit (512 bytes without EDNS, its advertised payload with EDNS, at most [`MAX_UDP_PAYLOAD`])
//! goes out with TC set and empty sections, so the client retries over TCP and gets the whole
//! answer (RFC 2181 §9: a partial RRset is never returned).

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::answer::{answer, Outcome};
use crate::metrics::Metrics;
use crate::snapshot::ZoneSnapshot;
use crate::upstream::{Forwarder, Source};

/// The largest UDP response this server sends, whatever the client offers (RFC 6891 lets a
/// server cap it; 4096 is the common ceiling).
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// The payload size without EDNS (RFC 1035).
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// The handler hickory's server calls for every request.
#[derive(Clone)]
pub struct DnsHandler {
    pub zone: Arc<ArcSwap<ZoneSnapshot>>,
    /// `None`: no upstreams, names outside the cluster zone are REFUSED.
    pub forwarder: Option<Arc<Forwarder>>,
    pub metrics: Arc<Metrics>,
}

/// The sections of a response.
#[derive(Debug, Default)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// `cluster`, `upstream` or `server`, for metrics.
    pub source: &'static str,
}

impl Reply {
    fn error(rcode: ResponseCode) -> Self {
        Reply {
            rcode,
            source: "server",
            ..Reply::default()
        }
    }
}

/// The UDP size limit for a request: 512 without EDNS, else the client's payload (at least
/// 512, at most [`MAX_UDP_PAYLOAD`]).
pub fn udp_limit(edns: Option<&Edns>) -> u16 {
    match edns {
        None => CLASSIC_UDP_PAYLOAD,
        Some(e) => e.max_payload().clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
    }
}

/// An upper bound of a record's wire size (no name compression; unusual types counted big so
/// the exact check runs).
fn record_bound(r: &Record) -> usize {
    let name = |n: &Name| n.len() + 2;
    let rdata = match &r.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(s) => 6 + name(&s.target),
        RData::PTR(p) => name(&p.0),
        RData::CNAME(c) => name(&c.0),
        RData::NS(n) => name(&n.0),
        RData::TXT(t) => t.txt_data.iter().map(|d| d.len() + 1).sum(),
        RData::SOA(s) => name(&s.mname) + name(&s.rname) + 20,
        _ => usize::from(u16::MAX),
    };
    name(&r.name) + 10 + rdata
}

impl DnsHandler {
    /// The response sections for a request that passed the protocol checks.
    pub async fn resolve(&self, name: &Name, qtype: RecordType, qclass: DNSClass) -> Reply {
        let zone = self.zone.load();
        match answer(&zone, name, qtype) {
            Outcome::Authoritative(a) => {
                let mut reply = Reply {
                    rcode: a.rcode,
                    authoritative: true,
                    answers: a.answers.records().to_vec(),
                    authorities: a.authority.into_iter().cloned().collect(),
                    additionals: a.additional.records().to_vec(),
                    source: "cluster",
                };
                if let Some(target) = a.cname_target().cloned() {
                    drop(zone);
                    self.chase(&mut reply, &target, qtype, qclass).await;
                }
                reply
            }
            Outcome::NotOurs => {
                drop(zone);
                self.forward(name, qtype, qclass).await
            }
        }
    }

    /// Appends what an ExternalName's target resolves to (in the zone or upstream), as a
    /// resolver following the CNAME would find it; a failed chase leaves the CNAME alone.
    async fn chase(&self, reply: &mut Reply, target: &Name, qtype: RecordType, qclass: DNSClass) {
        let zone = self.zone.load();
        if let Outcome::Authoritative(a) = answer(&zone, target, qtype) {
            if a.cname_target().is_none() {
                reply.answers.extend(a.answers.records().iter().cloned());
            }
            return;
        }
        drop(zone);
        if let Some(f) = &self.forwarder {
            if let Ok((found, _)) = f.resolve(target, qtype, qclass).await {
                reply.answers.extend(found.answers);
            }
        }
    }

    async fn forward(&self, name: &Name, qtype: RecordType, qclass: DNSClass) -> Reply {
        let Some(f) = &self.forwarder else {
            // No upstreams: this server offers no recursion, and says so (REFUSED, RA clear)
            // so a stub resolver moves to its next nameserver at once.
            return Reply::error(ResponseCode::Refused);
        };
        match f.resolve(name, qtype, qclass).await {
            Ok((found, source)) => {
                match source {
                    Source::Cache => {
                        self.metrics.cache_hits.inc();
                    }
                    Source::Upstream(took) => {
                        self.metrics.cache_misses.inc();
                        self.metrics.upstream_seconds.observe(took.as_secs_f64());
                    }
                };
                Reply {
                    rcode: found.rcode,
                    authoritative: false,
                    answers: found.answers,
                    authorities: found.authorities,
                    additionals: found.additionals,
                    source: "upstream",
                }
            }
            Err(e) => {
                tracing::debug!(%name, %qtype, error = %e, "forwarding failed");
                self.metrics.cache_misses.inc();
                self.metrics.upstream_failures.inc();
                Reply {
                    source: "upstream",
                    ..Reply::error(ResponseCode::ServFail)
                }
            }
        }
    }

    /// The protocol checks; `Err` is the error reply.
    fn check(request: &Request) -> Result<(), ResponseCode> {
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Err(ResponseCode::BADVERS);
        }
        if request.metadata.op_code != OpCode::Query {
            return Err(ResponseCode::NotImp);
        }
        let [q] = request.queries.queries() else {
            return Err(ResponseCode::FormErr);
        };
        match q.query_type() {
            RecordType::AXFR | RecordType::IXFR => return Err(ResponseCode::Refused),
            // OPT is a pseudo-type, never a question (RFC 6891 §6.1.1).
            RecordType::OPT => return Err(ResponseCode::FormErr),
            _ => {}
        }
        if q.query_class() != DNSClass::IN {
            // Only class IN is implemented (CH, HS, ANY, unknown classes alike).
            return Err(ResponseCode::NotImp);
        }
        Ok(())
    }
}

/// The sections of a response, borrowed (from the snapshot on the fast path).
struct Sections<'r> {
    rcode: ResponseCode,
    authoritative: bool,
    answers: &'r [Record],
    authorities: &'r [Record],
    additionals: &'r [Record],
}

impl DnsHandler {
    /// Encodes and sends a response, truncating (TC, empty sections) when it does not fit the
    /// client's UDP limit.
    async fn send<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
        sections: Sections<'_>,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = sections.authoritative;
        metadata.recursion_available = self.forwarder.is_some();
        metadata.response_code = sections.rcode;
        // EDNS in the response only when the request had it (RFC 6891 §7); BADVERS answers
        // with version 0, the version this server speaks.
        let limit = udp_limit(request.edns.as_ref());
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(limit);
            e.set_version(0);
            e
        });
        let records = || {
            sections
                .answers
                .iter()
                .chain(sections.authorities)
                .chain(sections.additionals)
        };
        let too_big = request.protocol() == Protocol::Udp && {
            let bound: usize = 12
                + request.queries.as_bytes().len()
                + records().map(record_bound).sum::<usize>()
                + if edns.is_some() { 11 } else { 0 };
            bound > usize::from(limit)
                && exact_size(&metadata, request, &sections, edns.as_ref()) > usize::from(limit)
        };
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let response = if too_big {
            metadata.truncation = true;
            builder.build(metadata, &[], &[], &[], &[])
        } else {
            builder.build(
                metadata,
                sections.answers,
                sections.authorities,
                &[],
                sections.additionals,
            )
        };
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending the response failed");
                let mut m = Metadata::response_from_request(&request.metadata);
                m.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_proto::op::Header {
                    metadata: m,
                    counts: Default::default(),
                })
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let question = request.queries.queries().first();
        let qtype = question.map_or(RecordType::Unknown(0), |q| q.query_type());
        let checked = Self::check(request);

        // Fast path: a cluster answer needing nothing else is sent straight from the
        // snapshot's records (no copies).
        if let (Ok(()), Some(q)) = (&checked, question) {
            let zone = self.zone.load_full();
            if let Outcome::Authoritative(a) = answer(&zone, q.name(), qtype) {
                if a.cname_target().is_none() {
                    self.metrics.count_query(qtype, a.rcode, "cluster");
                    let sections = Sections {
                        rcode: a.rcode,
                        authoritative: true,
                        answers: a.answers.records(),
                        authorities: a.authority.map(std::slice::from_ref).unwrap_or(&[]),
                        additionals: a.additional.records(),
                    };
                    return self.send(request, response_handle, sections).await;
                }
            }
        }

        let reply = match (checked, question) {
            (Err(code), _) => Reply::error(code),
            (Ok(()), Some(q)) => self.resolve(q.name(), qtype, q.query_class()).await,
            (Ok(()), None) => Reply::error(ResponseCode::FormErr),
        };
        self.metrics.count_query(qtype, reply.rcode, reply.source);
        let sections = Sections {
            rcode: reply.rcode,
            authoritative: reply.authoritative,
            answers: &reply.answers,
            authorities: &reply.authorities,
            additionals: &reply.additionals,
        };
        self.send(request, response_handle, sections).await
    }
}

/// The exact encoded size of a reply (only computed when the bound says it may not fit).
fn exact_size(
    metadata: &Metadata,
    request: &Request,
    reply: &Sections<'_>,
    edns: Option<&Edns>,
) -> usize {
    let mut m = Message::new(metadata.id, metadata.message_type, metadata.op_code);
    m.metadata = *metadata;
    m.queries = request
        .queries
        .queries()
        .iter()
        .map(|q| q.original().clone())
        .collect();
    m.answers = reply.answers.to_vec();
    m.authorities = reply.authorities.to_vec();
    m.additionals = reply.additionals.to_vec();
    m.edns = edns.cloned();
    m.to_vec().map_or(usize::MAX, |v| v.len())
}
