//! This node's own Node object: registration (in the lab nodes register through the agent),
//! the annotations other nodes consume, and the NetworkUnavailable=False condition.
//! Every write here is conditional on the object differing, so the agent's own writes come back
//! as watch events that change nothing it consumes — no reconcile loop.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::config::Backend;
use crate::error::{Error, Result};
use sarasa_cluster::state::{
    ANNOTATION_BACKEND, ANNOTATION_PUBLIC_IP, ANNOTATION_VTEP_MAC, READY_REASON,
};
use sarasa_model::MacAddr;

pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Gets the Node, creating it (name, hostname label, InternalIP) when it does not exist, and
/// filling in the InternalIP when the object has no address at all.
pub async fn ensure_registered(api: &Api<Node>, name: &str, internal_ip: IpAddr) -> Result<Node> {
    let node = match api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get node {name}"), e))?
    {
        Some(n) => n,
        None => {
            let mut n = Node::default();
            n.metadata.name = Some(name.into());
            n.metadata.labels = Some(BTreeMap::from([(
                HOSTNAME_LABEL.to_string(),
                name.to_string(),
            )]));
            n.status = Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: internal_ip.to_string(),
                }]),
                ..Default::default()
            });
            match api.create(&PostParams::default(), &n).await {
                Ok(created) => {
                    tracing::info!(node = name, %internal_ip, "registered Node");
                    created
                }
                Err(e) if is_status(&e, 409) => api
                    .get(name)
                    .await
                    .map_err(|e| Error::kube(format!("get node {name}"), e))?,
                Err(e) => return Err(Error::kube(format!("create node {name}"), e)),
            }
        }
    };
    let has_address = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .is_some_and(|a| !a.is_empty());
    if has_address {
        return Ok(node);
    }
    // Status is a subresource: create may have dropped it.
    let patch = json!({"status": {"addresses": [{"type": "InternalIP", "address": internal_ip.to_string()}]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube(format!("set addresses of node {name}"), e))
}

/// The annotations this agent publishes (None = remove).
pub fn desired_annotations(
    backend: Backend,
    public_ip: IpAddr,
    vtep_mac: Option<MacAddr>,
) -> BTreeMap<&'static str, Option<String>> {
    BTreeMap::from([
        (ANNOTATION_BACKEND, Some(backend.as_str().to_string())),
        (ANNOTATION_PUBLIC_IP, Some(public_ip.to_string())),
        (ANNOTATION_VTEP_MAC, vtep_mac.map(|m| m.to_string())),
    ])
}

/// The merge patch that makes `current` carry `desired`, or None when it already does.
pub fn annotation_patch(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<&'static str, Option<String>>,
) -> Option<serde_json::Value> {
    let mut changes = serde_json::Map::new();
    for (k, v) in desired {
        if current.get(*k) != v.as_ref() {
            changes.insert(
                k.to_string(),
                v.clone()
                    .map_or(serde_json::Value::Null, serde_json::Value::String),
            );
        }
    }
    (!changes.is_empty()).then(|| json!({"metadata": {"annotations": changes}}))
}

/// Publishes the annotations when they differ; returns whether a write happened.
pub async fn publish_annotations(
    api: &Api<Node>,
    node: &Node,
    desired: &BTreeMap<&'static str, Option<String>>,
) -> Result<bool> {
    let Some(patch) = annotation_patch(node.annotations(), desired) else {
        return Ok(false);
    };
    let name = node.name_any();
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| Error::kube(format!("annotate node {name}"), e))?;
    Ok(true)
}

/// The condition list with NetworkUnavailable=False (reason SarasaAgentReady) set, or None when
/// it is already so.
pub fn ready_conditions(current: &[NodeCondition], now: Time) -> Option<Vec<NodeCondition>> {
    let ready = current.iter().any(|c| {
        c.type_ == "NetworkUnavailable"
            && c.status == "False"
            && c.reason.as_deref() == Some(READY_REASON)
    });
    if ready {
        return None;
    }
    let mut out: Vec<NodeCondition> = current
        .iter()
        .filter(|c| c.type_ != "NetworkUnavailable")
        .cloned()
        .collect();
    out.push(NodeCondition {
        type_: "NetworkUnavailable".into(),
        status: "False".into(),
        reason: Some(READY_REASON.into()),
        message: Some("sarasa agent programmed the node network".into()),
        last_transition_time: Some(now.clone()),
        last_heartbeat_time: Some(now),
    });
    Some(out)
}

/// The Node condition reporting parts of the node's programming that keep failing:
/// `True` (reason `FabricFailing`, `ServicesFailing`, `PolicyFailing`, joined by `And` when
/// several; message: each part's error) while any does, `False` (reason `AllPartsProgrammed`)
/// once they work again. Written only when the set of failing parts changes.
pub const DEGRADED: &str = "SarasaDegraded";

