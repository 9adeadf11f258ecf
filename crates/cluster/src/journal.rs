//! One way for every kind to reach a compiler: a [`Delta`] of changes taken per reconcile from
//! a kind's journal (applied objects as `Arc<T>`, deleted keys) and fed to a [`Consumer`] —
//! the interface the service proxy, the policy compiler and a plain `PolicyState` implement.
//!
//! Why one mechanism: Services used to flow as journal deltas and policy objects as diffs of two
//! snapshots. A journal costs only the changed objects per reconcile (never a copy or a rescan
//! of 100k Services), and what a reconcile could not program goes back ([`Delta`] requeue in
//! the stores), so nothing is lost and nothing is compared twice.

use std::fmt;
use std::sync::Arc;

/// One converted object, or why it could not be converted (kept, not dropped, so the consumer
/// withdraws the object's previous version and the reason is reported).
pub type Converted<T> = Result<Arc<T>, String>;

/// One object of a [`Delta`]: its key (`namespace/name`, or `name` for cluster-scoped kinds)
/// and its current conversion, or `None` once it is gone.
pub type DeltaItem<T> = (String, Option<Converted<T>>);

/// The changes of one kind handed to a consumer: every object whose projection changed since
/// the previous take, or (`complete`) every object there is — a full rebuild, where the
/// consumer starts from nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta<T> {
    /// Sorted by key; each key at most once.
    pub items: Vec<DeltaItem<T>>,
    pub complete: bool,
}

impl<T> Default for Delta<T> {
    fn default() -> Self {
        Delta {
            items: Vec::new(),
            complete: false,
        }
    }
}

/// A compiler input of kind `T`, fed object by object.
pub trait Consumer<T> {
    /// Adds or replaces `obj`. `Err(reason)`: the consumer cannot take this object (e.g. a
    /// NetworkPolicy it cannot enforce); it then holds no version of it, not even a previous one.
    fn apply(&mut self, obj: Arc<T>) -> Result<(), String>;
    /// Removes the object with `key`; a key the consumer does not hold is no error.
    fn delete(&mut self, key: &str);
}

/// An object left out: its conversion failed or its consumer refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `Service`, `EndpointSlice`, `Pod`, `Namespace`, `NetworkPolicy` or `Node`.
    pub kind: &'static str,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.kind, self.key, self.reason)
    }
}

/// What feeding deltas did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fed {
    pub applied: usize,
    pub deleted: usize,
    pub rejected: Vec<Rejected>,
}

impl Fed {
    /// Objects handed to the consumer.
    pub fn changed(&self) -> usize {
        self.applied + self.deleted + self.rejected.len()
    }

    /// The rejections of one kind.
    pub fn rejected_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Rejected> + 'a {
        self.rejected.iter().filter(move |r| r.kind == kind)
    }
}

impl<T> Delta<T> {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Hands every change to `consumer`, in key order: a converted object is applied, a gone one
    /// deleted, and one that failed conversion is deleted too (an object the API holds in a form
    /// we cannot use must not keep its previous version in force) and reported in `fed`.
    pub fn feed<C: Consumer<T> + ?Sized>(
        self,
        kind: &'static str,
        consumer: &mut C,
        fed: &mut Fed,
    ) {
        for (key, item) in self.items {
            match item {
                Some(Ok(obj)) => match consumer.apply(obj) {
                    Ok(()) => fed.applied += 1,
                    Err(reason) => fed.rejected.push(Rejected { kind, key, reason }),
                },
                Some(Err(reason)) => {
                    consumer.delete(&key);
                    fed.rejected.push(Rejected { kind, key, reason });
                }
                None => {
                    consumer.delete(&key);
                    fed.deleted += 1;
                }
            }
        }
    }

    /// The converted objects of a delta (for a consumer that loads them all at once), and the
    /// ones that failed conversion.
    pub fn into_objects(self, kind: &'static str) -> (Vec<Arc<T>>, Vec<Rejected>) {
        let mut objects = Vec::with_capacity(self.items.len());
        let mut rejected = Vec::new();
        for (key, item) in self.items {
            match item {
                Some(Ok(obj)) => objects.push(obj),
                Some(Err(reason)) => rejected.push(Rejected { kind, key, reason }),
                None => {}
            }
        }
        (objects, rejected)
    }
}

/// `namespace/name` split at the first `/` (a cluster-scoped key is all name).
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A consumer that records what it holds and refuses odd numbers.
    #[derive(Default)]
    struct Evens(BTreeMap<String, u32>);

    impl Consumer<(String, u32)> for Evens {
        fn apply(&mut self, obj: Arc<(String, u32)>) -> Result<(), String> {
            if obj.1 % 2 == 1 {
                self.0.remove(&obj.0);
                return Err(format!("{} is odd", obj.1));
            }
            self.0.insert(obj.0.clone(), obj.1);
            Ok(())
        }
        fn delete(&mut self, key: &str) {
            self.0.remove(key);
        }
    }

    fn item(k: &str, v: Option<Result<u32, &str>>) -> DeltaItem<(String, u32)> {
        (
            k.to_string(),
            v.map(|r| {
                r.map(|n| Arc::new((k.to_string(), n)))
                    .map_err(str::to_string)
            }),
        )
    }

    #[test]
    fn feed_applies_deletes_and_reports_rejections() {
        let mut c = Evens::default();
        c.0.insert("b".into(), 2);
        c.0.insert("c".into(), 4);
        c.0.insert("d".into(), 6);
        let delta = Delta {
            items: vec![
                item("a", Some(Ok(8))),
                item("b", None),
                item("c", Some(Err("bad field"))),
                item("d", Some(Ok(7))),
            ],
            complete: false,
        };
        let mut fed = Fed::default();
        delta.feed("Thing", &mut c, &mut fed);
        assert_eq!(c.0, BTreeMap::from([("a".to_string(), 8)]));
        assert_eq!((fed.applied, fed.deleted, fed.changed()), (1, 1, 4));
        let rejected: Vec<String> = fed.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(rejected, ["Thing c: bad field", "Thing d: 7 is odd"]);
        assert_eq!(fed.rejected_of("Thing").count(), 2);
        assert_eq!(fed.rejected_of("Other").count(), 0);
    }

    #[test]
    fn into_objects_keeps_converted_ones() {
        let delta = Delta {
            items: vec![item("a", Some(Ok(1))), item("b", Some(Err("no")))],
            complete: true,
        };
        let (objects, rejected) = delta.into_objects("Thing");
        assert_eq!(objects.len(), 1);
        assert_eq!(rejected[0].key, "b");
        assert_eq!(split_key("ns/name"), ("ns", "name"));
        assert_eq!(split_key("node-1"), ("", "node-1"));
    }
}
