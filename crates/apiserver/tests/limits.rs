//! Request limits and numeric bounds, over real sockets: a half-sent header or body is closed
//! within its timeout, an oversized body gets 413, requests over the in-flight budget get 429
//! with Retry-After while other clients are served, object quotas answer 403 "exceeded
//! quota", and huge numbers are refused with the field named.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response (the server closes or says Content-Length) within 10 s.
async fn read_reply(s: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut chunk = [0u8; 8192];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut chunk))
            .await
            .expect("reply within 10 s")
            .unwrap_or(0);
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if n == 0 || len.is_some_and(|l| body.len() >= l) {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return Reply {
                    status,
                    head: head.to_string(),
                    body: serde_json::from_str(body).unwrap_or(Value::Null),
                };
            }
        }
        assert!(n > 0, "connection closed before a reply: {text:?}");
    }
}

/// Sends `method path` with a JSON body and reads the reply.
async fn request(addr: SocketAddr, method: &str, path: &str, body: &Value) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let b = body.to_string();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    read_reply(&mut s).await
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    read_reply(&mut s).await
}

/// A request whose header is complete but whose body is not: it holds its in-flight slot.
async fn half_sent_body(addr: SocketAddr, method: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\":"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Waits until the peer closes `s` (EOF or reset); returns how long that took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut sink = Vec::new();
    let r = tokio::time::timeout(limit, s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "connection still open after {limit:?}");
    t.elapsed()
}

#[tokio::test]
async fn a_half_sent_header_is_closed_within_the_timeout() {
    let srv = TestServer::start_with(|c| {
        c.limits.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let took = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    // Others are served meanwhile and after.
    assert_eq!(get(srv.addr, "/api/v1/namespaces").await.status, 200);
}

#[tokio::test]
async fn a_half_sent_body_gets_408_and_is_closed() {
    let srv = TestServer::start_with(|c| {
        c.limits.body_read_timeout = Duration::from_millis(500);
    })
    .await;
    let mut s = half_sent_body(srv.addr, "POST").await;
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.body["reason"], "Timeout");
    closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(srv
        .server
        .metrics()
        .render()
        .contains("sarasa_requests_refused_total{reason=\"body_timeout\"} 1"));
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let srv = TestServer::start_with(|c| c.limits.max_body_bytes = 64 << 10).await;
    // Announced: refused before it is read.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4194304\r\n\r\n{")
        .await
        .unwrap();
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body["reason"], "RequestEntityTooLarge");
    assert_eq!(
        r.body["message"],
        "Request entity too large: limit is 65536"
    );
    // Not announced (chunked): refused once it passes the limit.
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
        "data": {"x": "a".repeat(100 << 10)}})
    .to_string();
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut req = b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in big.as_bytes().chunks(8192) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it has read everything.
    let _ = s.write_all(&req).await;
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 413, "{r:?}");
    // Within the limit is fine, and nothing of the refused one was stored.
    let small = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "small"},
        "data": {"x": "a".repeat(1000)}});
    let r = request(
        srv.addr,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &small,
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = get(srv.addr, "/api/v1/namespaces/default/configmaps/big").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        srv.server
            .metrics()
            .refusals(sarasa_apiserver::metrics::Refusal::TooLarge),
        2
    );
}

#[tokio::test]
async fn requests_over_the_inflight_budget_get_429() {
    let srv = TestServer::start_with(|c| {
        c.limits.max_requests_inflight = 1;
        c.limits.max_mutating_requests_inflight = 1;
        c.limits.body_read_timeout = Duration::from_secs(30);
    })
    .await;
    // A watch is long-running: it does not take the read budget.
    let mut w = TcpStream::connect(srv.addr).await.unwrap();
    w.write_all(b"GET /api/v1/namespaces?watch=true HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    w.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert_eq!(get(srv.addr, "/api/v1/namespaces").await.status, 200);

    // One mutating request in flight (its body half-sent) fills the mutating budget.
    let held = half_sent_body(srv.addr, "POST").await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let r = common::eventually(10, "a 429", || async {
        let r = request(
            srv.addr,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            &cm,
        )
        .await;
        (r.status == 429).then_some(r)
    })
    .await;
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert_eq!(r.body["reason"], "TooManyRequests");
    // Reads have their own budget: still served.
    assert_eq!(get(srv.addr, "/api/v1/namespaces").await.status, 200);

    // A read in flight fills the read budget.
    let held_read = half_sent_body(srv.addr, "GET").await;
    common::eventually(10, "a read 429", || async {
        (get(srv.addr, "/api/v1/namespaces").await.status == 429).then_some(())
    })
    .await;

    // The slots come back when the held requests go away.
    drop(held);
    drop(held_read);
    common::eventually(10, "the create served", || async {
        let r = request(
            srv.addr,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            &cm,
        )
        .await;
        (r.status == 201).then_some(())
    })
    .await;
    assert_eq!(get(srv.addr, "/api/v1/namespaces").await.status, 200);
    assert!(
        srv.server
            .metrics()
            .refusals(sarasa_apiserver::metrics::Refusal::TooManyRequests)
            >= 2
    );
}

#[tokio::test]
async fn namespace_object_quotas_refuse_creates_beyond_the_count() {
    let srv = TestServer::start_with(|c| {
        c.limits.object_quotas.insert("configmaps".into(), 2);
    })
    .await;
    let cm = |n: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}});
    let path = "/api/v1/namespaces/default/configmaps";
    assert_eq!(request(srv.addr, "POST", path, &cm("a")).await.status, 201);
    assert_eq!(request(srv.addr, "POST", path, &cm("b")).await.status, 201);
    let r = request(srv.addr, "POST", path, &cm("c")).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.body["message"],
        "configmaps \"c\" is forbidden: exceeded quota: object-counts, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"
    );
    // Per namespace: another one has its own count.
    let r = request(
        srv.addr,
        "POST",
        "/api/v1/namespaces/kube-public/configmaps",
        &cm("c"),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    // Room again after a delete.
    let r = request(srv.addr, "DELETE", &format!("{path}/a"), &json!({})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(request(srv.addr, "POST", path, &cm("c")).await.status, 201);
}

fn deployment(spec_patch: Value) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
            "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    json_patch::merge(&mut d["spec"], &spec_patch);
    d
}

