//! A member's sync with the broker (`sarasa clusterset run-sync SET`, one per member lab, in
//! its fabric namespace, which reaches both its API server and the WAN), as Submariner's
//! Lighthouse agent syncs: this cluster's MCS EndpointSlices (those whose
//! `multicluster.kubernetes.io/source-cluster` is its id) go to the broker, every other
//! cluster's come back into the namespaces that exist here, and the cluster's record (id,
//! ranges, active gateway with its WAN address and WireGuard public key, a heartbeat) is kept
//! on the broker; the other clusters' records come back, with the set's cable kind, as the
//! ConfigMap the agents route by ([`sarasa_model::clusterset`]). Level-triggered: each pass lists both sides and
//! writes the difference, so a missed change is put right by the next pass. While the broker
//! cannot be reached nothing is removed: the cluster keeps the last state it had (and its
//! traffic keeps flowing); the pass after the broker is back catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::Client;
use serde::{Deserialize, Serialize};

use super::state::ClusterSet;
use sarasa_model::clusterset::{
    RemoteCluster, CONFIGMAP_CABLE_KEY, CONFIGMAP_GLOBAL_KEY, CONFIGMAP_KEY, CONFIGMAP_NAME,
    CONFIGMAP_NAMESPACE,
};

/// What the agents' gateway election and address are called ([`sarasa_agent`]'s gateway
/// module, which the lab does not link).
const GATEWAY_LEASE: &str = "sarasa-gateway";
const ANNOTATION_GATEWAY_IP: &str = "sarasa.io/gateway-ip";
const ANNOTATION_GATEWAY_KEY: &str = "sarasa.io/gateway-public-key";

/// This cluster's active gateway as the broker's record carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalGateway {
    node: String,
    ip: String,
    /// Its WireGuard public key, once published (a VXLAN cable has none).
    public_key: Option<String>,
}
use crate::spec::LabSpec;
use crate::LabError;

pub const SOURCE_CLUSTER: &str = "multicluster.kubernetes.io/source-cluster";
/// The broker's namespace of cluster records.
pub const RECORDS_NAMESPACE: &str = "sarasa-clusterset";
const PASS: Duration = Duration::from_millis(200);

/// What the sync last did, in `<lab dir>/clusterset-sync.json` for `clusterset status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    pub set: String,
    pub cluster_id: String,
    pub broker_reachable: bool,
    /// RFC 3339 time of the last pass that reached the broker.
    pub last_sync: Option<String>,
    /// MCS slices of this cluster on the broker, and of others copied here.
    pub exported_slices: usize,
    pub imported_slices: usize,
    pub error: Option<String>,
}

pub fn status_file(lab: &str) -> PathBuf {
    crate::paths::LabPaths::new(lab)
        .root
        .join("clusterset-sync.json")
}

/// The parts of a slice the sync copies (what a copy must equal).
fn copied(s: &EndpointSlice) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: s.metadata.name.clone(),
            namespace: s.metadata.namespace.clone(),
            labels: s.metadata.labels.clone(),
            annotations: s.metadata.annotations.clone(),
            ..Default::default()
        },
        address_type: s.address_type.clone(),
        endpoints: s.endpoints.clone(),
        ports: s.ports.clone(),
    }
}

fn key(s: &EndpointSlice) -> (String, String) {
    (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

fn source(s: &EndpointSlice) -> Option<&str> {
    s.metadata
        .labels
        .as_ref()?
        .get(SOURCE_CLUSTER)
        .map(String::as_str)
}

async fn mcs_slices(
    client: &Client,
) -> Result<BTreeMap<(String, String), EndpointSlice>, kube::Error> {
    let api: Api<EndpointSlice> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels(SOURCE_CLUSTER))
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|s| (key(&s), copied(&s)))
        .collect())
}

