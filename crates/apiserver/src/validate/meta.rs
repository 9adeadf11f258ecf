//! Name, label, annotation and selector syntax (apimachinery's validation rules and messages).

use serde_json::Value;

use crate::error::{quote, FieldError};
use crate::selector::{JsonSelector, LabelSelector};
use sarasa_model::names::is_dns1123_label;
pub use sarasa_model::names::{dns1123_subdomain, label_key_error, label_value_error};

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Errors of a DNS-1123 label (namespace names, port names), empty if valid.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !is_dns1123_label(s) {
        out.push(DNS1123_LABEL_MSG.to_string());
    }
    out
}

/// Errors of a DNS-1035 label (Service names), empty if valid.
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters".to_string());
    }
    if !is_dns1123_label(s) || !s.as_bytes()[0].is_ascii_lowercase() {
        out.push(DNS1035_LABEL_MSG.to_string());
    }
    out
}

/// Errors of an IANA service name (named ports), empty if valid.
pub fn iana_svc_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push("must be no more than 15 characters".to_string());
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        out.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens".to_string());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen".to_string());
    }
    out
}

/// Pushes one Invalid error per message.
pub fn push_all(errs: &mut Vec<FieldError>, field: &str, value: &str, msgs: Vec<String>) {
    for m in msgs {
        errs.push(FieldError::invalid(field, quote(value), m));
    }
}

/// How an object's name must look.
#[derive(Debug, Clone, Copy)]
pub enum NameRule {
    Dns1123Label,
    Dns1123Subdomain,
    Dns1035Label,
    /// Any name usable as one path segment (RBAC objects: `system:masters`).
    PathSegment,
}

/// Validates `metadata`: name, labels, annotations.
pub fn object_meta(obj: &Value, rule: NameRule, errs: &mut Vec<FieldError>) {
    let name = crate::meta::name(obj);
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        let msgs = match rule {
            NameRule::Dns1123Label => dns1123_label(name),
            NameRule::Dns1123Subdomain => dns1123_subdomain(name),
            NameRule::Dns1035Label => dns1035_label(name),
            NameRule::PathSegment => crate::authz::validate::path_segment_error(name)
                .into_iter()
                .collect(),
        };
        push_all(errs, "metadata.name", name, msgs);
    }
    let meta = crate::meta::metadata(obj);
    labels(meta.get("labels"), "metadata.labels", errs);
    if let Some(a) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in a {
            if let Some(e) = label_key_error(&k.to_lowercase()) {
                errs.push(FieldError::invalid("metadata.annotations", quote(k), e));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push(FieldError::too_long("metadata.annotations", 256 * 1024));
        }
    }
}

/// Validates a labels map (keys and values).
pub fn labels(labels: Option<&Value>, field: &str, errs: &mut Vec<FieldError>) {
    let Some(l) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in l {
        if let Some(e) = label_key_error(k) {
            errs.push(FieldError::invalid(field, quote(k), e));
        }
        let v = v.as_str().unwrap_or("");
        if let Some(e) = label_value_error(v) {
            errs.push(FieldError::invalid(field, quote(v), e));
        }
    }
}

/// Validates a `LabelSelector` object at `field`.
pub fn label_selector(sel: &Value, field: &str, errs: &mut Vec<FieldError>) {
    labels(
        sel.get("matchLabels"),
        &format!("{field}.matchLabels"),
        errs,
    );
    let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) else {
        return;
    };
    for (i, e) in exprs.iter().enumerate() {
        let p = format!("{field}.matchExpressions[{i}]");
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        if let Some(m) = label_key_error(key) {
            errs.push(FieldError::invalid(format!("{p}.key"), quote(key), m));
        }
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" | "NotIn" => {
                if values == 0 {
                    errs.push(FieldError::required(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if values > 0 {
                    errs.push(FieldError::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(FieldError::invalid(
                format!("{p}.operator"),
                quote(op),
                "not a valid selector operator",
            )),
        }
        if let Some(vals) = e.get("values").and_then(Value::as_array) {
            for (j, v) in vals.iter().enumerate() {
                let v = v.as_str().unwrap_or("");
                if let Some(m) = label_value_error(v) {
                    errs.push(FieldError::invalid(format!("{p}.values[{j}]"), quote(v), m));
                }
            }
        }
    }
}

/// A parsed `LabelSelector` object; `None` when it does not parse (already reported by
/// [`label_selector`]).
pub fn parsed_selector(sel: &Value) -> Option<LabelSelector> {
    LabelSelector::from_object(sel).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(dns1123_label("web-1").is_empty());
        assert!(!dns1123_label("Web").is_empty());
        assert!(!dns1123_label("-a").is_empty());
        assert!(!dns1123_label(&"a".repeat(64)).is_empty());
        assert!(dns1123_subdomain("a.b-c.d").is_empty());
        assert!(!dns1123_subdomain("a..b").is_empty());
        assert!(!dns1035_label("1abc").is_empty());
        assert!(iana_svc_name("http").is_empty());
        assert!(!iana_svc_name("8080").is_empty());
        assert!(!iana_svc_name("a--b").is_empty());
    }

    #[test]
    fn label_syntax() {
        assert!(label_key_error("app.kubernetes.io/name").is_none());
        assert!(label_key_error("a/b/c").is_some());
        assert!(label_key_error("/x").is_some());
        assert!(label_value_error("").is_none());
        assert!(label_value_error("-x").is_some());
    }

    #[test]
    fn selector_errors_name_the_field() {
        let mut errs = Vec::new();
        label_selector(
            &json!({"matchExpressions": [
                {"key": "a", "operator": "Foo"},
                {"key": "b", "operator": "In"},
                {"key": "c", "operator": "Exists", "values": ["x"]}
            ]}),
            "spec.podSelector",
            &mut errs,
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.podSelector.matchExpressions[0].operator",
                "spec.podSelector.matchExpressions[1].values",
                "spec.podSelector.matchExpressions[2].values"
            ]
        );
    }
}
