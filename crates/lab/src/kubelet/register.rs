//! Node registration, as each node's kubelet does when it starts (`--register-node`): the
//! Node object with its hostname label and InternalIP exists before anything runs on the node,
//! so the agent DaemonSet gets a pod on every node from the start.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::spec::{LabSpec, NodeSpec};
use crate::LabError;

/// The well-known label the kubelet sets to the node's hostname.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// How long registration keeps retrying while the API does not answer yet.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(120);

/// Registers every node of the lab that has no Node object yet (existing ones are left as
/// they are), retrying while the API is not answering, for at most two minutes.
pub async fn register_nodes(client: &Client, spec: &LabSpec) -> Result<(), LabError> {
    let api: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    for node in &spec.nodes {
        loop {
            match register(&api, node).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(node = %node.name, "registering: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(LabError::Api(format!(
                        "registering node {}: {e}",
                        node.name
                    )))
                }
            }
        }
    }
    Ok(())
}

async fn register(api: &Api<Node>, node: &NodeSpec) -> Result<(), kube::Error> {
    let existing = match api.get_opt(&node.name).await? {
        Some(n) => n,
        None => {
            let n = Node {
                metadata: kube::api::ObjectMeta {
                    name: Some(node.name.clone()),
                    labels: Some(BTreeMap::from([(
                        HOSTNAME_LABEL.to_string(),
                        node.name.clone(),
                    )])),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &n).await {
                Ok(created) => {
                    tracing::info!(node = %node.name, ip = %node.ip, "registered Node");
                    created
                }
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(&node.name).await?,
                Err(e) => return Err(e),
            }
        }
    };
    let has_address = existing
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .is_some_and(|a| !a.is_empty());
    if !has_address {
        let status = NodeStatus {
            addresses: Some(
                node.ips()
                    .iter()
                    .map(|ip| NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        let patch = serde_json::json!({ "status": status });
        api.patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}
