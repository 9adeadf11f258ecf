//! JSON responses and `Status` objects.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::meta;
use crate::resources::{ResId, RESOURCES};

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(code: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap_or_default()
}

/// A failure `Status` with its HTTP code.
pub fn error(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(code, &e.to_status())
}

/// The success `Status` kube-apiserver returns for an immediate delete.
pub fn success(res: ResId, obj: &Value) -> Value {
    let r = &RESOURCES[res];
    let mut details = json!({"name": meta::name(obj), "kind": r.plural, "uid": meta::uid(obj)});
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
