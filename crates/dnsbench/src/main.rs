//! `dns-bench`: data and timings for scripts/bench-dns.sh.
//!
//! - `serve`: a real API server (the lab's, `sarasa_apiserver`, in-process) filled with the
//!   benchmark cluster; writes the NSD zone files, nsd.conf and the dnsperf query file from the
//!   objects as stored, prints `ready`, and serves the API until killed.
//! - `change`: creates Services one at a time and times API write → the DNS server answering
//!   the new name with its ClusterIP, then delete → NXDOMAIN; prints percentiles.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kube::api::{DeleteParams, PostParams};
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

async fn change(apiserver: &str, dns: SocketAddr, count: usize) -> Result<()> {
    let client = kube::Client::try_from(kube::Config::new(apiserver.parse()?))?;
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client, NAMESPACE);
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let mut created = Vec::new();
    let mut deleted = Vec::new();
    for i in 0..count {
        let name = format!("change-{}-{i}", std::process::id());
        let fqdn = format!("{name}.{NAMESPACE}.svc.{ZONE}");
        let svc = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        }))?;
        let stored = api.create(&PostParams::default(), &svc).await?;
        let written = Instant::now();
        let ip: std::net::Ipv4Addr = stored
            .spec
            .and_then(|s| s.cluster_ip)
            .context("the created Service has no ClusterIP")?
            .parse()?;
        let answered = tokio::task::block_in_place(|| {
            poll_dns(&sock, dns, &fqdn, |r| r.rcode == 0 && r.addresses == [ip])
        })?;
        created.push(answered - written);
        api.delete(&name, &DeleteParams::default()).await?;
        let written = Instant::now();
        let gone = tokio::task::block_in_place(|| poll_dns(&sock, dns, &fqdn, |r| r.rcode == 3))?;
        deleted.push(gone - written);
    }
    let report = |what: &str, v: &mut Vec<Duration>| {
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
    Ok(())
}
