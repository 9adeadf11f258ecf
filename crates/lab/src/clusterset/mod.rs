//! Cluster sets of labs (`sarasa clusterset ...`): several labs on one machine joined through
//! a shared WAN namespace ([`wan`]) with a broker on it ([`broker`]); each member lab runs a
//! sync with the broker ([`sync`]) that carries the MCS EndpointSlices of its exports out and
//! the other clusters' in, so the MCS controller of every cluster derives the same
//! ServiceImports. Joining refuses labs whose pod or Service ranges overlap, naming both.
//!
//! Each member's first [`GATEWAYS`] nodes are gateway candidates: labelled, with a WAN link
//! of their own; their agents elect the active one and build the cable (WireGuard by
//! default, or VXLAN).
//!
//! The WAN can be given a delay and a loss (`--wan-delay`, `--wan-loss`: [`WanLink`], the
//! set's, applied by [`wan`] to every port, those of later joins too).
//!
//! With `--globalnet` clusters whose ranges overlap join too (the `globalnet` module; IPv4, and
//! IPv6 as well for dual-stack labs, `lab up --dual-stack`, when an IPv6 range is given).

pub mod broker;
pub mod delay_line;
mod global_ingress;
mod globalnet;
pub mod state;
pub mod sync;
pub mod wan;

use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams};
use serde::Serialize;

use crate::lab::{Lab, CLUSTERSET_SYNC};
use crate::process::{Daemon, ProcessRecord};
use crate::spec::LabSpec;
use crate::LabError;
pub use state::{Cable, ClusterSet, Member, WanLink};

/// `--globalnet` as given: `CIDR[,CIDR6]`.
fn show_globalnet(v4: ipnet::Ipv4Net, v6: Option<ipnet::Ipv6Net>) -> String {
    match v6 {
        Some(v6) => format!("{v4},{v6}"),
        None => v4.to_string(),
    }
}

/// Two ranges of one family that share an address.
fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A lab's pod and Service ranges, each family's, named for messages.
fn ranges(s: &LabSpec) -> Vec<(&'static str, IpNet)> {
    let pods = s.cluster_cidrs().into_iter().map(|r| ("pods", r));
    pods.chain(s.service_cidrs().into_iter().map(|r| ("Services", r)))
        .collect()
}

