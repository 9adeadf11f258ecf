//! The connection loop: accepts on any axum listener (TCP, TLS, Unix) and serves each
//! connection with hyper, closing a connection whose request header has not fully arrived
//! within [`crate::config::Limits::header_read_timeout`] (slowloris: axum's own `serve` sets
//! no timer, so hyper would wait for a half-sent header forever). On `stop` it stops
//! accepting, asks every connection to finish gracefully and returns when all have.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, watch};

/// Serves `router` on `listener` until `stop` turns true.
pub async fn serve<L: axum::serve::Listener>(
    mut listener: L,
    router: Router,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection task holds a sender; `recv` returns None once all are gone.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let io = tokio::select! {
            (io, _addr) = listener.accept() => Some(io),
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(io) = io else { break };
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            // CONNECT protocol: WebSockets over HTTP/2 (exec).
            builder.http2().enable_connect_protocol();
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            let stopping = tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection: {e}");
                    }
                    false
                }
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_tx);
    let _ = open_rx.recv().await;
}
