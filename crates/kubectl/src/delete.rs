//! `delete KIND NAME [-n NS]` and `delete -f FILE`.

use crate::api::{self, describe, is_not_found, not_found, DEFAULT_NAMESPACE};
use crate::error::KubectlError;
use crate::get::parse_kind_name;
use crate::kind::ResourceKind;
use crate::manifest::Manifest;
use kube::api::DeleteParams;
use kube::Client;
use std::io::Write;

/// Deletes one object; prints `pod "web" deleted`. `kind` is any kubectl name or alias;
/// `namespace` defaults to `default` for namespaced kinds. A missing object is
/// [`KubectlError::NotFound`].
pub async fn delete(
    client: &Client,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    out: &mut (dyn Write + Send),
) -> Result<(), KubectlError> {
    let (kind, _) = parse_kind_name(kind)?;
    delete_one(
        client,
        kind,
        name,
        namespace.or(Some(DEFAULT_NAMESPACE)),
        out,
    )
    .await
}

/// Deletes every object of the manifests (in reverse order, Namespaces last), continuing past
/// failures; every failure (e.g. not found) is reported at the end as one error.
/// `namespace` (`-n`) is used for objects without one.
pub async fn delete_manifests(
    client: &Client,
    manifests: &[Manifest],
    namespace: Option<&str>,
    out: &mut (dyn Write + Send),
) -> Result<(), KubectlError> {
    let mut ordered: Vec<&Manifest> = manifests.iter().rev().collect();
    ordered.sort_by_key(|m| m.object.kind() == ResourceKind::Namespace);
    let mut failures = Vec::new();
    for m in ordered {
        let ns = m
            .object
            .namespace()
            .or(namespace)
            .or(Some(DEFAULT_NAMESPACE));
        match delete_one(client, m.object.kind(), m.object.name(), ns, out).await {
            Ok(()) => {}
            Err(KubectlError::Output(e)) => return Err(KubectlError::Output(e)),
            Err(e) => failures.push(format!("{}: {e}", m.origin())),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(KubectlError::Failed(failures.join("\n")))
    }
}

async fn delete_one(
    client: &Client,
    kind: ResourceKind,
    name: &str,
    namespace: Option<&str>,
    out: &mut (dyn Write + Send),
) -> Result<(), KubectlError> {
    let api = api::api(client, kind, namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            writeln!(out, "{} {name:?} deleted", kind.qualified_singular())?;
            Ok(())
        }
        Err(e) if is_not_found(&e) => Err(not_found(kind, name, namespace)),
        Err(e) => Err(KubectlError::Failed(format!(
            "cannot delete {}/{name}: {}",
            kind.qualified_singular(),
            describe(&e)
        ))),
    }
}
