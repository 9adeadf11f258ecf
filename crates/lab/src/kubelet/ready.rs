//! Readiness: one task per probed pod runs each container's readinessProbe every period (after
//! its initial delay) and patches the pod's status when readiness changes; a terminating pod
//! keeps being probed until its containers are gone.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use sarasa_netns::NetNs;

use super::{rec_snapshot, ContainerRecord, PodRecord, PodRunner};
use crate::readiness::{readiness_probe, run_probe, ProbeState, ProbeTarget, ReadinessProbe};

impl PodRunner {
    /// Starts the pod's probe task unless it runs already or no container has a probe. Probed
    /// containers start not ready, as on a kubelet.
    pub(super) fn start_probing(self: &Arc<Self>, pod: &Pod) {
        let Some(uid) = pod.uid() else { return };
        if self.probing.lock().expect("lock").contains(&uid) {
            return;
        }
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let mut probes = Vec::new();
        for c in &containers {
            match readiness_probe(c) {
                Ok(Some(p)) => probes.push((c.name.clone(), Some(p))),
                Ok(None) => {}
                Err(e) => {
                    // Never ready: the probe cannot run.
                    tracing::warn!(pod = %pod.name_any(), "{e}");
                    probes.push((c.name.clone(), None));
                }
            }
        }
        if probes.is_empty() || !self.probing.lock().expect("lock").insert(uid.clone()) {
            return;
        }
        self.readiness.lock().expect("lock").insert(
            uid,
            probes
                .iter()
                .map(|(name, _)| (name.clone(), false))
                .collect(),
        );
        let probes: Vec<(String, ReadinessProbe)> = probes
            .into_iter()
            .filter_map(|(name, p)| Some((name, p?)))
            .collect();
        tokio::spawn(Arc::clone(self).probe_loop(pod.clone(), probes));
    }

    /// Probes each container every period (after its initial delay) while the pod has a
    /// record, including while it terminates; reports status when readiness changes.
    pub(super) async fn probe_loop(
        self: Arc<Self>,
        pod: Pod,
        probes: Vec<(String, ReadinessProbe)>,
    ) {
        let uid = pod.uid().unwrap_or_default();
        let start = tokio::time::Instant::now();
        let mut next: Vec<tokio::time::Instant> = probes
            .iter()
            .map(|(_, p)| start + p.initial_delay)
            .collect();
        let mut states = vec![ProbeState::default(); probes.len()];
        loop {
            let due = next.iter().min().copied().unwrap_or(start);
            tokio::time::sleep_until(due).await;
            let Some(rec) = rec_snapshot(&self.records, &uid) else {
                break;
            };
            let node_netns = self.spec.node(&rec.node).map(|n| n.netns.clone());
            let pod_ip = rec
                .ips
                .first()
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
            let now = tokio::time::Instant::now();
            let mut changed = false;
            for (i, (name, probe)) in probes.iter().enumerate() {
                if next[i] > now {
                    continue;
                }
                next[i] = now + probe.period;
                let alive = rec
                    .containers
                    .iter()
                    .any(|c| &c.name == name && c.process.is_some_and(|p| p.alive()));
                let ok = match (alive, &node_netns, pod_ip) {
                    (true, Some(node_netns), Some(pod_ip)) => {
                        let probe = probe.clone();
                        let node_netns = node_netns.clone();
                        let pod_netns = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&rec.netns);
                        tokio::task::spawn_blocking(move || {
                            let Ok(node) = NetNs::open(&node_netns) else {
                                return false;
                            };
                            run_probe(
                                &probe,
                                &ProbeTarget {
                                    pod_netns: &pod_netns,
                                    node: &node,
                                    pod_ip,
                                },
                            )
                        })
                        .await
                        .unwrap_or(false)
                    }
                    _ => false,
                };
                let before = states[i].ready;
                if alive {
                    states[i].record(ok, probe);
                } else {
                    // A container that is not running is not ready, whatever the thresholds.
                    states[i] = ProbeState::default();
                }
                if states[i].ready != before {
                    changed = true;
                    if let Some(m) = self.readiness.lock().expect("lock").get_mut(&uid) {
                        m.insert(name.clone(), states[i].ready);
                    }
                }
            }
            if changed {
                if let Err(e) = self.report_status(&pod, &rec).await {
                    tracing::warn!(pod = %rec.name, "{e}");
                }
            }
        }
        self.readiness.lock().expect("lock").remove(&uid);
        self.probing.lock().expect("lock").remove(&uid);
    }

    /// Whether a container counts as ready: running and, when probed, its probe says so.
    pub(super) fn container_ready(&self, uid: &str, c: &ContainerRecord) -> bool {
        c.process.is_some_and(|p| p.alive())
            && self
                .readiness
                .lock()
                .expect("lock")
                .get(uid)
                .and_then(|m| m.get(&c.name).copied())
                .unwrap_or(true)
    }

    pub(super) fn pod_ready(&self, rec: &PodRecord) -> bool {
        rec.containers
            .iter()
            .all(|c| self.container_ready(&rec.uid, c))
    }
}
