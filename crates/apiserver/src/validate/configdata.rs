//! ConfigMap and Secret writes as kube-apiserver treats them: a Secret's `stringData` is merged
//! into `data` (base64) and dropped, `type` defaults to Opaque and the typed Secrets' required
//! keys are checked, data keys must be valid config keys, and an object marked `immutable`
//! keeps its data (and its mark) for good.

use k8s_openapi::ByteString;
use serde_json::{json, Value};

use crate::error::FieldError;

/// Secret and ConfigMap data may hold at most this many bytes in all.
const MAX_TOTAL_BYTES: usize = 1024 * 1024;

/// Moves `stringData` into `data` (its keys win) and defaults `type` to Opaque.
pub fn secret_defaults(secret: &mut Value) {
    let Some(o) = secret.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(sd)) = o.remove("stringData") {
        let data = o.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (k, v) in sd {
            let bytes = v.as_str().unwrap_or("").as_bytes().to_vec();
            data[k.as_str()] = serde_json::to_value(ByteString(bytes)).unwrap_or(Value::Null);
        }
    }
    let ty = o.entry("type").or_insert(json!("Opaque"));
    if ty.as_str().is_none_or(str::is_empty) {
        *ty = json!("Opaque");
    }
}

/// Whether `k` is a valid ConfigMap/Secret key (IsConfigMapKey).
fn key_problems(k: &str) -> Vec<String> {
    let mut out = Vec::new();
    if k.is_empty() || k.len() > 253 {
        out.push("must be no more than 253 characters".to_string());
    }
    if !k
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        out.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .to_string(),
        );
    }
    if k == "." || k == ".." {
        out.push("must not be '.'".to_string());
    } else if k.starts_with("..") {
        out.push("must not start with '..'".to_string());
    }
    out
}

fn keys(obj: &Value, field: &str, size: &mut usize, errs: &mut Vec<FieldError>) {
    let Some(m) = obj.get(field).and_then(Value::as_object) else {
        return;
    };
    for (k, v) in m {
        for p in key_problems(k) {
            errs.push(FieldError::invalid(format!("{field}[{k}]"), k.clone(), p));
        }
        *size = size.saturating_add(v.as_str().map_or(0, str::len));
    }
}

pub fn validate_configmap(cm: &Value, errs: &mut Vec<FieldError>) {
    let mut size = 0;
    keys(cm, "data", &mut size, errs);
    keys(cm, "binaryData", &mut size, errs);
    let data = cm.get("data").and_then(Value::as_object);
    if let Some(bin) = cm.get("binaryData").and_then(Value::as_object) {
        for k in bin
            .keys()
            .filter(|k| data.is_some_and(|d| d.contains_key(*k)))
        {
            errs.push(FieldError::invalid(
                format!("data[{k}]"),
                k.clone(),
                "duplicate of key present in binaryData",
            ));
        }
    }
    if size > MAX_TOTAL_BYTES {
        errs.push(FieldError::too_long("", MAX_TOTAL_BYTES));
    }
}

pub fn validate_secret(secret: &Value, errs: &mut Vec<FieldError>) {
    let mut size = 0;
    keys(secret, "data", &mut size, errs);
    // base64 text: the decoded size is about three quarters.
    if size / 4 * 3 > MAX_TOTAL_BYTES {
        errs.push(FieldError::too_long("data", MAX_TOTAL_BYTES));
    }
    let data = secret.get("data").and_then(Value::as_object);
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let ty = secret
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("Opaque");
    let required: &[&str] = match ty {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        _ => &[],
    };
    for k in required {
        if !has(k) {
            errs.push(FieldError::required(format!("data[{k}]"), ""));
        }
    }
    if ty == "kubernetes.io/service-account-token"
        && crate::meta::path(secret, "metadata.annotations")
            .and_then(|a| a.get("kubernetes.io/service-account.name"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        errs.push(FieldError::required(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "",
        ));
    }
    if ty == "kubernetes.io/basic-auth" && !has("username") && !has("password") {
        errs.push(FieldError::required("data[username]", ""));
    }
}

/// Updates of an `immutable` ConfigMap/Secret: the mark stays, the data fields stay; a Secret's
/// `type` never changes.
pub fn validate_update(new: &Value, old: &Value, data_fields: &[&str], errs: &mut Vec<FieldError>) {
    if old.get("type").is_some() && new.get("type") != old.get("type") {
        errs.push(FieldError::invalid(
            "type",
            new.get("type").and_then(Value::as_str).unwrap_or(""),
            "field is immutable",
        ));
    }
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    const WHY: &str = "field is immutable when `immutable` is set";
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden("immutable", WHY));
    }
    let empty = json!({});
    for f in data_fields {
        let n = new.get(*f).filter(|v| !v.is_null()).unwrap_or(&empty);
        let o = old.get(*f).filter(|v| !v.is_null()).unwrap_or(&empty);
        if n != o {
            errs.push(FieldError::forbidden(*f, WHY));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_merged_into_data_and_wins() {
        let mut s =
            json!({"data": {"a": "b2xk", "keep": "eA=="}, "stringData": {"a": "new", "b": "two"}});
        secret_defaults(&mut s);
        assert_eq!(
            s,
            json!({"data": {"a": "bmV3", "keep": "eA==", "b": "dHdv"}, "type": "Opaque"})
        );
    }

    #[test]
    fn keys_and_typed_secrets_are_checked() {
        let mut errs = Vec::new();
        validate_configmap(
            &json!({"data": {"ok.key": "1", "bad/key": "2", "..x": "3"}}),
            &mut errs,
        );
        let f: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(f, ["data[..x]", "data[bad/key]"]);
        let mut errs = Vec::new();
        validate_secret(
            &json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}),
            &mut errs,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "data[tls.key]");
    }

    #[test]
    fn immutable_objects_keep_their_data() {
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let mut errs = Vec::new();
        validate_update(
            &json!({"immutable": true, "data": {"a": "2"}}),
            &old,
            &["data", "binaryData"],
            &mut errs,
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "data");
        let mut errs = Vec::new();
        validate_update(&json!({"data": {"a": "1"}}), &old, &["data"], &mut errs);
        assert_eq!(errs[0].field, "immutable");
        let mut errs = Vec::new();
        let labels_only =
            json!({"immutable": true, "data": {"a": "1"}, "metadata": {"labels": {"x": "y"}}});
        validate_update(&labels_only, &old, &["data"], &mut errs);
        assert!(errs.is_empty());
        let mut errs = Vec::new();
        validate_update(
            &json!({"data": {"a": "9"}}),
            &json!({"data": {"a": "1"}}),
            &["data"],
            &mut errs,
        );
        assert!(errs.is_empty());
    }
}
