//! Wiring: the listeners (UDP and TCP on every `--listen` address, served by hickory's
//! `Server` with [`DnsHandler`]), the feed, and the HTTP endpoint (`/metrics`, `/healthz`,
//! `/readyz`). Sockets are bound in the calling thread's network namespace.
//!
//! UDP: one socket per worker thread per address with SO_REUSEPORT, so the kernel spreads
//! queries over the workers ([`crate::udp`]: `recvmmsg` batches, the fast path from
//! pre-encoded answers, the rest handed to the hickory path on the runtime); IPv6 sockets are
//! v6-only so `0.0.0.0:53` and `[::]:53` coexist. TCP: hickory's `Server`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use hickory_server::Server;
use sarasa_cluster::watch::Shared;
use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

use crate::answer_cache::AnswerCache;
use crate::config::ZoneConfig;
use crate::feed;
use crate::handler::DnsHandler;
use crate::metrics::Metrics;
use crate::snapshot::ZoneSnapshot;
use crate::upstream::Forwarder;

/// How long an idle TCP client connection is kept.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving DNS: {0}")]
    Serve(String),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("Kubernetes client: {0}")]
    Client(String),
}

/// The API client: `--apiserver URL` (plain HTTP in the lab), else the usual inference
/// (in-cluster service account, $KUBECONFIG, ~/.kube/config).
pub async fn client(apiserver: Option<&str>) -> Result<kube::Client, ServerError> {
    let config = match apiserver {
        Some(url) => {
            let uri: http::Uri = url.parse().map_err(|e| crate::config::ConfigError {
                flag: "--apiserver",
                message: format!("{url:?}: {e}"),
            })?;
            if uri.scheme().is_none() || uri.authority().is_none() {
                return Err(crate::config::ConfigError {
                    flag: "--apiserver",
                    message: format!("{url:?} must be http://HOST:PORT or https://HOST:PORT"),
                }
                .into());
            }
            sarasa_cluster::client_config::for_url(uri)
        }
        None => sarasa_cluster::client_config::infer()
            .await
            .map_err(ServerError::Client)?,
    };
    kube::Client::try_from(config).map_err(|e| ServerError::Client(e.to_string()))
}