/// Makes `want` the set of slices `client` holds among `have` (those of the sources in
/// scope). A namespace that does not exist is made (`ensure_namespaces`: the broker) or
/// skipped (a cluster: MCS namespace sameness).
async fn converge(
    client: &Client,
    have: &BTreeMap<(String, String), EndpointSlice>,
    want: &BTreeMap<(String, String), EndpointSlice>,
    ensure_namespaces: bool,
) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut present: BTreeSet<String> = BTreeSet::new();
    for ((ns, name), s) in want {
        if have.get(&(ns.clone(), name.clone())) == Some(s) {
            continue;
        }
        if !present.contains(ns) {
            let exists = namespaces.get_opt(ns).await?.is_some();
            if !exists && ensure_namespaces {
                create_namespace(&namespaces, ns).await?;
            } else if !exists {
                // MCS namespace sameness: an import lands only where its namespace exists.
                continue;
            }
            present.insert(ns.clone());
        }
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        match api.get_opt(name).await? {
            Some(cur) => {
                let mut next = s.clone();
                next.metadata.resource_version = cur.metadata.resource_version.clone();
                api.replace(name, &PostParams::default(), &next).await?;
            }
            None => {
                api.create(&PostParams::default(), s).await?;
            }
        }
    }
    for ((ns, name), _) in have.iter().filter(|(k, _)| !want.contains_key(*k)) {
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates a namespace (one made meanwhile by another writer is as good).
async fn create_namespace(namespaces: &Api<Namespace>, name: &str) -> Result<(), kube::Error> {
    let n = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &n).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The holder of the cluster's gateway Lease while it is current.
pub async fn gateway_holder(local: &Client) -> Result<Option<String>, kube::Error> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: Api<Lease> = Api::namespaced(local.clone(), CONFIGMAP_NAMESPACE);
    let Some(spec) = leases.get_opt(GATEWAY_LEASE).await?.and_then(|l| l.spec) else {
        return Ok(None);
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    let fresh = spec.renew_time.as_ref().is_some_and(|t| {
        now.as_millisecond() - t.0.as_millisecond()
            < i64::from(spec.lease_duration_seconds.unwrap_or(3)) * 1000
    });
    Ok(spec.holder_identity.filter(|_| fresh))
}

/// This cluster's active gateway: the holder of a current gateway Lease and the WAN address
/// (and WireGuard public key) its Node publishes.
async fn local_gateway(local: &Client) -> Result<Option<LocalGateway>, kube::Error> {
    use k8s_openapi::api::core::v1::Node;
    let Some(holder) = gateway_holder(local).await? else {
        return Ok(None);
    };
    let nodes: Api<Node> = Api::all(local.clone());
    let annotations = nodes
        .get_opt(&holder)
        .await?
        .and_then(|n| n.metadata.annotations)
        .unwrap_or_default();
    Ok(annotations
        .get(ANNOTATION_GATEWAY_IP)
        .map(|ip| LocalGateway {
            node: holder,
            ip: ip.clone(),
            public_key: annotations.get(ANNOTATION_GATEWAY_KEY).cloned(),
        }))
}

/// The other clusters' records on the broker, as the agents read them.
async fn remote_records(broker: &Client, id: &str) -> Result<Vec<RemoteCluster>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(broker.clone(), RECORDS_NAMESPACE);
    let mut out = Vec::new();
    for cm in api.list(&ListParams::default()).await?.items {
        let Some(d) = cm.data else { continue };
        let get = |k: &str| d.get(k).cloned().unwrap_or_default();
        if get("clusterID") == id {
            continue;
        }
        let (Ok(pod_cidr), Ok(service_cidr)) = (get("podCIDR").parse(), get("serviceCIDR").parse())
        else {
            continue;
        };
        out.push(RemoteCluster {
            cluster_id: get("clusterID"),
            pod_cidr,
            service_cidr,
            pod_cidr_v6: d.get("podCIDRv6").and_then(|c| c.parse().ok()),
            service_cidr_v6: d.get("serviceCIDRv6").and_then(|c| c.parse().ok()),
            gateway_ip: d.get("gatewayIP").and_then(|g| g.parse().ok()),
            gateway_node: d.get("gatewayNode").cloned(),
            gateway_public_key: d.get("gatewayPublicKey").cloned(),
            global_cidr: d.get("globalCIDR").and_then(|g| g.parse().ok()),
            global_cidr_v6: d.get("globalCIDRv6").and_then(|g| g.parse().ok()),
        });
    }
    out.sort_by(|a, b| a.cluster_id.cmp(&b.cluster_id));
    Ok(out)
}

