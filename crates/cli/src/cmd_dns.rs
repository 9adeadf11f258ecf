//! `sarasa dns`: the flags, checked into `sarasa_dns::server::Settings`; the server is the
//! library's.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use sarasa_dns::config::{self, PodsMode, ZoneConfig};
use sarasa_dns::server::{self, Settings};

#[derive(Args, Debug)]
pub struct DnsArgs {
    /// API server URL (e.g. http://192.168.33.1:6443); default: in-cluster config / KUBECONFIG.
    #[arg(long)]
    apiserver: Option<String>,
    /// Serve DNS over UDP and TCP on this address (repeatable).
    #[arg(long, default_values_t = ["0.0.0.0:53".to_string(), "[::]:53".to_string()])]
    listen: Vec<String>,
    /// HTTP address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9153")]
    metrics_listen: String,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The cluster set's domain, where ServiceImports are named (MCS DNS specification).
    #[arg(long, default_value = config::DEFAULT_CLUSTERSET_DOMAIN)]
    clusterset_domain: String,
    /// Upstream resolver for names outside the cluster domain, IP[:PORT] (repeatable);
    /// default: the nameservers of /etc/resolv.conf. With none, such names are REFUSED.
    #[arg(long)]
    upstream: Vec<String>,
    /// TTL of cluster answers, seconds.
    #[arg(long, default_value_t = config::DEFAULT_TTL)]
    ttl: u32,
    /// TTL of negative cluster answers (the SOA minimum), seconds.
    #[arg(long, default_value_t = config::DEFAULT_NEGATIVE_TTL)]
    negative_ttl: u32,
    /// Pod records a-b-c-d.NS.pod.ZONE: verified, insecure or disabled.
    #[arg(long, default_value = "verified")]
    pods: String,
    /// Upstream cache entries (positive and negative).
    #[arg(long, default_value_t = config::DEFAULT_CACHE_SIZE)]
    cache_size: usize,
    /// UDP worker threads, each with its own SO_REUSEPORT socket per --listen address;
    /// 0: one per available core.
    #[arg(long, default_value_t = 0)]
    udp_workers: usize,
    /// Answer every UDP query through the general (hickory) path instead of the fast path's
    /// pre-encoded cluster answers (for comparison and debugging).
    #[arg(long)]
    no_fast_path: bool,
}

fn settings(args: &DnsArgs) -> anyhow::Result<Settings> {
    let listen = args
        .listen
        .iter()
        .map(|l| config::parse_listen("--listen", l))
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    let metrics_listen = config::parse_listen("--metrics-listen", &args.metrics_listen)?;
    let mut zone = ZoneConfig::new(&args.cluster_domain)?;
    zone.clusterset_domain =
        config::parse_domain_flag("--clusterset-domain", &args.clusterset_domain)?;
    if zone.clusterset_domain.zone_of(&zone.domain) || zone.domain.zone_of(&zone.clusterset_domain)
    {
        anyhow::bail!(
            "--clusterset-domain {} and --cluster-domain {} must not contain one another",
            args.clusterset_domain,
            args.cluster_domain
        );
    }
    zone.ttl = config::check_ttl("--ttl", args.ttl)?;
    zone.negative_ttl = config::check_ttl("--negative-ttl", args.negative_ttl)?;
    zone.pods = args.pods.parse::<PodsMode>()?;
    let upstreams = if args.upstream.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        config::resolv_conf_nameservers(&text)
    } else {
        args.upstream
            .iter()
            .map(|u| config::parse_upstream(u))
            .collect::<Result<Vec<_>, _>>()?
    };
    if upstreams.is_empty() {
        tracing::warn!("no upstream resolvers: names outside the cluster domain get REFUSED");
    }
    Ok(Settings {
        listen,
        metrics_listen: Some(metrics_listen),
        zone,
        upstreams,
        cache_size: config::check_cache_size(args.cache_size)?,
        udp_workers: config::check_udp_workers(args.udp_workers)?,
        fast_path: !args.no_fast_path,
    })
}

/// The in-cluster configuration when running in a pod (the `kubernetes` Service variables and
/// the mounted ServiceAccount token are there).
fn in_cluster() -> Option<kube::Config> {
    std::env::var_os("KUBERNETES_SERVICE_HOST")?;
    kube::Config::incluster().ok()
}

pub fn run(args: DnsArgs) -> anyhow::Result<ExitCode> {
    // Before the runtime and the zone allocate: pages touched before it stay huge.
    if let Err(e) = server::disable_transparent_huge_pages() {
        tracing::warn!(error = %e, "transparent huge pages stay on (more memory)");
    }
    let settings = settings(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = match (&args.apiserver, in_cluster()) {
            // In a pod, the in-cluster config (as CoreDNS's): the lab's containers share the
            // machine's filesystem, where a user's ~/.kube/config must not win.
            (None, Some(config)) => kube::Client::try_from(config)
                .map_err(|e| server::ServerError::Client(e.to_string()))?,
            _ => server::client(args.apiserver.as_deref()).await?,
        };
        server::run(settings, client).await
    })?;
    Ok(ExitCode::SUCCESS)
}
