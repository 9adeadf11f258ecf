//! Authorization: decides whether the user of a request may do what it asks, as
//! kube-apiserver's `--authorization-mode=RBAC` does. Requests by `system:masters` are always
//! allowed; everyone else is checked against the stored Roles, ClusterRoles and bindings, held
//! in an [`index::Index`] that a controller rebuilds when RBAC objects change (and that a
//! refusal re-checks, so a grant is visible to the very next request). A refusal is a 403
//! `Status` with kube-apiserver's message. The module also serves SelfSubjectAccessReview and
//! SelfSubjectRulesReview (`kubectl auth can-i`), validates RBAC objects and refuses privilege
//! escalation through roles and bindings.
//!
//! Off by default ([`AuthorizationMode::AlwaysAllow`]); the identity comes from the
//! [`UserInfo`] authentication put in the request's extensions (none: anonymous).

pub mod attributes;
pub mod bootstrap;
pub mod escalation;
pub mod index;
pub mod review;
pub mod rules;
pub mod validate;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use crate::error::ApiError;
use crate::http::status;
use crate::resources::{CLUSTERROLEBINDINGS, CLUSTERROLES, ROLEBINDINGS, ROLES};
use crate::store::{Event, Store};
use crate::user::UserInfo;
pub use attributes::Attributes;
use index::Index;

/// How requests are authorized (kube-apiserver's `--authorization-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthorizationMode {
    /// Every request is allowed (the library's default; the lab before authentication).
    #[default]
    AlwaysAllow,
    /// `system:masters` bypasses; everyone else gets what RBAC grants.
    Rbac,
}

/// The RBAC kinds: changes to these rebuild the index.
pub const RBAC_RESOURCES: &[usize] = &[ROLES, CLUSTERROLES, ROLEBINDINGS, CLUSTERROLEBINDINGS];

/// The outcome of an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

/// The authorizer of one server.
pub struct Authorizer {
    pub mode: AuthorizationMode,
    store: Arc<Store>,
    index: RwLock<Arc<Index>>,
    /// The store's resourceVersion up to which no RBAC change is missing from the index (so a
    /// burst of refusals looks at each change of the history once, not once per refusal).
    checked: AtomicU64,
}

impl Authorizer {
    /// An authorizer over `store`'s RBAC objects (indexed now).
    pub fn new(store: Arc<Store>, mode: AuthorizationMode) -> Arc<Authorizer> {
        let index = Index::build(&store.lock());
        Arc::new(Authorizer {
            mode,
            store,
            checked: AtomicU64::new(index.rv),
            index: RwLock::new(Arc::new(index)),
        })
    }

    /// The current index.
    pub fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rebuilds the index from the store.
    pub fn rebuild(&self) {
        let ix = Arc::new(Index::build(&self.store.lock()));
        let mut cur = self.index.write().unwrap_or_else(|p| p.into_inner());
        if ix.rv >= cur.rv {
            *cur = ix;
        }
    }

    /// Rebuilds the index if an RBAC object changed since it was built (or the change history
    /// no longer reaches back that far). Returns whether it did.
    pub fn refresh(&self) -> bool {
        let since = self.index().rv.max(self.checked.load(Ordering::Relaxed));
        let stale = match self
            .store
            .changes_since(since, |e| RBAC_RESOURCES.contains(&e.res))
        {
            Ok((events, up_to)) => {
                if events.is_empty() {
                    self.checked.fetch_max(up_to, Ordering::Relaxed);
                }
                !events.is_empty()
            }
            Err(_) => true,
        };
        if stale {
            self.rebuild();
        }
        stale
    }

    /// Whether the attributes' user may do what they describe.
    pub fn authorize(&self, a: &Attributes) -> Decision {
        if self.mode == AuthorizationMode::AlwaysAllow || a.user.in_group(UserInfo::MASTERS) {
            return Decision::Allow;
        }
        if self.index().visit(&a.user, &a.namespace, |rules| {
            rules.iter().any(|r| r.allows(a))
        }) {
            return Decision::Allow;
        }
        // A binding made a moment ago may not be indexed yet: look again after catching up.
        if self.refresh()
            && self.index().visit(&a.user, &a.namespace, |rules| {
                rules.iter().any(|r| r.allows(a))
            })
        {
            return Decision::Allow;
        }
        Decision::Deny
    }

    /// The controller keeping the index current.
    pub fn updater(self: &Arc<Self>) -> IndexUpdater {
        IndexUpdater(self.clone())
    }
}

/// Rebuilds the index after RBAC changes (a controller fed by the store's change history).
pub struct IndexUpdater(Arc<Authorizer>);

impl crate::controllers::Controller for IndexUpdater {
    fn name(&self) -> &'static str {
        "rbac-index"
    }
    fn watches(&self) -> &'static [usize] {
        RBAC_RESOURCES
    }
    fn reconcile(&mut self, _store: &Store, _events: Option<&[Event]>) -> Option<Duration> {
        self.0.rebuild();
        None
    }
}

/// The 403 for a refused request, worded as kube-apiserver words it.
pub fn forbidden(a: &Attributes) -> ApiError {
    let reason = a.forbidden_reason();
    if !a.resource_request {
        return ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!("forbidden: {reason}"),
            details: None,
        };
    }
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if a.name.is_empty() {
        format!("{qualified} is forbidden: {reason}")
    } else {
        format!("{qualified} {:?} is forbidden: {reason}", a.name)
    };
    let mut details = json!({"kind": a.resource});
    if !a.name.is_empty() {
        details["name"] = json!(a.name);
    }
    if !a.api_group.is_empty() {
        details["group"] = json!(a.api_group);
    }
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(details),
    }
}

/// A 403 for a write refused for `why` (escalation): `<resource> "<name>" is forbidden: <why>`.
pub fn forbidden_write(a: &Attributes, name: &str, why: String) -> ApiError {
    let qualified = format!("{}.{}", a.resource, a.api_group);
    ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!("{qualified} {name:?} is forbidden: {why}"),
        details: Some(json!({"name": name, "group": a.api_group, "kind": a.resource})),
    }
}

/// The middleware authorizing every request before the handlers see it; it also answers the
/// access reviews and runs the escalation check on writes of roles and bindings.
pub async fn middleware(
    State(authz): State<Arc<Authorizer>>,
    req: Request,
    next: Next,
) -> Response {
    let user = req
        .extensions()
        .get::<UserInfo>()
        .cloned()
        .unwrap_or_else(UserInfo::anonymous);
    let a = Attributes::from_request(user, req.method(), req.uri());
    if authz.authorize(&a) == Decision::Deny {
        return status::error(&forbidden(&a));
    }
    if review::is_review(&a) {
        return review::serve(&authz, &a, req).await;
    }
    if escalation::applies(&authz, &a) {
        return escalation::guarded(&authz, &a, req, next).await;
    }
    next.run(req).await
}
