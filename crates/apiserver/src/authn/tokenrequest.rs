//! The TokenRequest API (`POST .../serviceaccounts/{name}/token`, authentication.k8s.io/v1):
//! issues a ServiceAccount token for the requested audiences and lifetime, optionally bound to
//! a pod so that it dies with the pod. Validated and defaulted as kube-apiserver does.

use serde_json::{json, Value};

use super::jwt::{Claims, KubernetesClaims, ObjectRef};
use super::Authenticator;
use crate::error::{ApiError, FieldError};
use crate::meta;
use crate::resources::{PODS, SERVICEACCOUNTS};
use crate::store::Store;

/// `expirationSeconds` when the request gives none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for (10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest (2^32 s).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

fn invalid(name: &str, errs: Vec<FieldError>) -> ApiError {
    let list: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let message = if list.len() == 1 {
        list[0].clone()
    } else {
        format!("[{}]", list.join(", "))
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"message": e.body(), "field": e.field}))
        .collect();
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("TokenRequest.authentication.k8s.io {name:?} is invalid: {message}"),
        details: Some(json!({
            "name": name, "group": "authentication.k8s.io", "kind": "TokenRequest", "causes": causes
        })),
    }
}

/// Serves one TokenRequest for ServiceAccount `ns/name`; `body` is the decoded request.
pub fn create(
    store: &Store,
    authn: &Authenticator,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let sa = store.get(SERVICEACCOUNTS, ns, name)?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut errs = Vec::new();
    let audiences: Vec<String> = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.as_str() {
                Some(s) => Some(s.to_string()),
                None => {
                    errs.push(FieldError::invalid(
                        format!("spec.audiences[{i}]"),
                        v.to_string(),
                        "must be a string",
                    ));
                    None
                }
            })
            .collect(),
        Some(v) => {
            errs.push(FieldError::invalid(
                "spec.audiences",
                v.to_string(),
                "must be a list of strings",
            ));
            Vec::new()
        }
    };
    let audiences = if audiences.is_empty() {
        authn.audiences.clone()
    } else {
        audiences
    };
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => match v.as_i64() {
            Some(n) if n < MIN_EXPIRATION_SECONDS => {
                errs.push(FieldError::invalid(
                    "spec.expirationSeconds",
                    n.to_string(),
                    "may not specify a duration less than 10 minutes",
                ));
                n
            }
            Some(n) if n > MAX_EXPIRATION_SECONDS => {
                errs.push(FieldError::invalid(
                    "spec.expirationSeconds",
                    n.to_string(),
                    "may not specify a duration larger than 2^32 seconds",
                ));
                n
            }
            Some(n) => n,
            None => {
                errs.push(FieldError::invalid(
                    "spec.expirationSeconds",
                    v.to_string(),
                    "must be an integer",
                ));
                0
            }
        },
    };
    let bound = spec.get("boundObjectRef").filter(|v| !v.is_null());
    let mut pod_ref = None;
    if let Some(r) = bound {
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
        let pod_name = r.get("name").and_then(Value::as_str).unwrap_or("");
        if kind != "Pod" {
            errs.push(FieldError::not_supported(
                "spec.boundObjectRef.kind",
                format!("{kind:?}"),
                &["Pod"],
            ));
        } else if pod_name.is_empty() {
            errs.push(FieldError::required("spec.boundObjectRef.name", ""));
        } else {
            pod_ref = Some((
                pod_name.to_string(),
                r.get("uid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ));
        }
    }
    if !errs.is_empty() {
        return Err(invalid(name, errs));
    }
    let pod = match pod_ref {
        None => None,
        Some((pod_name, want_uid)) => {
            let pod = store.get(PODS, ns, &pod_name)?;
            let uid = meta::uid(&pod).to_string();
            if !want_uid.is_empty() && want_uid != uid {
                return Err(ApiError::conflict(
                    PODS,
                    &pod_name,
                    &format!("the UID in the bound object reference ({want_uid}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"),
                ));
            }
            Some(ObjectRef {
                name: pod_name,
                uid,
            })
        }
    };
    let now = super::now();
    let claims = Claims {
        iss: authn.issuer.clone(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        aud: audiences.clone(),
        exp: now + expiration,
        iat: now,
        nbf: now,
        jti: meta::new_uid(),
        kubernetes: KubernetesClaims {
            namespace: ns.to_string(),
            serviceaccount: ObjectRef {
                name: name.to_string(),
                uid: meta::uid(&sa).to_string(),
            },
            pod: pod.clone(),
        },
    };
    let token = authn.sign(&claims)?;
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(p) = &pod {
        out_spec["boundObjectRef"] =
            json!({"kind": "Pod", "apiVersion": "v1", "name": p.name, "uid": p.uid});
    }
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": meta::format_ts(now)},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": meta::format_ts(now + expiration)},
    }))
}
