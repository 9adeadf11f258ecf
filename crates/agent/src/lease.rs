//! The agent's Lease `sarasa-system/agent-<node>`: liveness (renewed every few seconds) and
//! `sarasa.io/observed-resource-version`, the highest resourceVersion among the events this
//! agent has processed and programmed (what `sarasa apply --wait` waits for).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::error::{Error, Result};
use sarasa_cluster::state::ANNOTATION_OBSERVED_RV;

pub const LEASE_NAMESPACE: &str = "sarasa-system";
pub const LEASE_DURATION_SECONDS: i32 = 15;
pub const RENEW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

pub fn lease_name(node: &str) -> String {
    format!("agent-{node}")
}

/// The Lease as the agent wants it now.
/// The Lease of `node`'s agent: observed resourceVersion, renewed `now`; `acquired` is when this
/// agent process started (a restarted agent's Lease says so before its first full program).
pub fn desired_lease(
    node: &str,
    observed_rv: u64,
    now: k8s_openapi::jiff::Timestamp,
    acquired: k8s_openapi::jiff::Timestamp,
) -> Lease {
    let mut lease = Lease::default();
    lease.metadata.name = Some(lease_name(node));
    lease.metadata.namespace = Some(LEASE_NAMESPACE.into());
    lease.metadata.annotations =
        Some([(ANNOTATION_OBSERVED_RV.to_string(), observed_rv.to_string())].into());
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(node.into()),
        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
        renew_time: Some(MicroTime(now)),
        acquire_time: Some(MicroTime(acquired)),
        ..Default::default()
    });
    lease
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Creates the `sarasa-system` namespace if it is missing (a real cluster may forbid it: the
/// namespace is then expected to come with the DaemonSet).
pub async fn ensure_namespace(client: &kube::Client) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(LEASE_NAMESPACE).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            let mut ns = Namespace::default();
            ns.metadata.name = Some(LEASE_NAMESPACE.into());
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => Ok(()),
                Err(e) if is_status(&e, 409) => Ok(()),
                Err(e) => Err(Error::kube(
                    format!("create namespace {LEASE_NAMESPACE}"),
                    e,
                )),
            }
        }
        Err(e) if is_status(&e, 403) => Ok(()),
        Err(e) => Err(Error::kube(format!("get namespace {LEASE_NAMESPACE}"), e)),
    }
}

/// Creates or renews the Lease with the given observed resourceVersion.
pub async fn renew(
    client: &kube::Client,
    node: &str,
    observed_rv: u64,
    acquired: k8s_openapi::jiff::Timestamp,
) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let name = lease_name(node);
    let lease = desired_lease(
        node,
        observed_rv,
        k8s_openapi::jiff::Timestamp::now(),
        acquired,
    );
    let patch = json!({
        "metadata": {"annotations": lease.metadata.annotations},
        "spec": lease.spec,
    });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => {
                ensure_namespace(client).await?;
                api.create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::kube(format!("create lease {name}"), e))
            }
            Err(e) => Err(Error::kube(format!("create lease {name}"), e)),
        },
        Err(e) => Err(Error::kube(format!("renew lease {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_carries_holder_and_observed_rv() {
        let started = k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let l = desired_lease(
            "node-1",
            42,
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            started,
        );
        assert_eq!(l.metadata.name.as_deref(), Some("agent-node-1"));
        assert_eq!(l.metadata.namespace.as_deref(), Some("sarasa-system"));
        assert_eq!(
            l.metadata.annotations.unwrap()["sarasa.io/observed-resource-version"],
            "42"
        );
        let spec = l.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node-1"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time.map(|t| t.0), Some(started));
    }
}
