//! What the pod runner writes into a Pod's status: phase, host and pod IPs (the node's address
//! for hostNetwork pods), conditions, and one status per container; and the Pending status of a
//! pod whose container cannot be configured (`CreateContainerConfigError`).

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use super::{now_rfc3339, PodRecord, PodRunner};
use crate::LabError;

impl PodRunner {
    pub(super) async fn report_status(&self, pod: &Pod, rec: &PodRecord) -> Result<(), LabError> {
        let node_ip = self.node_ip(&rec.node);
        let containers_ready = self.pod_ready(rec);
        let ready = if containers_ready && gates_pass(pod) {
            "True"
        } else {
            "False"
        };
        let containers_ready = if containers_ready { "True" } else { "False" };
        let now = now_rfc3339();
        let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": now, "lastProbeTime": null});
        let statuses: Vec<Value> = rec
            .containers
            .iter()
            .map(|c| {
                let image = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.iter().find(|x| x.name == c.name))
                    .and_then(|x| x.image.clone())
                    .unwrap_or_default();
                let running = c.process.is_some_and(|p| p.alive());
                json!({
                    "name": c.name, "ready": self.container_ready(&rec.uid, c), "started": running,
                    "restartCount": c.restarts, "image": image, "imageID": "",
                    "state": super::restarts::state(c, &rec.name, &rec.started_at),
                    "lastState": c.last_state.as_ref().map_or(json!({}), |t| json!({"terminated": t.to_json()})),
                })
            })
            .collect();
        let conditions: Vec<Value> = [
            cond("PodScheduled", "True"),
            cond("Initialized", "True"),
            cond("ContainersReady", containers_ready),
            cond("Ready", ready),
        ]
        .into_iter()
        .chain(gate_conditions(pod))
        .collect();
        let status = json!({"status": {
            "phase": super::restarts::phase(&rec.containers),
            "hostIP": node_ip,
            "hostIPs": self.host_ips(&rec.node),
            "podIP": rec.ips.first(),
            "podIPs": rec.ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "startTime": rec.started_at,
            "conditions": conditions,
            "containerStatuses": statuses,
            "initContainerStatuses": super::init::completed_statuses(pod, rec),
        }});
        self.patch_status(&rec.namespace, &rec.name, &status).await
    }

    /// The pod stays Pending: `container` waits with `CreateContainerConfigError` and `message`;
    /// the others wait in ContainerCreating.
    pub(super) async fn report_config_error(
        &self,
        pod: &Pod,
        container: &str,
        message: &str,
    ) -> Result<(), LabError> {
        let namespace = pod.namespace().unwrap_or_else(|| "default".into());
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let node_ip = self.node_ip(&node);
        let waiting = |name: &str, image: Option<&String>| {
            let (reason, msg) = if name == container {
                ("CreateContainerConfigError", message)
            } else {
                ("ContainerCreating", "")
            };
            let mut w = json!({"reason": reason});
            if !msg.is_empty() {
                w["message"] = json!(msg);
            }
            json!({"name": name, "ready": false, "started": false, "restartCount": 0,
                   "image": image, "imageID": "", "state": {"waiting": w}})
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let now = now_rfc3339();
        let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": now, "lastProbeTime": null});
        let mut status = json!({
            "phase": "Pending",
            "hostIP": node_ip,
            "hostIPs": self.host_ips(&node),
            "conditions": [cond("PodScheduled", "True"), cond("ContainersReady", "False"), cond("Ready", "False")],
            "containerStatuses": spec.containers.iter().map(|c| waiting(&c.name, c.image.as_ref())).collect::<Vec<_>>(),
        });
        if let Some(inits) = spec.init_containers.as_ref().filter(|i| !i.is_empty()) {
            status["initContainerStatuses"] = json!(inits
                .iter()
                .map(|c| waiting(&c.name, c.image.as_ref()))
                .collect::<Vec<_>>());
        }
        self.patch_status(&namespace, &pod.name_any(), &json!({ "status": status }))
            .await
    }

    /// The pod's `hostIPs`: every InternalIP of its node, IPv4 first.
    pub(super) fn host_ips(&self, node: &str) -> Vec<serde_json::Value> {
        self.spec
            .node(node)
            .map(|n| {
                n.ips()
                    .iter()
                    .map(|ip| json!({"ip": ip.to_string()}))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn node_ip(&self, node: &str) -> String {
        self.spec
            .node(node)
            .map(|n| n.ip.to_string())
            .unwrap_or_default()
    }

    pub(super) async fn patch_status(
        &self,
        namespace: &str,
        name: &str,
        status: &Value,
    ) -> Result<(), LabError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .map(|_| ())
            .map_err(|e| LabError::Api(format!("updating status of pod {namespace}/{name}: {e}")))
    }
}

/// The pod's `spec.readinessGates` condition types.
fn gate_types(pod: &Pod) -> Vec<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .map(|g| g.condition_type.as_str())
        .collect()
}

/// Whether every readiness gate's condition is True (as kubelet: a pod is Ready only when its
/// containers are and all its gates are).
pub(super) fn gates_pass(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    gate_types(pod).iter().all(|t| {
        conditions
            .into_iter()
            .flatten()
            .any(|c| c.type_ == *t && c.status == "True")
    })
}

/// The gates' conditions as others set them, kept when the pod runner writes the status (the
/// runner owns the other conditions; a merge patch replaces the whole list).
fn gate_conditions(pod: &Pod) -> Vec<Value> {
    let types = gate_types(pod);
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| types.contains(&c.type_.as_str()))
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect()
}

/// True when the pod's status already says what the record says (no write needed).
pub(super) fn status_matches(pod: &Pod, rec: &PodRecord, ready: bool) -> bool {
    let ready = ready && gates_pass(pod);
    let Some(st) = &pod.status else { return false };
    let reported = st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    st.pod_ip.as_deref() == rec.ips.first().map(String::as_str)
        && st.phase.as_deref() == Some(super::restarts::phase(&rec.containers))
        && reported == ready
}
