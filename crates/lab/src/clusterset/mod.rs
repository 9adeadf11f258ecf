//! Cluster sets of labs (`sarasa clusterset ...`): several labs on one machine joined through
//! a shared WAN namespace ([`wan`]) with a broker on it ([`broker`]); each member lab runs a
//! sync with the broker ([`sync`]) that carries the MCS EndpointSlices of its exports out and
//! the other clusters' in, so the MCS controller of every cluster derives the same
//! ServiceImports. Joining refuses labs whose pod or Service ranges overlap, naming both.
//!
//! Not built yet (issue 12): gateways and their cables (so cross-cluster packets have no path
//! yet), GlobalNet, `--dual-stack`, WAN delay and loss.

pub mod broker;
pub mod state;
pub mod sync;
pub mod wan;

use std::path::Path;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams};
use serde::Serialize;

use crate::lab::{Lab, CLUSTERSET_SYNC};
use crate::process::{Daemon, ProcessRecord};
use crate::spec::LabSpec;
use crate::LabError;
pub use state::{Cable, ClusterSet, Member};

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Refuses members that cannot be told apart on the wire: the same cluster id, or pod or
/// Service ranges that overlap (without GlobalNet), naming both clusters and ranges.
pub fn check_ranges(specs: &[&LabSpec]) -> Result<(), LabError> {
    for (i, a) in specs.iter().enumerate() {
        for b in &specs[i + 1..] {
            if a.cluster_id() == b.cluster_id() {
                return Err(LabError::Invalid(format!(
                    "labs {} and {} both have cluster id {:?}: each cluster of a set needs its own (lab up --cluster-id)",
                    a.name,
                    b.name,
                    a.cluster_id()
                )));
            }
            let ranges = |s: &LabSpec| [("pods", s.cluster_cidr), ("Services", s.service_cidr)];
            for (what_a, ra) in ranges(a) {
                for (what_b, rb) in ranges(b) {
                    if overlaps(ra, rb) {
                        return Err(LabError::Invalid(format!(
                            "clusters {} ({what_a} {ra}) and {} ({what_b} {rb}) overlap: without GlobalNet every cluster of a set needs ranges of its own (lab up --pod-cidr/--service-cidr)",
                            a.cluster_id(),
                            b.cluster_id()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// `sarasa clusterset join SET --lab A [--lab B ...]`.
pub fn join(
    set: &str,
    labs: &[String],
    cable: Option<Cable>,
    globalnet: Option<&str>,
    sarasa: &Path,
) -> Result<ClusterSet, LabError> {
    state::check_name(set)?;
    if let Some(g) = globalnet {
        return Err(LabError::Invalid(format!(
            "--globalnet {g}: GlobalNet is not built yet; give each lab its own ranges (lab up --pod-cidr/--service-cidr)"
        )));
    }
    if labs.is_empty() {
        return Err(LabError::Invalid(
            "name at least one lab to join (--lab NAME)".into(),
        ));
    }
    let mut cs = match ClusterSet::load(set)? {
        Some(cs) => {
            if let Some(c) = cable.filter(|c| *c != cs.cable) {
                return Err(LabError::Invalid(format!(
                    "--cable {c}: cluster set {set} uses {}",
                    cs.cable
                )));
            }
            cs
        }
        None => ClusterSet {
            name: set.to_string(),
            cable: cable.unwrap_or(Cable::Wireguard),
            broker_token: crate::pki::random_token(),
            members: Vec::new(),
        },
    };
    let mut joining: Vec<Lab> = Vec::new();
    for name in labs {
        if cs.member(name).is_some() || joining.iter().any(|l| &l.spec.name == name) {
            continue;
        }
        joining.push(Lab::open(name)?);
    }
    let members: Vec<Lab> = cs
        .members
        .iter()
        .filter_map(|m| Lab::open(&m.lab).ok())
        .collect();
    let all: Vec<&LabSpec> = members.iter().chain(&joining).map(|l| &l.spec).collect();
    check_ranges(&all)?;
    for l in &joining {
        if let Some(other) = member_of_another_set(&l.spec.name, set)? {
            return Err(LabError::Invalid(format!(
                "lab {} is already in cluster set {other}",
                l.spec.name
            )));
        }
    }

    wan::ensure(set)?;
    cs.save()?;
    broker::start(set, sarasa)?;
    for lab in &joining {
        let (wan_ip, wan_port) = cs.next_site()?;
        let m = Member {
            lab: lab.spec.name.clone(),
            cluster_id: lab.spec.cluster_id().to_string(),
            wan_ip,
            wan_port,
        };
        wan::attach(set, &lab.spec, &m)?;
        cs.members.push(m);
        cs.save()?;
        start_sync(set, lab, sarasa)?;
    }
    Ok(cs)
}

fn member_of_another_set(lab: &str, set: &str) -> Result<Option<String>, LabError> {
    let Ok(dir) = std::fs::read_dir(state::sets_root()) else {
        return Ok(None);
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == set {
            continue;
        }
        if let Some(cs) = ClusterSet::load(&name)? {
            if cs.member(lab).is_some() {
                return Ok(Some(name));
            }
        }
    }
    Ok(None)
}

fn start_sync(set: &str, lab: &Lab, sarasa: &Path) -> Result<(), LabError> {
    let netns = Path::new(sarasa_netns::NETNS_RUN_DIR).join(&lab.spec.fabric_netns);
    let rec = Daemon {
        program: sarasa.to_path_buf(),
        args: vec![
            "clusterset".into(),
            "run-sync".into(),
            set.to_string(),
            "--lab".into(),
            lab.spec.name.clone(),
        ],
        env: crate::lab::log_env(),
        netns: Some(&netns),
        mounts: &[],
        log: lab.paths.logs_dir().join("clusterset-sync.log"),
    }
    .spawn()?;
    rec.save(&lab.pid_file(CLUSTERSET_SYNC))
}

/// Removes what a cluster put into the set: its slices and record on the broker (when the
/// broker answers), the other clusters' slices in it.
async fn withdraw(
    cs: &ClusterSet,
    spec: &LabSpec,
    local: kube::Client,
    from_broker: bool,
) -> Result<(), LabError> {
    let id = spec.cluster_id().to_string();
    let api_err = |e: kube::Error| LabError::Api(e.to_string());
    let lp = ListParams::default().labels(sync::SOURCE_CLUSTER);
    let here: Api<EndpointSlice> = Api::all(local.clone());
    for s in here.list(&lp).await.map_err(api_err)?.items {
        let src = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(sync::SOURCE_CLUSTER));
        if src.is_some_and(|c| *c != id) {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            let name = s.metadata.name.clone().unwrap_or_default();
            let _ = Api::<EndpointSlice>::namespaced(local.clone(), &ns)
                .delete(&name, &DeleteParams::default())
                .await;
        }
    }
    if !from_broker || broker::running(&cs.name).is_none() {
        return Ok(());
    }
    let b = sync::broker_client(cs)?;
    let there: Api<EndpointSlice> = Api::all(b.clone());
    let theirs = there
        .list(&ListParams::default().labels(&format!("{}={id}", sync::SOURCE_CLUSTER)))
        .await
        .map_err(api_err)?;
    for s in theirs.items {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        let _ = Api::<EndpointSlice>::namespaced(b.clone(), &ns)
            .delete(&name, &DeleteParams::default())
            .await;
    }
    let _ = Api::<ConfigMap>::namespaced(b, sync::RECORDS_NAMESPACE)
        .delete(&format!("cluster-{id}"), &DeleteParams::default())
        .await;
    Ok(())
}

/// `sarasa clusterset leave SET --lab NAME`.
pub fn leave(set: &str, lab: &str) -> Result<(), LabError> {
    leave_set(set, lab, true)
}

/// Stops the lab's sync and withdraws what it shared (from the broker too unless the whole
/// set goes), then disconnects it from the WAN.
fn leave_set(set: &str, lab: &str, from_broker: bool) -> Result<(), LabError> {
    let mut cs = ClusterSet::open(set)?;
    let Some(m) = cs.member(lab).cloned() else {
        return Err(LabError::Invalid(format!(
            "lab {lab} is not in cluster set {set} (members: {})",
            cs.members
                .iter()
                .map(|m| m.lab.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if let Ok(l) = Lab::open(lab) {
        if let Some(rec) = ProcessRecord::load(&l.pid_file(CLUSTERSET_SYNC)) {
            rec.stop(Duration::from_secs(2))?;
            let _ = std::fs::remove_file(l.pid_file(CLUSTERSET_SYNC));
        }
        let cs2 = cs.clone();
        if sarasa_netns::NetNs::exists(&l.spec.fabric_netns) {
            crate::client::with_client(&l.spec, |c| {
                let spec = l.spec.clone();
                async move { withdraw(&cs2, &spec, c, from_broker).await }
            })?;
        }
        let _ = std::fs::remove_file(sync::status_file(lab));
    }
    wan::detach(set, &m)?;
    cs.members.retain(|x| x.lab != lab);
    cs.save()
}

/// `sarasa clusterset delete SET`: every member leaves, the broker stops, the WAN goes.
pub fn delete(set: &str) -> Result<(), LabError> {
    let cs = ClusterSet::open(set)?;
    // What the labs held of one another goes; the broker's store goes with the set.
    for m in &cs.members {
        if let Err(e) = leave_set(set, &m.lab, false) {
            tracing::warn!(
                "{}: {e}; its copies of other clusters' exports may stay",
                m.lab
            );
        }
    }
    let mut errors = Vec::new();
    if let Err(e) = broker::stop(set) {
        errors.push(e.to_string());
    }
    if let Err(e) = wan::destroy(set) {
        errors.push(e.to_string());
    }
    if !errors.is_empty() {
        return Err(LabError::Process(errors.join("; ")));
    }
    let dir = state::set_dir(set);
    std::fs::remove_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
    // The last set takes the sets' directory with it.
    let _ = std::fs::remove_dir(state::sets_root());
    Ok(())
}

/// `sarasa clusterset status SET`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetStatus {
    pub name: String,
    pub cable: Cable,
    pub broker: BrokerStatus,
    pub clusters: Vec<ClusterStatus>,
    /// Active and standby gateways of each cluster (none yet: gateways are not built).
    pub gateways: Vec<serde_json::Value>,
    /// The cables between gateways (none yet).
    pub cables: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    pub url: String,
    pub running: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub lab: String,
    pub cluster_id: String,
    pub wan_ip: String,
    pub lab_up: bool,
    pub sync: Option<sync::SyncStatus>,
}

pub fn status(set: &str) -> Result<SetStatus, LabError> {
    let cs = ClusterSet::open(set)?;
    let clusters = cs
        .members
        .iter()
        .map(|m| ClusterStatus {
            lab: m.lab.clone(),
            cluster_id: m.cluster_id.clone(),
            wan_ip: m.wan_ip.to_string(),
            lab_up: Lab::open(&m.lab).is_ok(),
            sync: crate::state::read_json(&sync::status_file(&m.lab))
                .ok()
                .flatten(),
        })
        .collect();
    Ok(SetStatus {
        name: cs.name.clone(),
        cable: cs.cable,
        broker: BrokerStatus {
            url: broker::url(),
            running: broker::running(set).is_some(),
        },
        clusters,
        gateways: Vec::new(),
        cables: Vec::new(),
    })
}
