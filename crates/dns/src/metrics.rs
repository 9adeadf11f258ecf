//! Prometheus metrics of the DNS server (`/metrics`): queries by type and response code, the
//! upstream cache's hits and misses, upstream latency, and the served snapshot's generation
//! and size. Label values are static strings, so counting a query allocates nothing.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryKey {
    pub r#type: &'static str,
    pub rcode: &'static str,
    /// `cluster` (answered from the cluster zone), `upstream`, or `server` (a protocol error).
    pub source: &'static str,
}

/// Every metric of the server.
#[derive(Debug)]
pub struct Metrics {
    pub queries: Family<QueryKey, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub upstream_failures: Counter,
    pub upstream_seconds: Histogram,
    pub snapshot_generation: Gauge,
    pub snapshot_records: Gauge,
    pub snapshot_build_seconds: Histogram,
    pub ready: Gauge,
    /// The fast UDP path's counters, one set per worker thread, folded into `queries` on
    /// every scrape ([`Metrics::fold_fast_counters`]).
    fast: std::sync::Mutex<Vec<std::sync::Arc<FastCounters>>>,
}

/// Query types the fast path counts apart (the rest of [`type_label`]'s are never cached).
const FAST_TYPES: [RecordType; 9] = [
    RecordType::A,
    RecordType::NS,
    RecordType::CNAME,
    RecordType::SOA,
    RecordType::PTR,
    RecordType::MX,
    RecordType::TXT,
    RecordType::AAAA,
    RecordType::SRV,
];
/// Response codes of cached answers: NOERROR, NXDOMAIN.
const FAST_RCODES: [ResponseCode; 2] = [ResponseCode::NoError, ResponseCode::NXDomain];

/// One fast-path worker's query counts by type and rcode: plain relaxed atomics only its own
/// thread writes, so counting costs no shared cache line.
#[derive(Debug, Default)]
pub struct FastCounters {
    counts: [[std::sync::atomic::AtomicU64; 2]; 9],
}

impl FastCounters {
    /// Counts one answered query (types and rcodes the fast path never serves are ignored).
    pub fn count(&self, qtype: u16, rcode: u8) {
        let t = FAST_TYPES.iter().position(|t| u16::from(*t) == qtype);
        let r = FAST_RCODES
            .iter()
            .position(|r| u16::from(*r) == u16::from(rcode));
        if let (Some(t), Some(r)) = (t, r) {
            self.counts[t][r].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            queries: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            upstream_failures: Counter::default(),
            upstream_seconds: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            snapshot_generation: Gauge::default(),
            snapshot_records: Gauge::default(),
            snapshot_build_seconds: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            ready: Gauge::default(),
            fast: std::sync::Mutex::default(),
        }
    }
}

/// A record type as a static label value (`other` beyond the common ones).
pub fn type_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::PTR => "PTR",
        RecordType::TXT => "TXT",
        RecordType::CNAME => "CNAME",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::MX => "MX",
        RecordType::ANY => "ANY",
        RecordType::AXFR => "AXFR",
        RecordType::IXFR => "IXFR",
        RecordType::HTTPS => "HTTPS",
        _ => "other",
    }
}

/// A response code as a static label value.
pub fn rcode_label(c: ResponseCode) -> &'static str {
    match c {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}

impl Metrics {
    pub fn count_query(&self, t: RecordType, rcode: ResponseCode, source: &'static str) {
        self.queries
            .get_or_create(&QueryKey {
                r#type: type_label(t),
                rcode: rcode_label(rcode),
                source,
            })
            .inc();
    }

    /// A new set of fast-path counters (one per worker thread), summed on scrape.
    pub fn fast_counters(&self) -> std::sync::Arc<FastCounters> {
        let c = std::sync::Arc::new(FastCounters::default());
        self.fast
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c.clone());
        c
    }

    /// Moves the fast-path workers' counts into `queries` (source `cluster`); the scrape calls
    /// it, so `queries` is current whenever it is read.
    pub fn fold_fast_counters(&self) {
        let fast = self.fast.lock().unwrap_or_else(|p| p.into_inner());
        for c in fast.iter() {
            for (t, row) in c.counts.iter().enumerate() {
                for (r, n) in row.iter().enumerate() {
                    let n = n.swap(0, std::sync::atomic::Ordering::Relaxed);
                    if n > 0 {
                        self.queries
                            .get_or_create(&QueryKey {
                                r#type: type_label(FAST_TYPES[t]),
                                rcode: rcode_label(FAST_RCODES[r]),
                                source: "cluster",
                            })
                            .inc_by(n);
                    }
                }
            }
        }
    }

    /// A registry holding every metric (for the text exposition).
    pub fn registry(self: &std::sync::Arc<Self>) -> Registry {
        let mut r = Registry::with_prefix("sarasa_dns");
        r.register(
            "queries",
            "DNS queries answered, by query type, response code and source",
            self.queries.clone(),
        );
        r.register(
            "cache_hits",
            "Upstream answers served from the cache",
            self.cache_hits.clone(),
        );
        r.register(
            "cache_misses",
            "Upstream questions not in the cache",
            self.cache_misses.clone(),
        );
        r.register(
            "upstream_failures",
            "Questions no upstream answered (SERVFAIL)",
            self.upstream_failures.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time to an upstream's answer",
            self.upstream_seconds.clone(),
        );
        r.register(
            "snapshot_generation",
            "Generation of the served cluster zone",
            self.snapshot_generation.clone(),
        );
        r.register(
            "snapshot_records",
            "Records in the served cluster zone",
            self.snapshot_records.clone(),
        );
        r.register(
            "snapshot_build_duration_seconds",
            "Time to build a cluster zone snapshot",
            self.snapshot_build_seconds.clone(),
        );
        r.register(
            "ready",
            "1 once the first full sync is served",
            self.ready.clone(),
        );
        r
    }
}
