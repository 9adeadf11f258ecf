//! The API-backed part of a container's environment, as the kubelet builds it
//! (makeEnvironmentVariables): `envFrom` (ConfigMaps and Secrets, with prefix) first, then `env`
//! in order — plain values with `$(VAR)` expanded, and `valueFrom` from the downward API
//! (`fieldRef`, `resourceFieldRef`), `configMapKeyRef` and `secretKeyRef` (`optional` honoured).
//! A required source or key that is missing is a config error: the container does not start
//! and the pod reports `CreateContainerConfigError`, as on a kubelet.
//!
//! `resourceFieldRef` reads the container's declared limit/request; an undeclared one reads a
//! fixed node allocatable (the host's CPU count, its total memory), the kubelet's fallback; the
//! `divisor` is not applied (the value is the quantity as declared).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};

use crate::container_env::expand;
use crate::LabError;

/// The ConfigMaps and Secrets a pod's containers reference (None: does not exist).
#[derive(Debug, Default, Clone)]
pub struct EnvSources {
    pub configmaps: BTreeMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

/// What the downward API reads of the pod beyond its object.
#[derive(Debug, Clone)]
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub node: &'a str,
    pub pod_ips: &'a [String],
    pub host_ip: &'a str,
}

/// Why a container cannot start (the message of `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    })
}

/// Reads every ConfigMap and Secret the pod's containers name.
pub async fn fetch(client: &Client, pod: &Pod) -> Result<EnvSources, LabError> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut cm_names = Vec::new();
    let mut secret_names = Vec::new();
    for c in all_containers(pod) {
        for f in c.env_from.iter().flatten() {
            cm_names.extend(f.config_map_ref.as_ref().map(|r| r.name.clone()));
            secret_names.extend(f.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        for e in c.env.iter().flatten() {
            let Some(vf) = &e.value_from else { continue };
            cm_names.extend(vf.config_map_key_ref.as_ref().map(|r| r.name.clone()));
            secret_names.extend(vf.secret_key_ref.as_ref().map(|r| r.name.clone()));
        }
    }
    let mut out = EnvSources::default();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for name in cm_names {
        if out.configmaps.contains_key(&name) {
            continue;
        }
        let cm = cms
            .get_opt(&name)
            .await
            .map_err(|e| LabError::Api(format!("getting configmap {ns}/{name}: {e}")))?;
        let data = cm.map(|cm| {
            let mut d = cm.data.unwrap_or_default();
            for (k, v) in cm.binary_data.unwrap_or_default() {
                d.insert(k, String::from_utf8_lossy(&v.0).into_owned());
            }
            d
        });
        out.configmaps.insert(name, data);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for name in secret_names {
        if out.secrets.contains_key(&name) {
            continue;
        }
        let s = secrets
            .get_opt(&name)
            .await
            .map_err(|e| LabError::Api(format!("getting secret {ns}/{name}: {e}")))?;
        let data = s.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        });
        out.secrets.insert(name, data);
    }
    Ok(out)
}

/// A C_IDENTIFIER-ish name the kubelet accepts for an env var (IsEnvVarName).
fn valid_env_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(|c: char| c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `metadata.labels['key']` → ("metadata.labels", "key").
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (base, rest) = path.split_once("['")?;
    Some((base, rest.strip_suffix("']")?))
}

/// The value of a downward-API `fieldPath`.
pub fn field_value(path: &str, facts: &PodFacts) -> Result<String, ConfigError> {
    let m = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    if let Some((base, key)) = subscript(path) {
        let map = match base {
            "metadata.labels" => m.labels.as_ref(),
            "metadata.annotations" => m.annotations.as_ref(),
            _ => return Err(ConfigError(format!("unsupported fieldPath {path:?}"))),
        };
        return Ok(map.and_then(|l| l.get(key)).cloned().unwrap_or_default());
    }
    let joined = |m: Option<&BTreeMap<String, String>>| {
        m.map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => joined(m.labels.as_ref()),
        "metadata.annotations" => joined(m.annotations.as_ref()),
        "spec.nodeName" => facts.node.to_string(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => facts.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => facts.pod_ips.join(","),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_string(),
        _ => return Err(ConfigError(format!("unsupported fieldPath {path:?}"))),
    })
}

/// The value of a `resourceFieldRef` (see the module docs for undeclared resources).
fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, ConfigError> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| ConfigError(format!("unsupported resource {resource:?}")))?;
    let res = c.resources.as_ref();
    let declared = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(ConfigError(format!("unsupported resource {resource:?}"))),
    }
    .and_then(|m| m.get(name))
    .map(|q| q.0.clone());
    // The declared quantity as written: the divisor is not applied.
    let _ = divisor;
    if let Some(q) = declared {
        return Ok(q);
    }
    match name {
        "cpu" => Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .to_string()),
        "memory" | "ephemeral-storage" => Ok(host_memory_bytes().to_string()),
        _ => Err(ConfigError(format!("unsupported resource {resource:?}"))),
    }
}

fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb.saturating_mul(1024))
}