/// Everything `sarasa dns` is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Vec<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub zone: ZoneConfig,
    pub upstreams: Vec<SocketAddr>,
    pub cache_size: usize,
    /// UDP worker threads (one SO_REUSEPORT socket each per address); 0: one per available
    /// core.
    pub udp_workers: usize,
    /// Answer cluster queries over UDP from pre-encoded answers ([`crate::answer_cache`]);
    /// off, every query takes the hickory path.
    pub fast_path: bool,
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`, which also
/// overrides `madvise(MADV_HUGEPAGE)`). The allocator asks the kernel for huge pages on its
/// arenas, and a 2 MiB page is resident as soon as one byte of it is used: for this server's
/// many small long-lived allocations, huge pages cost 8 MB of RSS after the first sync and
/// 10 MB after the benchmark's queries (10k Services, 50k endpoints; ARCHITECTURE.md, cluster
/// DNS). Call it first thing: the pages touched before it stay huge (~4 MB of that).
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integers only and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The UDP worker count `n` stands for (0: the available cores).
pub fn udp_worker_count(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Room for bursts while a worker is busy (the kernel caps it at rmem_max).
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// EAFNOSUPPORT on Linux: the address family is not supported.
const EAFNOSUPPORT: i32 = 97;

/// The bound DNS sockets (UDP sockets per address and core, one TCP listener per address).
pub struct Sockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

/// Binds every listen address, in the calling thread's network namespace, with one UDP
/// socket per available core.
pub fn bind(listen: &[SocketAddr]) -> Result<Sockets, ServerError> {
    bind_workers(listen, 0)
}

/// Binds every listen address with `workers` UDP sockets each (0: one per available core).
pub fn bind_workers(listen: &[SocketAddr], workers: usize) -> Result<Sockets, ServerError> {
    let per_address = udp_worker_count(workers);
    let mut sockets = Sockets {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for addr in listen {
        // A host without IPv6 (EAFNOSUPPORT) cannot serve `[::]`: skip it, keep IPv4.
        if addr.is_ipv6() {
            if let Err(e) = Socket::new(Domain::IPV6, Type::DGRAM, None) {
                if e.raw_os_error() == Some(EAFNOSUPPORT) {
                    tracing::warn!(%addr, "IPv6 is not available here; not listening on it");
                    continue;
                }
            }
        }
        for _ in 0..per_address {
            sockets
                .udp
                .push(bind_udp(*addr).map_err(|source| ServerError::Bind {
                    proto: "UDP",
                    addr: *addr,
                    source,
                })?);
        }
        sockets
            .tcp
            .push(bind_tcp(*addr).map_err(|source| ServerError::Bind {
                proto: "TCP",
                addr: *addr,
                source,
            })?);
    }
    Ok(sockets)
}

/// The running server's shared parts (tests and the CLI read them).
#[derive(Clone)]
pub struct Running {
    pub zone: Arc<ArcSwap<ZoneSnapshot>>,
    pub ready: Arc<AtomicBool>,
    pub metrics: Arc<Metrics>,
    pub handler: DnsHandler,
    /// The fast path's answers (`None` when it is off).
    pub cache: Option<Arc<AnswerCache>>,
}

impl Running {
    pub fn new(settings: &Settings) -> Self {
        let metrics = Arc::new(Metrics::default());
        let zone = Arc::new(ArcSwap::from_pointee(ZoneSnapshot::empty(&settings.zone)));
        let forwarder = (!settings.upstreams.is_empty()).then(|| {
            Arc::new(Forwarder::new(
                settings.upstreams.clone(),
                settings.cache_size,
            ))
        });
        let cache = settings
            .fast_path
            .then(|| Arc::new(AnswerCache::new(zone.clone(), forwarder.is_some())));
        Running {
            cache,
            handler: DnsHandler {
                zone: zone.clone(),
                forwarder,
                metrics: metrics.clone(),
            },
            zone,
            ready: Arc::new(AtomicBool::new(false)),
            metrics,
        }
    }
}

/// Runs the server until a listener fails: binds, starts the watchers on `client`, the feed,
/// the HTTP endpoint, and serves DNS.
pub async fn run(settings: Settings, client: kube::Client) -> Result<(), ServerError> {
    let sockets = bind_workers(&settings.listen, settings.udp_workers)?;
    let metrics_listener = match settings.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    proto: "TCP (metrics)",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    let running = Running::new(&settings);
    let shared = Arc::new(Shared::default());
    let _watchers = feed::spawn_watchers(&client, &shared);
    tokio::spawn(feed::run(
        shared,
        settings.zone.clone(),
        running.zone.clone(),
        running.ready.clone(),
        running.metrics.clone(),
        running.cache.clone(),
    ));
    if let Some(listener) = metrics_listener {
        let running = running.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, http_router(running)).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    serve_with(sockets, running.handler.clone(), running.cache.clone()).await
}

/// Serves DNS on bound sockets with `handler` (the hickory path only) until a listener fails.
pub async fn serve(sockets: Sockets, handler: DnsHandler) -> Result<(), ServerError> {
    serve_with(sockets, handler, None).await
}

/// Serves DNS on bound sockets until a listener fails: UDP on worker threads answering from
/// `cache` where it can (the fast path), TCP and the rest of UDP through `handler`. Dropping
/// the future stops the UDP workers.
pub async fn serve_with(
    sockets: Sockets,
    handler: DnsHandler,
    cache: Option<Arc<AnswerCache>>,
) -> Result<(), ServerError> {
    let _workers = crate::udp::spawn(
        sockets.udp,
        handler.clone(),
        cache,
        tokio::runtime::Handle::current(),
    )
    .map_err(|e| ServerError::Serve(format!("starting the UDP workers: {e}")))?;
    let mut server = Server::new(handler);
    for l in sockets.tcp {
        let l =
            tokio::net::TcpListener::from_std(l).map_err(|e| ServerError::Serve(e.to_string()))?;
        server.register_listener(l, TCP_IDLE_TIMEOUT, 64);
    }
    server
        .block_until_done()
        .await
        .map_err(|e| ServerError::Serve(e.to_string()))
}

/// `/metrics` (Prometheus text), `/healthz` (200 while serving), `/readyz` (200 once the first
/// full sync is served, 503 before).
pub fn http_router(running: Running) -> axum::Router {
    let registry = Arc::new(running.metrics.registry());
    let metrics = running.metrics.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                let metrics = metrics.clone();
                async move {
                    metrics.fold_fast_counters();
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (
                            StatusCode::OK,
                            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                            text,
                        ),
                        Err(e) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [("content-type", "text/plain")],
                            e.to_string(),
                        ),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(running)
}

async fn readyz(State(running): State<Running>) -> (StatusCode, &'static str) {
    if running.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first full sync\n",
        )
    }
}
