//! Stopping pods: graceful termination (preStop hooks, then SIGTERM and SIGKILL within the
//! API's grace period), CNI DEL and namespace removal (nothing of the node for hostNetwork
//! pods), finalising the API object, and CNI GC of attachments that outlived their pods.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::{Api, ResourceExt};
use sarasa_netns::NetNs;

use super::{rec_snapshot, uid2_of, PodRecord, PodRunner, POD_IFNAME};
use crate::cni_runtime::{load_conflist, Attachment, CniRuntime};
use crate::LabError;

impl PodRunner {
    pub(super) async fn terminate(self: &Arc<Self>, pod: Pod) -> Result<(), LabError> {
        let uid = pod.uid().unwrap_or_default();
        // The API's grace period, honoured whole: SIGTERM now, SIGKILL when it runs out.
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64;
        let grace = Duration::from_secs(grace);
        // preStop hooks first, while the containers still run; what they take comes out of
        // the grace period, as on a kubelet.
        let running = rec_snapshot(&self.records, &uid).filter(|r| {
            r.containers
                .iter()
                .any(|c| c.process.is_some_and(|p| p.alive()))
        });
        let grace = match running {
            Some(rec) => {
                let containers = pod
                    .spec
                    .as_ref()
                    .map(|s| s.containers.clone())
                    .unwrap_or_default();
                let netns = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&rec.netns);
                let took = tokio::task::spawn_blocking(move || {
                    crate::prestop::run_pre_stop(&containers, &netns, grace)
                })
                .await
                .map_err(|e| LabError::Process(format!("preStop task: {e}")))?;
                grace.saturating_sub(took)
            }
            None => grace,
        };
        let me = Arc::clone(self);
        let uid2 = uid.clone();
        tokio::task::spawn_blocking(move || me.teardown(&uid2, grace))
            .await
            .map_err(|e| LabError::Process(format!("pod stop task: {e}")))??;
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            &pod.namespace().unwrap_or_else(|| "default".into()),
        );
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.cancel.lock().expect("lock").remove(&uid2_of(&pod));
        self.init_failures
            .lock()
            .expect("lock")
            .remove(&uid2_of(&pod));
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(LabError::Api(format!("finalising pod deletion: {e}"))),
        }
    }

    pub(super) async fn teardown_blocking(self: Arc<Self>, uid: String) -> Result<(), LabError> {
        tokio::task::spawn_blocking(move || self.teardown(&uid, Duration::from_secs(2)))
            .await
            .map_err(|e| LabError::Process(format!("pod teardown task: {e}")))?
    }

    /// Stops containers, CNI DEL, removes the namespace and the record. Keeps going after an
    /// error and reports them all at the end.
    pub(super) fn teardown(&self, uid: &str, grace: Duration) -> Result<(), LabError> {
        let Some(rec) = self.records.lock().expect("lock").get(uid).cloned() else {
            return Ok(());
        };
        // Every container gets SIGTERM at once and the same deadline, then SIGKILL.
        let mut errors: Vec<String> = std::thread::scope(|s| {
            let stops: Vec<_> = rec
                .containers
                .iter()
                .filter_map(|c| c.process)
                .map(|p| s.spawn(move || p.stop(grace)))
                .collect();
            stops
                .into_iter()
                .filter_map(|h| match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("container stop thread panicked".into()),
                })
                .collect()
        });
        // A hostNetwork pod's namespace is the node's: nothing of it is removed.
        if !rec.host_network {
            if let Err(e) = self.cni_del(&rec) {
                errors.push(e.to_string());
            }
            if let Err(e) = NetNs::delete(&rec.netns) {
                errors.push(format!("deleting netns {}: {e}", rec.netns));
            }
        }
        let _ = std::fs::remove_dir_all(self.pod_dir(uid));
        if errors.is_empty() {
            let _ = std::fs::remove_file(self.paths.pods_dir().join(format!("{uid}.json")));
            self.records.lock().expect("lock").remove(uid);
            Ok(())
        } else {
            Err(LabError::Process(format!(
                "tearing down pod {}/{}: {}",
                rec.namespace,
                rec.name,
                errors.join("; ")
            )))
        }
    }

    pub(super) fn cni_del(&self, rec: &PodRecord) -> Result<(), LabError> {
        let node = self
            .spec
            .node(&rec.node)
            .ok_or_else(|| LabError::Invalid(format!("unknown node {}", rec.node)))?;
        let node_ns = NetNs::open(&node.netns).map_err(LabError::netns)?;
        let conf = match load_conflist(&self.paths.cni_conf_dir(&rec.node))? {
            Some(c) => c,
            None => return Ok(()),
        };
        let att = Attachment {
            container_id: rec.uid.clone(),
            netns: PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&rec.netns),
            ifname: POD_IFNAME.into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                rec.namespace, rec.name
            ),
            port_mappings: Vec::new(),
        };
        CniRuntime::for_node(&self.paths, &rec.node, &node_ns).del(
            &conf,
            &att,
            Some(&rec.cni_result),
        )
    }

    /// CNI GC on every node with the attachments the runner still holds: releases addresses
    /// of pods that vanished while the control plane was down.
    /// Runs at start and every [`super::CNI_GC_INTERVAL`]. Attachments of pods with a job in
    /// flight count as valid, and no ADD runs meanwhile (`cni_gate`).
    pub(super) fn gc_nodes(&self) {
        let _gate = self.cni_gate.write().unwrap_or_else(|p| p.into_inner());
        // Busy first: a job that ends after this has written its record, read next.
        let busy = self.busy.lock().expect("lock").clone();
        let records = self.records.lock().expect("lock").clone();
        for node in &self.spec.nodes {
            let Ok(Some(conf)) = load_conflist(&self.paths.cni_conf_dir(&node.name)) else {
                continue;
            };
            let Ok(node_ns) = NetNs::open(&node.netns) else {
                continue;
            };
            let valid = valid_attachments(&records, &busy, &node.name);
            let rt = CniRuntime::for_node(&self.paths, &node.name, &node_ns);
            if let Err(e) = rt.gc(&conf, &valid) {
                tracing::warn!(node = %node.name, "CNI GC: {e}");
            }
        }
    }
}

