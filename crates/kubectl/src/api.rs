//! The typed-object ⇄ API plumbing shared by apply, get and delete: one dynamic `Api` per kind,
//! and API errors turned into messages naming the object and field.

use crate::error::KubectlError;
use crate::kind::ResourceKind;
use crate::object::Object;
use kube::api::{Api, DynamicObject};
use kube::core::Status;
use kube::Client;

/// The namespace used when neither the object nor the command names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The API of `kind`, in `namespace` for namespaced kinds (all namespaces if `None`).
pub(crate) fn api(
    client: &Client,
    kind: ResourceKind,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let resource = kind.api_resource();
    match namespace {
        Some(ns) if kind.namespaced() => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    }
}

pub(crate) fn to_dynamic(object: &Object) -> Result<DynamicObject, KubectlError> {
    serde_json::from_value(object.to_json()).map_err(|error| KubectlError::Decode {
        what: object.reference(),
        error,
    })
}

/// The server's JSON for an object, with `apiVersion`/`kind` filled in (list items lack them).
pub(crate) fn dynamic_json(kind: ResourceKind, object: &DynamicObject) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), kind.api_version().into());
        map.insert("kind".into(), kind.kind().into());
    }
    value
}

pub(crate) fn from_dynamic(
    kind: ResourceKind,
    object: &DynamicObject,
) -> Result<Object, KubectlError> {
    Object::from_json(kind, dynamic_json(kind, object)).map_err(|error| KubectlError::Decode {
        what: format!(
            "{}/{}",
            kind.qualified_singular(),
            object.metadata.name.as_deref().unwrap_or("")
        ),
        error,
    })
}

pub(crate) fn status(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    status(e).is_some_and(|s| s.code == 404 || s.reason == "NotFound")
}

pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    status(e).is_some_and(|s| s.code == 409 || s.reason == "Conflict")
}

/// The server's message, plus every cause (`field: message`) the message does not already say.
pub(crate) fn describe(e: &kube::Error) -> String {
    let Some(status) = status(e) else {
        // Transport errors: the whole chain ("connection refused" is at the bottom).
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            source = s.source();
        }
        return text;
    };
    let mut text = if status.message.is_empty() {
        format!("{} ({})", status.reason, status.code)
    } else {
        status.message.clone()
    };
    for cause in status.details.iter().flat_map(|d| d.causes.iter()) {
        let line = match cause.field.as_str() {
            "" => cause.message.clone(),
            field => format!("{field}: {}", cause.message),
        };
        if !line.is_empty() && !text.contains(&cause.message) {
            text.push_str("; ");
            text.push_str(&line);
        }
    }
    text
}

/// `pods "web" not found in namespace "shop"`.
pub(crate) fn not_found(kind: ResourceKind, name: &str, namespace: Option<&str>) -> KubectlError {
    let mut message = format!("{} {name:?} not found", kind.qualified_plural());
    if let (true, Some(ns)) = (kind.namespaced(), namespace) {
        message.push_str(&format!(" in namespace {ns:?}"));
    }
    KubectlError::NotFound(message)
}
