//! `dns-bench`: data and timings for scripts/bench-dns.sh.
//!
//! - `serve`: a real API server (the lab's, `sarasa_apiserver`, in-process) filled with the
//!   benchmark cluster; writes the NSD zone files, nsd.conf and the dnsperf query file from the
//!   objects as stored, prints `ready`, and serves the API until killed.
//! - `change`: creates Services one at a time and times API write → the DNS server answering
//!   the new name with its ClusterIP, then delete → NXDOMAIN; prints percentiles, and the same
//!   for API write → the event reaching a watcher of its own (what the API server's delivery
//!   alone costs, so a slow answer is told apart from a slow event).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::Api;
use sarasa_apiserver::resources::{ENDPOINTSLICES, NAMESPACES, SERVICES};
use sarasa_apiserver::store::WriteOpts;
use sarasa_dnsbench::{cluster, queries, wire, zone, NAMESPACE, ZONE};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Serve {
        /// The API server's state directory (created).
        #[arg(long)]
        state: PathBuf,
        /// Where the zone files, nsd.conf and queries.txt go.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        #[arg(long, default_value_t = 5)]
        endpoints_per_service: usize,
        /// Lines of dnsperf input.
        #[arg(long, default_value_t = 100_000)]
        queries: usize,
        /// Address and port NSD's config listens on.
        #[arg(long, default_value = "127.0.0.1")]
        nsd_address: String,
        #[arg(long, default_value_t = 5354)]
        nsd_port: u16,
    },
    Change {
        #[arg(long)]
        apiserver: String,
        /// The DNS server to ask.
        #[arg(long)]
        dns: SocketAddr,
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve {
            state,
            out,
            listen,
            services,
            endpoints_per_service,
            queries,
            nsd_address,
            nsd_port,
        } => {
            serve(
                state,
                out,
                listen,
                services,
                endpoints_per_service,
                queries,
                (&nsd_address, nsd_port),
            )
            .await
        }
        Command::Change {
            apiserver,
            dns,
            count,
        } => change(&apiserver, dns, count).await,
    }
}

async fn serve(
    state: PathBuf,
    out: PathBuf,
    listen: SocketAddr,
    services: usize,
    per_service: usize,
    query_lines: usize,
    nsd: (&str, u16),
) -> Result<()> {
    let server = sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new(&state))
        .context("opening the API server's store")?;
    let store = server.store();
    let started = Instant::now();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    if store.get(NAMESPACES, "", NAMESPACE).is_err() {
        store.create(NAMESPACES, "", ns, WriteOpts::default())?;
    }
    let mut bench = Vec::with_capacity(services);
    for i in 0..services {
        let stored = match store.get(SERVICES, NAMESPACE, &cluster::service_name(i)) {
            Ok(s) => s,
            Err(_) => store
                .create(
                    SERVICES,
                    NAMESPACE,
                    cluster::service_object(i),
                    WriteOpts::default(),
                )
                .with_context(|| format!("creating Service {i}"))?,
        };
        if store
            .get(
                ENDPOINTSLICES,
                NAMESPACE,
                &format!("{}-1", cluster::service_name(i)),
            )
            .is_err()
        {
            store
                .create(
                    ENDPOINTSLICES,
                    NAMESPACE,
                    cluster::slice_object(i, per_service),
                    WriteOpts::default(),
                )
                .with_context(|| format!("creating the EndpointSlice of Service {i}"))?;
        }
        bench.push(cluster::bench_service(i, &stored, per_service));
    }
    eprintln!(
        "{services} Services, {} endpoints stored in {:.1}s",
        services * per_service,
        started.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(&out)?;
    let write = |name: &str, body: String| -> Result<()> {
        let p = out.join(name);
        std::fs::write(&p, body).with_context(|| format!("writing {}", p.display()))
    };
    write(&format!("{ZONE}.zone"), zone::cluster_zone(&bench))?;
    write(
        &format!("{}.zone", zone::REVERSE_ZONE),
        zone::reverse_zone(&bench),
    )?;
    write("nsd.conf", zone::nsd_conf(&out, nsd.0, nsd.1))?;
    write("queries.txt", queries::query_mix(&bench, query_lines))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    println!("ready");
    server.serve(listener).await?;
    Ok(())
}