/// The condition list with [`DEGRADED`] describing `failing` (others kept).
pub fn degraded_conditions(
    current: &[NodeCondition],
    failing: &[(crate::reconcile::Part, String)],
    now: Time,
) -> Vec<NodeCondition> {
    let (status, reason, message) = if failing.is_empty() {
        (
            "False",
            "AllPartsProgrammed".to_string(),
            "fabric, services and policy are programmed".to_string(),
        )
    } else {
        let reason = failing
            .iter()
            .map(|(p, _)| {
                let s = p.as_str();
                format!("{}{}Failing", s[..1].to_uppercase(), &s[1..])
            })
            .collect::<Vec<_>>()
            .join("And");
        let message = failing
            .iter()
            .map(|(p, e)| format!("{p}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        ("True", reason, message)
    };
    with_condition(current, DEGRADED, status, &reason, &message, now)
}

/// `current` with the condition `type_` set (the others kept); its transition time moves only
/// when its status does.
fn with_condition(
    current: &[NodeCondition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Time,
) -> Vec<NodeCondition> {
    let previous = current.iter().find(|c| c.type_ == type_);
    let transition = match previous {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    let mut out: Vec<NodeCondition> = current
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect();
    out.push(NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: transition,
        last_heartbeat_time: Some(now),
    });
    out
}

/// Replaces the Node's conditions with what `update` makes of the current ones (`None`: nothing
/// to write), conditional on the resourceVersion read and retried on conflict. `what` names
/// the change in errors. Returns whether it wrote.
async fn patch_conditions(
    api: &Api<Node>,
    name: &str,
    what: &str,
    update: impl Fn(&[NodeCondition], Time) -> Option<Vec<NodeCondition>>,
) -> Result<bool> {
    for _ in 0..5 {
        let node = api
            .get(name)
            .await
            .map_err(|e| Error::kube(format!("get node {name}"), e))?;
        let current = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let Some(conditions) = update(&current, now) else {
            return Ok(false);
        };
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "status": {"conditions": conditions},
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(e) if is_status(&e, 409) => continue,
            Err(e) => return Err(Error::kube(format!("set {what} on {name}"), e)),
        }
    }
    Err(Error::Node {
        node: name.into(),
        reason: format!("setting {what} kept conflicting"),
    })
}

/// Writes the [`DEGRADED`] condition.
pub async fn set_degraded(
    api: &Api<Node>,
    name: &str,
    failing: &[(crate::reconcile::Part, String)],
) -> Result<()> {
    patch_conditions(api, name, DEGRADED, |current, now| {
        Some(degraded_conditions(current, failing, now))
    })
    .await
    .map(|_| ())
}

/// Sets the condition `type_` (others kept); writes only when status, reason or message
/// change. Returns whether it wrote.
pub async fn set_condition(
    api: &Api<Node>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> Result<bool> {
    patch_conditions(api, name, type_, |current, now| {
        let previous = current.iter().find(|c| c.type_ == type_);
        if previous.is_some_and(|c| {
            c.status == status
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        }) {
            return None;
        }
        Some(with_condition(current, type_, status, reason, message, now))
    })
    .await
}

/// Sets NetworkUnavailable=False, preserving the other conditions.
pub async fn set_network_ready(api: &Api<Node>, name: &str) -> Result<()> {
    if patch_conditions(api, name, "NetworkUnavailable=False", ready_conditions).await? {
        tracing::info!(node = name, "NetworkUnavailable=False");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_patch_only_when_different() {
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let desired =
            desired_annotations(Backend::Vxlan, "192.168.33.11".parse().unwrap(), Some(mac));
        let mut cur = BTreeMap::new();
        let p = annotation_patch(&cur, &desired).unwrap();
        assert_eq!(
            p["metadata"]["annotations"]["sarasa.io/vtep-mac"],
            "02:00:00:00:00:01"
        );
        assert_eq!(p["metadata"]["annotations"]["sarasa.io/backend"], "vxlan");
        for (k, v) in &desired {
            cur.insert(k.to_string(), v.clone().unwrap());
        }
        assert!(annotation_patch(&cur, &desired).is_none());
        // Switching to host-gw removes the vtep MAC.
        let gw = desired_annotations(Backend::HostGw, "192.168.33.11".parse().unwrap(), None);
        let p = annotation_patch(&cur, &gw).unwrap();
        assert!(p["metadata"]["annotations"]["sarasa.io/vtep-mac"].is_null());
        assert_eq!(p["metadata"]["annotations"]["sarasa.io/backend"], "host-gw");
    }

    #[test]
    fn degraded_condition_names_each_failing_part() {
        use crate::reconcile::Part;
        let t0 = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let ready = NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "False".into(),
            ..Default::default()
        };
        let failing = [
            (Part::Services, "nftables batch rejected".to_string()),
            (Part::Policy, "read back".to_string()),
        ];
        let out = degraded_conditions(std::slice::from_ref(&ready), &failing, t0.clone());
        assert_eq!(out[0], ready);
        let c = &out[1];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str()),
            ("SarasaDegraded", "True")
        );
        assert_eq!(c.reason.as_deref(), Some("ServicesFailingAndPolicyFailing"));
        assert_eq!(
            c.message.as_deref(),
            Some("services: nftables batch rejected; policy: read back")
        );
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(60).unwrap());
        let out = degraded_conditions(&out, &failing[..1], t1.clone());
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].reason.as_deref(), Some("ServicesFailing"));
        assert_eq!(out[1].last_transition_time, Some(t0), "still True");
        let out = degraded_conditions(&out, &[], t1.clone());
        assert_eq!(out[1].status, "False");
        assert_eq!(out[1].reason.as_deref(), Some("AllPartsProgrammed"));
        assert_eq!(out[1].last_transition_time, Some(t1));
    }

    #[test]
    fn ready_condition_is_set_once_and_keeps_others() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let other = NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        };
        let stale = NodeCondition {
            type_: "NetworkUnavailable".into(),
            status: "True".into(),
            ..Default::default()
        };
        let out = ready_conditions(&[other.clone(), stale], now.clone()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], other);
        assert_eq!(out[1].status, "False");
        assert_eq!(out[1].reason.as_deref(), Some("SarasaAgentReady"));
        assert!(ready_conditions(&out, now).is_none());
    }
}
