//! Watch: newline-delimited `{"type":...,"object":...}` events from a resourceVersion on, with
//! selectors, BOOKMARKs, `sendInitialEvents`, `timeoutSeconds`, and an ERROR 410 Expired event
//! when the resourceVersion is older than the kept history.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::http::table::{self, Want};
use crate::http::{list, Params};
use crate::meta;
use crate::resources::{ResId, RESOURCES};
use crate::store::{Event, EventKind, Store};

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&Line { kind, object }).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(res: ResId, rv: u64, initial_end: bool) -> Bytes {
    let r = &RESOURCES[res];
    let mut obj = json!({
        "kind": r.kind,
        "apiVersion": r.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
    });
    if initial_end {
        obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &obj)
}

fn expired(since: u64, floor: u64) -> Bytes {
    let e = ApiError::expired(format!("too old resource version: {since} ({floor})"));
    line("ERROR", &e.to_status())
}

/// A watch line with the object, or its Table row when the client asked for Tables.
fn encode(kind: &str, obj: &Value, want: Option<Want>) -> Bytes {
    match want {
        Some(w) => {
            let kind_name = obj.get("kind").and_then(Value::as_str).unwrap_or("");
            line(kind, &table::table(kind_name, &[obj], w, None, None))
        }
        None => line(kind, obj),
    }
}

type Filter = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

struct State {
    /// Events carry one-row Tables instead of objects (`kubectl get -w`).
    table: Option<Want>,
    store: Arc<Store>,
    res: ResId,
    ns: Option<String>,
    filter: Filter,
    since: u64,
    rx: tokio::sync::watch::Receiver<u64>,
    pending: VecDeque<Bytes>,
    deadline: Instant,
    bookmarks: Option<Duration>,
    next_bookmark: Instant,
    done: bool,
}

impl State {
    /// Turns history events into watch lines for this watcher's selection.
    fn translate(&mut self, events: Vec<Event>) {
        for e in events {
            let now = (self.filter)(&e.obj);
            let before = e.prev.as_ref().is_some_and(|p| (self.filter)(p));
            let kind = match e.kind {
                EventKind::Added if now => "ADDED",
                EventKind::Modified if now && before => "MODIFIED",
                EventKind::Modified if now => "ADDED",
                EventKind::Modified if before => "DELETED",
                EventKind::Deleted if now || before => "DELETED",
                _ => continue,
            };
            self.pending.push_back(encode(kind, &e.obj, self.table));
        }
    }

    /// Collects everything after `since`; false when the history no longer reaches back.
    fn drain(&mut self) -> bool {
        let res = self.res;
        let ns = self.ns.clone();
        match self.store.changes_since(self.since, |e| {
            e.res == res && ns.as_deref().is_none_or(|n| meta::namespace(&e.obj) == n)
        }) {
            Ok((events, up_to)) => {
                self.since = up_to;
                self.translate(events);
                true
            }
            Err(floor) => {
                self.pending.push_back(expired(self.since, floor));
                self.done = true;
                false
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Bytes, std::convert::Infallible>, State)> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some((Ok(b), self));
            }
            if self.done {
                return None;
            }
            let bookmark_at = self.next_bookmark;
            let with_bookmarks = self.bookmarks.is_some();
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() || self.store.is_closed() {
                        return None;
                    }
                    self.drain();
                }
                _ = tokio::time::sleep_until(bookmark_at), if with_bookmarks => {
                    if self.drain() {
                        self.pending.push_back(bookmark(self.res, self.since, false));
                    }
                    if let Some(every) = self.bookmarks {
                        self.next_bookmark = Instant::now() + every;
                    }
                }
                _ = tokio::time::sleep_until(self.deadline) => {
                    self.done = true;
                }
            }
        }
    }
}

/// The watch's lifetime: `timeoutSeconds` capped at `max` (as kube-apiserver bounds a watch by
/// its request timeout), or without one a random time between half of `max` and `max`, so
/// watches started together do not all end together.
pub fn watch_timeout(params: &Params, max: Duration) -> Result<u64, ApiError> {
    let max = max.as_secs().max(1);
    match params.get("timeoutSeconds") {
        Some(t) => t.parse::<u64>().map(|t| t.min(max)).map_err(|_| {
            ApiError::bad_request(format!(
                "timeoutSeconds: Invalid value: {t:?}: must be a non-negative integer"
            ))
        }),
        None => Ok(max / 2 + rand::random::<u64>() % (max - max / 2 + 1)),
    }
}

pub async fn watch(
    store: Arc<Store>,
    res: ResId,
    ns: Option<String>,
    params: &Params,
    want: Option<Want>,
) -> Result<Response, ApiError> {
    let filter: Filter = Arc::new(list::filter(res, params)?);
    let timeout = watch_timeout(params, store.config.limits.max_watch_timeout)?;
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true" || b == "1");
    let send_initial = params.get("sendInitialEvents").is_some_and(|b| b == "true");
    let rv_param = params.get("resourceVersion").cloned().unwrap_or_default();
    // Subscribe before reading so no change between the read and the wait is missed.
    let rx = store.subscribe();
    let mut pending = VecDeque::new();
    let since = if send_initial || rv_param.is_empty() || rv_param == "0" {
        let f = filter.clone();
        let (items, rv) = store.list(res, ns.as_deref(), move |o| f(o));
        for o in &items {
            pending.push_back(encode("ADDED", o, want));
        }
        if send_initial && bookmarks {
            pending.push_back(bookmark(res, rv, true));
        }
        rv
    } else {
        rv_param
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv_param:?}")))?
    };
    let now = Instant::now();
    let every = store
        .config
        .bookmark_interval
        .max(Duration::from_millis(100));
    let mut state = State {
        table: want,
        store,
        res,
        ns,
        filter,
        since,
        rx,
        pending,
        deadline: now + Duration::from_secs(timeout.max(1)),
        bookmarks: bookmarks.then_some(every),
        next_bookmark: now + every,
        done: false,
    };
    // Events since the given resourceVersion (or 410 when it is too old) go out at once.
    state.drain();
    let stream = futures::stream::unfold(state, State::next);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}
