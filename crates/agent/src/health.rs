//! `/healthz` and `/readyz` (200 once the node is programmed: the DaemonSet's readiness probe),
//! `/livez` (200 while the agent serves: the liveness probe, which must not restart an agent
//! that is only waiting for its podCIDR), `/metrics` (Prometheus text) and `/drops`
//! (the newest NetworkPolicy drop events as JSON, `?since=SEQ` for only the newer ones; see
//! [`crate::droplog`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::error::{Error, Result};

/// Counters shared by the reconcile loop and the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Metrics {
    pub programmed: AtomicBool,
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub last_reconcile_micros: AtomicU64,
    pub remote_nodes: AtomicU64,
    pub observed_resource_version: AtomicU64,
    pub fabric_ops: AtomicU64,
    /// nftables: operations committed, netlink batches.
    pub nft_ops: AtomicU64,
    pub nft_batches: AtomicU64,
    /// Service proxy: Services and endpoints programmed, last sync duration.
    pub services: AtomicU64,
    pub endpoints: AtomicU64,
    pub last_service_sync_micros: AtomicU64,
    /// NetworkPolicy: policies enforced, drops reported.
    pub network_policies: AtomicU64,
    pub policy_drops: AtomicU64,
    pub last_policy_sync_micros: AtomicU64,
    /// The last policy drop event written (its JSON), for tests and diagnostics.
    pub last_policy_drop: std::sync::Mutex<Option<String>>,
    /// The newest policy drop events, served at `/drops`.
    pub drops: crate::droplog::DropRing,
    /// Per part ([`crate::reconcile::Part::ALL`] order): failures, and whether it fails now.
    pub part_failures: [AtomicU64; 3],
    pub part_failing: [AtomicBool; 3],
}

/// Publishes which parts failed in one reconcile and which are failing now.
pub fn record_parts(
    metrics: &Metrics,
    failed: &[(crate::reconcile::Part, String)],
    failing: &[crate::reconcile::Part],
) {
    use crate::reconcile::Part;
    for (i, part) in Part::ALL.iter().enumerate() {
        let n = failed.iter().filter(|(p, _)| p == part).count() as u64;
        metrics.part_failures[i].fetch_add(n, Ordering::Relaxed);
        metrics.part_failing[i].store(failing.contains(part), Ordering::Relaxed);
    }
}

/// Publishes what the applier did in one reconcile.
pub fn record_applied(metrics: &Metrics, applied: &sarasa_plan::Applied) {
    let add = |a: &AtomicU64, v: usize| a.fetch_add(v as u64, Ordering::Relaxed);
    add(&metrics.fabric_ops, applied.fabric_ops);
    add(&metrics.nft_ops, applied.nft_ops);
    add(&metrics.nft_batches, applied.nft_batches);
}

/// `GET /drops?since=SEQ`.
#[derive(Debug, serde::Deserialize)]
struct DropsQuery {
    #[serde(default)]
    since: u64,
}

impl Metrics {
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        };
        metric(
            "sarasa_agent_programmed",
            "gauge",
            "1 once the node datapath has been programmed.",
            u8::from(self.programmed.load(Ordering::Relaxed)).to_string(),
        );
        metric(
            "sarasa_agent_reconciles_total",
            "counter",
            "Reconcile runs that programmed the node.",
            g(&self.reconciles).to_string(),
        );
        metric(
            "sarasa_agent_reconcile_errors_total",
            "counter",
            "Reconcile runs that failed.",
            g(&self.reconcile_errors).to_string(),
        );
        metric(
            "sarasa_agent_last_reconcile_duration_seconds",
            "gauge",
            "Duration of the last reconcile.",
            format!("{:.6}", g(&self.last_reconcile_micros) as f64 / 1e6),
        );
        metric(
            "sarasa_agent_remote_nodes",
            "gauge",
            "Remote nodes programmed on this node.",
            g(&self.remote_nodes).to_string(),
        );
        metric(
            "sarasa_agent_fabric_operations_total",
            "counter",
            "Route/FDB/neighbour operations applied.",
            g(&self.fabric_ops).to_string(),
        );
        metric(
            "sarasa_agent_nft_operations_total",
            "counter",
            "nftables operations committed (every table of a reconcile in one batch).",
            g(&self.nft_ops).to_string(),
        );
        metric(
            "sarasa_agent_nft_batches_total",
            "counter",
            "nf_tables netlink batches committed.",
            g(&self.nft_batches).to_string(),
        );
        metric(
            "sarasa_agent_observed_resource_version",
            "gauge",
            "Highest resourceVersion processed and programmed.",
            g(&self.observed_resource_version).to_string(),
        );
        metric(
            "sarasa_agent_services",
            "gauge",
            "Services known to the service proxy.",
            g(&self.services).to_string(),
        );
        metric(
            "sarasa_agent_endpoints",
            "gauge",
            "Endpoints in the EndpointSlices programmed.",
            g(&self.endpoints).to_string(),
        );
        metric(
            "sarasa_agent_last_service_sync_duration_seconds",
            "gauge",
            "Duration of the last service proxy sync.",
            format!("{:.6}", g(&self.last_service_sync_micros) as f64 / 1e6),
        );
        metric(
            "sarasa_agent_network_policies",
            "gauge",
            "NetworkPolicies enforced.",
            g(&self.network_policies).to_string(),
        );
        metric(
            "sarasa_agent_policy_drops_total",
            "counter",
            "Packets dropped by NetworkPolicy and reported.",
            g(&self.policy_drops).to_string(),
        );
        metric(
            "sarasa_agent_last_policy_sync_duration_seconds",
            "gauge",
            "Duration of the last NetworkPolicy sync.",
            format!("{:.6}", g(&self.last_policy_sync_micros) as f64 / 1e6),
        );
        s.push_str(
            "# HELP sarasa_agent_part_failures_total Failed attempts to program a part \
             (fabric, services, policy); the other parts go on.\n\
             # TYPE sarasa_agent_part_failures_total counter\n",
        );
        for (i, part) in crate::reconcile::Part::ALL.iter().enumerate() {
            s.push_str(&format!(
                "sarasa_agent_part_failures_total{{part=\"{part}\"}} {}\n",
                g(&self.part_failures[i])
            ));
        }
        s.push_str(
            "# HELP sarasa_agent_part_failing 1 while a part fails and is retried with backoff.\n\
             # TYPE sarasa_agent_part_failing gauge\n",
        );
        for (i, part) in crate::reconcile::Part::ALL.iter().enumerate() {
            s.push_str(&format!(
                "sarasa_agent_part_failing{{part=\"{part}\"}} {}\n",
                u8::from(self.part_failing[i].load(Ordering::Relaxed))
            ));
        }
        s
    }
}

