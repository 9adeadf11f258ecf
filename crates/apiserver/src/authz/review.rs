//! SelfSubjectAccessReview and SelfSubjectRulesReview (authorization.k8s.io/v1): a user asks
//! whether it may do something (`kubectl auth can-i`) or what it may do in a namespace
//! (`kubectl auth can-i --list`). Answered from the same authorizer that guards requests.

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{Attributes, AuthorizationMode, Authorizer, Decision};
use crate::error::{ApiError, FieldError};
use crate::http::status;

const GROUP: &str = "authorization.k8s.io";
const SSAR: &str = "selfsubjectaccessreviews";
const SSRR: &str = "selfsubjectrulesreviews";

/// Whether the request creates one of the reviews.
pub fn is_review(a: &Attributes) -> bool {
    a.resource_request
        && a.verb == "create"
        && a.api_group == GROUP
        && a.api_version == "v1"
        && a.name.is_empty()
        && a.namespace.is_empty()
        && (a.resource == SSAR || a.resource == SSRR)
}

fn invalid(kind: &str, errs: Vec<FieldError>) -> ApiError {
    let list: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": "FieldValueInvalid", "message": e.body(), "field": e.field}))
        .collect();
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("{kind}.{GROUP} \"\" is invalid: {}", list.join(", ")),
        details: Some(json!({"kind": kind, "group": GROUP, "causes": causes})),
    }
}

/// Answers a review request (the caller has been allowed to create it).
pub async fn serve(authz: &Authorizer, a: &Attributes, req: Request) -> Response {
    if req.method() != Method::POST {
        return status::error(&ApiError::method_not_allowed("reviews are only created"));
    }
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(e) => return status::error(&ApiError::bad_request(format!("reading the body: {e}"))),
    };
    // JSON, YAML or Kubernetes protobuf (kubectl's typed client sends protobuf).
    let review = match crate::http::parse_body(&headers, &body) {
        Ok(v) => v,
        Err(e) => return status::error(&e),
    };
    let out = if a.resource == SSAR {
        access_review(authz, a, review)
    } else {
        rules_review(authz, a, review)
    };
    match out {
        Ok(v) => status::json(StatusCode::CREATED, &v),
        Err(e) => status::error(&e),
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// SelfSubjectAccessReview: `status.allowed` for the attributes of `spec`, for the caller.
pub fn access_review(
    authz: &Authorizer,
    a: &Attributes,
    mut review: Value,
) -> Result<Value, ApiError> {
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let res = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let asked = match (res, non) {
        (Some(r), None) => Attributes {
            user: a.user.clone(),
            verb: str_at(r, "verb").into(),
            resource_request: true,
            api_group: str_at(r, "group").into(),
            api_version: str_at(r, "version").into(),
            namespace: str_at(r, "namespace").into(),
            resource: str_at(r, "resource").into(),
            subresource: str_at(r, "subresource").into(),
            name: str_at(r, "name").into(),
            path: String::new(),
        },
        (None, Some(n)) => Attributes {
            user: a.user.clone(),
            verb: str_at(n, "verb").into(),
            path: str_at(n, "path").into(),
            ..Attributes::default()
        },
        (Some(_), Some(_)) => {
            return Err(invalid(
                "SelfSubjectAccessReview",
                vec![FieldError::invalid(
                    "spec.nonResourceAttributes",
                    "",
                    "cannot be specified in combination with resourceAttributes",
                )],
            ))
        }
        (None, None) => {
            return Err(invalid(
                "SelfSubjectAccessReview",
                vec![FieldError::invalid(
                    "spec.resourceAttributes",
                    "\"null\"",
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                )],
            ))
        }
    };
    let allowed = authz.authorize(&asked) == Decision::Allow;
    let mut status = json!({"allowed": allowed});
    if allowed && authz.mode == AuthorizationMode::Rbac {
        status["reason"] = json!(if a.user.in_group(crate::user::UserInfo::MASTERS) {
            "allowed: the user is in system:masters".to_string()
        } else {
            "RBAC: allowed by a binding of the user or one of its groups".to_string()
        });
    }
    set_common(&mut review, "SelfSubjectAccessReview");
    review["status"] = status;
    Ok(review)
}

/// SelfSubjectRulesReview: every rule the caller holds in `spec.namespace`.
pub fn rules_review(
    authz: &Authorizer,
    a: &Attributes,
    mut review: Value,
) -> Result<Value, ApiError> {
    let ns = review
        .get("spec")
        .map(|s| str_at(s, "namespace").to_string())
        .unwrap_or_default();
    let rules = if authz.mode == AuthorizationMode::AlwaysAllow {
        vec![
            super::rules::Rule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                ..Default::default()
            },
            super::rules::Rule {
                verbs: vec!["*".into()],
                non_resource_urls: vec!["*".into()],
                ..Default::default()
            },
        ]
    } else {
        authz.refresh();
        authz.index().rules_for(&a.user, &ns)
    };
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if r.non_resource_urls.is_empty() {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(v);
        } else {
            non_resource_rules
                .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    set_common(&mut review, "SelfSubjectRulesReview");
    review["status"] = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": false,
    });
    Ok(review)
}

fn set_common(review: &mut Value, kind: &str) {
    if !review.is_object() {
        *review = json!({});
    }
    review["apiVersion"] = json!(format!("{GROUP}/v1"));
    review["kind"] = json!(kind);
    if review.get("metadata").is_none_or(|m| !m.is_object()) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
}
