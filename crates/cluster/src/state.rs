//! The node and pod projections, and [`ClusterState`]: the part of the cluster the node plan
//! reads, copied for each reconcile. Only the fields the datapath needs are kept, so memory
//! stays flat; the objects the proxy and policy compilers consume are journaled apart
//! ([`crate::service_objects`], [`crate::policy_objects`]).
//!
//! The Node annotations sarasa agents publish live here, beside the projection that reads them.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::store::{parse_rv, Applied, ProjectedStore};
use sarasa_model::MacAddr;

/// The node's VXLAN device MAC (`sarasa.1`), for the other nodes' FDB and neighbour entries.
pub const ANNOTATION_VTEP_MAC: &str = "sarasa.io/vtep-mac";
/// The node's underlay address (VXLAN remote, host-gw next hop).
pub const ANNOTATION_PUBLIC_IP: &str = "sarasa.io/public-ip";
/// `vxlan` or `host-gw`: how the node's agent reaches the others.
pub const ANNOTATION_BACKEND: &str = "sarasa.io/backend";
/// The node's podCIDRs as sarasa allocated them (comma separated), when the cluster does not
/// fill in `spec.podCIDRs`; the spec wins when both are present.
pub const ANNOTATION_POD_CIDRS: &str = "sarasa.io/pod-cidrs";
/// The addresses the cloud assigned the node (vpc backend; comma separated): its pods take
/// theirs from these, and the VPC routes each to the node.
pub const ANNOTATION_VPC_ADDRESSES: &str = "sarasa.io/vpc-addresses";
/// How many addresses the cloud gives the node at most (vpc backend; its instance type's).
pub const ANNOTATION_VPC_ADDRESS_LIMIT: &str = "sarasa.io/vpc-address-limit";
/// The highest resourceVersion the node's agent has programmed (on its Lease).
pub const ANNOTATION_OBSERVED_RV: &str = "sarasa.io/observed-resource-version";
/// The reason of the NetworkUnavailable=False condition a sarasa agent sets.
pub const READY_REASON: &str = "SarasaAgentReady";

/// What sarasa keeps of a Node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `spec.podCIDRs` (else `spec.podCIDR`, else sarasa's own allocation,
    /// `sarasa.io/pod-cidrs`, else the vpc backend's addresses, `sarasa.io/vpc-addresses`,
    /// as host prefixes); unparsable entries are left out.
    pub pod_cidrs: Vec<IpNet>,
    /// `sarasa.io/vpc-address-limit` (vpc backend).
    pub vpc_address_limit: Option<u32>,
    /// The `InternalIP` of `status.addresses`.
    pub internal_ip: Option<IpAddr>,
    /// `sarasa.io/public-ip`: the node's underlay address for tunnels and host-gw routes.
    pub public_ip: Option<IpAddr>,
    /// `sarasa.io/vtep-mac`: the MAC of the node's VXLAN device.
    pub vtep_mac: Option<MacAddr>,
    /// `sarasa.io/backend`: `vxlan` or `host-gw`.
    pub backend: Option<String>,
    /// NetworkUnavailable=False set by a sarasa agent.
    pub network_ready: bool,
    /// `metadata.creationTimestamp` (Unix seconds): of two Nodes claiming the same podCIDR,
    /// address or VTEP MAC, the agent programs the older.
    pub created: Option<i64>,
}

impl NodeInfo {
    pub fn from_object(node: &Node) -> Self {
        let annotations = node.annotations();
        let spec = node.spec.as_ref();
        let mut pod_cidrs: Vec<IpNet> = spec
            .and_then(|s| s.pod_cidrs.clone())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| IpNet::from_str(c).ok())
            .collect();
        if pod_cidrs.is_empty() {
            if let Some(c) = spec.and_then(|s| s.pod_cidr.as_deref()) {
                pod_cidrs.extend(IpNet::from_str(c).ok());
            }
        }
        if pod_cidrs.is_empty() {
            if let Some(v) = annotations.get(ANNOTATION_POD_CIDRS) {
                pod_cidrs.extend(v.split(',').filter_map(|c| IpNet::from_str(c.trim()).ok()));
            }
        }
        if pod_cidrs.is_empty() {
            if let Some(v) = annotations.get(ANNOTATION_VPC_ADDRESSES) {
                pod_cidrs.extend(
                    v.split(',')
                        .filter_map(|a| IpAddr::from_str(a.trim()).ok())
                        .map(IpNet::from),
                );
            }
        }
        let status = node.status.as_ref();
        let internal_ip = status.and_then(|s| s.addresses.as_ref()).and_then(|a| {
            a.iter()
                .find(|a| a.type_ == "InternalIP")
                .and_then(|a| IpAddr::from_str(&a.address).ok())
        });
        let network_ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "NetworkUnavailable"
                        && c.status == "False"
                        && c.reason.as_deref() == Some(READY_REASON)
                })
            });
        NodeInfo {
            name: node.name_any(),
            pod_cidrs,
            internal_ip,
            public_ip: annotations
                .get(ANNOTATION_PUBLIC_IP)
                .and_then(|v| IpAddr::from_str(v).ok()),
            vtep_mac: annotations
                .get(ANNOTATION_VTEP_MAC)
                .and_then(|v| MacAddr::from_str(v).ok()),
            backend: annotations.get(ANNOTATION_BACKEND).cloned(),
            vpc_address_limit: annotations
                .get(ANNOTATION_VPC_ADDRESS_LIMIT)
                .and_then(|v| v.parse().ok()),
            network_ready,
            created: node
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
        }
    }

    /// The address other nodes use to reach this one: the published underlay address, else the
    /// InternalIP.
    pub fn underlay_ip(&self) -> Option<IpAddr> {
        self.public_ip.or(self.internal_ip)
    }

    /// The node's own addresses as NetworkPolicy sees them (underlay and InternalIP, sorted):
    /// traffic between a pod and its node is always allowed, as Kubernetes documents.
    pub fn policy_addresses(&self) -> Vec<IpAddr> {
        let mut a: Vec<IpAddr> = self.public_ip.into_iter().chain(self.internal_ip).collect();
        a.sort();
        a.dedup();
        a
    }
}