/// The attachments CNI GC on `node` must keep: every pod attached there, and every pod with a
/// job in flight (its ADD may be under way, its record not written yet).
fn valid_attachments(
    records: &BTreeMap<String, PodRecord>,
    busy: &HashSet<String>,
    node: &str,
) -> Vec<(String, String)> {
    let mut valid: Vec<(String, String)> = records
        .values()
        .filter(|r| r.node == node && !r.host_network)
        .map(|r| (r.uid.clone(), POD_IFNAME.to_string()))
        .collect();
    valid.extend(
        busy.iter()
            .filter(|uid| !records.contains_key(*uid))
            .map(|uid| (uid.clone(), POD_IFNAME.to_string())),
    );
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: &str, node: &str, host_network: bool) -> PodRecord {
        serde_json::from_value(serde_json::json!({
            "uid": uid, "namespace": "ns", "name": uid, "node": node, "netns": "x",
            "ips": [], "cni_conflist": "/x", "cni_result": null, "containers": [],
            "started_at": "", "host_network": host_network
        }))
        .unwrap()
    }

    #[test]
    fn gc_keeps_attached_pods_of_the_node_and_pods_being_started() {
        let records: BTreeMap<String, PodRecord> = [
            record("a", "n1", false),
            record("b", "n2", false),
            record("h", "n1", true),
        ]
        .into_iter()
        .map(|r| (r.uid.clone(), r))
        .collect();
        let busy: HashSet<String> = ["a".to_string(), "starting".to_string()].into();
        let mut valid = valid_attachments(&records, &busy, "n1");
        valid.sort();
        assert_eq!(
            valid,
            [
                ("a".to_string(), "eth0".to_string()),
                ("starting".to_string(), "eth0".to_string())
            ]
        );
    }
}
