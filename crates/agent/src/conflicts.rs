//! Reports the Nodes the fabric plan refused ([`NodeConflict`]): a log line, and a Warning
//! Event on the Node (as kubelet and kube-controller-manager report node problems), so
//! `kubectl describe node` and `kubectl get events` show why a node is unreachable.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

use crate::plan::NodeConflict;

/// Namespace of Node Events (cluster-scoped objects' events go to `default`).
pub const EVENT_NAMESPACE: &str = "default";
/// `source.component` of the Events.
pub const COMPONENT: &str = "sarasa-agent";

/// The Event for `c`, reported by the agent on `host`.
pub fn event(c: &NodeConflict, host: &str, now: Time) -> Event {
    let nanos = now.0.as_nanosecond();
    let kept = if c.kept_last_good {
        "; its last good entries stay programmed"
    } else {
        ""
    };
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", c.node, nanos)),
            namespace: Some(EVENT_NAMESPACE.into()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(c.node.clone()),
            ..Default::default()
        },
        reason: Some(c.reason.as_str().into()),
        message: Some(format!(
            "node {} left out of the fabric of {host}: {}{kept}",
            c.node, c.message
        )),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(host.into()),
        }),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        ..Default::default()
    }
}

/// Logs each conflict and posts its Event; a failed post is logged, never fatal (the plan
/// without the conflicting Node is programmed regardless).
pub async fn report(client: kube::Client, host: &str, conflicts: &[NodeConflict]) {
    let events: Api<Event> = Api::namespaced(client, EVENT_NAMESPACE);
    for c in conflicts {
        tracing::warn!(
            node = %c.node,
            reason = c.reason.as_str(),
            kept_last_good = c.kept_last_good,
            "refusing node: {}",
            c.message
        );
        let ev = event(c, host, Time(k8s_openapi::jiff::Timestamp::now()));
        if let Err(e) = events.create(&PostParams::default(), &ev).await {
            tracing::warn!(node = %c.node, "posting the {} event failed: {e}", c.reason.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ConflictReason;

    #[test]
    fn event_names_the_node_and_the_reason() {
        let c = NodeConflict {
            node: "evil".into(),
            reason: ConflictReason::PodCidr,
            message: "podCIDR 10.244.2.0/24 overlaps podCIDR 10.244.2.0/24 of node n2".into(),
            kept_last_good: false,
        };
        let e = event(&c, "n1", Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(e.involved_object.kind.as_deref(), Some("Node"));
        assert_eq!(e.involved_object.name.as_deref(), Some("evil"));
        assert_eq!(e.reason.as_deref(), Some("PodCIDRConflict"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert!(e.message.unwrap().contains("of node n2"));
        assert_eq!(e.metadata.name.as_deref(), Some("evil.0"));
    }
}