/// Refuses members that cannot be told apart on the wire: the same cluster id, or pod or
/// Service ranges that overlap (without GlobalNet, `globalnet` false), naming both clusters
/// and ranges.
pub fn check_ranges(specs: &[&LabSpec], globalnet: bool) -> Result<(), LabError> {
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
            if globalnet {
                continue;
            }
            for (what_a, ra) in ranges(a) {
                for (what_b, rb) in ranges(b) {
                    if overlaps(ra, rb) {
                        return Err(LabError::Invalid(format!(
                            "clusters {} ({what_a} {ra}) and {} ({what_b} {rb}) overlap: without GlobalNet every cluster of a set needs ranges of its own (lab up --pod-cidr/--service-cidr), or join with --globalnet CIDR",
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

/// What a join asks of the WAN: each value given replaces the set's (`None`: kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WanChange {
    /// `--wan-delay`, microseconds ([`WanLink::parse_delay`]).
    pub delay_us: Option<u64>,
    /// `--wan-loss`, hundredths of a percent ([`WanLink::parse_loss`]).
    pub loss_bp: Option<u32>,
}

/// `sarasa clusterset join SET --lab A [--lab B ...] [--wan-delay D] [--wan-loss P]`.
pub fn join(
    set: &str,
    labs: &[String],
    cable: Option<Cable>,
    globalnet: Option<&str>,
    wan_change: WanChange,
    sarasa: &Path,
) -> Result<ClusterSet, LabError> {
    state::check_name(set)?;
    if let Some(bp) = wan_change.loss_bp.filter(|bp| *bp > 10_000) {
        return Err(LabError::Invalid(format!(
            "--wan-loss: {bp} hundredths of a percent is over 100%"
        )));
    }
    if let Some(us) = wan_change
        .delay_us
        .filter(|us| *us > state::MAX_WAN_DELAY_US)
    {
        return Err(LabError::Invalid(format!(
            "--wan-delay: {us}us is over 10s"
        )));
    }
    let globalnet = globalnet.map(state::parse_globalnet).transpose()?;
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
            if let Some((g4, g6)) =
                globalnet.filter(|g| Some(*g) != cs.globalnet.map(|h| (h, cs.globalnet_v6)))
            {
                let g = show_globalnet(g4, g6);
                return Err(LabError::Invalid(match cs.globalnet {
                    Some(have) => format!(
                        "--globalnet {g}: cluster set {set} uses {}",
                        show_globalnet(have, cs.globalnet_v6)
                    ),
                    None => {
                        format!("--globalnet {g}: cluster set {set} was made without GlobalNet")
                    }
                }));
            }
            cs
        }
        None => ClusterSet {
            name: set.to_string(),
            cable: cable.unwrap_or(Cable::Wireguard),
            wan: WanLink::default(),
            broker_token: crate::pki::random_token(),
            members: Vec::new(),
            globalnet: globalnet.map(|g| g.0),
            globalnet_v6: globalnet.and_then(|g| g.1),
        },
    };
    let before = cs.wan;
    let want = WanLink {
        delay_us: wan_change.delay_us.unwrap_or(before.delay_us),
        loss_bp: wan_change.loss_bp.unwrap_or(before.loss_bp),
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
    check_ranges(&all, cs.globalnet.is_some())?;
    let globals = cs
        .globalnet
        .map(IpNet::V4)
        .into_iter()
        .chain(cs.globalnet_v6.map(IpNet::V6));
    for g in globals {
        for spec in &all {
            for (what, r) in ranges(spec) {
                if overlaps(g, r) {
                    return Err(LabError::Invalid(format!(
                        "--globalnet {g} overlaps cluster {}'s {what} {r}",
                        spec.cluster_id()
                    )));
                }
            }
        }
    }
    for l in &joining {
        if let Some(other) = member_of_another_set(&l.spec.name, set)? {
            return Err(LabError::Invalid(format!(
                "lab {} is already in cluster set {other}",
                l.spec.name
            )));
        }
    }

    let fresh = ClusterSet::load(set)?.is_none();
    let built = build(set, &mut cs, want, &joining, sarasa);
    // A set this join made and no lab made it into goes again whole, so a failed join
    // leaves no WAN, broker or state behind.
    if built.is_err() && fresh && cs.members.is_empty() {
        let _ = delay_line::stop(set);
        let _ = broker::stop(set);
        let _ = wan::destroy(set);
        let _ = std::fs::remove_dir_all(state::set_dir(set));
        let _ = std::fs::remove_dir(state::sets_root());
    }
    built.map(|()| cs)
}

/// The WAN (with its delay and loss as `wan` says), the broker and each joining lab's links,
/// gateways and sync.
fn build(
    set: &str,
    cs: &mut ClusterSet,
    wan: WanLink,
    joining: &[Lab],
    sarasa: &Path,
) -> Result<(), LabError> {
    wan::ensure(set)?;
    apply_wan(set, cs, wan, sarasa)?;
    cs.save()?;
    broker::start(set, sarasa)?;
    for lab in joining {
        let (wan_ip, wan_port) = cs.next_site(&[])?;
        let mut m = Member {
            lab: lab.spec.name.clone(),
            cluster_id: lab.spec.cluster_id().to_string(),
            wan_ip,
            wan_port,
            gateways: Vec::new(),
            global_cidr: cs.next_global_cidr(&[])?,
            global_cidr_v6: match lab.spec.ipv6 {
                Some(_) => cs.next_global_cidr_v6(&[])?,
                None => None,
            },
        };
        let mut taken = vec![wan_ip];
        for node in lab.spec.nodes.iter().take(GATEWAYS) {
            let (wan_ip, wan_port) = cs.next_site(&taken)?;
            taken.push(wan_ip);
            m.gateways.push(state::GatewayPort {
                node: node.name.clone(),
                wan_ip,
                wan_port,
            });
        }
        let plugged = plug_member(set, lab, &m);
        if let Err(e) = plugged {
            let _ = wan::detach(set, &m);
            let _ = label_gateways(lab, &m, false);
            return Err(e);
        }
        cs.members.push(m);
        cs.save()?;
        start_sync(set, lab, sarasa)?;
    }
    Ok(())
}

/// Makes the WAN's loss and delay `want`, then the set's. A delay is the set's delay line
/// ([`delay_line`]), started again when it is not running (a machine restarted).
fn apply_wan(set: &str, cs: &mut ClusterSet, want: WanLink, sarasa: &Path) -> Result<(), LabError> {
    wan::set_loss(set, want.loss_bp)?;
    let running = delay_line::running(set).is_some();
    if want.delay_us != cs.wan.delay_us || (want.delay_us != 0 && !running) {
        delay_line::set(set, want.delay_us, sarasa)?;
    }
    cs.wan = want;
    Ok(())
}

/// A cable end's vtep address (the agent's gateway module derives it alike): 241.b.c.d for
/// WAN address a.b.c.d.
pub fn vtep_ip(wan: std::net::Ipv4Addr) -> std::net::Ipv4Addr {
    let o = wan.octets();
    std::net::Ipv4Addr::new(241, o[1], o[2], o[3])
}

/// Gateway nodes per cluster (one active, the others standing by).
pub const GATEWAYS: usize = 2;
/// The label that makes a node a gateway candidate ([`sarasa_agent`]'s gateway module).
pub const GATEWAY_LABEL: &str = "sarasa.io/gateway";

/// The site router and the gateway nodes on the WAN, the gateways labelled.
fn plug_member(set: &str, lab: &Lab, m: &Member) -> Result<(), LabError> {
    wan::attach(set, &lab.spec, m)?;
    for g in &m.gateways {
        let node = lab
            .spec
            .nodes
            .iter()
            .find(|n| n.name == g.node)
            .ok_or_else(|| LabError::Invalid(format!("no node {}", g.node)))?;
        wan::plug(set, &node.netns, &g.wan_port, g.wan_ip)?;
    }
    label_gateways(lab, m, true)
}

/// Sets (or removes) the gateway label on the member's gateway nodes.
fn label_gateways(lab: &Lab, m: &Member, on: bool) -> Result<(), LabError> {
    let names: Vec<String> = m.gateways.iter().map(|g| g.node.clone()).collect();
    crate::client::with_client(&lab.spec, |c| async move {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c);
        let value = if on {
            serde_json::json!("true")
        } else {
            serde_json::Value::Null
        };
        for n in names {
            let patch = serde_json::json!({"metadata": {"labels": {GATEWAY_LABEL: value}}});
            nodes
                .patch(
                    &n,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .map_err(|e| LabError::Api(format!("labelling gateway {n}: {e}")))?;
        }
        Ok(())
    })
}

fn member_of_another_set(lab: &str, set: &str) -> Result<Option<String>, LabError> {
    Ok(set_of(lab, Some(set))?.map(|cs| cs.name))
}

/// The cluster set lab `lab` is a member of (other than `except`), if any.
pub fn set_of(lab: &str, except: Option<&str>) -> Result<Option<ClusterSet>, LabError> {
    let Ok(dir) = std::fs::read_dir(state::sets_root()) else {
        return Ok(None);
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if Some(name.as_str()) == except {
            continue;
        }
        if let Some(cs) = ClusterSet::load(&name)? {
            if cs.member(lab).is_some() {
                return Ok(Some(cs));
            }
        }
    }
    Ok(None)
}

/// The node holding lab `lab`'s gateway Lease now, if any (for trace).
pub fn active_gateway_of(lab: &Lab) -> Result<Option<String>, LabError> {
    active_gateway(lab)
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
        env: quiet_kube_log(),
        netns: Some(&netns),
        mounts: &[],
        log: lab.paths.logs_dir().join("clusterset-sync.log"),
    }
    .spawn()?;
    rec.save(&lab.pid_file(CLUSTERSET_SYNC))
}

/// The daemons' log filter: the sync says itself when the broker cannot be reached (once);
/// the kube client would log every failed connection.
pub(crate) fn quiet_kube_log() -> Vec<(String, String)> {
    let level = std::env::var("SARASA_LOG").unwrap_or_else(|_| "info,kube_client=off".into());
    vec![("SARASA_LOG".into(), level)]
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
    // GlobalNet: the global addresses of its Services go back.
    globalnet::release(&local).await.map_err(api_err)?;
    let _ = Api::<ConfigMap>::namespaced(local, sarasa_model::clusterset::CONFIGMAP_NAMESPACE)
        .delete(
            sarasa_model::clusterset::CONFIGMAP_NAME,
            &DeleteParams::default(),
        )
        .await;
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
        if sarasa_netns::NetNs::exists(&l.spec.fabric_netns) {
            label_gateways(&l, &m, false)?;
        }
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
    if let Err(e) = delay_line::stop(set) {
        errors.push(e.to_string());
    }
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
    /// `--globalnet`: the range the members' global CIDRs come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globalnet: Option<String>,
    pub wan: WanStatus,
    pub broker: BrokerStatus,
    pub clusters: Vec<ClusterStatus>,
    /// The gateway candidates of every cluster, active or standing by.
    pub gateways: Vec<GatewayStatus>,
    /// The cables between the clusters' active gateways.
    pub cables: Vec<CableStatus>,
}

/// The WAN between the sites and what it does to each crossing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WanStatus {
    /// Its namespace (`sarasa-wan-<SET>`).
    pub netns: String,
    /// `--wan-delay` as given back (`20ms`, `0`): one crossing's delay.
    pub delay: String,
    pub delay_ms: f64,
    /// `--wan-loss` as given back (`0.5%`): one crossing's loss.
    pub loss: String,
    pub loss_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub cluster_id: String,
    pub node: String,
    pub wan_ip: String,
    /// `active` (holds the gateway Lease) or `standby`.
    pub role: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CableStatus {
    pub from: String,
    pub to: String,
    pub cable: Cable,
    pub local_ip: String,
    pub remote_ip: String,
    /// `connected` when a ping through the cable to the far end's vtep answers, else `down`.
    pub state: String,
    /// That ping's round trip, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Bytes through the active gateway's cable device (all its peers), as the kernel counts.
    pub tx_bytes: Option<u64>,
    pub rx_bytes: Option<u64>,
}

/// The cable's device on an active gateway (the agent's gateway module names them alike).
fn cable_device(cable: Cable) -> &'static str {
    match cable {
        Cable::Wireguard => "sarasa-wg",
        Cable::Vxlan => "sarasa-cable",
    }
}

/// Pings `remote_vtep` through the cable from the node namespace `netns`; the RTT and the
/// cable device's byte counters (ping and ip from iputils and iproute2).
fn probe_cable(
    netns: &str,
    cable: Cable,
    remote_vtep: std::net::Ipv4Addr,
) -> (Option<f64>, Option<(u64, u64)>) {
    let net = format!("--net=/run/netns/{netns}");
    let rtt = std::process::Command::new("nsenter")
        .args([&net, "ping", "-c1", "-W1", "-n", &remote_vtep.to_string()])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            let at = text.find("time=")?;
            text[at + 5..]
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        });
    let bytes = std::process::Command::new("nsenter")
        .args([&net, "ip", "-j", "-s", "link", "show", cable_device(cable)])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| {
            let s = &v[0]["stats64"];
            Some((s["tx"]["bytes"].as_u64()?, s["rx"]["bytes"].as_u64()?))
        });
    (rtt, bytes)
}

