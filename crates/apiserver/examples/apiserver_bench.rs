//! Prints figures for the control plane: time to create and schedule a 100-pod Deployment,
//! Service creation rate, and time to list them all with kube-rs' paging.
//!
//! `cargo run --release -p sarasa-apiserver --example apiserver_bench [SERVICES]`

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use sarasa_apiserver::{ApiServer, Config};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let services: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let server = ApiServer::open(Config::new(dir.path().join("state")))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let s2 = server.clone();
    tokio::spawn(async move { s2.serve(listener).await });
    let client = kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse()?))?;

    let nodes: Api<Node> = Api::all(client.clone());
    for n in ["node-1", "node-2", "node-3"] {
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": n}}))?,
            )
            .await?;
        nodes
            .patch_status(
                n,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                ),
            )
            .await?;
    }
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "big"}, "spec": {"replicas": 100,
            "selector": {"matchLabels": {"app": "big"}},
            "template": {"metadata": {"labels": {"app": "big"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))?,
    )
    .await?;
    loop {
        let l = pods.list(&ListParams::default().labels("app=big")).await?;
        if l.items.len() == 100
            && l.items
                .iter()
                .all(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("100 pods not scheduled within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "100-pod Deployment created and scheduled: {:?}",
        start.elapsed()
    );

    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let start = Instant::now();
    let results = futures::stream::iter(0..services)
        .map(|i| {
            let svcs = svcs.clone();
            async move {
                let s: Service =
                    serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")},
                    "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80}]}}))
                    .expect("service");
                svcs.create(&PostParams::default(), &s).await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let took = start.elapsed();
    println!(
        "{services} Services created in {took:?} ({:.0}/s, {failed} failed)",
        services as f64 / took.as_secs_f64()
    );
    let start = Instant::now();
    let mut n = 0;
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = svcs.list(&lp).await?;
        n += page.items.len();
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    println!("listed {n} Services in pages of 500: {:?}", start.elapsed());
    server.shutdown();
    Ok(())
}
