//! Health-check node ports of `externalTrafficPolicy: Local` LoadBalancer Services, served as
//! kube-proxy does: `GET /` answers 200 with
//! `{"service":{"namespace":..,"name":..},"localEndpoints":N,"serviceProxyHealthy":true}` when
//! this node has N > 0 local endpoints, 503 with the same body when it has none, so a load
//! balancer only sends traffic to nodes that can serve it.
//!
//! One listener per port, on all addresses of the node's namespace; a port whose Service is
//! gone is closed. The count is updated in place, without rebinding.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use sarasa_model::ServiceRef;
use sarasa_proxy::HealthCheck;
use tokio::task::JoinHandle;

use crate::netns::{run_in, NetnsTarget};

type Shared = Arc<Mutex<(ServiceRef, usize)>>;

struct Server {
    current: Shared,
    task: JoinHandle<()>,
}

/// The set of health-check servers of one node.
pub struct HealthChecks {
    target: NetnsTarget,
    servers: BTreeMap<u16, Server>,
    /// Ports wanted at the last update that could not be bound (retried at the next one).
    unbound: usize,
}

/// The response kube-proxy gives for `service` with `local` endpoints.
pub fn response(service: &ServiceRef, local: usize) -> (StatusCode, String) {
    let body = serde_json::json!({
        "service": {"namespace": service.namespace, "name": service.name},
        "localEndpoints": local,
        "serviceProxyHealthy": true,
    });
    let code = if local > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body.to_string())
}

fn router(current: Shared) -> Router {
    Router::new()
        .fallback(get(|State(s): State<Shared>| async move {
            let (svc, n) = match s.lock() {
                Ok(g) => g.clone(),
                Err(p) => p.into_inner().clone(),
            };
            let (code, body) = response(&svc, n);
            (code, [("content-type", "application/json")], body)
        }))
        .with_state(current)
}

impl HealthChecks {
    pub fn new(target: NetnsTarget) -> Self {
        HealthChecks {
            unbound: 0,
            target,
            servers: BTreeMap::new(),
        }
    }

    /// Ports served now.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }

    /// Serves exactly `checks`: opens new ports, updates counts, closes ports no longer
    /// wanted. A port that cannot be bound is logged and tried again on the next call.
    /// Some wanted port could not be bound: call [`HealthChecks::update`] again.
    pub fn incomplete(&self) -> bool {
        self.unbound > 0
    }

    pub async fn update(&mut self, checks: &[HealthCheck]) {
        self.unbound = 0;
        let wanted: BTreeMap<u16, &HealthCheck> = checks.iter().map(|c| (c.node_port, c)).collect();
        self.servers.retain(|port, server| {
            let keep = wanted.contains_key(port);
            if !keep {
                server.task.abort();
            }
            keep
        });
        for (port, check) in wanted {
            let value = (check.service.clone(), check.local_endpoints);
            if let Some(server) = self.servers.get(&port) {
                match server.current.lock() {
                    Ok(mut g) => *g = value,
                    Err(p) => *p.into_inner() = value,
                }
                continue;
            }
            match self.bind(port).await {
                Ok(listener) => {
                    let current = Arc::new(Mutex::new(value));
                    let app = router(current.clone());
                    let task = tokio::spawn(async move {
                        if let Err(e) = axum::serve(listener, app).await {
                            tracing::warn!(port, error = %e, "health-check server stopped");
                        }
                    });
                    tracing::info!(port, service = %check.service, "serving health-check node port");
                    self.servers.insert(port, Server { current, task });
                }
                Err(e) => {
                    self.unbound += 1;
                    tracing::warn!(port, service = %check.service, error = %e, "cannot bind health-check node port")
                }
            }
        }
    }

    /// Binds `0.0.0.0:port` in the node's namespace (the socket stays there).
    async fn bind(&self, port: u16) -> crate::Result<tokio::net::TcpListener> {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let std = run_in(&self.target, move || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .await?;
        Ok(tokio::net::TcpListener::from_std(std)?)
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for s in self.servers.values() {
            s.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(port: u16) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn answers_local_endpoint_count_like_kube_proxy() {
        let mut hc = HealthChecks::new(NetnsTarget::Current);
        let port = free_port();
        let svc = ServiceRef::new("ns1", "web");
        let check = |n| HealthCheck {
            service: svc.clone(),
            node_port: port,
            local_endpoints: n,
        };
        hc.update(&[check(2)]).await;
        let r = get(port).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            r.ends_with(r#"{"localEndpoints":2,"service":{"name":"web","namespace":"ns1"},"serviceProxyHealthy":true}"#),
            "{r}"
        );
        hc.update(&[check(0)]).await;
        let r = get(port).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains(r#""localEndpoints":0"#), "{r}");
        hc.update(&[]).await;
        assert!(hc.ports().is_empty());
    }
}
