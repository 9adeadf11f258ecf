//! OpenAPI documents for every kind the server stores, generated from k8s-openapi's types
//! (their `schemars` schemas carry Kubernetes' own definition names and descriptions), with the
//! `x-kubernetes-group-version-kind` extensions clients key on: `/openapi/v2` (JSON, or the
//! protobuf client-go asks for, see `openapi_pb`), `/openapi/v3` (the discovery index) and
//! `/openapi/v3/<group-version>`. kubectl validates manifests client-side against the v2
//! document when the v3 paths do not list the `fieldValidation` parameter, as here (its
//! "ValidationError(Deployment.spec): unknown field ..." message); the server still honours
//! `fieldValidation` on writes (`fieldvalidation`). `kubectl explain` reads the v3 documents.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::http::{openapi_pb, status};
use crate::resources::{group_versions, Resource, RESOURCES};

/// Definitions by name (`io.k8s.api.core.v1.Pod`), `$ref`s relative to `prefix`.
fn definitions(settings: SchemaSettings) -> Map<String, Value> {
    let mut g = settings.into_generator();
    for r in RESOURCES {
        (r.schema)(&mut g);
    }
    let mut defs = g.take_definitions(true);
    for r in RESOURCES {
        let gvk = json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        if let Some(Value::Object(d)) = defs.get_mut(&definition_name(r)) {
            d.insert("x-kubernetes-group-version-kind".into(), gvk);
            // k8s-openapi requires the parts it holds without an Option (metadata, and spec for
            // some kinds); the API does not, and neither does kube-apiserver's schema.
            if let Some(Value::Array(req)) = d.get_mut("required") {
                req.retain(|f| !matches!(f.as_str(), Some("metadata" | "spec" | "status")));
                if req.is_empty() {
                    d.remove("required");
                }
            }
        }
    }
    defs
}

/// Swagger 2.0 style references: `{"allOf": [{"$ref": X}], "description": ..}` (how schemars
/// keeps a description beside a reference) becomes `{"$ref": X, "description": ..}`, as in
/// kube-apiserver's v2 document; kubectl's v2 model reader treats `allOf` as an arbitrary value.
fn inline_single_all_of(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let single_ref = match m.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                Some([one]) if one.get("$ref").is_some() && !m.contains_key("$ref") => {
                    one.get("$ref").cloned()
                }
                _ => None,
            };
            if let Some(r) = single_ref {
                m.remove("allOf");
                m.insert("$ref".into(), r);
            }
            m.values_mut().for_each(inline_single_all_of);
        }
        Value::Array(items) => items.iter_mut().for_each(inline_single_all_of),
        _ => {}
    }
}

/// The definition name of a resource's kind: `io.k8s.api.<pkg>.<version>.<Kind>` for
/// Kubernetes' own groups, the reversed group for others (`io.x-k8s.multicluster.v1alpha1.
/// ServiceImport`, as kube-apiserver names a CRD's).
pub fn definition_name(r: &Resource) -> String {
    if !r.group.is_empty() && !r.group.ends_with(".k8s.io") && r.group.contains('.') {
        let reversed: Vec<&str> = r.group.split('.').rev().collect();
        return format!("{}.{}.{}", reversed.join("."), r.version, r.kind);
    }
    let pkg = match r.group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("io.k8s.api.{pkg}.{}.{}", r.version, r.kind)
}

/// OpenAPI 3 component schemas (`#/components/schemas/...`), built once.
pub fn v3_schemas() -> &'static Map<String, Value> {
    static S: OnceLock<Map<String, Value>> = OnceLock::new();
    S.get_or_init(|| definitions(SchemaSettings::openapi3()))
}

fn v2_document() -> &'static Value {
    static D: OnceLock<Value> = OnceLock::new();
    D.get_or_init(|| {
        let mut s = SchemaSettings::draft07();
        s.meta_schema = None;
        let mut defs = Value::Object(definitions(s));
        inline_single_all_of(&mut defs);
        json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": crate::http::discovery::version()["gitVersion"]},
            "paths": {},
            "definitions": defs,
        })
    })
}

