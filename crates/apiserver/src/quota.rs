//! Per-namespace object counts (the lab's stand-in for a ResourceQuota with `count/<resource>`
//! entries, [`crate::config::Limits::object_quotas`]): a create beyond the count is refused
//! with kube's 403 "exceeded quota" wording, controllers' creates included, so a runaway
//! workload stops at the quota.

use crate::config::Limits;
use crate::error::ApiError;
use crate::resources::{ResId, RESOURCES};
use crate::store::Inner;

/// The name the refusal gives the quota.
pub const QUOTA_NAME: &str = "object-counts";

/// Refuses creating one more `res` object named `name` in `ns` when that would pass its count.
pub fn check(
    inner: &Inner,
    limits: &Limits,
    res: ResId,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let r = &RESOURCES[res];
    if !r.namespaced {
        return Ok(());
    }
    let Some(&limit) = limits.object_quotas.get(r.plural) else {
        return Ok(());
    };
    let used = inner.iter(res, Some(ns)).count();
    if used < limit {
        return Ok(());
    }
    let resource = if r.group.is_empty() {
        r.plural.to_string()
    } else {
        format!("{}.{}", r.plural, r.group)
    };
    Err(ApiError::forbidden(
        res,
        name,
        &format!(
            "exceeded quota: {QUOTA_NAME}, requested: count/{resource}=1, used: count/{resource}={used}, limited: count/{resource}={limit}"
        ),
    ))
}