/// Asks `dns` for `name` A until `done` says the reply is the expected one (a query every
/// millisecond or so, each waiting at most 50 ms), for at most 10 s.
fn poll_dns(
    sock: &UdpSocket,
    dns: SocketAddr,
    name: &str,
    done: impl Fn(&wire::Reply) -> bool,
) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id: u16 = 1;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        id = id.wrapping_add(1);
        sock.send_to(&wire::query(id, name, wire::TYPE_A), dns)?;
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            let Ok(reply) = wire::parse_reply(&buf[..n]) else {
                continue;
            };
            if reply.id == id {
                if done(&reply) {
                    return Ok(Instant::now());
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    bail!("{name}: the expected answer never came within 10 s")
}

/// When the Services this run changes were seen by a watcher: (name, deleted) → instant.
type Seen = Arc<Mutex<HashMap<(String, bool), Instant>>>;

/// Watches the benchmark's Services, noting when each `prefix*` Service's event arrives;
/// returns once the watcher has listed (later writes arrive as events, not in the list).
async fn watch_changes(
    api: Api<k8s_openapi::api::core::v1::Service>,
    prefix: String,
    seen: Seen,
) -> Result<tokio::task::JoinHandle<()>> {
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut listed = Some(listed_tx);
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let now = Instant::now();
            let (svc, deleted) = match event {
                Ok(watcher::Event::Apply(s)) => (s, false),
                Ok(watcher::Event::Delete(s)) => (s, true),
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = listed.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            let name = svc.metadata.name.unwrap_or_default();
            if name.starts_with(&prefix) {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.entry((name, deleted)).or_insert(now);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), listed_rx)
        .await
        .context("the Service watcher did not list within 30 s")?
        .context("the Service watcher stopped")?;
    Ok(task)
}

async fn change(apiserver: &str, dns: SocketAddr, count: usize) -> Result<()> {
    let client = kube::Client::try_from(kube::Config::new(apiserver.parse()?))?;
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client, NAMESPACE);
    let prefix = format!("change-{}-", std::process::id());
    let seen = Seen::default();
    let watch = watch_changes(api.clone(), prefix.clone(), seen.clone()).await?;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut created = Vec::new();
    let mut deleted = Vec::new();
    let mut written = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}{i}");
        let fqdn = format!("{name}.{NAMESPACE}.svc.{ZONE}");
        let svc = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        }))?;
        let stored = api.create(&PostParams::default(), &svc).await?;
        let create_written = Instant::now();
        let ip: std::net::Ipv4Addr = stored
            .spec
            .and_then(|s| s.cluster_ip)
            .context("the created Service has no ClusterIP")?
            .parse()?;
        let answered = tokio::task::block_in_place(|| {
            poll_dns(&sock, dns, &fqdn, |r| r.rcode == 0 && r.addresses == [ip])
        })?;
        created.push(answered - create_written);
        api.delete(&name, &DeleteParams::default()).await?;
        let delete_written = Instant::now();
        let gone = tokio::task::block_in_place(|| poll_dns(&sock, dns, &fqdn, |r| r.rcode == 3))?;
        deleted.push(gone - delete_written);
        written.push((name, create_written, delete_written));
    }
    // An event can come after the DNS server answered (each watch connection is served in
    // turn): wait for the last ones a little, then report what came.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && seen.lock().unwrap_or_else(|p| p.into_inner()).len() < 2 * written.len()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watch.abort();
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut create_events = Vec::new();
    let mut delete_events = Vec::new();
    for (name, c, d) in &written {
        if let Some(t) = seen.get(&(name.clone(), false)) {
            create_events.push(t.saturating_duration_since(*c));
        }
        if let Some(t) = seen.get(&(name.clone(), true)) {
            delete_events.push(t.saturating_duration_since(*d));
        }
    }
    let report = |what: &str, v: &mut Vec<Duration>| {
        if v.is_empty() {
            println!("{what}: n=0");
            return;
        }
        v.sort();
        let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        println!(
            "{what}: n={} p50={:.1}ms p99={:.1}ms max={:.1}ms",
            v.len(),
            p(0.5).as_secs_f64() * 1e3,
            p(0.99).as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3
        );
    };
    report("service created -> answered", &mut created);
    report("service deleted -> NXDOMAIN", &mut deleted);
    report("service created -> watch event", &mut create_events);
    report("service deleted -> watch event", &mut delete_events);
    Ok(())
}