/// `api/v1` or `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid value: All.",
        ),
        param(
            "fieldManager",
            "A name associated with the actor or entity that is making these changes.",
        ),
    ]
}

/// The paths of one resource, each operation tagged with its group-version-kind.
fn paths_of(r: &Resource, out: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(r.group, r.version));
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let obj = json!({"$ref": format!("#/components/schemas/{}", definition_name(r))});
    let body = |types: &[&str]| {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": obj.clone()})))
            .collect();
        json!({"content": content, "required": true})
    };
    let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": obj.clone()}}}});
    let op = |verb: &str, action: &str, params: Vec<Value>, req: Option<Value>| {
        let mut o = json!({
            "operationId": format!("{verb}{}", r.kind),
            "parameters": params,
            "responses": ok.clone(),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk.clone(),
        });
        if let Some(b) = req {
            o["requestBody"] = b;
        }
        o
    };
    out.insert(
        collection,
        json!({
            "get": op("list", "list", vec![], None),
            "post": op("create", "post", write_params(), Some(body(&["*/*"]))),
        }),
    );
    let mut patch_params = write_params();
    patch_params.push(param(
        "force",
        "Force is going to \"force\" Apply requests.",
    ));
    out.insert(
        item,
        json!({
            "get": op("read", "get", vec![], None),
            "put": op("replace", "put", write_params(), Some(body(&["*/*"]))),
            "patch": op("patch", "patch", patch_params, Some(body(&[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ]))),
            "delete": op("delete", "delete", vec![], None),
        }),
    );
}

/// The OpenAPI 3 document of one group-version, or None if the server has no such group-version.
fn v3_document(group: &str, version: &str) -> Option<Value> {
    if !group_versions().contains(&(group, version)) {
        return None;
    }
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        paths_of(r, &mut paths);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::http::discovery::version()["gitVersion"]},
        "paths": paths,
        "components": {"schemas": v3_schemas()},
    }))
}

/// A stable content hash for the index's `?hash=` (FNV-1a of the document).
fn hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016X}")
}

/// Every group-version's v3 document, serialized once (they only change with the binary):
/// `api/v1` -> JSON bytes.
fn v3_serialized() -> &'static std::collections::BTreeMap<String, Vec<u8>> {
    static D: OnceLock<std::collections::BTreeMap<String, Vec<u8>>> = OnceLock::new();
    D.get_or_init(|| {
        group_versions()
            .into_iter()
            .filter_map(|(g, v)| {
                let doc = v3_document(g, v)?;
                Some((gv_path(g, v), serde_json::to_vec(&doc).ok()?))
            })
            .collect()
    })
}

fn index() -> &'static Value {
    static I: OnceLock<Value> = OnceLock::new();
    I.get_or_init(|| {
        let paths: Map<String, Value> = v3_serialized()
            .iter()
            .map(|(p, bytes)| {
                let url = format!("/openapi/v3/{p}?hash={}", hash(bytes));
                (p.clone(), json!({"serverRelativeURL": url}))
            })
            .collect();
        json!({"paths": paths})
    })
}

/// Whether the client takes JSON (`application/json`, `*/*`, or no Accept at all).
fn accepts_json(headers: &HeaderMap) -> bool {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .collect();
    accept.is_empty()
        || accept
            .iter()
            .any(|a| matches!(*a, "application/json" | "*/*" | "application/*" | ""))
}

fn not_acceptable() -> ApiError {
    ApiError {
        code: 406,
        reason: "NotAcceptable",
        message: "only application/json is served for OpenAPI documents".into(),
        details: None,
    }
}

fn v2_protobuf() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| openapi_pb::encode(v2_document()))
}

fn accepts_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| openapi_pb::MEDIA_TYPES.contains(&v.split(';').next().unwrap_or("").trim()))
}

