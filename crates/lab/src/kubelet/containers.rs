//! What a container runs with: its environment (the `kubernetes` Service variables, the lab's
//! pod identity variables, then the envFrom/env resolved at start), its argv, and its mounts.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::PodRecord;
use crate::container_env::{expand, kubernetes_service_env};
use crate::paths::LabPaths;
use crate::pod_env::{EnvSources, PodFacts};
use crate::process::BindMount;
use crate::spec::LabSpec;
use crate::LabError;

/// The environment a container's processes (and commands exec'd in it) get: the `kubernetes`
/// Service's address as kubelet injects it, the pod's identity as the lab's downward API gives
/// it, then the container's own `env` values (`$(VAR)` expanded).
pub fn container_env(spec: &LabSpec, rec: &PodRecord, c: &Container) -> Vec<(String, String)> {
    let mut env = kubernetes_service_env(spec);
    env.extend([
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("POD_NAME".to_string(), rec.name.clone()),
        ("POD_NAMESPACE".to_string(), rec.namespace.clone()),
        (
            "POD_IP".to_string(),
            rec.ips.first().cloned().unwrap_or_default(),
        ),
        ("POD_IPS".to_string(), rec.ips.join(",")),
        ("NODE_NAME".to_string(), rec.node.clone()),
        ("HOSTNAME".to_string(), rec.name.clone()),
        // As container runtimes set it for a root user without one.
        ("HOME".to_string(), "/root".to_string()),
    ]);
    match rec.env.get(&c.name) {
        Some(vars) => env.extend(vars.iter().cloned()),
        // A record written before env was resolved at start: plain values only.
        None => {
            for e in c.env.iter().flatten() {
                if let Some(v) = &e.value {
                    let v = expand(v, &env);
                    env.push((e.name.clone(), v));
                }
            }
        }
    }
    env
}

/// Whether every container's env can be built from `sources` (the IPs do not matter here):
/// the first container that cannot, with why.
pub(super) fn check_env(
    pod: &Pod,
    sources: &EnvSources,
) -> Result<(), (String, crate::pod_env::ConfigError)> {
    let facts = PodFacts {
        pod,
        node: "",
        pod_ips: &[],
        host_ip: "",
    };
    let spec = pod.spec.clone().unwrap_or_default();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        crate::pod_env::resolve(c, &facts, sources, &[]).map_err(|e| (c.name.clone(), e))?;
    }
    Ok(())
}

/// The process a container runs: its command + args (`sarasa` meaning the lab's binary), or —
/// without a command — the built-in server on each declared containerPort.
pub fn container_argv(c: &Container, sarasa: &Path) -> Result<(PathBuf, Vec<String>), LabError> {
    match c.command.as_deref() {
        Some([program, rest @ ..]) => {
            let mut args: Vec<String> = rest.to_vec();
            args.extend(c.args.iter().flatten().cloned());
            // `sarasa` is the lab's image entrypoint: the lab's own binary, wherever it is.
            let program = if program == "sarasa" {
                sarasa.to_path_buf()
            } else {
                PathBuf::from(program)
            };
            Ok((program, args))
        }
        _ => {
            let mut args = vec!["serve".to_string()];
            for p in c.ports.iter().flatten() {
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                args.push("--port".into());
                args.push(format!("{}/{proto}", p.container_port));
            }
            Ok((sarasa.to_path_buf(), args))
        }
    }
}

/// The bind mounts of a pod's containers: its resolv.conf over /etc/resolv.conf once written.
pub fn pod_mounts(paths: &LabPaths, uid: &str) -> Vec<BindMount> {
    let resolv = paths.pods_dir().join(uid).join("resolv.conf");
    let mut mounts = Vec::new();
    if resolv.exists() {
        mounts.push(BindMount::new(resolv, "/etc/resolv.conf"));
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn container_without_command_serves_its_ports() {
        let c = Container {
            name: "web".into(),
            ports: Some(vec![
                ContainerPort {
                    container_port: 80,
                    ..Default::default()
                },
                ContainerPort {
                    container_port: 53,
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let (prog, args) = container_argv(&c, Path::new("/bin/sarasa")).unwrap();
        assert_eq!(prog, Path::new("/bin/sarasa"));
        assert_eq!(args, ["serve", "--port", "80/tcp", "--port", "53/udp"]);
        let c = Container {
            name: "sh".into(),
            command: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: Some(vec!["sleep 1".into()]),
            ..Default::default()
        };
        let (prog, args) = container_argv(&c, Path::new("/bin/sarasa")).unwrap();
        assert_eq!(prog, Path::new("/bin/sh"));
        assert_eq!(args, ["-c", "sleep 1"]);
        let c = Container {
            name: "dns".into(),
            command: Some(vec!["sarasa".into(), "dns".into()]),
            args: Some(vec!["--ttl=5".into()]),
            ..Default::default()
        };
        let (prog, args) = container_argv(&c, Path::new("/opt/lab/sarasa")).unwrap();
        assert_eq!(prog, Path::new("/opt/lab/sarasa"));
        assert_eq!(args, ["dns", "--ttl=5"]);
    }
}
