//! The API server's list, watch-event and write rates with many objects (10k Pods and 100k
//! Services by default), before and after TLS, authentication and authorization, side by side in
//! one run: the same store is served twice on 127.0.0.1 —
//! - "before": plain HTTP, no authentication, authorization off (the server before security);
//! - "after": the server as the lab runs it: HTTPS with a CA-signed certificate the client
//!   verifies, bearer-token authentication, RBAC; every request carries a ServiceAccount token
//!   issued through TokenRequest for `bench/bencher`, which holds the default `edit` ClusterRole
//!   through a RoleBinding in the benchmark namespace (not system:masters).
//!
//! Rounds alternate between the two; medians are printed with the machine.
//!
//! `cargo run --release -p sarasa-apiserver --example api_bench -- [--pods N] [--services N] [--rounds N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{AsyncBufReadExt, StreamExt};
use kube::client::Body;
use sarasa_apiserver::authz::{AuthorizationMode, Authorizer};
use sarasa_apiserver::config::{Authentication, StaticToken, TlsFiles};
use sarasa_apiserver::resources::{NAMESPACES, PODS, ROLEBINDINGS, SERVICEACCOUNTS, SERVICES};
use sarasa_apiserver::store::{Store, WriteOpts};
use sarasa_apiserver::{ApiServer, Config, UserInfo};
use serde_json::json;

const NS: &str = "bench";
const SA: &str = "bencher";
/// The admin's static token: used once, to ask for the ServiceAccount's token.
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
const PAGE: usize = 500;
const WRITES: usize = 2000;
const WRITERS: usize = 8;
const WATCH_EVENTS: usize = 5000;

struct Args {
    pods: usize,
    services: usize,
    rounds: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        pods: 10_000,
        services: 100_000,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<usize> {
            it.next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--pods" => a.pods = num("--pods")?,
            "--services" => a.services = num("--services")?,
            "--rounds" => a.rounds = num("--rounds")?.max(1),
            other => bail!("unknown argument {other:?} (--pods N, --services N, --rounds N)"),
        }
    }
    Ok(a)
}

fn seed(store: &Store, pods: usize, services: usize) -> Result<()> {
    let o = WriteOpts::internal();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    store.create(NAMESPACES, "", ns, o)?;
    for i in 0..pods {
        let p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": format!("app-{}", i % 100)}},
            "spec": {"nodeName": format!("node-{}", i % 50), "containers": [{"name": "c", "image": "registry.example/app:1"}]}});
        store.create(PODS, NS, p, o)?;
    }
    for i in 0..services {
        let s = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i:06}")},
            "spec": {"selector": {"app": format!("app-{}", i % 100)}, "ports": [{"port": 80, "targetPort": 8080}]}});
        store.create(SERVICES, NS, s, o)?;
    }
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "bencher-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "bencher", "namespace": NS}]});
    store.create(ROLEBINDINGS, NS, rb, o)?;
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}});
    store.create(SERVICEACCOUNTS, NS, sa, o)?;
    Ok(())
}

/// "Before": the store's handlers over plain HTTP, no authentication, authorization off.
async fn serve_plain(app: axum::Router) -> Result<kube::Client> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut cfg = kube::Config::new(format!("http://{addr}").parse()?);
    cfg.read_timeout = Some(Duration::from_secs(120));
    Ok(kube::Client::try_from(cfg)?)
}

/// A CA, a serving certificate for 127.0.0.1 signed by it, and a P-256 ServiceAccount key, as
/// `lab up` makes them; returns the CA's PEM.
fn write_pki(dir: &std::path::Path) -> Result<String> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench-ca");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    let sa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    std::fs::write(dir.join("sa.key"), sa.serialize_pem())?;
    Ok(ca.pem())
}

