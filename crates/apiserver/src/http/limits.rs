//! Request limits in front of every handler: how many requests run at once (kube-apiserver's
//! `--max-requests-inflight` and `--max-mutating-requests-inflight`, 429 with Retry-After
//! beyond them; watches and streams are long-running and not counted, as in kube), and a body
//! announced larger than the limit refused with 413 before it is read. The body read itself
//! (size while streaming, time) is bounded in [`read_body`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::config::Limits;
use crate::error::ApiError;
use crate::http::status;
use crate::metrics::{Metrics, Refusal};

/// The in-flight budgets of one server.
pub struct Inflight {
    readonly: Arc<Semaphore>,
    mutating: Arc<Semaphore>,
    max_body: usize,
    metrics: Arc<Metrics>,
}

impl Inflight {
    pub fn new(limits: &Limits, metrics: Arc<Metrics>) -> Arc<Inflight> {
        Arc::new(Inflight {
            readonly: Arc::new(Semaphore::new(limits.max_requests_inflight)),
            mutating: Arc::new(Semaphore::new(limits.max_mutating_requests_inflight)),
            max_body: limits.max_body_bytes,
            metrics,
        })
    }
}

/// Watches and the streaming subresources run as long as the client wants: they are not
/// counted in flight (kube's long-running request check).
fn long_running(req: &Request) -> bool {
    let q = req.uri().query().unwrap_or("");
    let watch = q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let path = req.uri().path().trim_end_matches('/');
    let streaming = ["/exec", "/attach", "/log", "/portforward", "/proxy"]
        .iter()
        .any(|s| path.ends_with(s));
    watch || streaming || path.contains("/watch/")
}

fn mutating(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware: 413 for an announced oversized body, 429 beyond the in-flight budget.
pub async fn middleware(State(l): State<Arc<Inflight>>, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > l.max_body as u64) {
        l.metrics.refused(Refusal::TooLarge);
        return close(status::error(&ApiError::too_large(l.max_body)));
    }
    if long_running(&req) {
        return next.run(req).await;
    }
    let budget = if mutating(req.method()) {
        &l.mutating
    } else {
        &l.readonly
    };
    let Ok(_permit) = budget.clone().try_acquire_owned() else {
        l.metrics.refused(Refusal::TooManyRequests);
        let mut r = status::error(&ApiError::too_many_requests());
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    next.run(req).await
}

/// Reads a request body within `max` bytes and `timeout`: 413 beyond the size, 408 when it has
/// not all arrived in time (the response closes the connection).
pub async fn read_body(
    body: Body,
    max: usize,
    timeout: Duration,
    metrics: &Metrics,
) -> Result<Bytes, Response> {
    match tokio::time::timeout(timeout, collect(body, max)).await {
        Ok(Ok(Some(b))) => Ok(b),
        Ok(Ok(None)) => {
            metrics.refused(Refusal::TooLarge);
            Err(close(status::error(&ApiError::too_large(max))))
        }
        Ok(Err(e)) => Err(close(status::error(&ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))))),
        Err(_) => {
            metrics.refused(Refusal::BodyTimeout);
            Err(close(status::error(&ApiError::request_timeout(format!(
                "the request body did not arrive within {} s",
                timeout.as_secs_f64()
            )))))
        }
    }
}

/// The body's bytes, or None once it passes `max`.
async fn collect(body: Body, max: usize) -> Result<Option<Bytes>, axum::Error> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > max {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(out)))
}

/// Asks the connection to close after this response (its request body was not read whole).
fn close(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
