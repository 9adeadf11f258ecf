//! Warning Events about a pod, as kubelet posts them: `FailedCreatePodSandBox` when the pod's
//! network cannot be set up (the CNI plugin's error, e.g. a hostPort another pod holds), so
//! `kubectl describe pod` and `sarasa get events` say why the pod stays ContainerCreating.
//! One Event per pod and message: retries of the same failure do not add more.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::ResourceExt;

/// `source.component`, as kubelet's.
const COMPONENT: &str = "kubelet";

/// The Event for `pod` on `node` failing with `reason` and `message`.
pub(super) fn warning(pod: &Pod, node: &str, reason: &str, message: &str, now: Time) -> Event {
    let name = pod.name_any();
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{name}.{}",
                sarasa_model::hash::fnv1a64(format!("{reason}/{message}").as_bytes()) & 0xffff_ffff
            )),
            namespace: pod.namespace(),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: pod.namespace(),
            uid: pod.uid(),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.into()),
        }),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        ..Default::default()
    }
}

/// Posts the Event; an Event already there for the same failure is left as it is, and a
/// failed post is only logged (the pod's start is retried regardless).
pub(super) async fn post(client: kube::Client, ev: Event) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_per_pod_and_failure() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let a = warning(
            &pod,
            "node-1",
            "FailedCreatePodSandBox",
            "port in use",
            t.clone(),
        );
        let b = warning(
            &pod,
            "node-1",
            "FailedCreatePodSandBox",
            "port in use",
            t.clone(),
        );
        let c = warning(&pod, "node-1", "FailedCreatePodSandBox", "other", t);
        assert_eq!(a.metadata.name, b.metadata.name);
        assert_ne!(a.metadata.name, c.metadata.name);
        assert_eq!(a.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(a.type_.as_deref(), Some("Warning"));
        assert_eq!(a.source.unwrap().host.as_deref(), Some("node-1"));
    }
}