/// "After": the configuration `lab up` gives the server (TLS, tokens, RBAC).
fn secure_config(dir: &std::path::Path) -> Config {
    let mut config = Config::new(dir.join("state"));
    config.authorization = AuthorizationMode::Rbac;
    config.tls = Some(TlsFiles {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
    });
    config.authentication = Some(Authentication {
        static_tokens: vec![StaticToken {
            token: ADMIN_TOKEN.into(),
            user: UserInfo {
                name: "bench-admin".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
                ..UserInfo::default()
            },
        }],
        service_account_key_file: dir.join("sa.key"),
        issuer: sarasa_apiserver::config::DEFAULT_ISSUER.into(),
        api_audiences: vec![sarasa_apiserver::config::DEFAULT_ISSUER.into()],
        root_ca_file: None,
        anonymous: false,
    });
    config
}

/// A kube client over HTTPS trusting only the CA, with a bearer token, as a kubeconfig gives.
async fn tls_client(addr: std::net::SocketAddr, ca_pem: &str, token: &str) -> Result<kube::Client> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": format!("https://{addr}"), "certificate-authority-data": ca}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": NS}}],
        "current-context": "x"
    });
    let kc: kube::config::Kubeconfig = serde_json::from_value(kc)?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    cfg.read_timeout = Some(Duration::from_secs(120));
    Ok(kube::Client::try_from(cfg)?)
}

/// Serves `server` over HTTPS and returns a client holding a fresh token of `bench/bencher`
/// from TokenRequest (asked for with the admin token).
async fn serve_secure(server: &ApiServer, ca_pem: &str) -> Result<kube::Client> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let s2 = server.clone();
    tokio::spawn(async move { s2.serve(listener).await });
    let admin = tls_client(addr, ca_pem, ADMIN_TOKEN).await?;
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}});
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{NS}/serviceaccounts/{SA}/token"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body)?)?;
    let tr: serde_json::Value = admin.request(req).await.context("TokenRequest")?;
    let token = tr["status"]["token"]
        .as_str()
        .context("TokenRequest returned no token")?;
    tls_client(addr, ca_pem, token).await
}

