//! The hostile-inputs fault driver (issue 14): against a real server over real sockets, sends
//! `rounds` of each hostile request — oversized bodies (announced and chunked), half-sent
//! headers, half-sent bodies (more at once than the write budget), huge replicas and
//! overflowing numbers — while a well-behaved client keeps listing, and counts
//! what was refused or contained and what the good client got. Shared by
//! `examples/fault_limits.rs` (scripts/fault-limits.sh) and `tests/fault_limits.rs`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sent and refused (or contained) per kind of hostile request.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub rows: Vec<(String, u64, u64)>,
    /// Well-behaved requests during the attack: answered as expected / not.
    pub good_ok: u64,
    pub good_failed: u64,
    /// The good client's slowest answer.
    pub good_max_latency: Duration,
    /// Objects the hostile requests left behind (must be 0).
    pub leftovers: u64,
}

impl Figures {
    pub fn print(&self) {
        println!("{:<44} {:>6} {:>8}", "hostile request", "sent", "refused");
        for (what, sent, refused) in &self.rows {
            println!("{what:<44} {sent:>6} {refused:>8}");
        }
        println!(
            "good client during the attack: {} ok, {} failed, slowest {} ms",
            self.good_ok,
            self.good_failed,
            self.good_max_latency.as_millis()
        );
        println!("objects left by hostile requests: {}", self.leftovers);
    }

    /// Every hostile request refused or contained, the good client always served.
    pub fn clean(&self) -> bool {
        self.rows.iter().all(|(_, s, r)| s == r) && self.good_failed == 0 && self.leftovers == 0
    }
}

/// One reply: status code (0 when the server closed without one) and JSON body.
async fn reply(s: &mut TcpStream, within: Duration) -> (u16, Value) {
    let mut buf = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let mut chunk = [0u8; 16384];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            _ => 0,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if n == 0 || len.is_some_and(|l| body.len() >= l) {
                let code = head
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return (code, serde_json::from_str(body).unwrap_or(Value::Null));
            }
        }
        if n == 0 {
            return (0, Value::Null);
        }
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, Value::Null);
    };
    let b = body.to_string();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, Value::Null);
    }
    reply(&mut s, Duration::from_secs(30)).await
}

/// Whether the server closes `s` within `within`.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut sink))
        .await
        .is_ok()
}

fn deployment(name: &str, spec: Value) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    json_patch::merge(&mut d["spec"], &spec);
    d
}