/// Writes the other clusters and the set's cable kind into this cluster's ConfigMap (when
/// they changed).
async fn write_remotes(
    local: &Client,
    remotes: &[RemoteCluster],
    cable: &str,
    global: &[ipnet::IpNet],
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(local.clone(), CONFIGMAP_NAMESPACE);
    let mut data: BTreeMap<String, String> = [
        (
            CONFIGMAP_KEY.to_string(),
            serde_json::to_string(remotes).unwrap_or_default(),
        ),
        (CONFIGMAP_CABLE_KEY.to_string(), cable.to_string()),
    ]
    .into();
    if !global.is_empty() {
        let list: Vec<String> = global.iter().map(ToString::to_string).collect();
        data.insert(CONFIGMAP_GLOBAL_KEY.to_string(), list.join(","));
    }
    let cur = api.get_opt(CONFIGMAP_NAME).await?;
    if cur.as_ref().and_then(|c| c.data.as_ref()) == Some(&data) {
        return Ok(());
    }
    let mut cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP_NAME.into()),
            namespace: Some(CONFIGMAP_NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    match cur {
        Some(c) => {
            cm.metadata.resource_version = c.metadata.resource_version;
            api.replace(CONFIGMAP_NAME, &PostParams::default(), &cm)
                .await?;
        }
        None => {
            api.create(&PostParams::default(), &cm).await?;
        }
    }
    Ok(())
}

/// This cluster's record on the broker.
async fn publish_record(
    broker: &Client,
    spec: &LabSpec,
    id: &str,
    gateway: Option<&LocalGateway>,
    global: &[ipnet::IpNet],
) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(broker.clone());
    if namespaces.get_opt(RECORDS_NAMESPACE).await?.is_none() {
        create_namespace(&namespaces, RECORDS_NAMESPACE).await?;
    }
    let api: Api<ConfigMap> = Api::namespaced(broker.clone(), RECORDS_NAMESPACE);
    let name = format!("cluster-{id}");
    let mut data: BTreeMap<String, String> = [
        ("clusterID", id.to_string()),
        ("lab", spec.name.clone()),
        ("podCIDR", spec.cluster_cidr.to_string()),
        ("serviceCIDR", spec.service_cidr.to_string()),
        ("lastSeen", now()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(side) = &spec.ipv6 {
        data.insert("podCIDRv6".into(), side.cluster_cidr.to_string());
        data.insert("serviceCIDRv6".into(), side.service_cidr.to_string());
    }
    for g in global {
        let key = if g.addr().is_ipv4() {
            "globalCIDR"
        } else {
            "globalCIDRv6"
        };
        data.insert(key.into(), g.to_string());
    }
    if let Some(g) = gateway {
        data.insert("gatewayNode".into(), g.node.clone());
        data.insert("gatewayIP".into(), g.ip.clone());
        if let Some(key) = &g.public_key {
            data.insert("gatewayPublicKey".into(), key.clone());
        }
    }
    let mut cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    match api.get_opt(&name).await? {
        Some(cur) => {
            cm.metadata.resource_version = cur.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &cm).await?;
        }
        None => {
            api.create(&PostParams::default(), &cm).await?;
        }
    }
    Ok(())
}

fn now() -> String {
    crate::kubelet::now_rfc3339()
}

/// What the sync takes from the set's state: its cable kind and, under GlobalNet, this
/// cluster's global CIDR.
struct SetFacts {
    cable: String,
    /// Its global CIDRs, IPv4 first (empty without GlobalNet).
    global: Vec<ipnet::IpNet>,
}

