//! A keyed store of projections fed by watcher events, like a kube-rs reflector but keeping
//! only each object's projection (not the object), with an optional change journal that a
//! consumer drains as a [`Delta`] per reconcile.

use std::collections::{BTreeMap, BTreeSet};

use kube::runtime::watcher;

use crate::journal::{Converted, Delta};

/// resourceVersions are opaque strings in Kubernetes; etcd's (and the lab's) are decimal revision
/// numbers, which is what `sarasa.io/observed-resource-version` compares.
pub fn parse_rv(rv: Option<&str>) -> Option<u64> {
    rv.and_then(|v| v.parse().ok())
}

/// A keyed store of projections, maintained from watcher events.
#[derive(Debug, Clone)]
pub struct ProjectedStore<T> {
    items: BTreeMap<String, T>,
    /// Objects received since the last `Init`, swapped in at `InitDone` (a relist is atomic).
    buffer: Option<BTreeMap<String, T>>,
    /// True once the first full list has been received.
    pub synced: bool,
    /// Keys whose projection changed since the last [`ProjectedStore::take_changed`], when the
    /// store keeps a journal (consumers that must not copy or rescan the whole store per change).
    journal: Option<BTreeSet<String>>,
}

impl<T> Default for ProjectedStore<T> {
    fn default() -> Self {
        ProjectedStore {
            items: BTreeMap::new(),
            buffer: None,
            synced: false,
            journal: None,
        }
    }
}

impl<T> ProjectedStore<T> {
    /// An empty store that journals the keys of changed items.
    pub fn journaled() -> Self {
        ProjectedStore {
            journal: Some(BTreeSet::new()),
            ..Self::default()
        }
    }

    /// Starts journaling changed keys on a store made without a journal (a consumer that
    /// wants deltas of a kind other consumers read whole); a no-op when it already journals.
    pub fn keep_journal(&mut self) {
        self.journal.get_or_insert_with(BTreeSet::new);
    }

    /// The keys changed (added, modified or removed) since the last call; empty for a store
    /// without a journal. The journal starts after the first complete list: read every item
    /// first.
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Journals `key` as changed (again), e.g. when a consumer could not program it.
    pub fn note_changed(&mut self, key: &str) {
        if let Some(j) = self.journal.as_mut() {
            j.insert(key.to_string());
        }
    }

    pub fn items(&self) -> &BTreeMap<String, T> {
        &self.items
    }

    /// The items changed since the last take, each with its current value converted by
    /// `convert` (`None` once gone); the journal empties.
    pub fn take_delta<U>(&mut self, convert: impl Fn(&T) -> Converted<U>) -> Delta<U> {
        let keys = self.take_changed();
        Delta {
            items: keys
                .into_iter()
                .map(|k| {
                    let v = self.items.get(&k).map(&convert);
                    (k, v)
                })
                .collect(),
            complete: false,
        }
    }

    /// Every item (a full rebuild); clears the journal, which it subsumes.
    pub fn take_all<U>(&mut self, convert: impl Fn(&T) -> Converted<U>) -> Delta<U> {
        self.take_changed();
        Delta {
            items: self
                .items
                .iter()
                .map(|(k, v)| (k.clone(), Some(convert(v))))
                .collect(),
            complete: true,
        }
    }

    /// Journals again the keys of a delta its consumer did not program: the next take reads
    /// their then-current values.
    pub fn requeue<U>(&mut self, delta: &Delta<U>) {
        for (k, _) in &delta.items {
            self.note_changed(k);
        }
    }
}

/// Outcome of feeding one watcher event to a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// The store's visible contents changed.
    pub changed: bool,
    /// Highest resourceVersion carried by the event's objects.
    pub resource_version: Option<u64>,
}

