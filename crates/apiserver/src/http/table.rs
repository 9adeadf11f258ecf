//! Server-side printing: the `meta.k8s.io` Table kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, so `kubectl get` shows the same
//! columns against the lab as against a real cluster. Content negotiation, `includeObject`,
//! and the Table document live here; the per-kind columns live in `printers`.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::http::{printers, status, Params};
use crate::meta;

/// A Table request: which Table version and what each row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub version: &'static str,
    pub include: Include,
}

/// `includeObject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

/// The Table the request negotiates, if any: the first `as=Table` entry of `Accept` (in the
/// client's order of preference) whose group is meta.k8s.io and version v1 or v1beta1.
pub fn negotiate(headers: &HeaderMap, params: &Params) -> Result<Option<Want>, ApiError> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let base = parts.next().unwrap_or("");
        let (mut as_, mut g, mut v) = ("", "", "");
        for p in parts {
            match p.split_once('=') {
                Some(("as", x)) => as_ = x,
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                _ => {}
            }
        }
        if as_ != "Table" || !(base == "application/json" || base == "*/*") {
            continue;
        }
        let version = match (g, v) {
            ("meta.k8s.io", "v1") => "v1",
            ("meta.k8s.io", "v1beta1") => "v1beta1",
            _ => continue,
        };
        let include = match params.get("includeObject").map(String::as_str) {
            None | Some("") | Some("Metadata") => Include::Metadata,
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
                )))
            }
        };
        return Ok(Some(Want { version, include }));
    }
    Ok(None)
}

fn row(obj: &Value, include: Include, now: i64) -> Value {
    let mut r = json!({"cells": printers::cells(obj, now)});
    match include {
        Include::None => {}
        Include::Object => r["object"] = obj.clone(),
        Include::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta::metadata(obj),
            })
        }
    }
    r
}

/// The Table of `objs` (all of one kind).
pub fn table(
    kind: &str,
    objs: &[&Value],
    want: Want,
    rv: Option<String>,
    cont: Option<String>,
) -> Value {
    let now = meta::now_secs();
    let mut metadata = json!({});
    if let Some(rv) = rv {
        metadata["resourceVersion"] = json!(rv);
    }
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{}", want.version),
        "metadata": metadata,
        "columnDefinitions": printers::columns(kind),
        "rows": objs.iter().map(|o| row(o, want.include, now)).collect::<Vec<_>>(),
    })
}

/// A Table response with the content type kube-apiserver gives it.
pub fn response(body: &Value, want: Want) -> Response {
    let mut r = status::json(StatusCode::OK, body);
    let ct = format!("application/json;as=Table;v={};g=meta.k8s.io", want.version);
    if let Ok(v) = ct.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub use sarasa_model::human_duration;

/// The age of an RFC 3339 timestamp, or `<unknown>` without one.
pub fn age(ts: Option<&str>, now: i64) -> String {
    match ts.and_then(meta::parse_ts) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_negotiates_the_table_version_and_include_object() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        let mut p = Params::new();
        assert_eq!(
            negotiate(&h, &p).unwrap(),
            Some(Want {
                version: "v1",
                include: Include::Metadata
            })
        );
        p.insert("includeObject".into(), "Object".into());
        assert_eq!(negotiate(&h, &p).unwrap().unwrap().include, Include::Object);
        p.insert("includeObject".into(), "All".into());
        assert!(negotiate(&h, &p)
            .unwrap_err()
            .message
            .contains("includeObject"));
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert_eq!(negotiate(&h, &Params::new()).unwrap(), None);
        h.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=example.com"
                .parse()
                .unwrap(),
        );
        assert_eq!(negotiate(&h, &Params::new()).unwrap(), None);
    }

    #[test]
    fn rows_carry_metadata_object_or_nothing() {
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a", "namespace": "default"}, "spec": {}});
        let want = |include| Want {
            version: "v1",
            include,
        };
        let t = table(
            "Pod",
            &[&pod],
            want(Include::Metadata),
            Some("7".into()),
            None,
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "a");
        let t = table("Pod", &[&pod], want(Include::Object), None, None);
        assert_eq!(t["rows"][0]["object"], pod);
        let t = table("Pod", &[&pod], want(Include::None), None, None);
        assert!(t["rows"][0].get("object").is_none());
        assert_eq!(t["rows"][0]["cells"][0], "a");
    }
}
