//! A DNS server for benchmarks: the lab API server in-process on 127.0.0.1:6443, filled with
//! SERVICES ClusterIP Services (named port `http`) and one headless Service of 10 ready pods,
//! and the DNS server on 127.0.0.1:53 (metrics 127.0.0.1:9153) fed by it. Writes a dnsperf
//! query file (A, SRV, PTR and NXDOMAIN names, equal shares) to QUERYFILE, prints `ready`,
//! and serves until killed. Run it in a network namespace of its own:
//!
//! `ip netns exec NS target/release/examples/bench_server 1000 /tmp/q.txt`

use std::io::Write;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use sarasa_dns::config::ZoneConfig;
use sarasa_dns::server::{self, Settings};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let services: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let query_file = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "/tmp/sarasa-dns-queries.txt".into());
    let state = std::env::temp_dir().join(format!("sarasa-bench-api-{}", std::process::id()));
    let api = sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new(state.clone()))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:6443").await?;
    tokio::spawn(async move { api.serve(listener).await });
    let client = server::client(Some("http://127.0.0.1:6443")).await?;

    let pp = PostParams::default();
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &pp,
        &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?,
    )
    .await?;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "bench");
    let mut ips = Vec::new();
    for i in 0..services {
        let s: Service = serde_json::from_value(json!({"metadata": {"name": format!("svc-{i}")},
            "spec": {"ports": [{"name": "http", "port": 80}]}}))?;
        let s = svcs.create(&pp, &s).await?;
        ips.push(s.spec.and_then(|s| s.cluster_ip).unwrap_or_default());
    }
    let h: Service = serde_json::from_value(
        json!({"metadata": {"name": "pets"}, "spec": {"clusterIP": "None",
        "selector": {"app": "pets"}, "ports": [{"name": "http", "port": 80}]}}),
    )?;
    svcs.create(&pp, &h).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    for i in 0..10 {
        let p: Pod = serde_json::from_value(
            json!({"metadata": {"name": format!("pet-{i}"), "labels": {"app": "pets"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]}}),
        )?;
        pods.create(&pp, &p).await?;
        let ip = format!("10.244.7.{}", i + 1);
        pods.patch_status(
            &format!("pet-{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await?;
    }

    let mut q = std::fs::File::create(&query_file)?;
    for (i, ip) in ips.iter().enumerate() {
        let mut o: Vec<&str> = ip.split('.').collect();
        o.reverse();
        writeln!(q, "svc-{i}.bench.svc.cluster.local A")?;
        writeln!(q, "_http._tcp.svc-{i}.bench.svc.cluster.local SRV")?;
        writeln!(q, "{}.in-addr.arpa PTR", o.join("."))?;
        writeln!(q, "missing-{i}.bench.svc.cluster.local A")?;
    }
    drop(q);

    let settings = Settings {
        listen: vec!["127.0.0.1:53".parse()?],
        metrics_listen: Some("127.0.0.1:9153".parse()?),
        zone: ZoneConfig::new("cluster.local")?,
        upstreams: vec![],
        cache_size: 10_000,
        udp_workers: 0,
        fast_path: true,
    };
    let dns = tokio::spawn(server::run(settings, client));
    // Ready once the headless Service's 10 endpoints are served.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = tokio::process::Command::new("dig")
            .args(["@127.0.0.1", "+short", "pets.bench.svc.cluster.local", "A"])
            .output()
            .await?;
        if String::from_utf8_lossy(&out.stdout).lines().count() == 10 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("not ready within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready");
    let r = dns.await?;
    let _ = std::fs::remove_dir_all(state);
    r.map_err(Into::into)
}
