//! The zone's name index as a persistent map: a fixed number of shards, each an `Arc`'d hash
//! map from owner name to its (shared) entry. A new snapshot version copies only the shards a
//! change writes to (`Arc::make_mut`) and shares every other shard, and every unchanged entry,
//! with the previous version: a change costs the names it touches plus one shard copy each,
//! not the whole zone.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::snapshot::NameEntry;

/// Shards: with ~100k names a shard holds ~100, so a write copies ~100 pointer pairs.
const SHARDS: usize = 1024;

type Shard = HashMap<Arc<Name>, NameEntry>;

/// Owner name → records (an empty entry is an empty non-terminal). Cloning is O(shards).
#[derive(Debug, Clone)]
pub struct Names {
    hasher: RandomState,
    shards: Vec<Arc<Shard>>,
    len: usize,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Arc::new(Shard::new())).collect(),
            len: 0,
        }
    }
}

impl Names {
    fn shard(&self, name: &Name) -> usize {
        // Name hashes case-insensitively, as it compares.
        (self.hasher.hash_one(name) as usize) % SHARDS
    }

    /// The entry of `name` (matched case-insensitively).
    pub fn get(&self, name: &Name) -> Option<&NameEntry> {
        self.shards[self.shard(name)].get(name)
    }

    /// The entry of `name` with the name as the zone holds it (lower-case).
    pub fn get_key_value(&self, name: &Name) -> Option<(&Name, &NameEntry)> {
        self.shards[self.shard(name)]
            .get_key_value(name)
            .map(|(n, e)| (&**n, e))
    }

    pub fn contains(&self, name: &Name) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every name and its entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &NameEntry)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(n, e)| (&**n, e)))
    }

    /// Sets the entry of `name`; returns the one it replaces.
    pub(crate) fn insert(&mut self, name: Arc<Name>, entry: NameEntry) -> Option<NameEntry> {
        let i = self.shard(&name);
        let old = Arc::make_mut(&mut self.shards[i]).insert(name, entry);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `name`; returns its entry.
    pub(crate) fn remove(&mut self, name: &Name) -> Option<NameEntry> {
        let i = self.shard(name);
        if !self.shards[i].contains_key(name) {
            return None;
        }
        let old = Arc::make_mut(&mut self.shards[i]).remove(name);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }
}
