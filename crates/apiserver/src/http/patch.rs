//! PATCH: JSON merge patch, JSON patch (RFC 6902), strategic merge patch (applied as a merge
//! patch) and server-side apply (create, or merge into the stored object).

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::{scale_of, status};
use crate::meta;
use crate::resources::ResId;
use crate::store::{Store, Sub, WriteOpts};

enum Kind {
    Merge,
    Json,
    Apply,
}

fn kind(headers: &HeaderMap) -> Result<Kind, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let base = ct.split(';').next().unwrap_or("").trim();
    match base {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            Ok(Kind::Merge)
        }
        "application/json-patch+json" => Ok(Kind::Json),
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Kind::Apply),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// The object-shaped document of a merge, strategic merge or apply patch (what field
/// validation checks); None for JSON patches and bodies that do not parse.
pub fn document(headers: &HeaderMap, body: &Bytes) -> Option<Value> {
    match kind(headers).ok()? {
        Kind::Merge => serde_json::from_slice(body).ok(),
        Kind::Apply => serde_norway::from_slice(body).ok(),
        Kind::Json => None,
    }
}

/// Applies a patch document to a JSON value.
fn apply_patch(doc: &Value, k: &Kind, patch: &Value) -> Result<Value, ApiError> {
    let mut out = doc.clone();
    match k {
        Kind::Merge | Kind::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut out, patch);
        }
        Kind::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut out, &p).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the JSON patch could not be applied: {e}"),
                details: None,
            })?;
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub fn patch(
    store: &Store,
    res: ResId,
    ns: &str,
    name: &str,
    sub: Sub,
    is_scale: bool,
    headers: &HeaderMap,
    body: &Bytes,
    opts: WriteOpts,
) -> Result<Response, ApiError> {
    let k = kind(headers)?;
    let patch_doc: Value = match k {
        Kind::Apply => serde_norway::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
        _ => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
    };
    if is_scale {
        let updated = store.modify(res, ns, name, Sub::Main, opts, |cur| {
            let scale = apply_patch(&scale_of(cur), &k, &patch_doc)?;
            let mut new = cur.clone();
            new["spec"]["replicas"] = meta::path(&scale, "spec.replicas")
                .cloned()
                .unwrap_or(json!(0));
            let rv = meta::resource_version(&scale).to_string();
            meta::metadata_mut(&mut new).insert("resourceVersion".into(), json!(rv));
            Ok(new)
        })?;
        return Ok(status::json(StatusCode::OK, &scale_of(&updated)));
    }
    let result = store.modify(res, ns, name, sub, opts, |cur| {
        let mut new = apply_patch(cur, &k, &patch_doc)?;
        // A patch that does not name a resourceVersion is unconditional.
        if meta::resource_version(&new) == meta::resource_version(cur) {
            meta::metadata_mut(&mut new).remove("resourceVersion");
        }
        Ok(new)
    });
    match result {
        Ok(obj) => Ok(status::json(StatusCode::OK, obj.as_ref())),
        Err(e) if e.code == 404 && matches!(k, Kind::Apply) && sub == Sub::Main => {
            // Server-side apply of a missing object creates it.
            let mut obj = patch_doc;
            let body_name = meta::name(&obj).to_string();
            if !body_name.is_empty() && body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            meta::metadata_mut(&mut obj).insert("name".into(), json!(name));
            let created = store.create(res, ns, obj, opts)?;
            Ok(status::json(StatusCode::CREATED, created.as_ref()))
        }
        Err(e) => Err(e),
    }
}
