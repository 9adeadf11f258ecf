//! Server-side field validation (the `fieldValidation` query parameter of writes): unknown
//! fields in a request body are found by walking it against the kind's OpenAPI schema, then
//! `Strict` refuses the request (400, "strict decoding error: unknown field ..."), `Warn` (the
//! default) answers with `Warning` headers, and `Ignore` drops them silently, as kube-apiserver
//! does. Patch documents are checked too, skipping strategic-merge directives (`$patch`, ...).
//! kubectl sends `fieldValidation=Strict` with its writes (after validating client-side), so
//! this is the server's own line of defence for every client.

use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::http::openapi::{definition_name, v3_schemas};
use crate::http::Params;
use crate::resources::{ResId, RESOURCES};

/// The `fieldValidation` directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Ignore,
    Warn,
    Strict,
}

pub fn directive(params: &Params) -> Result<Directive, ApiError> {
    match params.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(Directive::Warn),
        Some("Ignore") => Ok(Directive::Ignore),
        Some("Strict") => Ok(Directive::Strict),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
        ))),
    }
}

fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    let mut s = schema;
    for _ in 0..8 {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            match r.rsplit('/').next().and_then(|n| defs.get(n)) {
                Some(d) => s = d,
                None => return s,
            }
        } else if let Some([one]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            s = one;
        } else {
            return s;
        }
    }
    s
}

fn walk(v: &Value, schema: &Value, defs: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let schema = resolve(schema, defs);
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if props.is_none() && additional.is_none() {
                return;
            }
            for (k, child) in m {
                if k.starts_with('$') {
                    // Strategic merge patch directives.
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match props.and_then(|ps| ps.get(k)).or(additional) {
                    Some(s) => walk(child, s, defs, &p, out),
                    None => out.push(p),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item, s, defs, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Every field of `body` that `res`'s schema does not know, as `spec.containers[0].foo`.
pub fn unknown_fields(res: ResId, body: &Value) -> Vec<String> {
    let defs = v3_schemas();
    let Some(schema) = defs.get(&definition_name(&RESOURCES[res])) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(body, schema, defs, "", &mut out);
    out
}

/// Checks `body`; Strict refuses unknown fields, Warn returns the warnings to send.
pub fn check(res: ResId, body: &Value, d: Directive) -> Result<Vec<String>, ApiError> {
    if d == Directive::Ignore {
        return Ok(Vec::new());
    }
    let unknown = unknown_fields(res, body);
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let r = &RESOURCES[res];
    let listed: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if d == Directive::Strict {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            r.kind,
            r.version,
            r.kind,
            listed.join(", ")
        )));
    }
    Ok(listed)
}

/// Adds `Warning: 299 - "<text>"` headers, as kube-apiserver sends them.
pub fn warn(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{DEPLOYMENTS, PODS};
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_at_their_paths() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "labels": {"any": "key"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always", "colour": "red"}],
                     "nodeSelector": {"k": "v"}}});
        assert_eq!(
            unknown_fields(PODS, &pod),
            ["metadata.bogus", "spec.containers[0].colour"]
        );
        let d = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "c", "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}});
        assert!(unknown_fields(DEPLOYMENTS, &d).is_empty());
        // Strategic merge patch directives are not fields.
        let smp = json!({"metadata": {"$patch": "replace"}, "spec": {"$setElementOrder/containers": [{"name": "c"}]}});
        assert!(unknown_fields(DEPLOYMENTS, &smp).is_empty());
    }

    #[test]
    fn strict_refuses_warn_warns_ignore_ignores() {
        let body = json!({"spec": {"replicaz": 2}});
        let err = check(DEPLOYMENTS, &body, Directive::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replicaz\""
        );
        assert_eq!(
            check(DEPLOYMENTS, &body, Directive::Warn).unwrap(),
            ["unknown field \"spec.replicaz\""]
        );
        assert!(check(DEPLOYMENTS, &body, Directive::Ignore)
            .unwrap()
            .is_empty());
        let mut p = Params::new();
        p.insert("fieldValidation".into(), "Loose".into());
        assert!(directive(&p)
            .unwrap_err()
            .message
            .contains("fieldValidation"));
    }
}