impl<T: PartialEq> ProjectedStore<T> {
    /// Applies one watcher event; `key` and `project` extract the store key and the projection.
    /// An object `project` maps to `None` is not part of this projection: it is kept out of the
    /// store (and leaves it, as a deletion, if it was in).
    pub fn apply<K>(
        &mut self,
        event: watcher::Event<K>,
        key: impl Fn(&K) -> String,
        project: impl Fn(&K) -> Option<T>,
        rv: impl Fn(&K) -> Option<u64>,
    ) -> Applied {
        match event {
            watcher::Event::Init => {
                self.buffer = Some(BTreeMap::new());
                Applied::default()
            }
            watcher::Event::InitApply(obj) => {
                let buffer = self.buffer.get_or_insert_with(BTreeMap::new);
                if let Some(p) = project(&obj) {
                    buffer.insert(key(&obj), p);
                }
                Applied {
                    changed: false,
                    resource_version: rv(&obj),
                }
            }
            watcher::Event::InitDone => {
                let fresh = self.buffer.take().unwrap_or_default();
                let changed = fresh != self.items || !self.synced;
                // The first list is not journaled: a consumer starts from every item.
                if changed && self.synced && self.journal.is_some() {
                    let old = std::mem::take(&mut self.items);
                    for (k, v) in &old {
                        if fresh.get(k) != Some(v) {
                            self.note_changed(k);
                        }
                    }
                    for k in fresh.keys() {
                        if !old.contains_key(k) {
                            self.note_changed(k);
                        }
                    }
                }
                self.items = fresh;
                self.synced = true;
                Applied {
                    changed,
                    resource_version: None,
                }
            }
            watcher::Event::Apply(obj) => {
                let k = key(&obj);
                let changed = match project(&obj) {
                    Some(p) => {
                        let changed = self.items.get(&k) != Some(&p);
                        self.items.insert(k.clone(), p);
                        changed
                    }
                    None => self.items.remove(&k).is_some(),
                };
                if changed {
                    self.note_changed(&k);
                }
                Applied {
                    changed,
                    resource_version: rv(&obj),
                }
            }
            watcher::Event::Delete(obj) => {
                let k = key(&obj);
                let changed = self.items.remove(&k).is_some();
                if changed {
                    self.note_changed(&k);
                }
                Applied {
                    changed,
                    resource_version: rv(&obj),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Events of `(key, value)` pairs; a negative value projects to nothing.
    fn apply(store: &mut ProjectedStore<i32>, event: watcher::Event<(&str, i32)>) -> bool {
        store
            .apply(
                event,
                |o| o.0.to_string(),
                |o| (o.1 >= 0).then_some(o.1),
                |_| None,
            )
            .changed
    }

    fn keys(d: &Delta<i32>) -> Vec<String> {
        d.items
            .iter()
            .map(|(k, v)| match v {
                Some(Ok(v)) => format!("+{k}={v}"),
                Some(Err(e)) => format!("!{k}:{e}"),
                None => format!("-{k}"),
            })
            .collect()
    }

    fn ok(v: &i32) -> Converted<i32> {
        if *v == 13 {
            Err("unlucky".into())
        } else {
            Ok(Arc::new(*v))
        }
    }

    #[test]
    fn journal_takes_changes_requeues_and_takes_all() {
        let mut s = ProjectedStore::journaled();
        apply(&mut s, watcher::Event::Init);
        apply(&mut s, watcher::Event::InitApply(("a", 1)));
        apply(&mut s, watcher::Event::InitApply(("skip", -1)));
        assert!(apply(&mut s, watcher::Event::InitDone));
        // The first list is read whole, not from the journal.
        assert!(s.take_delta(ok).is_empty());
        let all = s.take_all(ok);
        assert!(all.complete);
        assert_eq!(keys(&all), ["+a=1"]);

        // The same value again is no change; a new one, a deletion and a failed conversion are.
        assert!(!apply(&mut s, watcher::Event::Apply(("a", 1))));
        assert!(apply(&mut s, watcher::Event::Apply(("b", 2))));
        assert!(apply(&mut s, watcher::Event::Apply(("c", 13))));
        assert!(apply(&mut s, watcher::Event::Delete(("a", 1))));
        let d = s.take_delta(ok);
        assert!(!d.complete);
        assert_eq!(keys(&d), ["-a", "+b=2", "!c:unlucky"]);
        assert!(s.take_delta(ok).is_empty());

        // An object leaving the projection is a deletion.
        assert!(apply(&mut s, watcher::Event::Apply(("b", -1))));
        assert!(!apply(&mut s, watcher::Event::Apply(("d", -1))));
        assert_eq!(keys(&s.take_delta(ok)), ["-b"]);

        // A delta handed back is taken again with the then-current values.
        apply(&mut s, watcher::Event::Apply(("e", 5)));
        let d = s.take_delta(ok);
        apply(&mut s, watcher::Event::Apply(("e", 6)));
        s.requeue(&d);
        assert_eq!(keys(&s.take_delta(ok)), ["+e=6"]);

        // A relist journals what it lost and what it brought; take_all clears the journal.
        apply(&mut s, watcher::Event::Init);
        apply(&mut s, watcher::Event::InitApply(("f", 7)));
        apply(&mut s, watcher::Event::InitDone);
        assert_eq!(
            keys(&s.take_delta(ok)),
            ["-c", "-e", "+f=7"],
            "relist changes"
        );
        apply(&mut s, watcher::Event::Apply(("g", 8)));
        assert_eq!(keys(&s.take_all(ok)), ["+f=7", "+g=8"]);
        assert!(s.take_delta(ok).is_empty());
    }

    #[test]
    fn a_store_without_journal_takes_nothing() {
        let mut s = ProjectedStore::default();
        apply(&mut s, watcher::Event::Init);
        apply(&mut s, watcher::Event::InitDone);
        apply(&mut s, watcher::Event::Apply(("a", 1)));
        assert!(s.take_delta(ok).is_empty());
        assert_eq!(s.items().len(), 1);

        // A journal kept from now on sees the changes after this point only.
        s.keep_journal();
        apply(&mut s, watcher::Event::Apply(("b", 2)));
        apply(&mut s, watcher::Event::Delete(("a", 1)));
        assert_eq!(keys(&s.take_delta(ok)), ["-a", "+b=2"]);
        apply(&mut s, watcher::Event::Apply(("c", 3)));
        s.keep_journal();
        assert_eq!(
            keys(&s.take_delta(ok)),
            ["+c=3"],
            "keeping it again drops nothing"
        );
    }
}
