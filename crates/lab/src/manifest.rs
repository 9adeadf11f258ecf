//! Applying a shipped manifest of deploy/ to a lab, as `kubectl create -f` would: each object
//! is POSTed to its collection; one that exists already is left as it is. The manifests are
//! compiled in, so the binary carries the files it ships with.

use std::time::{Duration, Instant};

use kube::client::Body;
use serde_json::Value;

use crate::spec::LabSpec;
use crate::LabError;

/// The objects of the YAML stream `text` (named `name` in errors), in order.
pub fn parse(name: &str, text: &str) -> Result<Vec<Value>, LabError> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| LabError::Invalid(format!("{name}: {e}")))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The collection path an object of the kinds deploy/ holds is created at.
pub fn collection_path(name: &str, obj: &Value) -> Result<String, LabError> {
    let kind = obj["kind"].as_str().unwrap_or("");
    let (base, plural, namespaced) = match kind {
        "Namespace" => ("/api/v1", "namespaces", false),
        "ConfigMap" => ("/api/v1", "configmaps", true),
        "ServiceAccount" => ("/api/v1", "serviceaccounts", true),
        "Service" => ("/api/v1", "services", true),
        "DaemonSet" => ("/apis/apps/v1", "daemonsets", true),
        "Deployment" => ("/apis/apps/v1", "deployments", true),
        "ClusterRole" => ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", false),
        "ClusterRoleBinding" => (
            "/apis/rbac.authorization.k8s.io/v1",
            "clusterrolebindings",
            false,
        ),
        "Role" => ("/apis/rbac.authorization.k8s.io/v1", "roles", true),
        "RoleBinding" => ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", true),
        other => {
            return Err(LabError::Invalid(format!(
                "{name}: unexpected kind {other:?}"
            )))
        }
    };
    if !namespaced {
        return Ok(format!("{base}/{plural}"));
    }
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    Ok(format!("{base}/namespaces/{ns}/{plural}"))
}

/// Creates every object (`name` is the manifest's, for errors), retrying until `deadline`
/// while the API is not up yet.
pub fn apply(
    spec: &LabSpec,
    name: &str,
    objects: Vec<Value>,
    deadline: Instant,
) -> Result<(), LabError> {
    let mut posts = Vec::with_capacity(objects.len());
    for obj in objects {
        posts.push((collection_path(name, &obj)?, obj));
    }
    let name = name.to_string();
    crate::client::with_client(spec, |client| async move {
        for (path, obj) in posts {
            loop {
                let req = http::Request::builder()
                    .method(http::Method::POST)
                    .uri(&path)
                    .header("content-type", "application/json")
                    .body(Body::from(obj.to_string().into_bytes()))
                    .map_err(|e| LabError::Api(format!("building a request: {e}")))?;
                match client.send(req).await {
                    // Created, or there already.
                    Ok(r) if r.status().is_success() || r.status().as_u16() == 409 => break,
                    Ok(r) => {
                        let code = r.status();
                        let body = r.into_body().collect_bytes().await.unwrap_or_default();
                        return Err(LabError::Api(format!(
                            "applying {name}: POST {path}: {code}: {}",
                            String::from_utf8_lossy(&body)
                        )));
                    }
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!("API not answering yet ({e}); retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        return Err(LabError::Api(format!("applying {name}: POST {path}: {e}")))
                    }
                }
            }
        }
        Ok(())
    })
}
