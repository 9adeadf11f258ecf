//! Warning Events the lab's components post about an object, as kubelet and cloud controllers
//! do — `FailedCreatePodSandBox` when a pod's network cannot be set up (the CNI plugin's error,
//! e.g. a hostPort another pod holds), `InvalidLoadBalancerTarget` for a bad annotation — so
//! `kubectl describe` and `sarasa get events` say why. One Event per object and message:
//! repeats of the same failure do not add more.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

/// The Warning Event about `object` (which must name its namespace) from `component`.
pub fn warning(
    object: ObjectReference,
    reason: &str,
    message: &str,
    component: &str,
    host: Option<&str>,
    now: Time,
) -> Event {
    let name = object.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{name}.{:x}",
                sarasa_model::hash::fnv1a64(format!("{reason}/{message}").as_bytes()) & 0xffff_ffff
            )),
            namespace: object.namespace.clone(),
            ..Default::default()
        },
        involved_object: object,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: host.map(str::to_string),
        }),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        ..Default::default()
    }
}

/// Posts the Event; one already there for the same failure is left as it is, and a failed
/// post is only logged (what failed is retried regardless).
pub async fn post(client: kube::Client, ev: Event) {
    let ns = ev
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let events: Api<Event> = Api::namespaced(client, &ns);
    match events.create(&PostParams::default(), &ev).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!("posting event {:?}: {e}", ev.reason),
    }
}

/// Now, as an Event timestamp.
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        }
    }

    #[test]
    fn one_name_per_object_and_failure() {
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let a = warning(
            pod(),
            "FailedCreatePodSandBox",
            "port in use",
            "kubelet",
            Some("node-1"),
            t.clone(),
        );
        let b = warning(
            pod(),
            "FailedCreatePodSandBox",
            "port in use",
            "kubelet",
            Some("node-1"),
            t.clone(),
        );
        let c = warning(
            pod(),
            "FailedCreatePodSandBox",
            "other",
            "kubelet",
            Some("node-1"),
            t,
        );
        assert_eq!(a.metadata.name, b.metadata.name);
        assert_ne!(a.metadata.name, c.metadata.name);
        assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(a.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(a.type_.as_deref(), Some("Warning"));
        assert_eq!(a.source.unwrap().host.as_deref(), Some("node-1"));
    }
}
