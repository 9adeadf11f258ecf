//! The controller: watches Services, EndpointSlices and Nodes from the control plane (in the
//! fabric namespace), keeps the balancer's table in the edge namespace and the fabric's
//! podCIDR routes (for `ip` targets) current, and reports invalid annotations.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use sarasa_netns::{NetNs, Netlink};
use sarasa_nft::{Backend, Family, NetlinkBackend, NetlinkTableBackend, Table};

use super::health::Health;
use super::targets::{
    listeners, InvalidAnnotation, Mode, Target, READINESS_GATE, TARGET_ANNOTATION,
};
use super::{edge, table};
use crate::service_routes::{node_hops, watch_all};
use crate::spec::LabSpec;
use crate::LabError;

/// Metric marking the fabric's podCIDR routes this controller owns.
pub const POD_ROUTE_METRIC: u32 = 1034;

/// Runs until the control plane stops. A lab made before the edge existed has no balancer.
pub async fn run(spec: LabSpec, client: Client) -> Result<(), LabError> {
    let edge_path = sarasa_netns::NETNS_RUN_DIR.to_string() + "/" + &edge::netns(&spec);
    let Ok(edge_ns) = NetNs::open(edge::netns(&spec)) else {
        tracing::warn!("no edge namespace: the cloud load balancer is off in this lab");
        return std::future::pending().await;
    };
    let health = Health::start(edge_ns);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let svc_store = watch_all::<Service>(&client, &tx, "services").await?;
    let eps_store = watch_all::<EndpointSlice>(&client, &tx, "endpointslices").await?;
    let node_store = watch_all::<Node>(&client, &tx, "nodes").await?;
    let pod_store = watch_all::<Pod>(&client, &tx, "pods").await?;
    // Health changes are picked up by the tick.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut applied: Option<(Table, BTreeMap<Ipv4Net, Ipv4Addr>)> = None;
    let mut reported: HashSet<(String, String, String)> = HashSet::new();
    loop {
        tokio::select! {
            _ = rx.recv() => {},
            _ = tick.tick() => {},
        }
        let services: Vec<Service> = svc_store.state().iter().map(|s| (**s).clone()).collect();
        let slices: Vec<EndpointSlice> = eps_store.state().iter().map(|s| (**s).clone()).collect();
        let nodes: Vec<Node> = node_store.state().iter().map(|s| (**s).clone()).collect();
        let hops = node_hops(&spec, &nodes);
        let pods: Vec<std::sync::Arc<Pod>> = pod_store.state();
        let gated = |ns: &str, name: &str| {
            pods.iter().any(|p| {
                p.namespace().as_deref() == Some(ns) && p.name_any() == name && waits_for_gate(p)
            })
        };
        let (wanted, invalid) = listeners(&services, &slices, &hops, &gated);
        for bad in invalid {
            let key = (bad.namespace.clone(), bad.name.clone(), bad.value.clone());
            if reported.insert(key) {
                report_invalid(&client, &bad).await;
            }
        }
        health.set_targets(
            wanted
                .iter()
                .flat_map(|l| l.targets.iter().cloned())
                .collect::<BTreeSet<Target>>(),
        );
        let desired = table::table(&wanted, |t| health.healthy(t), spec.cluster_cidr);
        let routes = pod_routes(&spec, &nodes);
        if applied.as_ref() == Some(&(desired.clone(), routes.clone())) {
            open_gates(&client, &wanted, &health, &pods).await;
            continue;
        }
        let (want_table, want_routes) = (desired.clone(), routes.clone());
        let path = edge_path.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), LabError> {
            let mut nft = NetlinkTableBackend {
                inner: NetlinkBackend::in_netns(&path)
                    .map_err(|e| LabError::Process(format!("cloud load balancer: {e}")))?,
                family: Family::Inet,
                table: table::TABLE.into(),
            };
            nft.reconcile(&want_table)
                .map_err(|e| LabError::Process(format!("cloud load balancer table: {e}")))?;
            let mut nl = Netlink::current().map_err(LabError::netns)?;
            crate::fabric_routes::apply(&mut nl, &want_routes, POD_ROUTE_METRIC)
        })
        .await
        .map_err(|e| LabError::Process(format!("cloud load balancer task: {e}")))?;
        match result {
            Ok(()) => {
                tracing::debug!(
                    listeners = wanted.len(),
                    generation = health.generation(),
                    "cloud load balancer programmed"
                );
                applied = Some((desired, routes));
            }
            Err(e) => {
                tracing::warn!("{e}");
                applied = None;
            }
        }
    }
}

