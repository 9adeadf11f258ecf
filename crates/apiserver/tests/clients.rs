//! What kubectl and other real clients send and expect, on the wire: Kubernetes protobuf
//! request bodies, server-side Tables (list, get, watch), the OpenAPI v2/v3 documents, and the
//! fieldValidation directives.

mod common;

use common::TestServer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

/// One HTTP/1.1 exchange: (status, lower-cased header lines, body with any chunking left in).
async fn http(
    s: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<String>, String) {
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).await.expect("write");
    c.write_all(body).await.expect("write body");
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    (
        code,
        lines.map(str::to_lowercase).collect(),
        body.to_string(),
    )
}

/// The JSON object in a (possibly chunked) body.
fn json_of(body: &str) -> Value {
    let start = body.find('{').expect("a JSON body");
    let end = body.rfind('}').expect("a JSON body");
    serde_json::from_str(&body[start..=end]).expect("JSON")
}

fn field(num: u32, data: &[u8], out: &mut Vec<u8>) {
    out.push(((num << 3) | 2) as u8);
    out.push(data.len() as u8);
    out.extend_from_slice(data);
}

#[tokio::test]
async fn protobuf_bodies_as_kubectl_create_sends_them() {
    let s = TestServer::start().await;
    // k8s\0 + runtime.Unknown{typeMeta{v1, Namespace}, raw: Namespace{metadata{name: demo}}}
    let mut tm = Vec::new();
    field(1, b"v1", &mut tm);
    field(2, b"Namespace", &mut tm);
    let mut meta = Vec::new();
    field(1, b"demo", &mut meta);
    let mut ns = Vec::new();
    field(1, &meta, &mut ns);
    let mut unknown = Vec::new();
    field(1, &tm, &mut unknown);
    field(2, &ns, &mut unknown);
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown);
    let ct = [("Content-Type", "application/vnd.kubernetes.protobuf")];
    let (code, _, resp) = http(
        &s,
        "POST",
        "/api/v1/namespaces?fieldValidation=Strict",
        &ct,
        &body,
    )
    .await;
    assert_eq!(code, 201, "{resp}");
    let (code, _, resp) = http(&s, "GET", "/api/v1/namespaces/demo", &[], b"").await;
    assert_eq!(code, 200);
    assert_eq!(json_of(&resp)["status"]["phase"], "Active");
    // A body that is not protobuf is a 400 naming the problem, not a crash.
    let (code, _, resp) = http(&s, "POST", "/api/v1/namespaces", &ct, b"{}").await;
    assert_eq!(code, 400);
    assert!(resp.contains("protobuf"), "{resp}");
}

#[tokio::test]
async fn tables_for_list_get_and_watch() {
    let s = TestServer::start().await;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}});
    let (code, _, resp) = http(
        &s,
        "POST",
        "/api/v1/namespaces/default/services",
        &[],
        svc.to_string().as_bytes(),
    )
    .await;
    assert_eq!(code, 201, "{resp}");
    let created = json_of(&resp);
    let accept = [("Accept", TABLE)];
    let (code, headers, resp) = http(
        &s,
        "GET",
        "/api/v1/namespaces/default/services",
        &accept,
        b"",
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        headers
            .iter()
            .any(|h| h.starts_with("content-type: application/json;as=table;v=v1;g=meta.k8s.io")),
        "{headers:?}"
    );
    let t = json_of(&resp);
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    assert_eq!(t["columnDefinitions"][6]["priority"], 1);
    let row = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "web")
        .expect("web row");
    let node_port = created["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert_eq!(row["cells"][1], "NodePort");
    assert_eq!(row["cells"][2], created["spec"]["clusterIP"]);
    assert_eq!(row["cells"][4], format!("80:{node_port}/TCP"));
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    // includeObject=Object on a single get.
    let (_, _, resp) = http(
        &s,
        "GET",
        "/api/v1/namespaces/default/services/web?includeObject=Object",
        &accept,
        b"",
    )
    .await;
    let t = json_of(&resp);
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    assert_eq!(t["rows"][0]["object"]["spec"]["type"], "NodePort");
    // Watch events carry one-row Tables.
    let (code, _, resp) = http(
        &s,
        "GET",
        "/api/v1/namespaces/default/services?watch=true&timeoutSeconds=1",
        &accept,
        b"",
    )
    .await;
    assert_eq!(code, 200);
    let first = resp.lines().find(|l| l.starts_with('{')).expect("an event");
    let ev: Value = serde_json::from_str(first).unwrap();
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["kind"], "Table");
    assert_eq!(ev["object"]["rows"].as_array().unwrap().len(), 1);
    // Without the Accept header: plain objects.
    let (_, _, resp) = http(&s, "GET", "/api/v1/namespaces/default/services", &[], b"").await;
    assert_eq!(json_of(&resp)["kind"], "ServiceList");
}

