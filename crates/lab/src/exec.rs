//! `sarasa exec`: run a host command inside a pod's, a node's, the fabric's or the external
//! host's network namespace. A pod's command also sees the pod's own /etc/resolv.conf; with
//! `--backend bgp`, a plain `birdc ...` on a node or the fabric talks to that BIRD (its
//! control socket is passed with `-s`).

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::lab::Lab;
use crate::process::{enter_before_exec, BindMount};
use crate::LabError;

/// Where a command runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecTarget {
    Pod {
        namespace: String,
        name: String,
    },
    Node(String),
    /// The fabric namespace: the underlay's switch, the API server and, with `--backend bgp`,
    /// the top-of-rack router.
    Fabric,
    External,
}

impl ExecTarget {
    /// `external`, `node/NAME`, `pod/NAME` or `NAME` (a pod in `namespace`).
    pub fn parse(target: &str, namespace: &str) -> Result<ExecTarget, LabError> {
        let bad = || {
            LabError::Invalid(format!(
                "exec target {target:?}: expected POD, pod/POD, node/NODE, fabric or external"
            ))
        };
        match target.split_once('/') {
            None if target == "external" => Ok(ExecTarget::External),
            None if target == "fabric" => Ok(ExecTarget::Fabric),
            None if !target.is_empty() => Ok(ExecTarget::Pod {
                namespace: namespace.into(),
                name: target.into(),
            }),
            Some(("node" | "nodes" | "no", n)) if !n.is_empty() => Ok(ExecTarget::Node(n.into())),
            Some(("pod" | "pods" | "po", n)) if !n.is_empty() => Ok(ExecTarget::Pod {
                namespace: namespace.into(),
                name: n.into(),
            }),
            _ => Err(bad()),
        }
    }
}

/// Runs `argv` in the target's namespace with inherited stdio; returns its exit code
/// (128 + signal when killed by a signal, as shells report it).
pub fn exec(lab: &Lab, target: &ExecTarget, argv: &[String]) -> Result<i32, LabError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LabError::Invalid("exec needs a command after --".into()))?;
    let (netns, mounts) = resolve(lab, target)?;
    let mut cmd = Command::new(program);
    if let Some(sock) = bird_socket(lab, target, program, args) {
        cmd.arg("-s").arg(sock);
    }
    cmd.args(args);
    let _keep = enter_before_exec(&mut cmd, Some(&netns), &mounts, false)?;
    let status = cmd
        .status()
        .map_err(|e| LabError::Process(format!("running {program}: {e}")))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The control socket of the target's BIRD (`--backend bgp`) when `program` is BIRD's client
/// and names no socket itself: its default, /run/bird/bird.ctl, is the machine's.
fn bird_socket(lab: &Lab, target: &ExecTarget, program: &str, args: &[String]) -> Option<PathBuf> {
    let name = std::path::Path::new(program).file_name()?.to_str()?;
    if !matches!(name, "birdc" | "birdcl") || args.iter().any(|a| a.starts_with("-s")) {
        return None;
    }
    let dir = match target {
        ExecTarget::Fabric => lab.paths.bird_dir(),
        ExecTarget::Node(n) => lab.paths.node_state_dir(n).join("bird"),
        _ => return None,
    };
    Some(dir.join("bird.ctl")).filter(|s| s.exists())
}

fn resolve(lab: &Lab, target: &ExecTarget) -> Result<(PathBuf, Vec<BindMount>), LabError> {
    let run = PathBuf::from(sarasa_netns::NETNS_RUN_DIR);
    match target {
        ExecTarget::External => Ok((run.join(&lab.spec.external_netns), Vec::new())),
        ExecTarget::Fabric => Ok((run.join(&lab.spec.fabric_netns), Vec::new())),
        ExecTarget::Node(n) => {
            let node = lab.spec.node(n).ok_or_else(|| {
                LabError::Invalid(format!(
                    "node {n:?} does not exist in lab {:?} (nodes: {})",
                    lab.spec.name,
                    lab.spec
                        .nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            Ok((run.join(&node.netns), Vec::new()))
        }
        ExecTarget::Pod { namespace, name } => {
            let (ns2, name2) = (namespace.clone(), name.clone());
            let pod: Pod = crate::client::with_client(&lab.spec, |c| async move {
                Api::<Pod>::namespaced(c, &ns2)
                    .get_opt(&name2)
                    .await
                    .map_err(|e| LabError::Api(format!("getting pod {ns2}/{name2}: {e}")))
            })?
            .ok_or_else(|| LabError::Invalid(format!("pod {namespace}/{name} does not exist")))?;
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let spec = pod.spec.unwrap_or_default();
            // A hostNetwork pod lives in its node's namespace.
            let netns = match (
                spec.host_network,
                spec.node_name.as_deref().and_then(|n| lab.spec.node(n)),
            ) {
                (Some(true), Some(node)) => run.join(&node.netns),
                _ => run.join(lab.spec.pod_netns(&uid)),
            };
            if !netns.exists() {
                return Err(LabError::Invalid(format!(
                    "pod {namespace}/{name} is not running (it has no network namespace yet)"
                )));
            }
            let mut mounts = crate::kubelet::pod_mounts(&lab.paths, &uid);
            mounts.extend(crate::volumes::container_mounts(&lab.paths, &uid, None));
            Ok((netns, mounts))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_like_kubectl() {
        assert_eq!(
            ExecTarget::parse("external", "x").unwrap(),
            ExecTarget::External
        );
        assert_eq!(
            ExecTarget::parse("node/node-2", "x").unwrap(),
            ExecTarget::Node("node-2".into())
        );
        assert_eq!(
            ExecTarget::parse("web-1", "prod").unwrap(),
            ExecTarget::Pod {
                namespace: "prod".into(),
                name: "web-1".into()
            }
        );
        assert!(ExecTarget::parse("node/", "x").is_err());
        assert!(ExecTarget::parse("svc/a", "x").is_err());
    }
}
