//! The lab's answer to `kubectl logs` and `kubectl exec`: the [`PodRuntime`] the API server
//! calls, backed by the pod runner. Logs come from the containers' CRI log files (the current
//! instance, or the previous one after a restart); exec runs the command as a process inside
//! the pod's network namespace, with the pod's resolv.conf and the container's environment,
//! as `sarasa exec` does, its stdio piped to the API server's WebSocket session.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Container;
use sarasa_apiserver::runtime::{
    ExecOptions, ExecProcess, ExitStatus, LogOptions, LogStream, PodRef, PodRuntime, RuntimeError,
};
use serde_json::Value;

use crate::container_log::{self, ReadOptions};
use crate::kubelet::{ContainerRecord, PodRecord, PodRunner};
use crate::process::enter_before_exec;

/// Serves logs and exec for the pods of one lab's pod runner.
pub struct LabRuntime {
    runner: Arc<PodRunner>,
}

impl LabRuntime {
    pub fn new(runner: Arc<PodRunner>) -> LabRuntime {
        LabRuntime { runner }
    }

    /// The runner's record of the pod and of the container, or the kubelet's "not started".
    fn running(
        &self,
        pod: &PodRef,
        container: &str,
    ) -> Result<(PodRecord, ContainerRecord), RuntimeError> {
        let waiting = || {
            RuntimeError::BadRequest(format!(
                "container {container:?} in pod {:?} is waiting to start: ContainerCreating",
                pod.name
            ))
        };
        let rec = self.runner.record(&pod.uid).ok_or_else(waiting)?;
        let c = rec
            .containers
            .iter()
            .find(|c| c.name == container)
            .cloned()
            .ok_or_else(waiting)?;
        Ok((rec, c))
    }
}

impl PodRuntime for LabRuntime {
    fn serves_node(&self, node: &str) -> bool {
        self.runner.runs_node(node)
    }

    fn logs(
        &self,
        pod: &PodRef,
        container: &str,
        opts: &LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        let (_, c) = self.running(pod, container)?;
        let paths = self.runner.log_paths(&pod.namespace, &pod.name, container);
        let mut read = ReadOptions {
            tail_lines: opts.tail_lines,
            since: opts.since,
            timestamps: opts.timestamps,
            follow: None,
        };
        let path = if opts.previous {
            if !paths.previous.exists() {
                return Err(RuntimeError::BadRequest(format!(
                    "previous terminated container {container:?} in pod {:?} not found",
                    pod.name
                )));
            }
            paths.previous
        } else {
            // A container that is not running has nothing more to say: no following then.
            read.follow = c.process.filter(|_| opts.follow);
            paths.current
        };
        container_log::read(&path, read)
            .map_err(|e| RuntimeError::Internal(format!("reading the log {}: {e}", path.display())))
    }

    fn check_exec(&self, pod: &PodRef, container: &str) -> Result<(), RuntimeError> {
        let (_, c) = self.running(pod, container)?;
        if !c.process.is_some_and(|p| p.alive()) {
            return Err(RuntimeError::BadRequest(format!(
                "container {container:?} in pod {:?} is not running",
                pod.name
            )));
        }
        Ok(())
    }

    fn exec(
        &self,
        pod: &PodRef,
        container: &str,
        opts: &ExecOptions,
    ) -> Result<ExecProcess, RuntimeError> {
        self.check_exec(pod, container)?;
        let (rec, _) = self.running(pod, container)?;
        let spec = container_spec(&pod.object, container)?;
        let (program, args) = opts
            .command
            .split_first()
            .ok_or_else(|| RuntimeError::BadRequest("the command is empty".into()))?;
        let netns = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&rec.netns);
        let mounts = self.runner.container_mounts(&rec.uid, container);
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(self.runner.container_env(&rec, &spec));
        let _netns = enter_before_exec(&mut cmd, Some(&netns), &mounts, false)
            .map_err(|e| RuntimeError::Internal(format!("entering pod {}: {e}", pod.name)))?;
        let mut cmd = tokio::process::Command::from(cmd);
        let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.kill_on_drop(true);
        let terminal = if opts.tty {
            Some(crate::pty::attach(&mut cmd).map_err(|e| {
                RuntimeError::Internal(format!("a terminal for pod {}: {e}", pod.name))
            })?)
        } else {
            cmd.stdin(piped(opts.stdin))
                .stdout(piped(opts.stdout))
                .stderr(piped(opts.stderr));
            None
        };
        let mut child = cmd.spawn().map_err(|e| {
            RuntimeError::Internal(format!(
                "exec {program:?} in container {container:?} of pod {:?}: {e}",
                pod.name
            ))
        })?;
        // The parent's copies of the terminal's slave end went with `cmd` into spawn; drop
        // `cmd` so the reader sees the end when the process (and its children) close theirs.
        drop(cmd);
        let (stdin, stdout, stderr, resize) = match terminal {
            Some(t) => {
                let (reader, writer, resize) = t.split().map_err(|e| {
                    RuntimeError::Internal(format!("a terminal for pod {}: {e}", pod.name))
                })?;
                (
                    opts.stdin.then(|| Box::pin(writer) as _),
                    Some(Box::pin(reader) as _),
                    None,
                    Some(resize),
                )
            }
            None => (
                child.stdin.take().map(|w| Box::pin(w) as _),
                child.stdout.take().map(|r| Box::pin(r) as _),
                child.stderr.take().map(|r| Box::pin(r) as _),
                None,
            ),
        };
        let exit = async move {
            let status = child.wait().await?;
            use std::os::unix::process::ExitStatusExt;
            Ok(ExitStatus {
                code: status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            })
        };
        Ok(ExecProcess {
            stdin,
            stdout,
            stderr,
            exit: Box::pin(exit),
            resize,
        })
    }
}

/// The named container of a Pod object.
fn container_spec(pod: &Value, name: &str) -> Result<Container, RuntimeError> {
    let found = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod["spec"][f].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .ok_or_else(|| {
            RuntimeError::BadRequest(format!("container {name} is not valid for pod"))
        })?;
    serde_json::from_value(found.clone())
        .map_err(|e| RuntimeError::Internal(format!("container {name} of the pod: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_named_container_is_found_in_the_pod() {
        let pod = json!({"spec": {
            "containers": [{"name": "app", "env": [{"name": "GREETING", "value": "hi"}]}],
            "initContainers": [{"name": "init"}],
        }});
        let c = container_spec(&pod, "app").unwrap();
        assert_eq!(c.env.unwrap()[0].value.as_deref(), Some("hi"));
        assert_eq!(container_spec(&pod, "init").unwrap().name, "init");
        assert!(matches!(
            container_spec(&pod, "nope"),
            Err(RuntimeError::BadRequest(_))
        ));
    }
}