/// The holder of a member's current gateway Lease, if any.
fn active_gateway(lab: &Lab) -> Result<Option<String>, LabError> {
    crate::client::with_client(&lab.spec, |c| async move {
        sync::gateway_holder(&c)
            .await
            .map_err(|e| LabError::Api(e.to_string()))
    })
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
    /// Under GlobalNet: its global CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_cidr: Option<String>,
    /// Under GlobalNet with an IPv6 range: a dual-stack cluster's IPv6 global CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_cidr_v6: Option<String>,
    pub lab_up: bool,
    pub sync: Option<sync::SyncStatus>,
}

pub fn status(set: &str) -> Result<SetStatus, LabError> {
    let cs = ClusterSet::open(set)?;
    let mut gateways = Vec::new();
    // (cluster, WAN address, node namespace) of each active gateway.
    let mut actives: Vec<(String, std::net::Ipv4Addr, String)> = Vec::new();
    for m in &cs.members {
        let lab = Lab::open(&m.lab).ok();
        let active = lab.as_ref().and_then(|l| active_gateway(l).unwrap_or(None));
        for g in &m.gateways {
            let is_active = active.as_deref() == Some(&g.node);
            if let (true, Some(l)) = (is_active, &lab) {
                if let Some(n) = l.spec.nodes.iter().find(|n| n.name == g.node) {
                    actives.push((m.cluster_id.clone(), g.wan_ip, n.netns.clone()));
                }
            }
            gateways.push(GatewayStatus {
                cluster_id: m.cluster_id.clone(),
                node: g.node.clone(),
                wan_ip: g.wan_ip.to_string(),
                role: if is_active { "active" } else { "standby" }.into(),
            });
        }
    }
    let mut cables = Vec::new();
    for (a, a_ip, netns) in &actives {
        for (b, b_ip, _) in actives.iter().filter(|(b, _, _)| b != a) {
            let (rtt, bytes) = probe_cable(netns, cs.cable, crate::clusterset::vtep_ip(*b_ip));
            cables.push(CableStatus {
                from: a.clone(),
                to: b.clone(),
                cable: cs.cable,
                local_ip: a_ip.to_string(),
                remote_ip: b_ip.to_string(),
                state: if rtt.is_some() { "connected" } else { "down" }.into(),
                rtt_ms: rtt,
                tx_bytes: bytes.map(|b| b.0),
                rx_bytes: bytes.map(|b| b.1),
            });
        }
    }
    let clusters = cs
        .members
        .iter()
        .map(|m| ClusterStatus {
            lab: m.lab.clone(),
            cluster_id: m.cluster_id.clone(),
            wan_ip: m.wan_ip.to_string(),
            global_cidr: m.global_cidr.map(|g| g.to_string()),
            global_cidr_v6: m.global_cidr_v6.map(|g| g.to_string()),
            lab_up: Lab::open(&m.lab).is_ok(),
            sync: crate::state::read_json(&sync::status_file(&m.lab))
                .ok()
                .flatten(),
        })
        .collect();
    Ok(SetStatus {
        name: cs.name.clone(),
        cable: cs.cable,
        globalnet: cs.globalnet.map(|g| show_globalnet(g, cs.globalnet_v6)),
        wan: WanStatus {
            netns: state::wan_netns(set),
            delay: cs.wan.delay_text(),
            delay_ms: cs.wan.delay_us as f64 / 1000.0,
            loss: cs.wan.loss_text(),
            loss_percent: f64::from(cs.wan.loss_bp) / 100.0,
        },
        broker: BrokerStatus {
            url: broker::url(),
            running: broker::running(set).is_some(),
        },
        clusters,
        gateways,
        cables,
    })
}