/// Runs the attack against `addr`, whose header and body timeouts are `timeout` and whose
/// mutating in-flight budget is `write_budget`; `rounds` of each kind.
pub async fn run(addr: SocketAddr, rounds: u64, timeout: Duration, write_budget: u64) -> Figures {
    let mut f = Figures::default();
    let slack = timeout + Duration::from_secs(5);

    // The well-behaved client: lists ConfigMaps every 20 ms throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let good = {
        let (stop, ok, failed, slowest) =
            (stop.clone(), ok.clone(), failed.clone(), slowest.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (code, _) = send(
                    addr,
                    "GET",
                    "/api/v1/namespaces/default/configmaps",
                    &json!({}),
                )
                .await;
                let counted = |c: bool| if c { &ok } else { &failed };
                counted(code == 200).fetch_add(1, Ordering::Relaxed);
                slowest.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            i
        })
    };

    // Oversized bodies, announced: 413 before the body is read.
    let mut refused = 0;
    for _ in 0..rounds {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let head = "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 67108864\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(b"{").await;
            refused += u64::from(reply(&mut s, slack).await.0 == 413);
        }
    }
    f.rows.push((
        "oversized body, announced (64 MiB) -> 413".into(),
        rounds,
        refused,
    ));

    // Oversized bodies, chunked: 413 once past the limit.
    let mut refused = 0;
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..rounds {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let head = "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            for _ in 0..4 {
                let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
                piece.extend_from_slice(&chunk);
                piece.extend_from_slice(b"\r\n");
                if s.write_all(&piece).await.is_err() {
                    break;
                }
            }
            refused += u64::from(reply(&mut s, slack).await.0 == 413);
        }
    }
    f.rows.push((
        "oversized body, chunked (4 MiB) -> 413".into(),
        rounds,
        refused,
    ));

    // Half-sent headers, all at once: each closed within the header timeout.
    let mut conns = Vec::new();
    for _ in 0..rounds {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s
                .write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await;
            conns.push(s);
        }
    }
    let closes = conns.iter_mut().map(|s| closed(s, slack));
    let refused = futures::future::join_all(closes)
        .await
        .into_iter()
        .filter(|c| *c)
        .count() as u64;
    f.rows
        .push(("half-sent header -> closed".into(), rounds, refused));

    // Half-sent bodies, more at once than the write budget: 408 (or 429 beyond the budget).
    let n = rounds.max(write_budget + rounds);
    let mut conns = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"kind\":").await;
            conns.push(s);
        }
    }
    let replies = conns.iter_mut().map(|s| reply(s, slack));
    let codes: Vec<u16> = futures::future::join_all(replies)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    let timed_out = codes.iter().filter(|c| **c == 408).count() as u64;
    let over_budget = codes.iter().filter(|c| **c == 429).count() as u64;
    f.rows.push((
        format!("half-sent body ({n} at once) -> 408 or 429"),
        n,
        timed_out + over_budget,
    ));
    f.rows.push((
        "  of which over the write budget -> 429".into(),
        n.saturating_sub(write_budget),
        over_budget,
    ));

    // Huge replicas and overflowing numbers: refused, nothing created.
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let hostile: Vec<(&str, &str, String, Value, u16)> = vec![
        (
            "replicas 2147483647 -> 422",
            "POST",
            deps.into(),
            deployment("h1", json!({"replicas": 2147483647})),
            422,
        ),
        (
            "replicas i64::MAX -> 400",
            "POST",
            deps.into(),
            deployment("h2", json!({"replicas": i64::MAX})),
            400,
        ),
        (
            "maxUnavailable \"9223372036854775807%\" -> 422",
            "POST",
            deps.into(),
            deployment(
                "h3",
                json!({"strategy": {"rollingUpdate": {"maxUnavailable": "9223372036854775807%"}}}),
            ),
            422,
        ),
        (
            "terminationGracePeriodSeconds i64::MAX -> 422",
            "POST",
            deps.into(),
            deployment(
                "h4",
                json!({"template": {"spec": {"terminationGracePeriodSeconds": i64::MAX}}}),
            ),
            422,
        ),
        (
            "delete gracePeriodSeconds i64::MAX -> 400",
            "DELETE",
            "/api/v1/namespaces/default/configmaps/x?gracePeriodSeconds=9223372036854775807".into(),
            json!({}),
            400,
        ),
        (
            "watch timeoutSeconds -1 -> 400",
            "GET",
            "/api/v1/namespaces?watch=true&timeoutSeconds=-1".into(),
            json!({}),
            400,
        ),
    ];
    for (what, method, path, body, want) in hostile {
        let mut refused = 0;
        for _ in 0..rounds {
            refused += u64::from(send(addr, method, &path, &body).await.0 == want);
        }
        f.rows.push((what.to_string(), rounds, refused));
    }
    // A watch asking for i64::MAX seconds is contained: served, capped, no overflow.
    let mut contained = 0;
    for _ in 0..rounds {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(b"GET /api/v1/namespaces?watch=true&timeoutSeconds=9223372036854775807 HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut first = [0u8; 12];
            let got = tokio::time::timeout(slack, s.read_exact(&mut first)).await;
            contained += u64::from(matches!(got, Ok(Ok(_))) && &first == b"HTTP/1.1 200");
        }
    }
    f.rows.push((
        "watch timeoutSeconds i64::MAX -> 200, capped".into(),
        rounds,
        contained,
    ));

    stop.store(true, Ordering::Relaxed);
    let _ = good.await;
    f.good_ok = ok.load(Ordering::Relaxed);
    f.good_failed = failed.load(Ordering::Relaxed);
    f.good_max_latency = Duration::from_millis(slowest.load(Ordering::Relaxed));
    let (_, deps) = send(addr, "GET", deps, &json!({})).await;
    let (_, pods) = send(addr, "GET", "/api/v1/namespaces/default/pods", &json!({})).await;
    let (_, cms) = send(
        addr,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &json!({}),
    )
    .await;
    let count = |v: &Value| v["items"].as_array().map_or(0, |a| a.len() as u64);
    f.leftovers = count(&deps) + count(&pods) + count(&cms);
    f
}
