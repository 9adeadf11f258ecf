//! The streaming pod subresources, `pods/log` and `pods/exec`: one mount point that resolves
//! the pod and the container the way kube-apiserver does (same errors, same words) and hands
//! the request to the [`PodRuntime`] serving the pod's node. Every other pod subresource
//! (`status`) goes on to the generic handler.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{json, Value};

use super::{status, App};
use crate::error::{ApiError, FieldError};
use crate::meta;
use crate::resources::PODS;
use crate::runtime::{LogOptions, PodRef, PodRuntime, RuntimeError};

/// The path this module serves (axum syntax).
pub const MOUNT: &str = "/api/v1/namespaces/{namespace}/pods/{name}/{subresource}";

/// Query parameters in order, repeated keys kept (`command` repeats).
pub(crate) type Query = Vec<(String, String)>;

/// Handles `MOUNT`: `log` and `exec` here, anything else by the generic handler.
pub async fn serve(
    State(app): State<Arc<App>>,
    Path((namespace, name, subresource)): Path<(String, String, String)>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    req: Request,
) -> Response {
    let query: Query = axum::extract::Query::<Query>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let method = req.method().clone();
    let out = match (subresource.as_str(), &method) {
        ("log", &Method::GET) => logs(&app, &namespace, &name, &query),
        ("exec", &Method::GET | &Method::POST) => {
            super::exec::exec(&app, &namespace, &name, &query, upgrade)
        }
        ("log" | "exec", _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
        _ => return super::handle(State(app), req).await,
    };
    out.unwrap_or_else(|e| status::error(&e))
}

/// Last value of a query parameter.
pub(crate) fn param<'a>(query: &'a Query, key: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A boolean query parameter as Go's strconv.ParseBool reads it.
pub(crate) fn flag(query: &Query, key: &str) -> Result<bool, ApiError> {
    match param(query, key) {
        None => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("" | "0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key}: invalid boolean value {other:?}"
        ))),
    }
}

/// The pod, its runtime and the container a request names, or the error kube-apiserver gives.
pub(crate) fn resolve(
    app: &App,
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> Result<(PodRef, String, Arc<dyn PodRuntime>), ApiError> {
    let pod = app.store.get(PODS, namespace, name)?;
    let names = |field: &str| -> Vec<String> {
        meta::path(&pod, field)
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("spec.containers");
    let init = names("spec.initContainers");
    let container = match container.filter(|c| !c.is_empty()) {
        Some(c) => {
            if !containers.iter().chain(&init).any(|x| x == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None => match containers.as_slice() {
            [only] => only.clone(),
            _ => {
                let mut msg = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                );
                if !init.is_empty() {
                    msg.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                return Err(ApiError::bad_request(msg));
            }
        },
    };
    let node = meta::path_str(&pod, "spec.nodeName").unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let runtime = app
        .runtime
        .clone()
        .filter(|r| r.serves_node(node))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no container runtime serves node {node:?} of pod {name}"
            ))
        })?;
    let pod = PodRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: meta::uid(&pod).to_string(),
        node: node.to_string(),
        object: pod.as_ref().clone(),
    };
    Ok((pod, container, runtime))
}

pub(crate) fn runtime_error(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::BadRequest(m) => ApiError::bad_request(m),
        RuntimeError::Internal(m) => ApiError::internal(m),
    }
}

/// `PodLogOptions` from the query, validated as kube-apiserver validates them (422 Invalid
/// naming the field).
fn log_options(name: &str, query: &Query) -> Result<(LogOptions, Option<u64>), ApiError> {
    let mut errors = Vec::new();
    let int = |key: &str, errors: &mut Vec<FieldError>| -> Option<i64> {
        let v = param(query, key)?;
        match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(FieldError::invalid(key, v, "must be an integer"));
                None
            }
        }
    };
    let tail = int("tailLines", &mut errors);
    let since_seconds = int("sinceSeconds", &mut errors);
    let limit = int("limitBytes", &mut errors);
    if let Some(t) = tail.filter(|t| *t < 0) {
        errors.push(FieldError::invalid(
            "tailLines",
            t.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(s) = since_seconds.filter(|s| *s < 1) {
        errors.push(FieldError::invalid(
            "sinceSeconds",
            s.to_string(),
            "must be greater than 0",
        ));
    }
    if let Some(l) = limit.filter(|l| *l < 1) {
        errors.push(FieldError::invalid(
            "limitBytes",
            l.to_string(),
            "must be greater than 0",
        ));
    }
    let since_time = match param(query, "sinceTime") {
        None => None,
        Some(v) => match v.parse::<k8s_openapi::jiff::Timestamp>() {
            Ok(t) => Some(t),
            Err(_) => {
                errors.push(FieldError::invalid(
                    "sinceTime",
                    v,
                    "must be an RFC 3339 time",
                ));
                None
            }
        },
    };
    if since_seconds.is_some() && param(query, "sinceTime").is_some() {
        errors.push(FieldError::forbidden(
            "",
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        ));
    }
    let opts = |errors: Vec<FieldError>| -> Result<LogOptions, ApiError> {
        if !errors.is_empty() {
            return Err(invalid_log_options(name, errors));
        }
        let since = match (since_seconds, since_time) {
            (Some(s), _) => Some(
                k8s_openapi::jiff::Timestamp::from_second(meta::now_secs().saturating_sub(s))
                    .unwrap_or(k8s_openapi::jiff::Timestamp::MIN),
            ),
            (None, t) => t,
        };
        Ok(LogOptions {
            previous: flag(query, "previous")?,
            follow: flag(query, "follow")?,
            tail_lines: tail.map(|t| t as u64),
            since,
            timestamps: flag(query, "timestamps")?,
        })
    };
    Ok((opts(errors)?, limit.map(|l| l as u64)))
}

fn invalid_log_options(name: &str, errors: Vec<FieldError>) -> ApiError {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"message": e.body(), "field": e.field}))
        .collect();
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("PodLogOptions {name:?} is invalid: {}", list.join(", ")),
        details: Some(json!({"name": name, "kind": "PodLogOptions", "causes": causes})),
    }
}