/// One pass: push, pull, record (on the heartbeat or when the gateway moved), the other
/// clusters for the agents. Returns the counts.
async fn pass(
    local: &Client,
    broker: &Client,
    spec: &LabSpec,
    id: &str,
    set: &SetFacts,
    heartbeat: bool,
    published: &mut Option<Option<LocalGateway>>,
) -> Result<(usize, usize), String> {
    let (cable, global) = (set.cable.as_str(), set.global.as_slice());
    let at = |what: &'static str| move |e: kube::Error| format!("{what}: {e}");
    let gateway = local_gateway(local)
        .await
        .map_err(at("reading this cluster's gateway"))?;
    if heartbeat || published.as_ref() != Some(&gateway) {
        publish_record(broker, spec, id, gateway.as_ref(), global)
            .await
            .map_err(at("publishing this cluster's record on the broker"))?;
        *published = Some(gateway);
    }
    let remotes = remote_records(broker, id)
        .await
        .map_err(at("reading the other clusters' records on the broker"))?;
    write_remotes(local, &remotes, cable, global)
        .await
        .map_err(at("writing the other clusters here"))?;
    let here = mcs_slices(local)
        .await
        .map_err(at("listing this cluster's MCS slices"))?;
    let there = mcs_slices(broker)
        .await
        .map_err(at("listing the broker's MCS slices"))?;
    let (own_here, others_here): (BTreeMap<_, _>, BTreeMap<_, _>) =
        here.into_iter().partition(|(_, s)| source(s) == Some(id));
    let (own_there, others_there): (BTreeMap<_, _>, BTreeMap<_, _>) =
        there.into_iter().partition(|(_, s)| source(s) == Some(id));
    // Under GlobalNet the other clusters see this cluster's exports at their global
    // addresses, not at its (overlapping) pod addresses.
    let own_out = if global.is_empty() {
        own_here.clone()
    } else {
        let allocated = super::globalnet::allocate(local, global, &own_here)
            .await
            .map_err(at("giving exported Services their global addresses"))?;
        let endpoints = super::global_ingress::sync(local, global, &own_here, &allocated.headless)
            .await
            .map_err(at(
                "giving headless exports' endpoints their global addresses",
            ))?;
        let mut out = super::globalnet::globalize(&own_here, &allocated.services);
        out.extend(super::global_ingress::globalize(
            &own_here,
            &allocated.headless,
            &endpoints,
        ));
        out
    };
    converge(broker, &own_there, &own_out, true)
        .await
        .map_err(at("writing this cluster's slices on the broker"))?;
    converge(local, &others_here, &others_there, false)
        .await
        .map_err(at("writing the other clusters' slices here"))?;
    Ok((own_here.len(), others_there.len()))
}

/// A client of the broker with the set's token (from the lab's fabric namespace).
pub fn broker_client(cs: &ClusterSet) -> Result<Client, LabError> {
    let url = super::broker::url()
        .parse()
        .map_err(|e| LabError::Invalid(format!("broker URL: {e}")))?;
    let mut config = kube::Config::new(url);
    config.auth_info.token = Some(secrecy::SecretString::from(cs.broker_token.clone()));
    config.connect_timeout = Some(Duration::from_secs(1));
    config.read_timeout = Some(Duration::from_secs(2));
    kube::Client::try_from(config).map_err(|e| LabError::Api(format!("broker client: {e}")))
}

/// The sync process: passes until killed.
pub async fn run(set: &str, spec: LabSpec) -> Result<(), LabError> {
    let cs = ClusterSet::open(set)?;
    let id = spec.cluster_id().to_string();
    let local = crate::client::connect(&spec)?;
    let mut broker = broker_client(&cs)?;
    let file = status_file(&spec.name);
    let mut status = SyncStatus {
        set: set.to_string(),
        cluster_id: id.clone(),
        ..Default::default()
    };
    let mut n: u64 = 0;
    let mut published = None;
    loop {
        // The record's heartbeat every 5 s; the slices every pass.
        let heartbeat = n.is_multiple_of(25);
        n += 1;
        let mut next = status.clone();
        let facts = SetFacts {
            cable: cs.cable.to_string(),
            global: cs
                .member(&spec.name)
                .map(|m| m.global_cidrs())
                .unwrap_or_default(),
        };
        match pass(
            &local,
            &broker,
            &spec,
            &id,
            &facts,
            heartbeat,
            &mut published,
        )
        .await
        {
            Ok((exported, imported)) => {
                next.broker_reachable = true;
                next.last_sync = Some(now());
                next.exported_slices = exported;
                next.imported_slices = imported;
                next.error = None;
            }
            Err(e) => {
                if next.error.as_deref() != Some(&e) {
                    tracing::warn!("sync with the broker of {set}: {e}; keeping the last state");
                }
                next.broker_reachable = false;
                next.error = Some(e);
                // A restarted broker leaves the pool's connections dead: start afresh.
                broker = broker_client(&cs)?;
            }
        }
        let changed = next.broker_reachable != status.broker_reachable
            || next.error != status.error
            || next.exported_slices != status.exported_slices
            || next.imported_slices != status.imported_slices
            || heartbeat;
        status = next;
        if changed {
            if let Err(e) = crate::state::write_json_atomic(&file, &status) {
                tracing::warn!("{e}");
            }
        }
        tokio::time::sleep(PASS).await;
    }
}
