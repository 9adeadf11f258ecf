//! The REST front end: parses kube-apiserver's paths and dispatches verbs to the store.

pub mod discovery;
mod exec;
pub mod fieldvalidation;
pub mod limits;
pub mod list;
pub mod openapi;
pub mod openapi_pb;
pub mod patch;
pub mod pod_streams;
pub mod printers;
pub mod serve;
pub mod status;
pub mod table;
pub mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use crate::authn::{Authenticator, AuthnState};
use crate::error::ApiError;
use crate::meta;
use crate::resources::{self, ResId, NAMESPACES, PODS, RESOURCES, SERVICEACCOUNTS};
use crate::runtime::PodRuntime;
use crate::store::{DeleteOpts, Deleted, Store, Sub, WriteOpts};

/// Shared state of the handlers.
pub struct App {
    pub store: Arc<Store>,
    /// Serves `pods/log` and `pods/exec`; without one those answer 400.
    pub runtime: Option<Arc<dyn PodRuntime>>,
    /// Authenticates requests and issues ServiceAccount tokens; without one every request is
    /// served and TokenRequests are refused.
    pub authn: Option<Arc<Authenticator>>,
    /// Counters of refused requests.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The router serving the whole API: authentication (when `authn` is given) sets each
/// request's user, then `authz` decides. Counters go to a private [`crate::metrics::Metrics`].
pub fn router(
    store: Arc<Store>,
    runtime: Option<Arc<dyn PodRuntime>>,
    authz: Arc<crate::authz::Authorizer>,
    authn: Option<Arc<Authenticator>>,
) -> Router {
    router_with_metrics(store, runtime, authz, authn, Arc::default())
}

/// [`router`] counting refusals in `metrics` (served at `/metrics`). The request limits
/// ([`limits`]) run first, before authentication.
pub fn router_with_metrics(
    store: Arc<Store>,
    runtime: Option<Arc<dyn PodRuntime>>,
    authz: Arc<crate::authz::Authorizer>,
    authn: Option<Arc<Authenticator>>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Router {
    let inflight = limits::Inflight::new(&store.config.limits, metrics.clone());
    let r = Router::new()
        .route(pod_streams::MOUNT, any(pod_streams::serve))
        .fallback(handle)
        .with_state(Arc::new(App {
            store: store.clone(),
            runtime,
            authn: authn.clone(),
            metrics,
        }))
        .layer(axum::middleware::from_fn_with_state(
            authz,
            crate::authz::middleware,
        ));
    // Added last, so it runs first.
    let r = match authn {
        Some(authn) => r.layer(axum::middleware::from_fn_with_state(
            AuthnState { store, authn },
            crate::authn::middleware,
        )),
        None => r,
    };
    r.layer(axum::middleware::from_fn_with_state(
        inflight,
        limits::middleware,
    ))
}

/// Query parameters (last value wins).
pub type Params = HashMap<String, String>;

/// What a resource path names.
#[derive(Debug)]
pub(crate) struct Target {
    pub res: ResId,
    /// Namespace of the path ("" for cluster-scoped; for collections `None` = all namespaces).
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/<g>/<v>/...` resource paths.
fn parse_target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let t = |plural: &str| resources::lookup(group, version, plural);
    match rest {
        [plural] => Some(Target {
            res: t(plural)?,
            ns: None,
            name: None,
            sub: None,
        }),
        ["namespaces", ns, plural] if t(plural).is_some_and(|r| RESOURCES[r].namespaced) => {
            Some(Target {
                res: t(plural)?,
                ns: Some(ns.to_string()),
                name: None,
                sub: None,
            })
        }
        ["namespaces", ns, plural, name] if t(plural).is_some_and(|r| RESOURCES[r].namespaced) => {
            Some(Target {
                res: t(plural)?,
                ns: Some(ns.to_string()),
                name: Some(name.to_string()),
                sub: None,
            })
        }
        ["namespaces", ns, plural, name, sub]
            if t(plural).is_some_and(|r| RESOURCES[r].namespaced) =>
        {
            Some(Target {
                res: t(plural)?,
                ns: Some(ns.to_string()),
                name: Some(name.to_string()),
                sub: Some(sub.to_string()),
            })
        }
        [plural, name] => {
            let res = t(plural)?;
            (!RESOURCES[res].namespaced).then(|| Target {
                res,
                ns: Some(String::new()),
                name: Some(name.to_string()),
                sub: None,
            })
        }
        [plural, name, sub] => {
            let res = t(plural)?;
            (!RESOURCES[res].namespaced).then(|| Target {
                res,
                ns: Some(String::new()),
                name: Some(name.to_string()),
                sub: Some(sub.to_string()),
            })
        }
        _ => None,
    }
}

pub(crate) async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let params: Params = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0.into_iter().collect())
        .unwrap_or_default();
    let l = &app.store.config.limits;
    let body = match limits::read_body(
        req.into_body(),
        l.max_body_bytes,
        l.body_read_timeout,
        &app.metrics,
    )
    .await
    {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let path = uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let out = match segs.as_slice() {
        ["healthz"] | ["readyz"] | ["livez"] => return plain("ok"),
        ["metrics"] => return text(app.metrics.render()),
        ["openapi", rest @ ..] => openapi::serve(rest, &headers),
        ["version"] => Ok(status::json(StatusCode::OK, &discovery::version())),
        ["api"] => Ok(status::json(StatusCode::OK, &discovery::api_versions())),
        ["apis"] => Ok(status::json(StatusCode::OK, &discovery::api_groups())),
        ["api", "v1"] => Ok(status::json(
            StatusCode::OK,
            &discovery::resource_list("", "v1"),
        )),
        ["apis", g] => discovery::api_group(g)
            .map(|v| status::json(StatusCode::OK, &v))
            .ok_or_else(|| ApiError::path_not_found(path)),
        ["apis", g, v] => {
            if resources::group_versions().contains(&(*g, *v)) {
                Ok(status::json(
                    StatusCode::OK,
                    &discovery::resource_list(g, v),
                ))
            } else {
                Err(ApiError::path_not_found(path))
            }
        }
        ["api", "v1", rest @ ..] => match parse_target("", "v1", rest) {
            Some(t) => dispatch(&app, &method, &headers, &params, body, t).await,
            None => Err(ApiError::path_not_found(path)),
        },
        ["apis", g, v, rest @ ..] => match parse_target(g, v, rest) {
            Some(t) => dispatch(&app, &method, &headers, &params, body, t).await,
            None => Err(ApiError::path_not_found(path)),
        },
        _ => Err(ApiError::path_not_found(path)),
    };
    // A write is acknowledged only once it is durable (the fsync thread commits every write
    // made meanwhile with one fdatasync).
    let out = if method != Method::GET && method != Method::HEAD {
        match app.store.durable().await {
            Ok(()) => out,
            Err(e) => Err(e),
        }
    } else {
        out
    };
    out.unwrap_or_else(|e| status::error(&e))
}

fn plain(s: &'static str) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(s))
        .unwrap_or_default()
}

/// The Prometheus text exposition.
fn text(s: String) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Body::from(s))
        .unwrap_or_default()
}

fn dry_run(params: &Params) -> Result<bool, ApiError> {
    match params.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid dry run value: {other:?}: supported values: \"All\""
        ))),
    }
}

/// Parses a request body as JSON (or YAML or Kubernetes protobuf when the content type says so).
pub(crate) fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.starts_with(crate::proto::CONTENT_TYPE) {
        crate::proto::decode_object(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}")))
    } else if ct.contains("yaml") {
        serde_norway::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
    }
}

async fn dispatch(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    params: &Params,
    body: Bytes,
    t: Target,
) -> Result<Response, ApiError> {
    let store = &app.store;
    let r = &RESOURCES[t.res];
    let ns = t.ns.clone().unwrap_or_default();
    let sub = match t.sub.as_deref() {
        None => None,
        Some("token") if t.res == SERVICEACCOUNTS => None,
        Some("status") if r.status => Some(Sub::Status),
        Some("scale") if r.scale => None,
        Some(other) => return Err(ApiError::path_not_found(&format!("{}/{}", r.plural, other))),
    };
    let is_scale = t.sub.as_deref() == Some("scale");
    if t.res == SERVICEACCOUNTS && t.sub.as_deref() == Some("token") {
        return token_request(
            app,
            method,
            headers,
            &body,
            &ns,
            t.name.as_deref().unwrap_or(""),
        );
    }
    let want_table = if method == Method::GET {
        table::negotiate(headers, params)?
    } else {
        None
    };
    match (method, &t.name) {
        (&Method::GET, None) => {
            if params.get("watch").is_some_and(|w| w == "1" || w == "true") {
                watch::watch(store.clone(), t.res, t.ns.clone(), params, want_table).await
            } else {
                list::list(store, t.res, t.ns.as_deref(), params, want_table)
            }
        }
        (&Method::GET, Some(name)) => {
            let obj = store.get(t.res, &ns, name)?;
            if is_scale {
                return Ok(status::json(StatusCode::OK, &scale_of(&obj)));
            }
            if let Some(w) = want_table {
                let t = table::table(r.kind, &[obj.as_ref()], w, None, None);
                return Ok(table::response(&t, w));
            }
            Ok(status::json(StatusCode::OK, obj.as_ref()))
        }
        (&Method::POST, None) => {
            if !r.namespaced || t.ns.is_some() {
                let obj = parse_body(headers, &body)?;
                let warnings =
                    fieldvalidation::check(t.res, &obj, fieldvalidation::directive(params)?)?;
                let opts = WriteOpts {
                    dry_run: dry_run(params)?,
                    internal: false,
                };
                let created = store.create(t.res, &ns, obj, opts)?;
                Ok(fieldvalidation::warn(
                    status::json(StatusCode::CREATED, created.as_ref()),
                    &warnings,
                ))
            } else {
                Err(ApiError::method_not_allowed(
                    "create of namespaced resources needs a namespace in the path",
                ))
            }
        }
        (&Method::PUT, Some(name)) => {
            let obj = parse_body(headers, &body)?;
            let opts = WriteOpts {
                dry_run: dry_run(params)?,
                internal: false,
            };
            if is_scale {
                let scale = obj;
                let want_rv = meta::resource_version(&scale).to_string();
                let replicas = scale_replicas(&scale, store.config.limits.max_replicas)?;
                let updated = store.modify(t.res, &ns, name, Sub::Main, opts, |cur| {
                    let mut new = cur.clone();
                    new["spec"]["replicas"] = json!(replicas);
                    meta::metadata_mut(&mut new).insert("resourceVersion".into(), json!(want_rv));
                    Ok(new)
                })?;
                return Ok(status::json(StatusCode::OK, &scale_of(&updated)));
            }
            let warnings =
                fieldvalidation::check(t.res, &obj, fieldvalidation::directive(params)?)?;
            let (obj, created) =
                store.update(t.res, &ns, name, obj, sub.unwrap_or(Sub::Main), opts)?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(fieldvalidation::warn(
                status::json(code, obj.as_ref()),
                &warnings,
            ))
        }
        (&Method::PATCH, Some(name)) => {
            let opts = WriteOpts {
                dry_run: dry_run(params)?,
                internal: false,
            };
            let directive = fieldvalidation::directive(params)?;
            let warnings = match patch::document(headers, &body) {
                Some(doc) if !is_scale => fieldvalidation::check(t.res, &doc, directive)?,
                _ => Vec::new(),
            };
            patch::patch(
                store,
                t.res,
                &ns,
                name,
                sub.unwrap_or(Sub::Main),
                is_scale,
                headers,
                &body,
                opts,
            )
            .map(|r| fieldvalidation::warn(r, &warnings))
        }
        (&Method::DELETE, Some(name)) => {
            let opts = delete_opts(params, &body)?;
            match store.delete(t.res, &ns, name, &opts)? {
                Deleted::Pending(obj) => Ok(status::json(StatusCode::OK, obj.as_ref())),
                Deleted::Gone(obj) if t.res == PODS || t.res == NAMESPACES => {
                    Ok(status::json(StatusCode::OK, obj.as_ref()))
                }
                Deleted::Gone(obj) => {
                    Ok(status::json(StatusCode::OK, &status::success(t.res, &obj)))
                }
            }
        }
        (&Method::DELETE, None) => {
            let opts = delete_opts(params, &body)?;
            let (items, _) = list::select(store, t.res, t.ns.as_deref(), params)?;
            let mut gone = Vec::new();
            for obj in items {
                match store.delete(t.res, meta::namespace(&obj), meta::name(&obj), &opts) {
                    Ok(Deleted::Gone(o)) | Ok(Deleted::Pending(o)) => gone.push(o),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(list::render(t.res, &gone, store.rv(), None, None))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        ))),
    }
}

/// `POST serviceaccounts/{name}/token`.
fn token_request(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
    ns: &str,
    name: &str,
) -> Result<Response, ApiError> {
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )));
    }
    let Some(authn) = &app.authn else {
        return Err(ApiError::bad_request(
            "this server does not issue service account tokens (authentication is off)",
        ));
    };
    let req = parse_body(headers, body)?;
    let out = crate::authn::tokenrequest::create(&app.store, authn, ns, name, &req)?;
    Ok(status::json(StatusCode::CREATED, &out))
}

/// DeleteOptions from the body and the query.
fn delete_opts(params: &Params, body: &Bytes) -> Result<DeleteOpts, ApiError> {
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else if body.starts_with(b"k8s\0") {
        // Go typed clients send DeleteOptions as Kubernetes protobuf.
        crate::proto::decode_object(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let mut o = DeleteOpts {
        grace_period_seconds: b.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation_policy: b
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(String::from),
        precondition_uid: meta::path_str(&b, "preconditions.uid").map(String::from),
        precondition_rv: meta::path_str(&b, "preconditions.resourceVersion").map(String::from),
        dry_run: b
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All")),
    };
    if b.get("orphanDependents").and_then(Value::as_bool) == Some(true)
        && o.propagation_policy.is_none()
    {
        o.propagation_policy = Some("Orphan".into());
    }
    if let Some(g) = params.get("gracePeriodSeconds") {
        o.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    if let Some(g) = o.grace_period_seconds {
        // Added to the current time to make the deletion deadline: bounded so it cannot overflow.
        if !(0..=crate::validate::numeric::INT32_MAX).contains(&g) {
            return Err(ApiError::bad_request(format!(
                "gracePeriodSeconds: Invalid value: {g}: must be between 0 and {}, inclusive",
                crate::validate::numeric::INT32_MAX
            )));
        }
    }
    if let Some(p) = params.get("propagationPolicy") {
        o.propagation_policy = Some(p.clone());
    }
    if let Some(p) = &o.propagation_policy {
        if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    }
    if dry_run(params)? {
        o.dry_run = true;
    }
    Ok(o)
}

/// `spec.replicas` of a Scale: an integer 0..=`max` (absent: 0), else 422 naming the field.
fn scale_replicas(scale: &Value, max: i64) -> Result<i64, ApiError> {
    let spec = scale.get("spec").cloned().unwrap_or(json!({}));
    let mut errs = Vec::new();
    crate::validate::numeric::replicas(&spec, max, &mut errs);
    if !errs.is_empty() {
        return Err(ApiError::invalid(
            crate::resources::DEPLOYMENTS,
            meta::name(scale),
            errs,
        ));
    }
    Ok(spec.get("replicas").and_then(Value::as_i64).unwrap_or(0))
}

/// The autoscaling/v1 Scale of a Deployment.
pub(crate) fn scale_of(d: &Value) -> Value {
    let m = meta::metadata(d);
    let selector = meta::path(d, "spec.selector")
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
        .map(|ml| {
            ml.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": meta::path(d, "spec.replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": meta::path(d, "status.replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        }
    })
}
