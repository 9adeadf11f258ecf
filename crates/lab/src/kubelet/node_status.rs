//! The Node status each node's kubelet reports: the `Ready` condition (KubeletReady), the
//! system info (`kubectl get nodes -o wide`: VERSION, OS-IMAGE, KERNEL-VERSION,
//! CONTAINER-RUNTIME), InternalIP and Hostname addresses, and pod capacity. Written when it
//! differs from what the Node says (checked every 30 s), conditional on the resourceVersion
//! read, so the agent's conditions (`NetworkUnavailable`, `SarasaDegraded`) are kept.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::spec::{LabSpec, NodeSpec};

/// The kubelet version the lab reports (the API server's version).
pub const KUBELET_VERSION: &str = "v1.34.0-sarasa";
/// Pods a lab node accepts (kubelet's default `--max-pods`); with `--ipam vpc` its VPC
/// address limit decides ([`LabSpec::max_pods`]).
pub const MAX_PODS: u32 = 110;
const PERIOD: Duration = Duration::from_secs(30);

/// Reports every node's status now and then every 30 s, forever.
pub async fn run(client: Client, spec: LabSpec) {
    let api: Api<Node> = Api::all(client);
    loop {
        for node in &spec.nodes {
            if let Err(e) = report(&api, node, spec.max_pods()).await {
                tracing::warn!(node = %node.name, "reporting node status: {e}");
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
}

async fn report(api: &Api<Node>, node: &NodeSpec, max_pods: u32) -> Result<(), kube::Error> {
    for _ in 0..5 {
        let Some(current) = api.get_opt(&node.name).await? else {
            return Ok(());
        };
        let status = current.status.clone().unwrap_or_default();
        let conditions = status.conditions.clone().unwrap_or_default();
        let info = system_info(node);
        let addresses = addresses(node);
        let capacity = std::collections::BTreeMap::from([(
            "pods".to_string(),
            Quantity(max_pods.to_string()),
        )]);
        let ready_now = conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready_now
            && status.node_info.as_ref() == Some(&info)
            && status.addresses.as_ref() == Some(&addresses)
            && status.capacity.as_ref() == Some(&capacity)
        {
            return Ok(());
        }
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut conditions: Vec<NodeCondition> = conditions
            .into_iter()
            .filter(|c| c.type_ != "Ready")
            .collect();
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("kubelet is posting ready status".into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now),
        });
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "status": {
                "conditions": conditions,
                "nodeInfo": info,
                "addresses": addresses,
                "capacity": capacity,
                "allocatable": capacity,
            },
        });
        match api
            .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn addresses(node: &NodeSpec) -> Vec<NodeAddress> {
    let mut out: Vec<NodeAddress> = node
        .ips()
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        })
        .collect();
    out.push(NodeAddress {
        type_: "Hostname".into(),
        address: node.name.clone(),
    });
    out
}

/// What this machine is, as kubelet reports it (every lab node shares the machine's kernel).
pub fn system_info(node: &NodeSpec) -> NodeSystemInfo {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let id = format!(
        "{:032x}",
        sarasa_model::hash::fnv1a64(node.netns.as_bytes()) as u128
    );
    NodeSystemInfo {
        architecture: match std::env::consts::ARCH {
            "x86_64" => "amd64".into(),
            "aarch64" => "arm64".into(),
            other => other.into(),
        },
        boot_id,
        container_runtime_version: format!("sarasa-lab://{}", env!("CARGO_PKG_VERSION")),
        kernel_version: kernel,
        kube_proxy_version: String::new(),
        kubelet_version: KUBELET_VERSION.into(),
        machine_id: id.clone(),
        operating_system: "linux".into(),
        os_image,
        system_uuid: id,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_info_names_this_machine() {
        let spec = LabSpec::new(
            "nsi",
            1,
            sarasa_model::Backend::Vxlan,
            sarasa_model::CniMode::Bridge,
        )
        .unwrap();
        let info = system_info(&spec.nodes[0]);
        assert_eq!(info.operating_system, "linux");
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert!(!info.kernel_version.is_empty());
        assert!(info.container_runtime_version.starts_with("sarasa-lab://"));
        assert_eq!(info.machine_id.len(), 32);
        assert_eq!(addresses(&spec.nodes[0])[1].address, "node-1");
    }
}
