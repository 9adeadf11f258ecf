//! The ServiceAccount admission plugin, on pod create: defaults `serviceAccountName` to
//! `default`, refuses a pod whose ServiceAccount does not exist, and — unless the pod or its
//! ServiceAccount sets `automountServiceAccountToken: false` — adds the projected
//! `kube-api-access-<suffix>` volume (a bound token, the cluster CA, the namespace) and mounts it
//! read-only where in-cluster clients look for it, in every container and init container.

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::meta;
use crate::resources::{PODS, SERVICEACCOUNTS};
use crate::store::Inner;

/// Where in-cluster clients read `token`, `ca.crt` and `namespace`.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Prefix of the volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// Lifetime the kubelet asks for the mounted token (kube-apiserver's 3607 s).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The ConfigMap the root-CA publisher keeps in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The ServiceAccount every namespace has and pods run as by default.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The projected volume the plugin adds.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        }
    })
}

fn has_mount_at(container: &Value, path: &str) -> bool {
    container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .is_some_and(|ms| {
            ms.iter().any(|m| {
                m.get("mountPath")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.trim_end_matches('/') == path)
            })
        })
}

/// Runs the plugin on a pod being created in `ns`.
pub fn admit_pod(inner: &Inner, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    let pod_name = meta::name(pod).to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let sa_name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa_name));
    spec.insert("serviceAccount".into(), json!(sa_name));
    let sa = inner.get(SERVICEACCOUNTS, ns, &sa_name);
    // The namespace's `default` is made by a controller right after the namespace; a pod that
    // races it is admitted (its token is requested once the account exists) instead of refused.
    if sa.is_none() && sa_name != DEFAULT_SERVICE_ACCOUNT {
        return Err(ApiError::forbidden(
            PODS,
            &pod_name,
            &format!(
                "error looking up service account {ns}/{sa_name}: serviceaccount {sa_name:?} not found"
            ),
        ));
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.and_then(|sa| sa.get("automountServiceAccountToken"))
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let needs = ["containers", "initContainers"].iter().any(|k| {
        spec.get(*k)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| !has_mount_at(c, MOUNT_PATH)))
    });
    if !needs {
        return Ok(());
    }
    let volume_name = format!("{VOLUME_PREFIX}{}", meta::random_suffix(5));
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if !volumes.is_array() {
        *volumes = json!([]);
    }
    if let Value::Array(vs) = volumes {
        vs.push(token_volume(&volume_name));
    }
    for k in ["containers", "initContainers"] {
        let Some(Value::Array(cs)) = spec.get_mut(k) else {
            continue;
        };
        for c in cs.iter_mut().filter(|c| !has_mount_at(c, MOUNT_PATH)) {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            if let Value::Array(ms) = mounts {
                let mut m = Map::new();
                m.insert("name".into(), json!(volume_name));
                m.insert("readOnly".into(), json!(true));
                m.insert("mountPath".into(), json!(MOUNT_PATH));
                ms.push(Value::Object(m));
            }
        }
    }
    Ok(())
}