async fn get(client: &kube::Client, path: &str) -> Result<serde_json::Value> {
    let req = http::Request::builder().uri(path).body(Body::empty())?;
    let resp = client.send(req).await?;
    let code = resp.status();
    let bytes = resp.into_body().collect_bytes().await?;
    if !code.is_success() {
        bail!("GET {path}: {code}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Pages through a whole collection; returns pages per second and objects per second.
async fn list_all(client: &kube::Client, plural: &str) -> Result<(f64, f64)> {
    let start = Instant::now();
    let (mut pages, mut objects) = (0usize, 0usize);
    let mut cont = String::new();
    loop {
        let mut path = format!("/api/v1/namespaces/{NS}/{plural}?limit={PAGE}");
        if !cont.is_empty() {
            path.push_str(&format!("&continue={cont}"));
        }
        let v = get(client, &path).await?;
        pages += 1;
        objects += v["items"].as_array().map_or(0, Vec::len);
        cont = v["metadata"]["continue"].as_str().unwrap_or("").to_string();
        if cont.is_empty() {
            break;
        }
    }
    let s = start.elapsed().as_secs_f64();
    Ok((pages as f64 / s, objects as f64 / s))
}

/// Merge-patches pod labels over HTTP from several concurrent writers; writes per second.
async fn writes(client: &kube::Client, pods: usize, round: usize) -> Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..WRITES).step_by(WRITERS) {
                let path = format!("/api/v1/namespaces/{NS}/pods/pod-{:05}", i % pods);
                let body = json!({"metadata": {"labels": {"round": format!("r{round}-{i}")}}});
                let req = http::Request::builder()
                    .method(http::Method::PATCH)
                    .uri(&path)
                    .header("content-type", "application/merge-patch+json")
                    .body(Body::from(body.to_string().into_bytes()))?;
                let resp = client.send(req).await?;
                if !resp.status().is_success() {
                    bail!("PATCH {path}: {}", resp.status());
                }
                resp.into_body().collect_bytes().await?;
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(WRITES as f64 / start.elapsed().as_secs_f64())
}

/// Events per second a pod watch delivers while the store takes label writes.
async fn watch_events(
    client: &kube::Client,
    store: &Arc<Store>,
    pods: usize,
    round: usize,
) -> Result<f64> {
    let rv = store.rv();
    let req = http::Request::builder()
        .uri(format!(
            "/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion={rv}"
        ))
        .body(Vec::new())?;
    let stream = client.request_stream(req).await?;
    let mut lines = stream.lines();
    let writer_store = store.clone();
    let start = Instant::now();
    let writer = tokio::task::spawn_blocking(move || -> Result<()> {
        for i in 0..WATCH_EVENTS {
            let name = format!("pod-{:05}", i % pods);
            let patch = json!({"metadata": {"labels": {"w": format!("{round}-{i}")}}});
            let mut obj = (*writer_store.get(PODS, NS, &name)?).clone();
            json_patch::merge(&mut obj, &patch);
            writer_store.update(
                PODS,
                NS,
                &name,
                obj,
                sarasa_apiserver::store::Sub::Main,
                WriteOpts::internal(),
            )?;
        }
        Ok(())
    });
    let mut seen = 0;
    while seen < WATCH_EVENTS {
        match tokio::time::timeout(Duration::from_secs(60), lines.next()).await {
            Ok(Some(line)) => {
                if line?.contains("\"MODIFIED\"") {
                    seen += 1;
                }
            }
            Ok(None) => bail!("watch ended after {seen} events"),
            Err(_) => bail!("watch stalled after {seen} events"),
        }
    }
    writer.await??;
    Ok(WATCH_EVENTS as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {} GiB RAM, Linux {}, load average {}",
        mem / (1 << 20),
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    println!("machine: {}", machine());
    let dir = tempfile::tempdir()?;
    let ca_pem = write_pki(dir.path())?;
    let server = ApiServer::open(secure_config(dir.path()))?;
    let store = server.store().clone();
    let t = Instant::now();
    seed(&store, a.pods, a.services)?;
    println!(
        "seeded {} pods and {} services in {:.1}s; {} rounds, medians",
        a.pods,
        a.services,
        t.elapsed().as_secs_f64(),
        a.rounds
    );
    // Before: the same store and handlers over plain HTTP, no authentication, authorization off.
    let off = Authorizer::new(store.clone(), AuthorizationMode::AlwaysAllow);
    let before = serve_plain(sarasa_apiserver::http::router(
        store.clone(),
        None,
        off,
        None,
    ))
    .await?;
    // After: TLS, a ServiceAccount token, RBAC (`edit` in the namespace).
    let after = serve_secure(&server, &ca_pem).await?;
    get(&after, &format!("/api/v1/namespaces/{NS}/pods?limit=1"))
        .await
        .context("the ServiceAccount may list pods")?;
    if get(&after, "/api/v1/nodes").await.is_ok() {
        bail!("the ServiceAccount must not be allowed cluster-wide reads");
    }

    type Row = [Vec<f64>; 2];
    let mut rows: Vec<(&str, Row)> = vec![
        ("list pods, pages of 500 /s", Default::default()),
        ("list pods, objects /s", Default::default()),
        ("list services, pages of 500 /s", Default::default()),
        ("list services, objects /s", Default::default()),
        ("watch events delivered /s", Default::default()),
        ("writes (pod merge patch, 8 clients) /s", Default::default()),
    ];
    for round in 0..a.rounds {
        // Alternate which side goes first so drift on a shared machine hits both alike.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let c = if side == 0 { &before } else { &after };
            let (pp, po) = list_all(c, "pods").await?;
            let (sp, so) = list_all(c, "services").await?;
            let we = watch_events(c, &store, a.pods, round * 2 + side).await?;
            let wr = writes(c, a.pods, round * 2 + side).await?;
            for (i, v) in [pp, po, sp, so, we, wr].into_iter().enumerate() {
                rows[i].1[side].push(v);
            }
        }
    }
    println!(
        "{:<42} {:>12} {:>12} {:>8}",
        "", "before", "TLS+RBAC", "change"
    );
    for (name, [off, on]) in rows {
        let (b, r) = (median(off), median(on));
        println!(
            "{name:<42} {b:>12.1} {r:>12.1} {:>+7.1}%",
            (r - b) / b * 100.0
        );
    }
    server.shutdown();
    Ok(())
}
