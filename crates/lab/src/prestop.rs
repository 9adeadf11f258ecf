//! Containers' `preStop` hooks, run as the kubelet runs them when a pod terminates: after the
//! API marked the pod terminating (so its endpoints are already leaving every Service) and
//! before SIGTERM, all containers' hooks at once, the whole bounded by the pod's grace period
//! (whatever the hooks take is subtracted from the time SIGTERM is given). A `sleep` hook is
//! how a server that stops at once on SIGTERM drains: it keeps answering while clients move to
//! the other endpoints. `exec` runs in the pod's network namespace; `httpGet`/`tcpSocket` hooks
//! are not run by the lab (logged).

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;

/// What one container's preStop hook does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreStop {
    Sleep(Duration),
    Exec(Vec<String>),
}

/// The container's preStop hook, if it has one the lab runs.
pub fn pre_stop(c: &Container) -> Option<PreStop> {
    let hook = c.lifecycle.as_ref()?.pre_stop.as_ref()?;
    if let Some(s) = &hook.sleep {
        return Some(PreStop::Sleep(Duration::from_secs(s.seconds.max(0) as u64)));
    }
    if let Some(cmd) = hook.exec.as_ref().and_then(|e| e.command.clone()) {
        return Some(PreStop::Exec(cmd));
    }
    tracing::warn!(
        container = %c.name,
        "preStop httpGet/tcpSocket hooks are not run by the lab"
    );
    None
}

/// Runs every hook concurrently in `pod_netns`, each cut off at `grace`; returns how long the
/// hooks took (what the caller subtracts from the grace it gives SIGTERM).
pub fn run_pre_stop(containers: &[Container], pod_netns: &Path, grace: Duration) -> Duration {
    let started = Instant::now();
    let hooks: Vec<PreStop> = containers.iter().filter_map(pre_stop).collect();
    std::thread::scope(|s| {
        for hook in &hooks {
            s.spawn(move || match hook {
                PreStop::Sleep(d) => std::thread::sleep((*d).min(grace)),
                PreStop::Exec(cmd) => {
                    crate::readiness::run_exec(cmd, pod_netns, grace);
                }
            });
        }
    });
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(lifecycle: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "lifecycle": lifecycle})).unwrap()
    }

    #[test]
    fn hooks_parse() {
        assert_eq!(
            pre_stop(&container(
                serde_json::json!({"preStop": {"sleep": {"seconds": 5}}})
            )),
            Some(PreStop::Sleep(Duration::from_secs(5)))
        );
        assert_eq!(
            pre_stop(&container(
                serde_json::json!({"preStop": {"exec": {"command": ["sh", "-c", "true"]}}})
            )),
            Some(PreStop::Exec(vec!["sh".into(), "-c".into(), "true".into()]))
        );
        assert_eq!(pre_stop(&container(serde_json::json!({}))), None);
    }

    #[test]
    fn sleeps_run_together_and_are_bounded_by_the_grace_period() {
        let cs = vec![
            container(serde_json::json!({"preStop": {"sleep": {"seconds": 1}}})),
            container(serde_json::json!({"preStop": {"sleep": {"seconds": 1}}})),
            container(serde_json::json!({"preStop": {"sleep": {"seconds": 30}}})),
        ];
        let took = run_pre_stop(&cs, Path::new("/nonexistent"), Duration::from_millis(1200));
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(
            took < Duration::from_millis(2500),
            "concurrent and bounded: {took:?}"
        );
    }
}
