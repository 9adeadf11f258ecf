//! Escalation prevention, as kube-apiserver's RBAC storage does it: a user may create or update
//! a Role/ClusterRole only if it already holds every permission the role grants (or may
//! `escalate` it), and a RoleBinding/ClusterRoleBinding only if it holds every permission of the
//! role it binds (or may `bind` that role). Only cluster admins may set an `aggregationRule`.
//!
//! The object checked is the one the write would store: the request first runs as a dry run,
//! so creates, updates and every patch type are judged on their result.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use super::rules::{uncovered, Rule};
use super::{forbidden_write, Attributes, AuthorizationMode, Authorizer, Decision};
use crate::error::ApiError;
use crate::http::status;
use crate::user::UserInfo;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Whether the request writes a role or binding and must pass the escalation check.
pub fn applies(authz: &Authorizer, a: &Attributes) -> bool {
    authz.mode == AuthorizationMode::Rbac
        && !a.user.in_group(UserInfo::MASTERS)
        && a.resource_request
        && a.api_group == RBAC_GROUP
        && a.subresource.is_empty()
        && matches!(a.verb.as_str(), "create" | "update" | "patch")
        && matches!(
            a.resource.as_str(),
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
        )
}

/// Runs the write as a dry run, checks the object it would store, then runs it for real.
pub async fn guarded(authz: &Authorizer, a: &Attributes, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return status::error(&ApiError::bad_request(format!("reading the body: {e}"))),
    };
    let already_dry = parts
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "dryRun=All"));
    let dry_uri = match parts.uri.query() {
        Some(q) if already_dry => format!("{}?{q}", parts.uri.path()),
        Some(q) => format!("{}?{q}&dryRun=All", parts.uri.path()),
        None => format!("{}?dryRun=All", parts.uri.path()),
    };
    let mut dry = Request::new(Body::from(body.clone()));
    *dry.method_mut() = parts.method.clone();
    *dry.headers_mut() = parts.headers.clone();
    *dry.extensions_mut() = parts.extensions.clone();
    match dry_uri.parse() {
        Ok(u) => *dry.uri_mut() = u,
        Err(_) => return status::error(&ApiError::bad_request("malformed request URI")),
    }
    let resp = next.clone().run(dry).await;
    if !resp.status().is_success() {
        return resp;
    }
    let (rparts, rbody) = resp.into_parts();
    let rbytes = match axum::body::to_bytes(rbody, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return status::error(&ApiError::internal(format!("reading the dry run: {e}"))),
    };
    let obj: Value = match serde_json::from_slice(&rbytes) {
        Ok(v) => v,
        Err(e) => return status::error(&ApiError::internal(format!("decoding the dry run: {e}"))),
    };
    if let Err(e) = check(authz, a, &obj) {
        return status::error(&e);
    }
    if already_dry {
        return Response::from_parts(rparts, Body::from(rbytes));
    }
    next.run(Request::from_parts(parts, Body::from(body))).await
}

fn missing_message(user: &UserInfo, missing: &[Rule]) -> String {
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let rules: Vec<String> = missing.iter().map(Rule::compact).collect();
    format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        rules.join("\n")
    )
}

/// The escalation check of the role or binding `obj` written as `a` describes.
pub fn check(authz: &Authorizer, a: &Attributes, obj: &Value) -> Result<(), ApiError> {
    authz.refresh();
    let ns = a.namespace.as_str();
    let name = crate::meta::name(obj).to_string();
    let may = |verb: &str, resource: &str, target: &str| {
        let probe = Attributes {
            user: a.user.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: RBAC_GROUP.into(),
            namespace: ns.into(),
            resource: resource.into(),
            name: target.into(),
            ..Attributes::default()
        };
        authz.authorize(&probe) == Decision::Allow
    };
    let index = authz.index();
    let wanted: Vec<Rule> = match a.resource.as_str() {
        "roles" | "clusterroles" => {
            if may("escalate", &a.resource, &name) {
                return Ok(());
            }
            if a.resource == "clusterroles"
                && obj.get("aggregationRule").is_some_and(|r| !r.is_null())
            {
                let full = vec![
                    Rule {
                        verbs: vec!["*".into()],
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        ..Rule::default()
                    },
                    Rule {
                        verbs: vec!["*".into()],
                        non_resource_urls: vec!["*".into()],
                        ..Rule::default()
                    },
                ];
                if !uncovered(&index.rules_for(&a.user, ns), &full).is_empty() {
                    return Err(forbidden_write(
                        a,
                        &name,
                        "must have cluster-admin privileges to use the aggregationRule".into(),
                    ));
                }
                return Ok(());
            }
            let rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule> = match obj.get("rules") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|e| ApiError::bad_request(format!("decoding the rules: {e}")))?,
            };
            rules.iter().map(Rule::from_policy).collect()
        }
        _ => {
            let kind = crate::meta::path_str(obj, "roleRef.kind").unwrap_or("");
            let role = crate::meta::path_str(obj, "roleRef.name").unwrap_or("");
            let role_resource = if kind == "ClusterRole" {
                "clusterroles"
            } else {
                "roles"
            };
            if may("bind", role_resource, role) {
                return Ok(());
            }
            match index.role_rules(kind, ns, role) {
                Some(rules) => rules.as_ref().clone(),
                None => {
                    let what = if kind == "ClusterRole" {
                        "clusterrole"
                    } else {
                        "role"
                    };
                    return Err(forbidden_write(
                        a,
                        &name,
                        format!("{what}.{RBAC_GROUP} {role:?} not found"),
                    ));
                }
            }
        }
    };
    let missing = uncovered(&index.rules_for(&a.user, ns), &wanted);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(forbidden_write(
            a,
            &name,
            missing_message(&a.user, &missing),
        ))
    }
}