/// Resolves `c`'s envFrom and env. `base` is what the container gets before them (the
/// `kubernetes` Service variables), used for `$(VAR)` expansion.
pub fn resolve(
    c: &Container,
    facts: &PodFacts,
    sources: &EnvSources,
    base: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = facts
        .pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        out.retain(|(n, _)| *n != k);
        out.push((k, v));
    };
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let (data, kind, name, optional) = if let Some(r) = &f.config_map_ref {
            (
                sources.configmaps.get(&r.name),
                "configmap",
                &r.name,
                r.optional,
            )
        } else if let Some(r) = &f.secret_ref {
            (sources.secrets.get(&r.name), "secret", &r.name, r.optional)
        } else {
            continue;
        };
        match data.and_then(Option::as_ref) {
            Some(d) => {
                for (k, v) in d {
                    let var = format!("{prefix}{k}");
                    // Invalid names are skipped (the kubelet records an event for them).
                    if valid_env_name(&var) {
                        set(&mut out, var, v.clone());
                    }
                }
            }
            None if optional == Some(true) => {}
            None => return Err(ConfigError(format!("{kind} \"{name}\" not found"))),
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(vf)) => {
                if let Some(f) = &vf.field_ref {
                    Some(field_value(&f.field_path, facts)?)
                } else if let Some(r) = &vf.resource_field_ref {
                    Some(resource_value(
                        c,
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                    )?)
                } else if let Some(r) = &vf.config_map_key_ref {
                    key_ref(
                        &sources.configmaps,
                        "configmap",
                        "ConfigMap",
                        &ns,
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else if let Some(r) = &vf.secret_key_ref {
                    key_ref(
                        &sources.secrets,
                        "secret",
                        "Secret",
                        &ns,
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else {
                    None
                }
            }
            (Some(v), None) => {
                let mut scope: Vec<(String, String)> = base.to_vec();
                scope.extend(out.iter().cloned());
                Some(expand(v, &scope))
            }
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            set(&mut out, e.name.clone(), v);
        }
    }
    Ok(out)
}

/// A `configMapKeyRef`/`secretKeyRef`: Ok(None) when optional and missing.
fn key_ref(
    sources: &BTreeMap<String, Option<BTreeMap<String, String>>>,
    kind: &str,
    kind_title: &str,
    ns: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, ConfigError> {
    let optional = optional == Some(true);
    match sources.get(name).and_then(Option::as_ref) {
        None if optional => Ok(None),
        None => Err(ConfigError(format!("{kind} \"{name}\" not found"))),
        Some(d) => match d.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError(format!(
                "couldn't find key {key} in {kind_title} {ns}/{name}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "agent-x", "namespace": "kube-system", "uid": "u-1",
                         "labels": {"app": "agent", "tier": "node"}},
            "spec": {"nodeName": "node-1", "serviceAccountName": "sarasa", "containers": [{"name": "c"}]}
        }))
        .unwrap()
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    fn sources() -> EnvSources {
        let mut s = EnvSources::default();
        s.configmaps.insert(
            "cfg".into(),
            Some(BTreeMap::from([
                ("mode".into(), "fast".into()),
                ("bad key".into(), "x".into()),
            ])),
        );
        s.configmaps.insert("gone".into(), None);
        s.secrets.insert(
            "tok".into(),
            Some(BTreeMap::from([("token".into(), "s3cret".into())])),
        );
        s
    }

    #[test]
    fn downward_api_config_and_secret_values() {
        let p = pod();
        let ips = ["10.244.1.5".to_string(), "fd00::5".to_string()];
        let facts = PodFacts {
            pod: &p,
            node: "node-1",
            pod_ips: &ips,
            host_ip: "192.168.33.11",
        };
        let c = container(json!({"name": "c",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "tok"}}],
            "env": [
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                {"name": "GREETING", "value": "on $(NODE_NAME) in $(NS), $$(NS)"}
            ],
            "resources": {"limits": {"memory": "64Mi"}}}));
        let env: BTreeMap<String, String> = resolve(&c, &facts, &sources(), &[])
            .unwrap()
            .into_iter()
            .collect();
        let want = [
            ("CFG_mode", "fast"),
            ("token", "s3cret"),
            ("NODE_NAME", "node-1"),
            ("NS", "kube-system"),
            ("UID", "u-1"),
            ("APP", "agent"),
            ("SA", "sarasa"),
            ("IPS", "10.244.1.5,fd00::5"),
            ("HOST", "192.168.33.11"),
            ("MODE", "fast"),
            ("TOKEN", "s3cret"),
            ("MEM", "64Mi"),
            ("GREETING", "on node-1 in kube-system, $(NS)"),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!env.contains_key("OPT"));
        assert!(!env.contains_key("CFG_bad key"));
    }

    #[test]
    fn missing_required_sources_and_keys_are_config_errors() {
        let p = pod();
        let facts = PodFacts {
            pod: &p,
            node: "n",
            pod_ips: &[],
            host_ip: "",
        };
        let err = |v| {
            resolve(&container(v), &facts, &sources(), &[])
                .unwrap_err()
                .0
        };
        assert_eq!(
            err(
                json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]})
            ),
            "couldn't find key nope in ConfigMap kube-system/cfg"
        );
        assert_eq!(
            err(
                json!({"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]})
            ),
            "secret \"absent\" not found"
        );
        assert_eq!(
            err(json!({"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]})),
            "configmap \"gone\" not found"
        );
        let optional = container(
            json!({"name": "c", "envFrom": [{"configMapRef": {"name": "gone", "optional": true}}],
            "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "nope", "optional": true}}}]}),
        );
        assert!(resolve(&optional, &facts, &sources(), &[])
            .unwrap()
            .is_empty());
    }
}
