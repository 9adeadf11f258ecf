//! Event expiry: core/v1 and events.k8s.io/v1 Events older than `Config::event_ttl` are
//! deleted (kube-apiserver's --event-ttl), so a chatty reporter cannot grow the store forever.

use std::time::Duration;

use serde_json::Value;

use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, EVENTS, EVENTS_V1};
use crate::store::{Event, Store};

pub struct EventExpiry;

impl Controller for EventExpiry {
    fn name(&self) -> &'static str {
        "events"
    }

    fn watches(&self) -> &'static [ResId] {
        // Runs on its timer only.
        &[]
    }

    fn reconcile(&mut self, store: &Store, _events: Option<&[Event]>) -> Option<Duration> {
        let ttl = store.config.event_ttl;
        let cutoff = meta::now_secs() - ttl.as_secs() as i64;
        for res in [EVENTS, EVENTS_V1] {
            let (old, _) = store.list(res, None, |e| {
                meta::metadata(e)
                    .get("creationTimestamp")
                    .and_then(Value::as_str)
                    .and_then(meta::parse_ts)
                    .is_some_and(|t| t < cutoff)
            });
            for e in old {
                let _ = store.remove_now(res, meta::namespace(&e), meta::name(&e));
            }
        }
        Some((ttl / 60).clamp(Duration::from_secs(1), Duration::from_secs(60)))
    }
}