/// What sarasa keeps of every Pod (host-network ones too). Labels and container ports, what
/// NetworkPolicy reads, are in the policy projection ([`sarasa_policy::PolicyPod`]), kept only
/// for the pods policy applies to ([`crate::objects::is_policy_pod`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid` (the lab names a pod's network namespace after it).
    pub uid: String,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// `status.podIPs` (else `status.podIP`); empty until the CNI plugin gave it one.
    pub pod_ips: Vec<IpAddr>,
    /// `spec.hostNetwork`: the pod uses its node's addresses.
    pub host_network: bool,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`).
    pub phase: Option<String>,
    /// `metadata.deletionTimestamp` is set: the pod is shutting down (it still runs, and is
    /// still policed, until it is gone).
    pub terminating: bool,
    /// `spec.hostname` (cluster DNS: `hostname.subdomain.ns.svc.zone`).
    pub hostname: Option<String>,
    /// `spec.subdomain`: the headless Service the pod's hostname record lives under.
    pub subdomain: Option<String>,
}

impl PodInfo {
    pub fn from_object(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        let mut pod_ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .filter_map(|p| IpAddr::from_str(&p.ip).ok())
                    .collect()
            })
            .unwrap_or_default();
        if pod_ips.is_empty() {
            pod_ips.extend(
                status
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|p| IpAddr::from_str(p).ok()),
            );
        }
        let spec = pod.spec.as_ref();
        PodInfo {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            node_name: spec.and_then(|s| s.node_name.clone()),
            pod_ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            phase: status.and_then(|s| s.phase.clone()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            hostname: spec.and_then(|s| s.hostname.clone()),
            subdomain: spec.and_then(|s| s.subdomain.clone()),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Running, with an address, not shutting down: a pod that can answer a connection now.
    pub fn is_serving(&self) -> bool {
        self.phase.as_deref() == Some("Running") && !self.pod_ips.is_empty() && !self.terminating
    }
}

/// What the node plan reads, copied for each reconcile: Nodes and Pods.
#[derive(Debug, Clone)]
pub struct ClusterState {
    /// Journaled: the policy compiler takes node address changes from it
    /// ([`crate::policy_objects::PolicyDelta::nodes`]).
    pub nodes: ProjectedStore<NodeInfo>,
    /// Every pod, host-network ones included.
    pub pods: ProjectedStore<PodInfo>,
    /// Highest resourceVersion among all events received so far (of every kind).
    pub max_resource_version: u64,
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            nodes: ProjectedStore::journaled(),
            pods: ProjectedStore::default(),
            max_resource_version: 0,
        }
    }
}

impl ClusterState {
    pub fn apply_node_event(&mut self, event: watcher::Event<Node>) -> bool {
        let applied = self.nodes.apply(
            event,
            |n| n.name_any(),
            |n| Some(NodeInfo::from_object(n)),
            |n| parse_rv(n.resource_version().as_deref()),
        );
        self.note_rv(applied)
    }

    pub fn apply_pod_event(&mut self, event: watcher::Event<Pod>) -> bool {
        let applied = self.pods.apply(
            event,
            |p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
            |p| Some(PodInfo::from_object(p)),
            |p| parse_rv(p.resource_version().as_deref()),
        );
        self.note_rv(applied)
    }

    /// Counts the resourceVersion of an event (of any kind); returns `changed`.
    pub fn note_rv(&mut self, applied: Applied) -> bool {
        if let Some(rv) = applied.resource_version {
            self.max_resource_version = self.max_resource_version.max(rv);
        }
        applied.changed
    }

    /// Nodes and Pods have completed their first list.
    pub fn synced(&self) -> bool {
        self.nodes.synced && self.pods.synced
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.items().get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use kube::api::ObjectMeta;

    pub(crate) fn node(name: &str, rv: u64, cidr: Option<&str>, ip: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(rv.to_string()),
                annotations: Some(
                    [
                        (
                            ANNOTATION_VTEP_MAC.to_string(),
                            "02:00:00:00:00:01".to_string(),
                        ),
                        (ANNOTATION_PUBLIC_IP.to_string(), ip.to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn node_projection_reads_cidr_annotations_and_address() {
        let info = NodeInfo::from_object(&node("n1", 7, Some("10.244.1.0/24"), "192.168.33.11"));
        assert_eq!(
            info.pod_cidrs,
            vec!["10.244.1.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(info.underlay_ip(), Some("192.168.33.11".parse().unwrap()));
        assert_eq!(info.vtep_mac, Some("02:00:00:00:00:01".parse().unwrap()));
        assert!(!info.network_ready);
        // Annotation and InternalIP agree here: one address.
        assert_eq!(
            info.policy_addresses(),
            vec!["192.168.33.11".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn sarasa_pod_cidrs_apply_only_without_spec_pod_cidrs() {
        let mut n = node("n1", 7, None, "192.168.33.11");
        n.metadata.annotations.as_mut().unwrap().insert(
            ANNOTATION_POD_CIDRS.into(),
            "10.244.9.0/24, fd00:10:244:9::/64".into(),
        );
        let cidrs: Vec<String> = NodeInfo::from_object(&n)
            .pod_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(cidrs, ["10.244.9.0/24", "fd00:10:244:9::/64"]);
        n.spec.as_mut().unwrap().pod_cidrs = Some(vec!["10.244.1.0/24".into()]);
        assert_eq!(
            NodeInfo::from_object(&n).pod_cidrs,
            vec!["10.244.1.0/24".parse::<IpNet>().unwrap()],
            "the spec wins"
        );
    }

    #[test]
    fn vpc_addresses_are_host_prefixes_with_the_limit() {
        let mut n = node("n1", 7, None, "192.168.33.11");
        let ann = n.metadata.annotations.as_mut().unwrap();
        ann.insert(
            ANNOTATION_VPC_ADDRESSES.into(),
            "10.244.0.4,10.244.0.7, junk".into(),
        );
        ann.insert(ANNOTATION_VPC_ADDRESS_LIMIT.into(), "16".into());
        let info = NodeInfo::from_object(&n);
        assert_eq!(
            info.pod_cidrs,
            vec![
                "10.244.0.4/32".parse::<IpNet>().unwrap(),
                "10.244.0.7/32".parse().unwrap()
            ]
        );
        assert_eq!(info.vpc_address_limit, Some(16));
    }

    #[test]
    fn pod_projection_reads_phase_uid_and_shutdown() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": "a", "uid": "u-1",
                "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "containers": []},
            "status": {"phase": "Running", "podIP": "192.168.33.11"}
        }))
        .unwrap();
        let info = PodInfo::from_object(&pod);
        assert_eq!(info.key(), "x/a");
        assert_eq!(info.uid, "u-1");
        assert_eq!(
            info.pod_ips,
            vec!["192.168.33.11".parse::<IpAddr>().unwrap()]
        );
        assert!(info.host_network && info.terminating);
        assert!(!info.is_serving(), "a terminating pod is not probed");
        let running = PodInfo {
            terminating: false,
            ..info
        };
        assert!(running.is_serving());
    }

    #[test]
    fn store_tracks_changes_relists_and_rv() {
        let mut state = ClusterState::default();
        assert!(!state.apply_node_event(watcher::Event::Init));
        assert!(!state.apply_node_event(watcher::Event::InitApply(node(
            "n1",
            5,
            None,
            "192.168.33.11"
        ))));
        assert!(state.apply_node_event(watcher::Event::InitDone));
        assert!(state.nodes.synced);
        assert_eq!(state.max_resource_version, 5);
        // Same projection with a new rv (e.g. a heartbeat) is not a change, but the rv counts.
        assert!(!state.apply_node_event(watcher::Event::Apply(node(
            "n1",
            9,
            None,
            "192.168.33.11"
        ))));
        assert_eq!(state.max_resource_version, 9);
        // The podCIDR arriving is a change.
        assert!(state.apply_node_event(watcher::Event::Apply(node(
            "n1",
            10,
            Some("10.244.1.0/24"),
            "192.168.33.11"
        ))));
        // A relist that lost n1 removes it atomically at InitDone.
        state.apply_node_event(watcher::Event::Init);
        assert!(state.node("n1").is_some());
        assert!(state.apply_node_event(watcher::Event::InitDone));
        assert!(state.node("n1").is_none());
    }
}
