//! The OpenAPI v2 document in the protobuf form client-go asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, gnostic's `openapi_v2.Document`).
//! kubectl's client-side schema validation reads only this form: client-go decodes `/openapi/v2`
//! as protobuf and has no JSON fallback. Encoded from the JSON document: swagger, info and the
//! definitions (the part kubectl's validator and `openapi.Resources` read).

use serde_json::Value;

/// The media types clients ask for (client-go still sends the older `@` spelling).
pub const MEDIA_TYPES: &[&str] = &[
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
];

/// The content type of the response: a well-formed media type (Go's mime parser, which
/// client-go runs on responses, rejects the `@` spelling).
pub const CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Protobuf varint encoding (also the proto decoder's tests' encoder).
pub(crate) fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A length-delimited field `num`.
pub(crate) fn bytes(num: u32, data: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(num) << 3 | 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn string(num: u32, s: &str, out: &mut Vec<u8>) {
    if !s.is_empty() {
        bytes(num, s.as_bytes(), out);
    }
}

fn int(num: u32, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        varint(u64::from(num) << 3, out);
        varint(v, out);
    }
}

fn double(num: u32, v: f64, out: &mut Vec<u8>) {
    varint(u64::from(num) << 3 | 1, out);
    out.extend_from_slice(&v.to_le_bytes());
}

/// gnostic `Any`: the value as YAML text (JSON is YAML).
fn any(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(2, &v.to_string(), &mut out);
    out
}

fn named(num: u32, name: &str, value: &[u8], out: &mut Vec<u8>) {
    let mut m = Vec::new();
    string(1, name, &mut m);
    bytes(2, value, &mut m);
    bytes(num, &m, out);
}

/// gnostic `Schema` of a JSON schema object.
fn schema(s: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(m) = s.as_object() else {
        return out;
    };
    let st = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
    let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
    let b = |k: &str| u64::from(m.get(k).and_then(Value::as_bool) == Some(true));
    string(1, st("$ref"), &mut out);
    string(2, st("format"), &mut out);
    string(3, st("title"), &mut out);
    string(4, st("description"), &mut out);
    if let Some(d) = m.get("default") {
        bytes(5, &any(d), &mut out);
    }
    for (k, num) in [("multipleOf", 6), ("maximum", 7), ("minimum", 9)] {
        if let Some(v) = m.get(k).and_then(Value::as_f64) {
            double(num, v, &mut out);
        }
    }
    int(8, b("exclusiveMaximum"), &mut out);
    int(10, b("exclusiveMinimum"), &mut out);
    int(11, n("maxLength"), &mut out);
    int(12, n("minLength"), &mut out);
    string(13, st("pattern"), &mut out);
    int(14, n("maxItems"), &mut out);
    int(15, n("minItems"), &mut out);
    int(16, b("uniqueItems"), &mut out);
    int(17, n("maxProperties"), &mut out);
    int(18, n("minProperties"), &mut out);
    for r in m
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        string(19, r.as_str().unwrap_or(""), &mut out);
    }
    for e in m
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes(20, &any(e), &mut out);
    }
    match m.get("additionalProperties") {
        Some(Value::Bool(v)) => {
            let mut a = Vec::new();
            varint(2 << 3, &mut a);
            varint(u64::from(*v), &mut a);
            bytes(21, &a, &mut out);
        }
        Some(sub @ Value::Object(_)) => {
            let mut a = Vec::new();
            bytes(1, &schema(sub), &mut a);
            bytes(21, &a, &mut out);
        }
        _ => {}
    }
    let types: Vec<&str> = match m.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let mut t = Vec::new();
        for ty in types {
            string(1, ty, &mut t);
        }
        bytes(22, &t, &mut out);
    }
    match m.get("items") {
        Some(one @ Value::Object(_)) => {
            let mut it = Vec::new();
            bytes(1, &schema(one), &mut it);
            bytes(23, &it, &mut out);
        }
        Some(Value::Array(many)) => {
            let mut it = Vec::new();
            for s in many {
                bytes(1, &schema(s), &mut it);
            }
            bytes(23, &it, &mut out);
        }
        _ => {}
    }
    for a in m
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes(24, &schema(a), &mut out);
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        let mut p = Vec::new();
        for (k, v) in props {
            named(1, k, &schema(v), &mut p);
        }
        bytes(25, &p, &mut out);
    }
    int(27, b("readOnly"), &mut out);
    if let Some(e) = m.get("example") {
        bytes(30, &any(e), &mut out);
    }
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
        named(31, k, &any(v), &mut out);
    }
    out
}

/// gnostic `Document` of a Swagger 2.0 JSON document.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(1, doc["swagger"].as_str().unwrap_or("2.0"), &mut out);
    let mut info = Vec::new();
    string(1, doc["info"]["title"].as_str().unwrap_or(""), &mut info);
    string(2, doc["info"]["version"].as_str().unwrap_or(""), &mut info);
    bytes(2, &info, &mut out);
    bytes(8, &[], &mut out);
    let mut defs = Vec::new();
    for (name, s) in doc["definitions"].as_object().into_iter().flatten() {
        named(1, name, &schema(s), &mut defs);
    }
    bytes(9, &defs, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_definition_encodes_to_gnostic_fields() {
        let doc = json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1"},
            "definitions": {"io.k8s.api.core.v1.Pod": {
                "type": "object", "required": ["metadata"],
                "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.core.v1.PodSpec"}},
                "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Pod"}]}}});
        let pb = encode(&doc);
        // swagger = 1 "2.0"
        assert_eq!(&pb[..5], &[0x0a, 3, b'2', b'.', b'0']);
        let text = String::from_utf8_lossy(&pb);
        for needle in [
            "io.k8s.api.core.v1.Pod",
            "#/definitions/io.k8s.api.core.v1.PodSpec",
            "x-kubernetes-group-version-kind",
            r#"[{"group":"","kind":"Pod","version":"v1"}]"#,
            "metadata",
            "object",
        ] {
            assert!(text.contains(needle), "{needle} not encoded");
        }
        // type = 22 (TypeItem{value: "object"}): key 0xb2 0x01.
        assert!(pb.windows(4).any(|w| w == [0xb2, 0x01, 8, 0x0a]));
    }
}
