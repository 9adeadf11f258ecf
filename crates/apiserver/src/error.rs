//! Errors: API errors rendered as `Status` objects the way kube-apiserver words them, and the
//! library's own errors (opening state, serving).

use serde_json::{json, Value};

use crate::resources::RESOURCES;
use crate::resources::{ResId, Resource};

/// Errors of opening and running the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {detail}")]
    Corrupt { path: String, detail: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// The kind of a field error, as in k8s.io/apimachinery/pkg/util/validation/field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    Invalid,
    Required,
    Duplicate,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
}

/// One validation failure at a field path.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: FieldErrorType,
    pub field: String,
    /// The offending value rendered for the message (empty when not shown).
    pub value: String,
    pub detail: String,
}

impl FieldError {
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(FieldErrorType::Invalid, field, value, detail)
    }
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Required, field, "", detail)
    }
    pub fn duplicate(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Duplicate, field, value, "")
    }
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<String>,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            FieldErrorType::NotSupported,
            field,
            value,
            format!("supported values: {}", list.join(", ")),
        )
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorType::Forbidden, field, "", detail)
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(
            FieldErrorType::TooLong,
            field,
            "",
            format!("may not be more than {max} bytes"),
        )
    }
    /// A list longer than allowed (`Too many: 3: must have at most 2 items`).
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        Self::new(
            FieldErrorType::TooMany,
            field,
            actual.to_string(),
            format!("must have at most {max} items"),
        )
    }
    fn new(
        kind: FieldErrorType,
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind,
            field: field.into(),
            value: value.into(),
            detail: detail.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorType::Invalid => "FieldValueInvalid",
            FieldErrorType::Required => "FieldValueRequired",
            FieldErrorType::Duplicate => "FieldValueDuplicate",
            FieldErrorType::NotSupported => "FieldValueNotSupported",
            FieldErrorType::Forbidden => "FieldValueForbidden",
            FieldErrorType::TooLong => "FieldValueTooLong",
            FieldErrorType::TooMany => "FieldValueTooMany",
        }
    }

    /// The message without the field path: `Invalid value: 70000: must be between ...`.
    pub fn body(&self) -> String {
        let head = match self.kind {
            FieldErrorType::Invalid => "Invalid value",
            FieldErrorType::Required => "Required value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::NotSupported => "Unsupported value",
            FieldErrorType::Forbidden => "Forbidden",
            FieldErrorType::TooLong => "Too long",
            FieldErrorType::TooMany => "Too many",
        };
        let mut s = head.to_string();
        if !self.value.is_empty() {
            s.push_str(": ");
            s.push_str(&self.value);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Renders a string value the way Go's `%q` does in field errors.
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

/// An API error: HTTP code, reason and message of a `Status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

fn details(res: &Resource, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": res.plural});
    if !res.group.is_empty() {
        d["group"] = json!(res.group);
    }
    d
}

impl ApiError {
    pub fn not_found(res: ResId, name: &str) -> Self {
        let r = &RESOURCES[res];
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} {:?} not found", r.qualified(), name),
            details: Some(details(r, name)),
        }
    }

    pub fn already_exists(res: ResId, name: &str) -> Self {
        let r = &RESOURCES[res];
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} {:?} already exists", r.qualified(), name),
            details: Some(details(r, name)),
        }
    }

    pub fn conflict(res: ResId, name: &str, why: &str) -> Self {
        let r = &RESOURCES[res];
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} {:?}: {why}",
                r.qualified(),
                name
            ),
            details: Some(details(r, name)),
        }
    }

    pub fn modified(res: ResId, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid listing every field error.
    pub fn invalid(res: ResId, name: &str, errors: Vec<FieldError>) -> Self {
        let r = &RESOURCES[res];
        let list = if errors.len() == 1 {
            errors[0].to_string()
        } else {
            format!(
                "[{}]",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
            .collect();
        let mut d = json!({"name": name, "kind": r.kind, "causes": causes});
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{} {:?} is invalid: {list}", r.kind, name),
            details: Some(d),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    pub fn forbidden(res: ResId, name: &str, why: &str) -> Self {
        let r = &RESOURCES[res];
        ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!("{} {:?} is forbidden: {why}", r.qualified(), name),
            details: Some(details(r, name)),
        }
    }

    /// 401: no valid credentials (kube-apiserver says no more than this).
    pub fn unauthorized() -> Self {
        ApiError {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        }
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: message.into(),
            details: None,
        }
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"),
            details: None,
        }
    }

    pub fn path_not_found(path: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({path})"),
            details: None,
        }
    }

    pub fn expired(message: impl Into<String>) -> Self {
        ApiError {
            code: 410,
            reason: "Expired",
            message: message.into(),
            details: None,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            code: 503,
            reason: "ServiceUnavailable",
            message: message.into(),
            details: None,
        }
    }

    /// 413: a request body over the server's limit (kube-apiserver's wording).
    pub fn too_large(limit: usize) -> Self {
        ApiError {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: format!("Request entity too large: limit is {limit}"),
            details: None,
        }
    }

    /// 429: over the in-flight budget (kube-apiserver's max-in-flight filter's wording).
    pub fn too_many_requests() -> Self {
        ApiError {
            code: 429,
            reason: "TooManyRequests",
            message: "Too many requests, please try again later.".into(),
            details: Some(json!({"retryAfterSeconds": 1})),
        }
    }

    /// 408: the request did not arrive in time.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        ApiError {
            code: 408,
            reason: "Timeout",
            message: message.into(),
            details: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            code: 500,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }

    /// The state directory is full: HTTP 507 Insufficient Storage (reason InternalError, as
    /// kube-apiserver reports storage failures); reads and watches go on.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        ApiError {
            code: 507,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}
