//! Init containers, as the kubelet runs them: in order, each to completion, before any app
//! container starts. One that fails ends the attempt (its exit code kept); the pod is retried
//! with the kubelet's crash back-off (10 s doubling to 5 min) unless its restartPolicy is
//! Never, which fails the pod. While they run the pod reports `Init:N/M`; after a failure
//! `Init:Error`, then `Init:CrashLoopBackOff` while it backs off.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{now_rfc3339, PodRecord, PodRunner};
use crate::LabError;

/// The kubelet's crash back-off: 10 s, doubling, at most 5 min.
pub fn crash_backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(5);
    Duration::from_secs(10u64.saturating_mul(1 << exp)).min(Duration::from_secs(300))
}

/// An init container that ran to completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitRecord {
    pub name: String,
    pub started_at: String,
    pub finished_at: String,
}

/// The last failed attempt of a pod's init containers.
#[derive(Debug, Clone)]
pub struct InitFailure {
    pub index: usize,
    pub exit_code: i32,
    pub failures: u32,
    pub at: Instant,
    pub started_at: String,
    pub finished_at: String,
    /// The init containers that completed before it, in this attempt.
    pub done: Vec<InitRecord>,
}

impl InitFailure {
    /// Still waiting before the next attempt.
    pub fn backing_off(&self, restart_never: bool) -> bool {
        restart_never || self.at.elapsed() < crash_backoff(self.failures)
    }
}

fn restart_never(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("Never")
}

impl PodRunner {
    /// Runs `inits` in order to completion in the pod (blocking); pushes each finished one to
    /// `rec.init`. A failure is remembered for the status and the back-off.
    pub(super) fn run_init_containers(
        &self,
        pod: &Pod,
        rec: &mut PodRecord,
        inits: &[Container],
    ) -> Result<(), LabError> {
        let handle = tokio::runtime::Handle::current();
        for (i, c) in inits.iter().enumerate() {
            if let Err(e) = handle.block_on(self.report_init_status(pod, rec, i, None)) {
                tracing::warn!(pod = %rec.name, "{e}");
            }
            if let Err(e) = self.log_paths(&rec.namespace, &rec.name, &c.name).clear() {
                return Err(LabError::Process(format!(
                    "clearing old logs of init container {}: {e}",
                    c.name
                )));
            }
            let started_at = now_rfc3339();
            let p = self.spawn_container(rec, c)?;
            let code = loop {
                if let Some(code) = p.exit_code() {
                    break code;
                }
                if !p.alive() {
                    // Not ours to wait for (cannot happen for a child we just started).
                    break 1;
                }
                if self.cancel.lock().expect("lock").contains(&rec.uid) {
                    let _ = p.stop(Duration::from_secs(2));
                    return Err(LabError::Process(format!(
                        "pod {} deleted while init container {} ran",
                        rec.name, c.name
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let finished_at = now_rfc3339();
            if code != 0 {
                let mut failures = self.init_failures.lock().expect("lock");
                let count = failures.get(&rec.uid).map_or(0, |f| f.failures) + 1;
                failures.insert(
                    rec.uid.clone(),
                    InitFailure {
                        index: i,
                        exit_code: code,
                        failures: count,
                        at: Instant::now(),
                        started_at,
                        finished_at,
                        done: rec.init.clone(),
                    },
                );
                return Err(LabError::Process(format!(
                    "pod {}: init container {} exited with code {code}",
                    rec.name, c.name
                )));
            }
            rec.init.push(InitRecord {
                name: c.name.clone(),
                started_at,
                finished_at,
            });
        }
        self.init_failures.lock().expect("lock").remove(&rec.uid);
        Ok(())
    }

    /// Whether the pod waits out an init container's crash back-off (or failed for good).
    pub(super) fn init_backing_off(&self, pod: &Pod) -> bool {
        let uid = pod.uid().unwrap_or_default();
        self.init_failures
            .lock()
            .expect("lock")
            .get(&uid)
            .is_some_and(|f| f.backing_off(restart_never(pod)))
    }

    /// The pod's status while init container `running` runs (`failed`: after it failed).
    pub(super) async fn report_init_status(
        &self,
        pod: &Pod,
        rec: &PodRecord,
        running: usize,
        failed: Option<&InitFailure>,
    ) -> Result<(), LabError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.clone().unwrap_or_default();
        let image = |c: &Container| c.image.clone().unwrap_or_default();
        let statuses: Vec<Value> = inits
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut s = json!({"name": c.name, "image": image(c), "imageID": "", "ready": false,
                                   "restartCount": 0, "started": false});
                if let Some(done) = rec.init.iter().find(|d| d.name == c.name) {
                    s["ready"] = json!(true);
                    s["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed",
                        "startedAt": done.started_at, "finishedAt": done.finished_at}});
                } else if i == running {
                    match failed {
                        Some(f) => {
                            let terminated = json!({"exitCode": f.exit_code, "reason": "Error",
                                "startedAt": f.started_at, "finishedAt": f.finished_at});
                            s["restartCount"] = json!(f.failures - 1);
                            if f.failures > 1 && !restart_never(pod) {
                                s["state"] = json!({"waiting": {"reason": "CrashLoopBackOff",
                                    "message": format!("back-off {}s restarting failed container={} pod={}",
                                        crash_backoff(f.failures).as_secs(), c.name, rec.name)}});
                                s["lastState"] = json!({"terminated": terminated});
                            } else {
                                s["state"] = json!({"terminated": terminated});
                            }
                        }
                        None => {
                            s["started"] = json!(true);
                            s["state"] = json!({"running": {"startedAt": now_rfc3339()}});
                        }
                    }
                } else {
                    s["state"] = json!({"waiting": {"reason": "PodInitializing"}});
                }
                s
            })
            .collect();
        let containers: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| {
                json!({"name": c.name, "image": image(c), "imageID": "", "ready": false,
                            "restartCount": 0, "started": false,
                            "state": {"waiting": {"reason": "PodInitializing"}}})
            })
            .collect();
        let now = now_rfc3339();
        let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": now, "lastProbeTime": null});
        let phase = if failed.is_some() && restart_never(pod) {
            "Failed"
        } else {
            "Pending"
        };
        let status = json!({"status": {
            "phase": phase,
            "hostIP": self.node_ip(&rec.node),
            "hostIPs": self.host_ips(&rec.node),
            "podIP": rec.ips.first(),
            "podIPs": rec.ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "startTime": rec.started_at,
            "conditions": [cond("PodScheduled", "True"), cond("Initialized", "False"),
                           cond("ContainersReady", "False"), cond("Ready", "False")],
            "initContainerStatuses": statuses,
            "containerStatuses": containers,
        }});
        self.patch_status(&rec.namespace, &pod.name_any(), &status)
            .await
    }
}

/// initContainerStatuses of a pod whose init containers all completed.
pub fn completed_statuses(pod: &Pod, rec: &PodRecord) -> Vec<Value> {
    rec.init
        .iter()
        .map(|d| {
            let image = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.name == d.name))
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            json!({"name": d.name, "image": image, "imageID": "", "ready": true, "restartCount": 0,
                   "started": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                   "startedAt": d.started_at, "finishedAt": d.finished_at}}})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_to_five_minutes() {
        let secs: Vec<u64> = (1..=8).map(|n| crash_backoff(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
        let f = InitFailure {
            index: 0,
            exit_code: 1,
            failures: 1,
            at: Instant::now(),
            started_at: String::new(),
            finished_at: String::new(),
            done: Vec::new(),
        };
        assert!(f.backing_off(false));
        assert!(f.backing_off(true));
    }
}
