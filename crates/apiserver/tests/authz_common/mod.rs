//! Harness of the authorization tests: a server with RBAC on, on 127.0.0.1 (ephemeral port),
//! wrapped in a TEST-ONLY layer that sets the request's user from the `x-test-user` and
//! `x-test-groups` headers — standing in for authentication (authn's tokens are tested by its
//! own tests); a request without them is anonymous.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue, Method};
use kube::client::Body;
use sarasa_apiserver::authz::AuthorizationMode;
use sarasa_apiserver::{ApiServer, Config, UserInfo};
use serde_json::Value;
use tokio::task::JoinHandle;

pub const SA_GROUPS: &[&str] = &["system:serviceaccounts", "system:authenticated"];

pub struct Server {
    pub server: ApiServer,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    handle: JoinHandle<()>,
}

/// The test-only stand-in for authentication; `default` is the user of requests without the
/// headers (for clients that cannot send them, such as kubectl).
async fn test_user(
    State(default): State<Option<UserInfo>>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = |req: &Request, k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let name = header(&req, "x-test-user");
    let groups: Vec<String> = header(&req, "x-test-groups")
        .map(|g| {
            g.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if let Some(name) = name {
        req.extensions_mut().insert(UserInfo {
            name,
            groups,
            ..UserInfo::default()
        });
    } else if let Some(u) = default {
        req.extensions_mut().insert(u);
    }
    next.run(req).await
}

impl Server {
    pub async fn start() -> Server {
        Self::start_as(None).await
    }

    /// A server whose requests without test headers are `default`'s.
    pub async fn start_as(default: Option<UserInfo>) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::new(dir.path().join("state"));
        config.authorization = AuthorizationMode::Rbac;
        let server = ApiServer::open(config).expect("open");
        server.start_controllers();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = server
            .router()
            .layer(axum::middleware::from_fn_with_state(default, test_user));
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            server,
            addr,
            dir,
            handle,
        }
    }

    /// A kube-rs client acting as `user` in `groups` (`None`: anonymous).
    pub fn client(&self, user: Option<(&str, &[&str])>) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().expect("url");
        let mut cfg = kube::Config::new(url);
        cfg.default_namespace = "default".into();
        cfg.read_timeout = Some(Duration::from_secs(30));
        if let Some((name, groups)) = user {
            cfg.headers.push((
                HeaderName::from_static("x-test-user"),
                HeaderValue::from_str(name).expect("header"),
            ));
            cfg.headers.push((
                HeaderName::from_static("x-test-groups"),
                HeaderValue::from_str(&groups.join(",")).expect("header"),
            ));
        }
        kube::Client::try_from(cfg).expect("client")
    }

    pub fn admin(&self) -> kube::Client {
        self.client(Some(("admin", &["system:masters", "system:authenticated"])))
    }

    /// One raw request as `user`; the status code and the JSON body.
    pub async fn call(
        &self,
        user: Option<(&str, &[&str])>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = self.client(user);
        let mut b = http::Request::builder().method(method).uri(path);
        let content_type = if body.is_some() {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        b = b.header("content-type", content_type);
        let body = body.map(|v| v.to_string()).unwrap_or_default();
        let req = b.body(Body::from(body.into_bytes())).expect("request");
        let resp = client.send(req).await.expect("send");
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect_bytes().await.expect("body");
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (code, v)
    }

    /// Applies every document of a YAML stream as `system:masters` (create, namespaced ones in
    /// their own namespace).
    pub async fn apply_yaml(&self, yaml: &str) {
        let admin = Some(("admin", &["system:masters"][..]));
        for doc in serde_norway::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
            if v.is_null() {
                continue;
            }
            let path = collection_path(&v);
            let client = self.client(admin);
            let req = http::Request::builder()
                .method(Method::POST)
                .uri(&path)
                .header("content-type", "application/json")
                .body(Body::from(v.to_string().into_bytes()))
                .expect("request");
            let resp = client.send(req).await.expect("send");
            // Created, or already there (a Namespace the test made), as `kubectl apply` sees it.
            let code = resp.status().as_u16();
            assert!(code == 201 || code == 409, "creating {path}: {code}: {v}");
        }
    }
}

/// `/api/v1/namespaces/<ns>/<plural>` or `/apis/<g>/<v>/<plural>` of an object.
pub fn collection_path(v: &Value) -> String {
    let api_version = v["apiVersion"].as_str().unwrap_or("");
    let kind = v["kind"].as_str().unwrap_or("");
    let plural = format!("{}s", kind.to_lowercase());
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match v["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
        None => format!("{base}/{plural}"),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.shutdown();
        self.handle.abort();
    }
}
