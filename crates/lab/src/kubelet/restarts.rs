//! What happens to a container whose process ended, as the kubelet decides it: restartPolicy
//! (Always, OnFailure, Never), the crash back-off between restarts (the first at once, then
//! 10 s doubling to 5 min), `lastState.terminated` with the exit code, and the state the
//! status reports (`running`, `waiting: CrashLoopBackOff`, `terminated`).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::init::crash_backoff;
use super::{now_rfc3339, ContainerRecord};

/// How an instance of a container ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub started_at: String,
    pub finished_at: String,
}

impl Terminated {
    pub fn to_json(&self) -> Value {
        json!({"exitCode": self.exit_code, "reason": self.reason,
               "startedAt": self.started_at, "finishedAt": self.finished_at})
    }
}

/// What `check` should do for one container.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// The record changed (an exit was noted); report it.
    Changed,
    /// Start it again now.
    Restart,
}

fn restarts_after(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Notes an ended process and says whether to restart now. `exit_code` of an instance we
/// cannot wait for (a restarted control plane is not its parent) is unknown: 137 with reason
/// ContainerStatusUnknown, as the kubelet reports it.
pub fn next_step(cr: &mut ContainerRecord, policy: &str, now: Instant) -> Step {
    if cr.process.is_some_and(|p| p.alive()) || cr.terminated.is_some() {
        return Step::Nothing;
    }
    let mut noted = false;
    if let Some(p) = cr.process.take() {
        noted = true;
        let (exit_code, reason) = match p.exit_code() {
            Some(0) => (0, "Completed"),
            Some(code) => (code, "Error"),
            None => (137, "ContainerStatusUnknown"),
        };
        let ended = Terminated {
            exit_code,
            reason: reason.into(),
            started_at: cr.started_at.clone(),
            finished_at: now_rfc3339(),
        };
        if restarts_after(policy, exit_code) {
            // The first restart is immediate; later ones wait out the back-off.
            let wait = if cr.restarts == 0 {
                std::time::Duration::ZERO
            } else {
                crash_backoff(cr.restarts)
            };
            cr.last_state = Some(ended);
            cr.restart_at = Some(now + wait);
        } else {
            cr.terminated = Some(ended);
            return Step::Changed;
        }
    }
    match cr.restart_at {
        Some(at) if at > now && noted => Step::Changed,
        Some(at) if at > now => Step::Nothing,
        _ => Step::Restart,
    }
}

/// The container's `state` for its status.
pub fn state(cr: &ContainerRecord, pod_name: &str, pod_started: &str) -> Value {
    if cr.process.is_some_and(|p| p.alive()) {
        let started = if cr.started_at.is_empty() {
            pod_started
        } else {
            &cr.started_at
        };
        return json!({"running": {"startedAt": started}});
    }
    if let Some(t) = &cr.terminated {
        return json!({"terminated": t.to_json()});
    }
    json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!(
        "back-off {}s restarting failed container={} pod={pod_name}",
        crash_backoff(cr.restarts.max(1)).as_secs(), cr.name)}})
}

/// The pod's phase from its containers: Succeeded or Failed once every one ended for good.
pub fn phase(containers: &[ContainerRecord]) -> &'static str {
    if containers.is_empty() || containers.iter().any(|c| c.terminated.is_none()) {
        return "Running";
    }
    if containers
        .iter()
        .all(|c| c.terminated.as_ref().is_some_and(|t| t.exit_code == 0))
    {
        "Succeeded"
    } else {
        "Failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: i32) -> ContainerRecord {
        // No process: as if its exit was already noted with this code.
        ContainerRecord {
            name: "c".into(),
            last_state: Some(Terminated {
                exit_code: code,
                ..Terminated::default()
            }),
            ..ContainerRecord::default()
        }
    }

    #[test]
    fn policies_and_back_off() {
        let now = Instant::now();
        // First restart at once.
        let mut c = ended(1);
        assert_eq!(next_step(&mut c, "Always", now), Step::Restart);
        // After restarts, the back-off holds it.
        let mut c = ContainerRecord {
            restarts: 2,
            restart_at: Some(now + crash_backoff(2)),
            ..ended(1)
        };
        assert_eq!(next_step(&mut c, "Always", now), Step::Nothing);
        assert_eq!(
            next_step(&mut c, "Always", now + crash_backoff(2)),
            Step::Restart
        );
        assert!(restarts_after("OnFailure", 1));
        assert!(!restarts_after("OnFailure", 0));
        assert!(!restarts_after("Never", 1));
        assert!(restarts_after("Always", 0));
    }

    #[test]
    fn state_and_phase() {
        let mut c = ContainerRecord {
            name: "c".into(),
            restarts: 3,
            ..ContainerRecord::default()
        };
        assert_eq!(
            state(&c, "p", "t")["waiting"]["message"],
            "back-off 40s restarting failed container=c pod=p"
        );
        c.terminated = Some(Terminated {
            exit_code: 0,
            reason: "Completed".into(),
            ..Terminated::default()
        });
        assert_eq!(state(&c, "p", "t")["terminated"]["reason"], "Completed");
        assert_eq!(phase(std::slice::from_ref(&c)), "Succeeded");
        let failed = ContainerRecord {
            terminated: Some(Terminated {
                exit_code: 2,
                ..Terminated::default()
            }),
            ..c.clone()
        };
        assert_eq!(phase(&[c, failed]), "Failed");
        assert_eq!(phase(&[ended(1)]), "Running");
    }
}