/// `GET .../pods/NAME/log`: the container's log as text, streamed while following.
fn logs(app: &App, namespace: &str, name: &str, query: &Query) -> Result<Response, ApiError> {
    let (opts, limit) = log_options(name, query)?;
    let (pod, container, runtime) = resolve(app, namespace, name, param(query, "container"))?;
    let stream = runtime
        .logs(&pod, &container, &opts)
        .map_err(runtime_error)?;
    let body = match limit {
        None => Body::from_stream(stream),
        Some(limit) => Body::from_stream(limit_bytes(stream, limit)),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(body)
        .map_err(|e| ApiError::internal(format!("building the log response: {e}")))
}

/// Cuts the stream after `limit` bytes (`limitBytes`), ending it there.
fn limit_bytes(
    stream: crate::runtime::LogStream,
    limit: u64,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send {
    stream
        .scan(limit, |left, chunk| {
            let out = match chunk {
                _ if *left == 0 => None,
                Ok(mut c) => {
                    if c.len() as u64 > *left {
                        c.truncate(*left as usize);
                    }
                    *left -= c.len() as u64;
                    Some(Ok(c))
                }
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn log_options_parse_kubectl_flags() {
        let (o, limit) = log_options(
            "web",
            &q(&[
                ("follow", "true"),
                ("tailLines", "2"),
                ("previous", "true"),
                ("timestamps", "true"),
                ("limitBytes", "10"),
            ]),
        )
        .unwrap();
        assert!(o.follow && o.previous && o.timestamps);
        assert_eq!(o.tail_lines, Some(2));
        assert_eq!(limit, Some(10));
        let (o, _) = log_options("web", &q(&[("sinceTime", "2026-01-02T03:04:05Z")])).unwrap();
        assert_eq!(o.since.unwrap().as_second(), 1767323045);
        let (o, _) = log_options("web", &q(&[("sinceSeconds", "60")])).unwrap();
        let age = meta::now_secs() - o.since.unwrap().as_second();
        assert!((59..=61).contains(&age), "{age}");
    }

    #[test]
    fn bad_log_options_name_the_field() {
        let e = log_options("web", &q(&[("tailLines", "-2")])).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.contains("tailLines"), "{}", e.message);
        let e = log_options("web", &q(&[("sinceSeconds", "0")])).unwrap_err();
        assert!(e.message.contains("sinceSeconds"), "{}", e.message);
        let e = log_options(
            "web",
            &q(&[("sinceSeconds", "5"), ("sinceTime", "2026-01-02T03:04:05Z")]),
        )
        .unwrap_err();
        assert!(e.message.contains("at most one of"), "{}", e.message);
        let e = log_options("web", &q(&[("sinceTime", "yesterday")])).unwrap_err();
        assert!(e.message.contains("sinceTime"), "{}", e.message);
        let e = log_options("web", &q(&[("follow", "maybe")])).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("follow"), "{}", e.message);
    }

    #[tokio::test]
    async fn limit_bytes_cuts_the_stream() {
        let chunks: crate::runtime::LogStream =
            futures::stream::iter(vec![Ok(b"abc\n".to_vec()), Ok(b"def\n".to_vec())]).boxed();
        let out: Vec<Vec<u8>> = limit_bytes(chunks, 6).map(|c| c.unwrap()).collect().await;
        assert_eq!(out.concat(), b"abc\nde");
    }
}
