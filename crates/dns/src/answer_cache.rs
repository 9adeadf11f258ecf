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
//! Memory: one allocation per (name, type) holding its key and the message without its
//! question (which repeats the key), in a set keyed by it, and at most [`MAX_BYTES`] of them
//! (measured by `examples/zone_memory.rs`: the benchmark's 50k distinct answers take ~6 MiB; kept
//! as a map of boxed key → `Arc`'d whole message they took 12.6 MiB).
//!
//! Races: an entry built from generation `g` is inserted only if `g` is still served, checked
//! under the shard's lock that invalidation also takes, and the feed swaps the snapshot before
//! it invalidates; so an entry never outlives the change that made it stale by more than the
//! moment between the swap and the invalidation.

use std::collections::{HashMap, HashSet};
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
/// Bytes of cached answers at most, counting each answer's allocation and its slot in the
/// set (a flood of random names must not grow memory without bound; past it answers are
/// still built per query, just not kept).
pub const MAX_BYTES: usize = 16 << 20;
/// The query types a name can have cached answers for (see [`crate::fastpath`]).
const TYPES: [u16; 9] = [1, 2, 5, 6, 12, 15, 16, 28, 33];

/// Answers by their key (an [`Encoded`] hashes and compares as its key).
type Shard = HashSet<Encoded>;
/// SRV target (wire name) → the SRV keys whose cached answers copy its addresses.
type SrvTargets = HashMap<Box<[u8]>, Vec<Box<[u8]>>>;

/// The cache of encoded answers.
pub struct AnswerCache {
    zone: Arc<ArcSwap<ZoneSnapshot>>,
    recursion_available: bool,
    hasher: RandomState,
    /// (wire name, type) → answer, sharded by the name (a name's answers share a shard).
    shards: Vec<RwLock<Shard>>,
    srv_targets: Mutex<SrvTargets>,
    entries: AtomicUsize,
    bytes: AtomicUsize,
}

/// What one cached answer costs: its allocation and its slot (a fat pointer and the table's
/// control byte, at the table's usual load).
fn cost(answer: &Encoded) -> usize {
    answer.heap_bytes() + 2 * std::mem::size_of::<Encoded>()
}

/// A name in lower-cased wire form (the cache's key form).
pub fn wire_key(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
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
            entries: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
        }
    }

    /// The shard of a key (wire name, then the 2-byte type): chosen by the name alone.
    fn shard(&self, key: &[u8]) -> &RwLock<Shard> {
        let name = &key[..key.len().saturating_sub(2)];
        &self.shards[(self.hasher.hash_one(name) as usize) % SHARDS]
    }

    /// Answers cached now.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the cached answers hold (what [`MAX_BYTES`] bounds).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The encoded answer to `q`, from the cache or built now; `None` when the answer is not
    /// one the cache holds (the hickory path answers), with the snapshot's SOA serial.
    pub fn get(&self, q: &Question<'_>) -> Option<(Encoded, u32)> {
        let zone = self.zone.load();
        let serial = zone.generation as u32;
        {
            let shard = self.shard(&q.key).read().unwrap_or_else(|p| p.into_inner());
            if let Some(found) = shard.get(&q.key[..]) {
                return Some((found.clone(), serial));
            }
        }
        let built = self.build(&zone, &q.key, q.qtype)?;
        self.insert(&q.key, q.qtype, built.clone(), zone.generation, &zone);
        Some((built, serial))
    }

    /// Encodes the answer to `key` (wire name, then `qtype`) from `zone`, if it is cacheable.
    fn build(&self, zone: &ZoneSnapshot, key: &[u8], qtype: u16) -> Option<Encoded> {
        let name = Name::read(&mut BinDecoder::new(&key[..key.len() - 2])).ok()?;
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
        Encoded::new(key, &bytes, serial_at, u16::from(a.rcode) as u8)
    }

    fn insert(
        &self,
        key: &[u8],
        qtype: u16,
        encoded: Encoded,
        generation: u64,
        zone: &ZoneSnapshot,
    ) {
        if self.bytes() + cost(&encoded) > MAX_BYTES {
            return;
        }
        let name = &key[..key.len() - 2];
        // Register the SRV targets first: an invalidation that misses this registration
        // happened after it, so after the swap, and the generation check below refuses.
        if qtype == u16::from(RecordType::SRV) {
            if let Some(entry) = Name::read(&mut BinDecoder::new(name))
                .ok()
                .and_then(|n| zone.names.get(&n))
            {
                let mut targets = self.srv_targets.lock().unwrap_or_else(|p| p.into_inner());
                for target in entry
                    .of_type(RecordType::SRV)
                    .iter()
                    .filter_map(|r| r.srv_target())
                {
                    let owners = targets.entry(wire_key(target).into()).or_default();
                    if !owners.iter().any(|o| **o == *key) {
                        owners.push(key.into());
                    }
                }
            }
        }
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if self.zone.load().generation != generation {
            return;
        }
        let added = cost(&encoded);
        match shard.replace(encoded) {
            None => {
                self.entries.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(added, Ordering::Relaxed);
            }
            Some(old) => {
                self.bytes.fetch_add(added, Ordering::Relaxed);
                self.bytes.fetch_sub(cost(&old), Ordering::Relaxed);
            }
        }
    }

    /// Drops the cached answers of `names` (the names a change wrote) and of the SRV names
    /// whose targets they are. Call after the new snapshot is stored.
    pub fn invalidate<'n>(&self, names: impl IntoIterator<Item = &'n Name>) {
        let mut srv_keys: Vec<Box<[u8]>> = Vec::new();
        let mut key = Vec::with_capacity(256);
        for name in names {
            key.clear();
            key.extend_from_slice(&wire_key(name));
            {
                let mut targets = self.srv_targets.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(owners) = targets.remove(&key[..]) {
                    srv_keys.extend(owners);
                }
            }
            key.extend_from_slice(&[0, 0]);
            let mut shard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
            for t in TYPES {
                let n = key.len();
                key[n - 2..].copy_from_slice(&t.to_be_bytes());
                if let Some(old) = shard.take(&key[..]) {
                    self.forget(&old);
                }
            }
        }
        for key in srv_keys {
            let mut shard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = shard.take(&key[..]) {
                self.forget(&old);
            }
        }
    }

    /// Counts out an answer taken from a shard.
    fn forget(&self, old: &Encoded) {
        self.entries.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(cost(old), Ordering::Relaxed);
    }
}