async fn ready(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if m.programmed.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not programmed yet\n")
    }
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(ready))
        .route("/readyz", get(ready))
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                ([("content-type", "text/plain; version=0.0.4")], m.render())
            }),
        )
        .route(
            "/drops",
            get(
                |State(m): State<Arc<Metrics>>, Query(q): Query<DropsQuery>| async move {
                    axum::Json(m.drops.since(q.since))
                },
            ),
        )
        .with_state(metrics)
}

/// Binds the health listener (in the current network namespace).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Health { addr, source })
}

pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    if let Err(e) = axum::serve(listener, router(metrics)).await {
        tracing::error!(error = %e, "health server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_names_every_figure() {
        let m = Metrics::default();
        m.reconciles.store(3, Ordering::Relaxed);
        m.remote_nodes.store(2, Ordering::Relaxed);
        m.last_reconcile_micros.store(1500, Ordering::Relaxed);
        let t = m.render();
        assert!(t.contains("sarasa_agent_reconciles_total 3\n"));
        assert!(t.contains("sarasa_agent_remote_nodes 2\n"));
        assert!(t.contains("sarasa_agent_last_reconcile_duration_seconds 0.001500\n"));
        assert!(t.contains("sarasa_agent_reconcile_errors_total 0\n"));
        assert!(t.contains("sarasa_agent_programmed 0\n"));
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn drops_serves_the_events_after_since_as_json() {
        use sarasa_policy::{DropEvent, Endpoint, PodKey};
        let metrics = Arc::new(Metrics::default());
        let e = DropEvent {
            direction: sarasa_policy::Direction::Ingress,
            pod: PodKey::new("x", "a"),
            src: Endpoint::Pod(PodKey::new("y", "b")),
            dst: Endpoint::Pod(PodKey::new("x", "a")),
            protocol: sarasa_nft::L4Proto::Tcp,
            port: 80,
            policies: vec![PodKey::new("x", "deny")],
        };
        let (s, d) = ("10.244.2.3".parse().unwrap(), "10.244.1.2".parse().unwrap());
        metrics.drops.push(10, &e, s, d);
        metrics.drops.push(20, &e, s, d);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, metrics.clone()));
        let reply = get(addr, "/drops?since=1").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        let body = reply.split_once("\r\n\r\n").unwrap().1;
        let page: crate::droplog::DropPage = serde_json::from_str(body).unwrap();
        assert_eq!(page.latest, 2);
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].seq, 2);
        assert_eq!(page.events[0].src.pod.as_deref(), Some("y/b"));
        assert_eq!(page.events[0].dst.ip.to_string(), "10.244.1.2");
        let all = get(addr, "/drops").await;
        let body = all.split_once("\r\n\r\n").unwrap().1;
        let page: crate::droplog::DropPage = serde_json::from_str(body).unwrap();
        assert_eq!(page.events.len(), 2);
    }

    #[tokio::test]
    async fn healthz_turns_ok_once_programmed() {
        let metrics = Arc::new(Metrics::default());
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, metrics.clone()));
        let status = |addr| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(status(addr).await.starts_with("HTTP/1.1 503"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        assert!(get(addr, "/livez").await.starts_with("HTTP/1.1 200"));
        metrics.programmed.store(true, Ordering::Relaxed);
        assert!(status(addr).await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    }
}
