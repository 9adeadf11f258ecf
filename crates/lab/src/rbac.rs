//! `lab up` applies deploy/rbac.yaml (the ServiceAccounts, roles and bindings of sarasa-agent
//! and sarasa-dns) once the API answers, as an install on a real cluster does; the manifest is
//! compiled in. Objects that already exist are left as they are.

use std::time::Instant;

use serde_json::Value;

use crate::spec::LabSpec;
use crate::LabError;

/// deploy/rbac.yaml as shipped.
pub const MANIFEST: &str = include_str!("../../../deploy/rbac.yaml");
const MANIFEST_NAME: &str = "deploy/rbac.yaml";

/// The objects of the manifest, each with the collection path it is created at.
pub fn objects() -> Result<Vec<(String, Value)>, LabError> {
    crate::manifest::parse(MANIFEST_NAME, MANIFEST)?
        .into_iter()
        .map(|v| Ok((crate::manifest::collection_path(MANIFEST_NAME, &v)?, v)))
        .collect()
}

/// Creates every object of the manifest, retrying until `deadline` while the API is not up yet.
pub fn apply(spec: &LabSpec, deadline: Instant) -> Result<(), LabError> {
    let objects = objects()?.into_iter().map(|(_, v)| v).collect();
    crate::manifest::apply(spec, MANIFEST_NAME, objects, deadline)
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
