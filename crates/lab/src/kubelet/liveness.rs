//! livenessProbe: one task per pod probes each container's running instance every period after
//! its initialDelaySeconds (counted from that instance's start); failureThreshold consecutive
//! failures kill the instance (SIGTERM to its process group, SIGKILL after the grace), and the
//! runner's check then restarts it per restartPolicy, with the exit kept as lastState.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sarasa_netns::NetNs;

use super::{rec_snapshot, PodRunner};
use crate::process::ProcessRecord;
use crate::readiness::{liveness_probe, run_probe, ProbeState, ProbeTarget, ReadinessProbe};

/// How long a killed container gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

impl PodRunner {
    /// Starts the pod's liveness task unless it runs already or no container has a probe.
    pub(super) fn start_liveness(self: &Arc<Self>, pod: &Pod) {
        let Some(uid) = pod.uid() else { return };
        if self.liveness.lock().expect("lock").contains(&uid) {
            return;
        }
        let mut probes = Vec::new();
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            match liveness_probe(c) {
                Ok(Some(p)) => probes.push((c.name.clone(), p)),
                Ok(None) => {}
                // A probe that cannot run never kills anything.
                Err(e) => tracing::warn!(pod = %pod.name_any(), "{e}"),
            }
        }
        if probes.is_empty() || !self.liveness.lock().expect("lock").insert(uid) {
            return;
        }
        tokio::spawn(Arc::clone(self).liveness_loop(pod.clone(), probes));
    }

    async fn liveness_loop(self: Arc<Self>, pod: Pod, probes: Vec<(String, ReadinessProbe)>) {
        let uid = pod.uid().unwrap_or_default();
        let poll = Duration::from_millis(200);
        let now = tokio::time::Instant::now();
        let mut next = vec![now; probes.len()];
        let mut instance: Vec<Option<ProcessRecord>> = vec![None; probes.len()];
        let mut states = vec![ProbeState::passing(); probes.len()];
        loop {
            let due = next.iter().min().copied().unwrap_or(now);
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
            for (i, (name, probe)) in probes.iter().enumerate() {
                let running = rec
                    .containers
                    .iter()
                    .find(|c| &c.name == name)
                    .and_then(|c| c.process)
                    .filter(|p| p.alive());
                if running != instance[i] {
                    // A new instance (or none): its initial delay starts now.
                    instance[i] = running;
                    states[i] = ProbeState::passing();
                    next[i] = now
                        + if running.is_some() {
                            probe.initial_delay
                        } else {
                            poll
                        };
                    continue;
                }
                if next[i] > now {
                    continue;
                }
                let (Some(p), Some(node_netns), Some(pod_ip)) = (running, &node_netns, pod_ip)
                else {
                    next[i] = now + poll;
                    continue;
                };
                next[i] = now + probe.period;
                let probe2 = probe.clone();
                let node_netns = node_netns.clone();
                let pod_netns = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&rec.netns);
                let ok = tokio::task::spawn_blocking(move || {
                    let Ok(node) = NetNs::open(&node_netns) else {
                        return false;
                    };
                    run_probe(
                        &probe2,
                        &ProbeTarget {
                            pod_netns: &pod_netns,
                            node: &node,
                            pod_ip,
                        },
                    )
                })
                .await
                .unwrap_or(false);
                states[i].record(ok, probe);
                if !states[i].ready {
                    tracing::info!(pod = %rec.name, container = %name, "liveness probe failed, restarting the container");
                    let _ = tokio::task::spawn_blocking(move || kill_instance(p)).await;
                    states[i] = ProbeState::passing();
                    next[i] = now + poll;
                }
            }
        }
        self.liveness.lock().expect("lock").remove(&uid);
    }
}

/// SIGTERM to the instance's process group, SIGKILL after [`KILL_GRACE`]. The leader is not
/// reaped here: the runner's check reaps it and keeps its exit code.
fn kill_instance(p: ProcessRecord) {
    // Containers lead their own session, so their pid is their process group's id.
    let group = Pid::from_raw(-p.pid);
    let _ = kill(group, Signal::SIGTERM);
    let until = std::time::Instant::now() + KILL_GRACE;
    while p.alive() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if p.alive() {
        let _ = kill(group, Signal::SIGKILL);
    }
}
