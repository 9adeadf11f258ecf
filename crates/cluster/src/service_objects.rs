//! Services and EndpointSlices as the service proxy consumes them: each converted once, when its
//! watch event arrives, and kept once (behind an `Arc` the proxy's state shares). The stores
//! journal the keys that changed, so a reconcile takes only what changed since the last one —
//! never a copy or a rescan of all objects, which at 100k Services cost more than the change.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;

use crate::journal::{Consumer, Converted, Delta, Fed};
use crate::objects::{self, apply_converted, ENDPOINT_SLICE, SERVICE};
use crate::store::{Applied, ProjectedStore};

/// What the proxy must (re)program: changed objects, or every object (`complete`).
#[derive(Debug, Default)]
pub struct ServiceDelta {
    pub services: Delta<sarasa_model::Service>,
    pub slices: Delta<sarasa_model::EndpointSlice>,
}

impl ServiceDelta {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty()
    }

    pub fn len(&self) -> usize {
        self.services.len() + self.slices.len()
    }

    /// Every object is listed (a full rebuild), not only the changed ones.
    pub fn complete(&self) -> bool {
        self.services.complete && self.slices.complete
    }

    /// Feeds Services first, then EndpointSlices, to `consumer`.
    pub fn feed<C>(self, consumer: &mut C) -> Fed
    where
        C: Consumer<sarasa_model::Service> + Consumer<sarasa_model::EndpointSlice>,
    {
        let mut fed = Fed::default();
        self.services.feed(SERVICE, consumer, &mut fed);
        self.slices.feed(ENDPOINT_SLICE, consumer, &mut fed);
        fed
    }
}

/// The watched Services and EndpointSlices.
#[derive(Debug)]
pub struct ServiceObjects {
    services: ProjectedStore<Converted<sarasa_model::Service>>,
    slices: ProjectedStore<Converted<sarasa_model::EndpointSlice>>,
    /// Endpoints over all converted EndpointSlices (a metric; kept current per event).
    endpoints: usize,
}

impl Default for ServiceObjects {
    fn default() -> Self {
        ServiceObjects {
            services: ProjectedStore::journaled(),
            slices: ProjectedStore::journaled(),
            endpoints: 0,
        }
    }
}

fn endpoint_count(slice: Option<&Converted<sarasa_model::EndpointSlice>>) -> usize {
    match slice {
        Some(Ok(s)) => s.endpoints.len(),
        _ => 0,
    }
}

impl ServiceObjects {
    pub fn apply_service_event(&mut self, event: watcher::Event<Service>) -> Applied {
        apply_converted(&mut self.services, event, objects::service)
    }

