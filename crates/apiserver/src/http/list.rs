//! List: selectors, pagination (`limit`/`continue`), the `<Kind>List` document.

use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::http::table::{self, Want};
use crate::http::{status, Params};
use crate::meta;
use crate::resources::{ResId, RESOURCES};
use crate::selector::{FieldSelector, JsonSelector, LabelSelector};
use crate::store::{Obj, Store};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    cont: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remaining_item_count: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a> {
    kind: String,
    api_version: String,
    metadata: ListMeta,
    items: Vec<&'a Value>,
}

/// Parses the selectors of a request into one predicate.
pub fn filter(
    res: ResId,
    params: &Params,
) -> Result<impl Fn(&Value) -> bool + Send + Sync + 'static, ApiError> {
    let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(res, params.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok(move |o: &Value| labels.matches_object(o) && fields.matches(o))
}

/// The objects a list (or deletecollection) selects, and the list's resourceVersion.
pub fn select(
    store: &Store,
    res: ResId,
    ns: Option<&str>,
    params: &Params,
) -> Result<(Vec<Obj>, u64), ApiError> {
    let keep = filter(res, params)?;
    Ok(store.list(res, ns, keep))
}

/// Renders a `<Kind>List`.
pub fn render(
    res: ResId,
    items: &[Obj],
    rv: u64,
    cont: Option<String>,
    remaining: Option<usize>,
) -> Response {
    let r = &RESOURCES[res];
    let list = List {
        kind: r.list_kind(),
        api_version: r.api_version(),
        metadata: ListMeta {
            resource_version: rv.to_string(),
            cont,
            remaining_item_count: remaining,
        },
        items: items.iter().map(|o| o.as_ref()).collect(),
    };
    status::json(StatusCode::OK, &list)
}

/// A page of a collection as a Table.
fn render_table(res: ResId, items: &[Obj], rv: u64, cont: Option<String>, want: Want) -> Response {
    let objs: Vec<&Value> = items.iter().map(|o| o.as_ref()).collect();
    let t = table::table(RESOURCES[res].kind, &objs, want, Some(rv.to_string()), cont);
    table::response(&t, want)
}

/// GET on a collection (a `<Kind>List`, or a Table when the client negotiated one).
pub fn list(
    store: &Store,
    res: ResId,
    ns: Option<&str>,
    params: &Params,
    want: Option<Want>,
) -> Result<Response, ApiError> {
    let limit: usize = match params.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    // continue token: "<rv>:<namespace>:<name>" of the last item returned.
    let after = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let mut parts = c.splitn(3, ':');
            let rv = parts.next().and_then(|r| r.parse::<u64>().ok());
            match (rv, parts.next(), parts.next()) {
                (Some(rv), Some(ns), Some(name)) => Some((rv, ns.to_string(), name.to_string())),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid continue token {c:?}"
                    )))
                }
            }
        }
        None => None,
    };
    let keep = filter(res, params)?;
    let after_key = after
        .as_ref()
        .map(|(_, n, name)| (n.as_str(), name.as_str()));
    let (items, mut rv, more) = store.list_page(res, ns, after_key, limit, keep);
    if let Some((first_rv, _, _)) = &after {
        // Every page reports the resourceVersion of the first one.
        rv = *first_rv;
    }
    let token = match items.last() {
        Some(last) if more => Some(format!(
            "{rv}:{}:{}",
            meta::namespace(last),
            meta::name(last)
        )),
        _ => None,
    };
    Ok(match want {
        Some(w) => render_table(res, &items, rv, token, w),
        None => render(res, &items, rv, token, None),
    })
}
