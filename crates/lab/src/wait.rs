//! `apply --wait`: wait until the pods an apply created are Running and Ready, and every node's
//! agent has programmed the cluster state as of that apply (its Lease reports an observed
//! resourceVersion at least as new as every object involved).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::lab::Lab;
use crate::LabError;

/// The agent Lease annotation carrying the newest resourceVersion it has programmed.
pub const OBSERVED_RV: &str = "sarasa.io/observed-resource-version";
/// Namespace of the agents' Leases (`agent-<node>`).
pub const AGENT_LEASE_NAMESPACE: &str = "sarasa-system";

/// What one apply asks to wait for.
#[derive(Debug, Clone, Default)]
pub struct WaitFor {
    pub pods: Vec<(String, String)>,
    pub deployments: Vec<(String, String)>,
    /// The newest resourceVersion the apply wrote.
    pub resource_version: u64,
}

pub fn wait(lab: &Lab, what: WaitFor, timeout: Duration) -> Result<(), LabError> {
    let nodes: Vec<String> = lab.spec.nodes.iter().map(|n| n.name.clone()).collect();
    crate::client::with_client(&lab.spec, |c| async move {
        let deadline = Instant::now() + timeout;
        let mut pending;
        loop {
            pending = match check(&c, &what, &nodes).await {
                Ok(None) => return Ok(()),
                Ok(Some(p)) => p,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(LabError::Timeout(format!("apply --wait: {pending}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// `None` when done, or what is still pending.
async fn check(c: &Client, what: &WaitFor, nodes: &[String]) -> Result<Option<String>, LabError> {
    let mut target = what.resource_version;
    for (ns, name) in &what.pods {
        let pod = Api::<Pod>::namespaced(c.clone(), ns)
            .get_opt(name)
            .await
            .map_err(api)?;
        match pod {
            Some(p) if pod_ready(&p) => target = target.max(rv(&p)),
            _ => return Ok(Some(format!("pod {ns}/{name} is not Running and Ready"))),
        }
    }
    for (ns, name) in &what.deployments {
        let Some(d) = Api::<Deployment>::namespaced(c.clone(), ns)
            .get_opt(name)
            .await
            .map_err(api)?
        else {
            return Ok(Some(format!("deployment {ns}/{name} does not exist")));
        };
        let want = d.spec.replicas.unwrap_or(1) as usize;
        let selector = d
            .spec
            .selector
            .match_labels
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let pods = Api::<Pod>::namespaced(c.clone(), ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api)?
            .items;
        let live: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let ready = live.iter().filter(|p| pod_ready(p)).count();
        if live.len() != want || ready != want {
            return Ok(Some(format!(
                "deployment {ns}/{name}: {ready}/{want} pods ready"
            )));
        }
        for p in live {
            target = target.max(rv(p));
        }
    }
    let leases = Api::<Lease>::namespaced(c.clone(), AGENT_LEASE_NAMESPACE);
    for node in nodes {
        let lease = leases
            .get_opt(&format!("agent-{node}"))
            .await
            .map_err(api)?;
        let observed = lease
            .as_ref()
            .and_then(|l| l.annotations().get(OBSERVED_RV))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if observed < target {
            return Ok(Some(format!(
                "agent of {node} has programmed resourceVersion {observed}, waiting for {target}"
            )));
        }
    }
    Ok(None)
}

fn api(e: kube::Error) -> LabError {
    LabError::Api(e.to_string())
}

fn rv<K: kube::Resource>(o: &K) -> u64 {
    o.meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn pod_ready(p: &Pod) -> bool {
    let Some(st) = &p.status else { return false };
    st.phase.as_deref() == Some("Running")
        && st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}
