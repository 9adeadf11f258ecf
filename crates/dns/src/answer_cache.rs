//! Pre-encoded cluster answers for the fast UDP path, keyed by (lower-cased name, type), built
//! lazily on the first query from the served snapshot with the same [`crate::answer`] rules and
//! hickory's encoder as the hickory path, and kept across snapshots: the feed invalidates only
//! the names a change wrote ([`AnswerCache::invalidate`]), and an SRV answer also when one of
//! its targets changes (its Additional section copies the targets' addresses).
//!
//! Only answers that depend on nothing but the snapshot's name map are cached: positive
//! answers, NODATA and NXDOMAIN inside the zone. Pod names (`*.pod.<zone>`, synthesised from
//! the pod addresses), ExternalName aliases (chased per query), ANY, and names outside the
//! zone (upstream) are not: they go to the hickory path. A negative answer's SOA serial follows
//! the generation; it is written per response ([`crate::fastpath::Encoded::serial_at`]).
//!
//! Races: an entry built from generation `g` is inserted only if `g` is still served, checked
//! under the shard's lock that invalidation also takes, and the feed swaps the snapshot before
//! it invalidates; so an entry never outlives the change that made it stale by more than the
//! moment between the swap and the invalidation.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::answer::{answer, Outcome};
use crate::fastpath::{Encoded, Question};
use crate::snapshot::ZoneSnapshot;

/// Shards of the cache (each behind its own lock).
const SHARDS: usize = 64;
/// Names cached at most (a flood of random names must not grow memory without bound).
pub const MAX_NAMES: usize = 100_000;

/// The answers of one name, by query type.
type NameAnswers = Vec<(u16, Arc<Encoded>)>;

/// The cache of encoded answers.
pub struct AnswerCache {
    zone: Arc<ArcSwap<ZoneSnapshot>>,
    recursion_available: bool,
    hasher: RandomState,
    shards: Vec<RwLock<HashMap<Box<[u8]>, NameAnswers>>>,
    /// SRV target (wire name) → SRV owners whose cached answers copy its addresses.
    srv_targets: Mutex<HashMap<Box<[u8]>, Vec<Box<[u8]>>>>,
    names: AtomicUsize,
}

/// A name in lower-cased wire form (the cache's key form).
pub fn wire_key(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::from(name.len()) + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

impl AnswerCache {
    /// A cache over `zone`'s snapshots; `recursion_available` is the RA bit the hickory path
    /// sets (upstreams configured).
    pub fn new(zone: Arc<ArcSwap<ZoneSnapshot>>, recursion_available: bool) -> Self {
        AnswerCache {
            zone,
            recursion_available,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            srv_targets: Mutex::default(),
            names: AtomicUsize::new(0),
        }
    }

    fn shard(&self, key: &[u8]) -> &RwLock<HashMap<Box<[u8]>, NameAnswers>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Names cached now.
    pub fn len(&self) -> usize {
        self.names.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded answer to `q`, from the cache or built now; `None` when the answer is not
    /// one the cache holds (the hickory path answers), with the snapshot's SOA serial.
    pub fn get(&self, q: &Question<'_>) -> Option<(Arc<Encoded>, u32)> {
        let zone = self.zone.load();
        let serial = zone.generation as u32;
        {
            let shard = self.shard(&q.key).read().unwrap_or_else(|p| p.into_inner());
            if let Some(found) = shard
                .get(&q.key[..])
                .and_then(|a| a.iter().find(|(t, _)| *t == q.qtype))
            {
                return Some((found.1.clone(), serial));
            }
        }
        let built = Arc::new(self.build(&zone, &q.key, q.qtype)?);
        self.insert(&q.key, q.qtype, built.clone(), zone.generation, &zone);
        Some((built, serial))
    }

    /// Encodes the answer to (`key`, `qtype`) from `zone`, if it is cacheable.
    fn build(&self, zone: &ZoneSnapshot, key: &[u8], qtype: u16) -> Option<Encoded> {
        let name = Name::read(&mut BinDecoder::new(key)).ok()?;
        if zone.pod_zone.zone_of(&name) {
            return None;
        }
        let rtype = RecordType::from(qtype);
        let Outcome::Authoritative(a) = answer(zone, &name, rtype) else {
            return None;
        };
        if a.answers
            .records()
            .iter()
            .any(|r| matches!(r.data, RData::CNAME(_)))
        {
            return None;
        }
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        m.metadata.authoritative = true;
        m.metadata.recursion_available = self.recursion_available;
        m.metadata.response_code = a.rcode;
        m.queries = vec![Query::query(name, rtype)];
        m.answers = a.answers.records().to_vec();
        m.authorities = a.authority.into_iter().cloned().collect();
        m.additionals = a.additional.records().to_vec();
        let bytes = m.to_vec().ok()?;
        // A negative answer ends with its SOA (no Additional records): the serial is the
        // first of the five 32-bit fields that close the SOA's RDATA.
        let serial_at = match (&m.authorities[..], m.additionals.is_empty()) {
            ([soa], true) if soa.record_type() == RecordType::SOA => {
                Some(u16::try_from(bytes.len().checked_sub(20)?).ok()?)
            }
            ([], _) => None,
            _ => return None,
        };
        Some(Encoded {
            bytes: bytes.into_boxed_slice(),
            serial_at,
            rcode: u16::from(a.rcode) as u8,
        })
    }

    fn insert(
        &self,
        key: &[u8],
        qtype: u16,
        encoded: Arc<Encoded>,
        generation: u64,
        zone: &ZoneSnapshot,
    ) {
        if self.len() >= MAX_NAMES {
            return;
        }
        // Register the SRV targets first: an invalidation that misses this registration
        // happened after it, so after the swap, and the generation check below refuses.
        if qtype == u16::from(RecordType::SRV) {
            if let Some(entry) = Name::read(&mut BinDecoder::new(key))
                .ok()
                .and_then(|n| zone.names.get(&n))
            {
                let mut targets = self.srv_targets.lock().unwrap_or_else(|p| p.into_inner());
                for r in entry.of_type(RecordType::SRV) {
                    if let RData::SRV(s) = &r.data {
                        let owners = targets.entry(wire_key(&s.target).into()).or_default();
                        if !owners.iter().any(|o| **o == *key) {
                            owners.push(key.into());
                        }
                    }
                }
            }
        }
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if self.zone.load().generation != generation {
            return;
        }
        let answers = shard.entry(key.into()).or_insert_with(|| {
            self.names.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        });
        answers.retain(|(t, _)| *t != qtype);
        answers.push((qtype, encoded));
    }

    /// Drops the cached answers of `names` (the names a change wrote) and of the SRV names
    /// whose targets they are. Call after the new snapshot is stored.
    pub fn invalidate<'n>(&self, names: impl IntoIterator<Item = &'n Name>) {
        let mut keys: Vec<Box<[u8]>> = Vec::new();
        {
            let mut targets = self.srv_targets.lock().unwrap_or_else(|p| p.into_inner());
            for name in names {
                let key = wire_key(name);
                if let Some(owners) = targets.remove(&key[..]) {
                    keys.extend(owners);
                }
                keys.push(key.into());
            }
        }
        for key in keys {
            let mut shard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
            if shard.remove(&key).is_some() {
                self.names.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