/// Serves `/openapi/v2`, `/openapi/v3` and `/openapi/v3/<gv>`.
pub fn serve(segs: &[&str], headers: &HeaderMap) -> Result<Response, ApiError> {
    if segs == ["v2"] && accepts_protobuf(headers) {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, openapi_pb::CONTENT_TYPE)
            .body(axum::body::Body::from(v2_protobuf()))
            .unwrap_or_default());
    }
    if !accepts_json(headers) {
        return Err(not_acceptable());
    }
    match segs {
        ["v2"] => Ok(status::json(StatusCode::OK, v2_document())),
        ["v3"] => Ok(status::json(StatusCode::OK, index())),
        ["v3", rest @ ..] => match v3_serialized().get(&rest.join("/")) {
            Some(bytes) => Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(bytes.as_slice()))
                .unwrap_or_default()),
            None => Err(ApiError::path_not_found(&format!(
                "/openapi/v3/{}",
                rest.join("/")
            ))),
        },
        _ => Err(ApiError::path_not_found(&format!(
            "/openapi/{}",
            segs.join("/")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_kind_has_a_definition_tagged_with_its_gvk() {
        let defs = v3_schemas();
        for r in RESOURCES {
            let d = defs
                .get(&definition_name(r))
                .unwrap_or_else(|| panic!("{} missing", definition_name(r)));
            assert_eq!(
                d["x-kubernetes-group-version-kind"][0],
                json!({"group": r.group, "version": r.version, "kind": r.kind})
            );
        }
        // References resolve within the document.
        let pod = &defs["io.k8s.api.core.v1.Pod"];
        let spec_ref = pod["properties"]["spec"].to_string();
        assert!(
            spec_ref.contains("#/components/schemas/io.k8s.api.core.v1.PodSpec"),
            "{spec_ref}"
        );
        assert!(defs.contains_key("io.k8s.api.core.v1.Container"));
        let v2 = v2_document();
        assert!(v2["definitions"]["io.k8s.api.apps.v1.Deployment"]
            ["x-kubernetes-group-version-kind"]
            .is_array());
        assert!(v2
            .to_string()
            .contains("#/definitions/io.k8s.api.core.v1.PodSpec"));
    }

    #[test]
    fn the_index_lists_every_group_version_and_patch_leaves_validation_to_the_client() {
        let idx = index();
        for p in [
            "api/v1",
            "apis/apps/v1",
            "apis/discovery.k8s.io/v1",
            "apis/networking.k8s.io/v1",
        ] {
            let url = idx["paths"][p]["serverRelativeURL"].as_str().unwrap();
            assert!(url.starts_with(&format!("/openapi/v3/{p}?hash=")), "{url}");
        }
        let doc = v3_document("apps", "v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        // Without `fieldValidation` among the PATCH parameters kubectl validates client-side.
        let params = patch["parameters"].as_array().unwrap();
        assert!(params.iter().any(|p| p["name"] == "fieldManager"));
        assert!(!params.iter().any(|p| p["name"] == "fieldValidation"));
        assert!(v3_document("example.com", "v1").is_none());
    }

    #[test]
    fn v2_in_protobuf_or_json_and_406_for_anything_else() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
                .parse()
                .unwrap(),
        );
        let r = serve(&["v2"], &h).unwrap();
        assert_eq!(r.headers()[header::CONTENT_TYPE], openapi_pb::CONTENT_TYPE);
        h.insert(
            header::ACCEPT,
            "application/vnd.kubernetes.protobuf".parse().unwrap(),
        );
        assert_eq!(serve(&["v2"], &h).unwrap_err().code, 406);
        h.insert(
            header::ACCEPT,
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf, application/json"
                .parse()
                .unwrap(),
        );
        assert!(serve(&["v2"], &h).is_ok());
        assert!(serve(&["v3"], &HeaderMap::new()).is_ok());
    }
}