#[tokio::test]
async fn openapi_documents_and_field_validation() {
    let s = TestServer::start().await;
    let (code, _, resp) = http(
        &s,
        "GET",
        "/openapi/v3",
        &[("Accept", "application/json")],
        b"",
    )
    .await;
    assert_eq!(code, 200);
    let index = json_of(&resp);
    let paths = index["paths"].as_object().unwrap();
    assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
    for (gv, entry) in paths {
        let url = entry["serverRelativeURL"].as_str().unwrap();
        let (code, _, doc) = http(&s, "GET", url, &[], b"").await;
        assert_eq!(code, 200, "{gv}");
        assert!(json_of(&doc)["components"]["schemas"].is_object(), "{gv}");
    }
    let (code, _, resp) = http(
        &s,
        "GET",
        "/openapi/v2",
        &[("Accept", "application/json")],
        b"",
    )
    .await;
    assert_eq!(code, 200);
    let v2 = json_of(&resp);
    assert_eq!(v2["swagger"], "2.0");
    assert_eq!(
        v2["definitions"]["io.k8s.api.core.v1.Service"]["x-kubernetes-group-version-kind"][0]
            ["kind"],
        "Service"
    );
    // client-go asks for (and only decodes) the protobuf form.
    let pb = [(
        "Accept",
        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    )];
    let (code, headers, body) = http(&s, "GET", "/openapi/v2", &pb, b"").await;
    assert_eq!(code, 200);
    assert!(
        headers.iter().any(
            |h| h == "content-type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        ),
        "{headers:?}"
    );
    assert!(body.contains("io.k8s.api.apps.v1.DeploymentSpec"));
    let other = [("Accept", "application/vnd.kubernetes.protobuf")];
    assert_eq!(http(&s, "GET", "/openapi/v2", &other, b"").await.0, 406);

    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x", "imagePullPolicy": "Always", "colour": "red"}]}});
    let body = bad.to_string();
    let (code, _, resp) = http(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods?fieldValidation=Strict",
        &[],
        body.as_bytes(),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        json_of(&resp)["message"],
        "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.containers[0].colour\""
    );
    let (code, headers, _) = http(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods",
        &[],
        body.as_bytes(),
    )
    .await;
    assert_eq!(code, 201);
    assert!(
        headers
            .iter()
            .any(|h| h == "warning: 299 - \"unknown field \\\"spec.containers[0].colour\\\"\""),
        "{headers:?}"
    );
    // A strategic merge patch with an unknown field under Strict.
    let ct = [("Content-Type", "application/strategic-merge-patch+json")];
    let (code, _, resp) = http(
        &s,
        "PATCH",
        "/api/v1/namespaces/default/pods/p?fieldValidation=Strict",
        &ct,
        br#"{"spec":{"nodeNmae":"x"}}"#,
    )
    .await;
    assert_eq!(code, 400, "{resp}");
    assert!(
        resp.contains("unknown field \\\"spec.nodeNmae\\\""),
        "{resp}"
    );
}