/// A pod that declares the balancer's readiness gate, whose containers are ready and whose gate
/// is not open yet.
fn waits_for_gate(p: &Pod) -> bool {
    let declares = p
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.condition_type == READINESS_GATE));
    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    let is = |t: &str| {
        conditions
            .into_iter()
            .flatten()
            .any(|c| c.type_ == t && c.status == "True")
    };
    declares
        && p.metadata.deletion_timestamp.is_none()
        && is("ContainersReady")
        && !is(READINESS_GATE)
}

/// Opens the gate of every pod whose `ip` target is programmed and passed its health check
/// (the table was just built from the same health state). The pod's other conditions are
/// kept; the pod runner keeps the gate's condition when it writes.
async fn open_gates(
    client: &Client,
    wanted: &[super::targets::Listener],
    health: &Health,
    pods: &[std::sync::Arc<Pod>],
) {
    for l in wanted.iter().filter(|l| l.mode == Mode::Ip) {
        for t in l.targets.iter().filter(|t| health.healthy(t)) {
            let Some((ns, name)) = &t.pod else { continue };
            let Some(pod) = pods
                .iter()
                .find(|p| p.namespace().as_deref() == Some(ns.as_str()) && &p.name_any() == name)
            else {
                continue;
            };
            if !waits_for_gate(pod) {
                continue;
            }
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let mut conditions: Vec<serde_json::Value> = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.type_ != READINESS_GATE)
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect();
            conditions.push(serde_json::json!({"type": READINESS_GATE, "status": "True",
                "lastTransitionTime": now, "lastProbeTime": null,
                "reason": "LoadBalancerNegReady",
                "message": format!("registered with the cloud load balancer as {}:{} and healthy", t.addr, t.port)}));
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let patch = serde_json::json!({"status": {"conditions": conditions}});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "{READINESS_GATE} opened"),
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), "opening {READINESS_GATE}: {e}")
                }
            }
        }
    }
}

/// Each node's IPv4 podCIDR via its underlay address. None with the BGP backend (the fabric's
/// router learns the podCIDRs from the nodes) or the VPC (nodes hold addresses, which the
/// VPC routes), so ip targets are reached the way the backend routes pods.
fn pod_routes(spec: &LabSpec, nodes: &[Node]) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    let mut out = BTreeMap::new();
    if matches!(
        spec.backend,
        crate::spec::Backend::Bgp | crate::spec::Backend::Vpc
    ) {
        return out;
    }
    for n in nodes {
        let Some(hop) = spec.node(&n.name_any()).map(|s| s.ip) else {
            continue;
        };
        for cidr in n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
        {
            if let Ok(IpNet::V4(net)) = cidr.parse::<IpNet>() {
                out.insert(net.trunc(), hop);
            }
        }
    }
    out
}

/// A Warning Event on the Service: the value is not a mode, the default (`instance`) is kept.
async fn report_invalid(client: &Client, bad: &InvalidAnnotation) {
    tracing::warn!(service = %format!("{}/{}", bad.namespace, bad.name), value = %bad.value, "invalid {TARGET_ANNOTATION}");
    let object = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some(bad.name.clone()),
        namespace: Some(bad.namespace.clone()),
        ..Default::default()
    };
    let message = format!(
        "annotation {TARGET_ANNOTATION}: {:?} is not \"instance\" or \"ip\"; the load balancer keeps the default, instance (NodePort targets)",
        bad.value
    );
    let ev = crate::events::warning(
        object,
        "InvalidLoadBalancerTarget",
        &message,
        "sarasa-cloud-lb",
        None,
        crate::events::now(),
    );
    crate::events::post(client.clone(), ev).await;
}