    pub fn apply_endpoint_slice_event(&mut self, event: watcher::Event<EndpointSlice>) -> Applied {
        let before = match &event {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) => {
                endpoint_count(self.slices.items().get(&objects::key_of(o)))
            }
            _ => 0,
        };
        let relist_done = matches!(event, watcher::Event::InitDone);
        let applied = apply_converted(&mut self.slices, event.clone(), objects::endpoint_slice);
        match &event {
            watcher::Event::Apply(o) => {
                let after = endpoint_count(self.slices.items().get(&objects::key_of(o)));
                self.endpoints = (self.endpoints + after).saturating_sub(before);
            }
            watcher::Event::Delete(_) => self.endpoints = self.endpoints.saturating_sub(before),
            _ if relist_done => {
                self.endpoints = self
                    .slices
                    .items()
                    .values()
                    .map(|s| endpoint_count(Some(s)))
                    .sum()
            }
            _ => {}
        }
        applied
    }

    /// Both kinds have completed their first list.
    pub fn synced(&self) -> bool {
        self.services.synced && self.slices.synced
    }

    pub fn service_count(&self) -> usize {
        self.services.items().len()
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints
    }

    /// Every Service by `namespace/name`, as converted (or why not).
    pub fn services(&self) -> &BTreeMap<String, Converted<sarasa_model::Service>> {
        self.services.items()
    }

    /// Every EndpointSlice by `namespace/name`, as converted (or why not).
    pub fn slices(&self) -> &BTreeMap<String, Converted<sarasa_model::EndpointSlice>> {
        self.slices.items()
    }

    /// The objects changed since the last `take_*` call.
    pub fn take_changed(&mut self) -> ServiceDelta {
        ServiceDelta {
            services: self.services.take_delta(Clone::clone),
            slices: self.slices.take_delta(Clone::clone),
        }
    }

    /// Puts the keys of a delta its consumer did not program back in the journal (the next
    /// `take_changed` reads their then-current values).
    pub fn requeue(&mut self, delta: &ServiceDelta) {
        self.services.requeue(&delta.services);
        self.slices.requeue(&delta.slices);
    }

    /// Every object (pointers, not copies); clears the journal, which it subsumes.
    pub fn take_all(&mut self) -> ServiceDelta {
        ServiceDelta {
            services: self.services.take_all(Clone::clone),
            slices: self.slices.take_all(Clone::clone),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::Endpoint;
    use kube::api::ObjectMeta;

    fn svc(name: &str, rv: u64, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                resource_version: Some(rv.to_string()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                cluster_ips: Some(vec![ip.into()]),
                ports: Some(vec![ServicePort {
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(name: &str, rv: u64, ips: &[&str]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                resource_version: Some(rv.to_string()),
                labels: Some([("kubernetes.io/service-name".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                ips.iter()
                    .map(|ip| Endpoint {
                        addresses: vec![ip.to_string()],
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: None,
        }
    }

    fn keys<T>(delta: &Delta<T>) -> Vec<String> {
        delta
            .items
            .iter()
            .map(|(k, v)| format!("{}{k}", if v.is_some() { "+" } else { "-" }))
            .collect()
    }

    #[test]
    fn only_changed_objects_are_taken_and_the_journal_empties() {
        let mut o = ServiceObjects::default();
        o.apply_service_event(watcher::Event::Init);
        o.apply_service_event(watcher::Event::InitApply(svc("a", 1, "10.96.0.1")));
        o.apply_service_event(watcher::Event::InitApply(svc("b", 2, "10.96.0.2")));
        o.apply_service_event(watcher::Event::InitDone);
        o.apply_endpoint_slice_event(watcher::Event::Init);
        o.apply_endpoint_slice_event(watcher::Event::InitDone);
        assert!(o.synced());
        // The first list is taken whole, not from the journal.
        assert!(o.take_changed().is_empty());
        assert_eq!(keys(&o.take_all().services), ["+default/a", "+default/b"]);

        // The same projection again (a new resourceVersion only) is no change.
        o.apply_service_event(watcher::Event::Apply(svc("a", 3, "10.96.0.1")));
        assert!(o.take_changed().is_empty());
        o.apply_service_event(watcher::Event::Apply(svc("a", 4, "10.96.0.9")));
        o.apply_service_event(watcher::Event::Delete(svc("b", 5, "10.96.0.2")));
        let d = o.take_changed();
        assert_eq!(keys(&d.services), ["+default/a", "-default/b"]);
        assert!(!d.complete());

        // A relist that lost `a` and brought `c` journals both.
        o.apply_service_event(watcher::Event::Init);
        o.apply_service_event(watcher::Event::InitApply(svc("c", 6, "10.96.0.3")));
        o.apply_service_event(watcher::Event::InitDone);
        assert_eq!(
            keys(&o.take_changed().services),
            ["-default/a", "+default/c"]
        );

        // A delta handed back is taken again, with the objects' current values.
        o.apply_service_event(watcher::Event::Apply(svc("d", 7, "10.96.0.4")));
        let d = o.take_changed();
        o.apply_service_event(watcher::Event::Delete(svc("d", 8, "10.96.0.4")));
        o.requeue(&d);
        assert_eq!(keys(&o.take_changed().services), ["-default/d"]);

        let all = o.take_all();
        assert!(all.complete());
        assert_eq!(keys(&all.services), ["+default/c"]);
    }

    #[test]
    fn endpoint_count_follows_events() {
        let mut o = ServiceObjects::default();
        o.apply_endpoint_slice_event(watcher::Event::Init);
        o.apply_endpoint_slice_event(watcher::Event::InitApply(slice("a-1", 1, &["10.244.0.1"])));
        o.apply_endpoint_slice_event(watcher::Event::InitDone);
        assert_eq!(o.endpoint_count(), 1);
        assert!(o.take_changed().is_empty());
        o.apply_endpoint_slice_event(watcher::Event::Apply(slice(
            "a-2",
            2,
            &["10.244.0.2", "10.244.0.3"],
        )));
        assert_eq!(o.endpoint_count(), 3);
        o.apply_endpoint_slice_event(watcher::Event::Apply(slice("a-2", 3, &["10.244.0.2"])));
        assert_eq!(o.endpoint_count(), 2);
        o.apply_endpoint_slice_event(watcher::Event::Delete(slice("a-1", 4, &["10.244.0.1"])));
        assert_eq!(o.endpoint_count(), 1);
        assert_eq!(
            keys(&o.take_changed().slices),
            ["-default/a-1", "+default/a-2"]
        );
    }
}
