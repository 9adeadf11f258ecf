//! `lab up` applies deploy/rbac.yaml (the ServiceAccounts, roles and bindings of sarasa-agent
//! and sarasa-dns) once the API answers, as an install on a real cluster does; the manifest is
//! compiled in. Objects that already exist are left as they are.

use std::time::{Duration, Instant};

use kube::client::Body;
use serde_json::Value;

use crate::spec::LabSpec;
use crate::LabError;

/// deploy/rbac.yaml as shipped.
pub const MANIFEST: &str = include_str!("../../../deploy/rbac.yaml");

/// The objects of the manifest, each with the collection path it is created at.
pub fn objects() -> Result<Vec<(String, Value)>, LabError> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(MANIFEST) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| LabError::Invalid(format!("deploy/rbac.yaml: {e}")))?;
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or("");
        let (base, plural) = match kind {
            "ServiceAccount" => ("/api/v1", "serviceaccounts"),
            "ClusterRole" => ("/apis/rbac.authorization.k8s.io/v1", "clusterroles"),
            "ClusterRoleBinding" => ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings"),
            "Role" => ("/apis/rbac.authorization.k8s.io/v1", "roles"),
            "RoleBinding" => ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
            other => {
                return Err(LabError::Invalid(format!(
                    "deploy/rbac.yaml: unexpected kind {other:?}"
                )))
            }
        };
        let path = match v["metadata"]["namespace"].as_str() {
            Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
            None => format!("{base}/{plural}"),
        };
        out.push((path, v));
    }
    Ok(out)
}

/// Creates every object of the manifest, retrying until `deadline` while the API is not up yet.
pub fn apply(spec: &LabSpec, deadline: Instant) -> Result<(), LabError> {
    let objects = objects()?;
    crate::client::with_client(spec, |client| async move {
        for (path, obj) in objects {
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
                            "applying deploy/rbac.yaml: POST {path}: {code}: {}",
                            String::from_utf8_lossy(&body)
                        )));
                    }
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!("API not answering yet ({e}); retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        return Err(LabError::Api(format!(
                            "applying deploy/rbac.yaml: POST {path}: {e}"
                        )))
                    }
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_manifest_holds_both_identities_and_their_bindings() {
        let objects = super::objects().expect("parses");
        let names: Vec<(String, String)> = objects
            .iter()
            .map(|(p, v)| {
                (
                    p.clone(),
                    v["metadata"]["name"].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        for want in [
            (
                "/api/v1/namespaces/sarasa-system/serviceaccounts",
                "sarasa-agent",
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                "sarasa-agent",
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                "sarasa-agent",
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/namespaces/sarasa-system/roles",
                "sarasa-agent",
            ),
            (
                "/api/v1/namespaces/kube-system/serviceaccounts",
                "sarasa-dns",
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                "sarasa-dns",
            ),
        ] {
            assert!(names.contains(&(want.0.into(), want.1.into())), "{want:?}");
        }
    }
}