fn causes(r: &Reply) -> Vec<String> {
    r.body["details"]["causes"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| c["field"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn huge_numbers_are_refused_naming_the_field() {
    let srv = TestServer::start().await;
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    // Values beyond int32 fail decoding (400, as kube-apiserver's decoder); values that decode
    // but are out of range fail validation (422 naming the field).
    let cases = [
        (json!({"replicas": 2147483647}), 422, "spec.replicas"),
        (json!({"replicas": i64::MAX}), 400, ""),
        (json!({"replicas": -1}), 422, "spec.replicas"),
        (
            json!({"strategy": {"rollingUpdate": {"maxUnavailable": "9223372036854775807%"}}}),
            422,
            "spec.strategy.rollingUpdate.maxUnavailable",
        ),
        (
            json!({"strategy": {"rollingUpdate": {"maxSurge": "-5%"}}}),
            422,
            "spec.strategy.rollingUpdate.maxSurge",
        ),
        (
            json!({"strategy": {"rollingUpdate": {"maxSurge": i64::MAX}}}),
            400,
            "",
        ),
        (
            json!({"strategy": {"rollingUpdate": {"maxSurge": 2147483647, "maxUnavailable": -1}}}),
            422,
            "spec.strategy.rollingUpdate.maxUnavailable",
        ),
        (
            json!({"template": {"spec": {"terminationGracePeriodSeconds": i64::MAX}}}),
            422,
            "spec.template.spec.terminationGracePeriodSeconds",
        ),
        (
            json!({"template": {"spec": {"terminationGracePeriodSeconds": -1}}}),
            422,
            "spec.template.spec.terminationGracePeriodSeconds",
        ),
        (
            json!({"template": {"spec": {"activeDeadlineSeconds": i64::MAX}}}),
            422,
            "spec.template.spec.activeDeadlineSeconds",
        ),
        (
            json!({"template": {"spec": {"containers": [{"name": "c", "image": "i",
            "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": -1}}]}}}),
            422,
            "spec.template.spec.containers[0].readinessProbe.periodSeconds",
        ),
        (
            json!({"template": {"spec": {"containers": [{"name": "c", "image": "i",
            "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": i64::MAX}}]}}}),
            400,
            "",
        ),
        (
            json!({"template": {"spec": {"containers": [{"name": "c", "image": "i",
            "ports": [{"containerPort": 70000}]}]}}}),
            422,
            "spec.template.spec.containers[0].ports[0].containerPort",
        ),
    ];
    for (patch, code, field) in cases {
        let r = request(srv.addr, "POST", deps, &deployment(patch.clone())).await;
        assert_eq!(r.status, code, "{patch}: {r:?}");
        if code == 422 {
            assert_eq!(causes(&r), [field], "{patch}");
        }
    }
    // No pods were made for any of them.
    let pods = get(srv.addr, "/api/v1/namespaces/default/pods").await;
    assert_eq!(pods.body["items"].as_array().map(Vec::len), Some(0));

    // A valid one, then scaling it past the bound through the scale subresource.
    assert_eq!(
        request(srv.addr, "POST", deps, &deployment(json!({})))
            .await
            .status,
        201
    );
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "d", "namespace": "default"},
        "spec": {"replicas": 9223372036854775807i64}});
    let r = request(srv.addr, "PUT", &format!("{deps}/d/scale"), &scale).await;
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(causes(&r), ["spec.replicas"]);
    // A pod's grace period on delete, near i64::MAX or negative: 400 naming the field.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    assert_eq!(
        request(srv.addr, "POST", "/api/v1/namespaces/default/pods", &pod)
            .await
            .status,
        201
    );
    for g in ["9223372036854775807", "2147483648"] {
        let r = request(
            srv.addr,
            "DELETE",
            &format!("/api/v1/namespaces/default/pods/p?gracePeriodSeconds={g}"),
            &json!({}),
        )
        .await;
        assert_eq!(r.status, 400, "{g}: {r:?}");
        assert!(
            r.body["message"]
                .as_str()
                .unwrap_or("")
                .contains("gracePeriodSeconds"),
            "{r:?}"
        );
    }
    let r = request(
        srv.addr,
        "DELETE",
        "/api/v1/namespaces/default/pods/p",
        &json!({"gracePeriodSeconds": i64::MAX}),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");

    // A watch with a huge timeout is capped, not overflowed; a negative one is refused.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /api/v1/namespaces?watch=true&timeoutSeconds=9223372036854775807 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let r = get(srv.addr, "/api/v1/namespaces?watch=true&timeoutSeconds=-1").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body["message"]
        .as_str()
        .unwrap_or("")
        .contains("timeoutSeconds"));
    // And the server still serves.
    assert_eq!(get(srv.addr, "/api/v1/namespaces").await.status, 200);
}

#[tokio::test]
async fn a_short_watch_timeout_ends_the_watch() {
    let srv = TestServer::start_with(|c| c.limits.max_watch_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /api/v1/namespaces?watch=true&timeoutSeconds=100000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // Capped at 1 s: the stream ends (and the connection closes) well before 100000 s.
    closed_within(&mut s, Duration::from_secs(10)).await;
}
