//! The agent process: startup (netns guard, uplink, Node registration, vtep, annotations),
//! then watchers → debounced reconcile (compile → one plan delta → one applier, see
//! [`crate::reconcile`]) → readiness (condition, Lease, healthz).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::task::JoinHandle;

use crate::applier::NetlinkApplier;
use crate::config::{AgentConfig, Backend};
use crate::datapath::{NodeDatapath, Uplink};
use crate::error::{Error, Result};
use crate::health::{self, Metrics};
use crate::netns::NetnsTarget;
use crate::plan::{LocalNode, NodeTrust, PlanError};
use crate::policy::PolicyEnforcer;
use crate::reconcile::{Inputs, NodeProgram, Part};
use crate::services::ServiceProxy;
use crate::{lease, node};
use sarasa_cluster::state::ANNOTATION_VTEP_MAC;
use sarasa_cluster::watch::{self, Shared, Snapshot};
use sarasa_cluster::{PolicyDelta, ServiceDelta};
use sarasa_model::MacAddr;
use sarasa_plan::Applier;

/// Coalesces bursts of watch events into one reconcile. Short: it adds directly to every
/// change-to-programmed latency, and events arriving while a reconcile runs are picked up by
/// the next one anyway (each reconcile reads the whole current snapshot).
const DEBOUNCE: Duration = Duration::from_millis(5);
/// Full re-apply against the kernel even without changes (repairs drift).
const RESYNC: Duration = Duration::from_secs(60);
use crate::reconcile::MAX_BACKOFF;

/// A running agent.
pub struct AgentHandle {
    pub metrics: Arc<Metrics>,
    /// Where /healthz and /metrics are served.
    pub health_addr: SocketAddr,
    pub shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    reconcile: JoinHandle<Result<()>>,
    /// The cluster-set gateway task, and how to ask it to hand its Lease over.
    gateway: Option<(Arc<tokio::sync::Notify>, JoinHandle<()>)>,
}

/// How long a shutdown waits for the gateway to hand its Lease over.
const HANDOVER: Duration = Duration::from_secs(2);

impl AgentHandle {
    /// Stops the agent on a SIGTERM: an active cluster-set gateway first gives its Lease up,
    /// so the standby takes over at once instead of after the Lease runs out; the node keeps
    /// its programming.
    pub async fn shut_down(mut self) {
        if let Some((handover, task)) = self.gateway.take() {
            handover.notify_one();
            let _ = tokio::time::timeout(HANDOVER, task).await;
        }
        self.stop();
    }

    /// Waits until the agent fails, borrowing it (a shutdown can follow).
    pub async fn failed(&mut self) -> Result<()> {
        let r = (&mut self.reconcile)
            .await
            .map_err(|e| Error::Config(format!("reconcile task ended: {e}")));
        self.stop();
        r?
    }

    /// Waits until the agent fails (it does not stop on its own).
    pub async fn wait(mut self) -> Result<()> {
        let r = (&mut self.reconcile)
            .await
            .map_err(|e| Error::Config(format!("reconcile task ended: {e}")));
        self.stop();
        r?
    }

    /// Stops every task of the agent (the node keeps its programming).
    pub fn stop(&self) {
        self.reconcile.abort();
        for t in &self.tasks {
            t.abort();
        }
        if let Some((_, t)) = &self.gateway {
            t.abort();
        }
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the agent in the current network namespace until it fails.
pub async fn run(config: AgentConfig) -> Result<()> {
    start(config, NetnsTarget::Current).await?.wait().await
}

async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Starts the agent against the node namespace `target` (`Current` in production; tests drive
/// a namespace by path) and returns once its tasks are running.
pub async fn start(config: AgentConfig, target: NetnsTarget) -> Result<AgentHandle> {
    config.validate()?;
    let datapath = NodeDatapath::connect(target.clone(), config.host_netns).await?;
    let mut uplink = datapath
        .discover_uplink(config.uplink.as_deref(), &config.cluster_cidr)
        .await?;
    // Checked before anything is programmed: a bad MTU leaves the node as it was.
    let pod_mtu = crate::config_file::check_mtu(config.mtu, config.backend, &uplink)?;
    // The plan derives the pod (and vtep) MTU from the uplink's: a smaller configured MTU is
    // an uplink that carries less.
    uplink.mtu = pod_mtu + crate::plan::encap_overhead(config.backend, uplink.address);
    tracing::info!(node = %config.node_name, uplink = %uplink.name, address = %uplink.address, mtu = uplink.mtu, "starting");

    let client = crate::client::client(&config).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let me = retry("register node", || {
        node::ensure_registered(&nodes, &config.node_name, uplink.address)
    })
    .await;

    let vtep = match config.backend {
        Backend::Vxlan => {
            let hint = me
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_VTEP_MAC))
                .and_then(|m| m.parse::<MacAddr>().ok());
            Some(datapath.ensure_vtep(&uplink, hint).await?)
        }
        Backend::HostGw | Backend::Bgp | Backend::Vpc => None,
    };
    let desired = node::desired_annotations(config.backend, uplink.address, vtep);
    retry("publish node annotations", || async {
        let current = nodes
            .get(&config.node_name)
            .await
            .map_err(|e| Error::kube("get node", e))?;
        node::publish_annotations(&nodes, &current, &desired).await
    })
    .await;

    let metrics = Arc::new(Metrics::default());
    let listener = health::bind(config.health_listen).await?;
    let health_addr = listener.local_addr()?;
    let mut tasks = vec![tokio::spawn(health::serve(listener, metrics.clone()))];

    // podCIDRs: the spec's (the cluster allocates them), else, after a grace for the
    // cluster's allocator, sarasa's own, mirrored on the Node where the watch brings it to
    // the reconcile (which waits for a podCIDR either way). In the background: start-up
    // does not wait on it.
    let masks = crate::podcidr::NodeMasks {
        v4: config.node_cidr_mask_v4,
        v6: config.node_cidr_mask_v6,
    };
    let (c, node, cidrs) = (
        client.clone(),
        config.node_name.clone(),
        config.cluster_cidr.clone(),
    );
    if config.backend == Backend::Vpc {
        // No podCIDR: the node's addresses come from the cloud, published on the Node the
        // same way (the reconcile waits for the first).
        let pool = crate::vpc::VpcPool {
            nodes: nodes.clone(),
            node: config.node_name.clone(),
            cloud: crate::vpc::CloudClient::new(config.vpc_cloud_url.as_deref())?,
            warm: config.vpc_warm_addresses,
            ipam_data_dir: config.ipam_data_dir.clone(),
        };
        tasks.push(tokio::spawn(pool.run()));
    } else {
        tasks.push(tokio::spawn(async move {
            retry("podCIDRs", || {
                crate::podcidr::ensure(&c, &node, &cidrs, masks, crate::podcidr::SPEC_GRACE)
            })
            .await;
        }));
    }

    let shared = Arc::new(Shared::default());
    tasks.extend(watch::spawn_all(&client, &shared));

    let (rv_tx, rv_rx) = tokio::sync::watch::channel(0u64);
    tasks.push(tokio::spawn(lease_loop(
        client.clone(),
        config.node_name.clone(),
        metrics.clone(),
        rv_rx,
    )));

    // The BGP backend's speaker follows this node's podCIDRs as the reconcile finds them.
    let (bgp_cidrs, bgp_rx) = tokio::sync::watch::channel(Vec::new());
    if config.backend == Backend::Bgp {
        let mut peers = config.bgp_peers.clone();
        if peers.is_empty() {
            let gw = datapath.default_gateway(uplink.address.is_ipv4()).await?;
            peers.extend(gw);
        }
        if peers.is_empty() {
            return Err(Error::Config(
                "backend bgp: no bgpPeers given and the uplink has no default gateway to peer with"
                    .into(),
            ));
        }
        let router_id = match uplink.address {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => {
                return Err(Error::Config(
                    "backend bgp needs an IPv4 underlay address (the router id)".into(),
                ))
            }
        };
        let speaker = BgpLoop {
            nodes: nodes.clone(),
            node: config.node_name.clone(),
            template: crate::bgp::BirdConfig {
                router_id,
                local: uplink.address,
                asn: config.bgp_asn,
                peers,
                pod_cidrs: Vec::new(),
                service_ips: Vec::new(),
                cluster_cidrs: config.cluster_cidr.clone(),
                log: config.bgp_dir.join("bird.log"),
            },
            speaker: crate::bgp::Speaker::new(&config.bgp_dir),
            shared: shared.clone(),
            announced_at: 0,
        };
        tasks.push(tokio::spawn(speaker.run(bgp_rx)));
    }

    let local = LocalNode {
        name: config.node_name.clone(),
        backend: config.backend,
        underlay_ip: uplink.address,
        uplink: uplink.name.clone(),
        uplink_mtu: uplink.mtu,
        vtep_mac: vtep,
        cluster_cidrs: config.cluster_cidr.clone(),
        remote_cluster_cidrs: Vec::new(),
        global_egress: Vec::new(),
    };
    // Beside kube-proxy (`serviceProxy: false`) no Service table is programmed, and the
    // program removes sarasa's own if a previous configuration left them.
    let services = config
        .service_proxy
        .then(|| ServiceProxy::new(target.clone(), crate::services::proxy_config(&config)));
    let policy = if config.network_policy {
        let p = PolicyEnforcer::new(&config.node_name, config.policy_log_group);
        match crate::droplog::spawn(
            target.clone(),
            config.policy_log_group,
            p.shared_state(),
            metrics.clone(),
        )
        .await
        {
            Ok(t) => tasks.push(t),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read policy drop log; drops are not reported")
            }
        }
        Some(p)
    } else {
        None
    };
    let applier = NetlinkApplier::new(
        datapath,
        &uplink,
        vtep,
        config.cni_conf_dir.clone(),
        config.network_policy,
    );
    let program = NodeProgram::new(
        services,
        policy,
        config.cni_mode,
        config.ipam_data_dir.clone(),
    );
    // The cluster set's gateway and routes; the other clusters' ranges reach the plan.
    let (remote_tx, remote_rx) = tokio::sync::watch::channel(Default::default());
    let handover = Arc::new(tokio::sync::Notify::new());
    let gateway_task = tokio::spawn(
        crate::gateway::Gateway::new(client.clone(), &config.node_name, target.clone(), remote_tx)
            .with_underlay(uplink.address, &uplink.name)
            .with_handover(handover.clone())
            .run(),
    );
    let reconciler = Reconciler {
        program: Some((program, applier)),
        config,
        uplink,
        local,
        vtep,
        nodes,
        shared: shared.clone(),
        metrics: metrics.clone(),
        rv_tx,
        reported_failing: Vec::new(),
        waiting_logged: false,
        trust: NodeTrust::default(),
        synced_logged: false,
        bgp_cidrs,
        remote_cidrs: remote_rx,
    };
    let reconcile = tokio::spawn(reconciler.run());
    Ok(AgentHandle {
        metrics,
        health_addr,
        shared,
        tasks,
        reconcile,
        gateway: Some((handover, gateway_task)),
    })
}

/// The BGP backend: keeps BIRD running this node's configuration and reports its sessions on
/// the Node ([`crate::bgp::CONDITION`]).
struct BgpLoop {
    nodes: Api<Node>,
    node: String,
    template: crate::bgp::BirdConfig,
    speaker: crate::bgp::Speaker,
    /// The watched Services and EndpointSlices, for the addresses announced.
    shared: Arc<Shared>,
    /// The watched state's resourceVersion the announced addresses were computed at.
    announced_at: u64,
}

impl BgpLoop {
    /// The Service addresses this node announces now (nothing before the first full list);
    /// computed again only when something was watched since (the loop looks every second).
    fn service_ips(&mut self) -> Vec<ipnet::IpNet> {
        let w = match self.shared.state.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let rv = w.cluster.max_resource_version;
        if !w.synced() || rv == self.announced_at {
            return self.template.service_ips.clone();
        }
        self.announced_at = rv;
        let services = w
            .services
            .services()
            .values()
            .filter_map(|c| c.as_deref().ok());
        let slices = w
            .services
            .slices()
            .values()
            .filter_map(|c| c.as_deref().ok());
        crate::bgp_services::announcements(
            services,
            slices,
            &self.node,
            self.template.local.is_ipv4(),
        )
        .into_iter()
        .collect()
    }

    async fn run(mut self, mut cidrs: tokio::sync::watch::Receiver<Vec<ipnet::IpNet>>) {
        let mut reported: Option<(String, String)> = None;
        loop {
            let pod_cidrs = cidrs.borrow_and_update().clone();
            if !pod_cidrs.is_empty() {
                self.template.pod_cidrs = pod_cidrs;
                self.template.service_ips = self.service_ips();
                let (status, reason, message) = match self.speaker.ensure(&self.template).await {
                    Ok(()) => match self.speaker.sessions().await {
                        Ok(s) => crate::bgp::condition(&s),
                        Err(e) => ("False", "SpeakerNotAnswering", e.to_string()),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "BGP speaker");
                        ("False", "SpeakerFailed", e.to_string())
                    }
                };
                let now = (status.to_string(), message.clone());
                if reported.as_ref() != Some(&now) {
                    match node::set_condition(
                        &self.nodes,
                        &self.node,
                        crate::bgp::CONDITION,
                        status,
                        reason,
                        &message,
                    )
                    .await
                    {
                        Ok(_) => {
                            tracing::info!(status, reason, %message, "BGP sessions");
                            reported = Some(now);
                        }
                        Err(e) => tracing::warn!(error = %e, "reporting BGP sessions"),
                    }
                }
            }
            tokio::select! {
                changed = cidrs.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Renews the Lease every few seconds once programmed, and promptly when the observed
/// resourceVersion moves.
async fn lease_loop(
    client: kube::Client,
    node: String,
    metrics: Arc<Metrics>,
    mut rv: tokio::sync::watch::Receiver<u64>,
) {
    let started = k8s_openapi::jiff::Timestamp::now();
    loop {
        if metrics.programmed.load(Ordering::Relaxed) {
            let observed = *rv.borrow_and_update();
            if let Err(e) = lease::renew(&client, &node, observed, started).await {
                tracing::warn!(error = %e, "lease renewal failed");
            }
        }
        tokio::select! {
            changed = rv.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(lease::RENEW_INTERVAL) => {}
        }
    }
}

struct Reconciler<A: Applier> {
    /// The compilers and the applier; lent to the blocking pool for each reconcile.
    program: Option<(NodeProgram, A)>,
    config: AgentConfig,
    uplink: Uplink,
    local: LocalNode,
    vtep: Option<MacAddr>,
    nodes: Api<Node>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    rv_tx: tokio::sync::watch::Sender<u64>,
    /// The failing parts last reported on the Node (condition [`node::DEGRADED`]).
    reported_failing: Vec<Part>,
    waiting_logged: bool,
    synced_logged: bool,
    /// Remote Nodes accepted so far, conflicts reported so far.
    trust: NodeTrust,
    /// This node's podCIDRs, for the BGP speaker (nobody listens with other backends).
    bgp_cidrs: tokio::sync::watch::Sender<Vec<ipnet::IpNet>>,
    /// The other clusters' ranges of this cluster's set ([`crate::gateway`]).
    remote_cidrs: tokio::sync::watch::Receiver<crate::gateway::SetRanges>,
}

impl<A: Applier + Send + 'static> Reconciler<A> {
    async fn run(mut self) -> Result<()> {
        let mut backoff = Duration::from_millis(200);
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        loop {
            let forced = tokio::select! {
                _ = self.shared.changed.notified() => false,
                r = self.remote_cidrs.changed() => {
                    if r.is_err() {
                        // The gateway task is gone: nothing more comes from it.
                        std::future::pending::<()>().await;
                    }
                    true
                }
                _ = resync.tick() => true,
                _ = async {
                    match retry_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            tokio::time::sleep(DEBOUNCE).await;
            match self.reconcile_once(forced || retry_at.is_some()).await {
                Ok(part_retry) => {
                    // A failing part is retried at its own backoff; the others go on.
                    retry_at = part_retry.map(tokio::time::Instant::from_std);
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    self.metrics
                        .reconcile_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "reconcile failed; retrying in {backoff:?}");
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One reconcile; Ok(Some(t)) when a part failed and is due again at `t`.
    async fn reconcile_once(&mut self, forced: bool) -> Result<Option<Instant>> {
        let needs_full = self
            .program
            .as_ref()
            .is_none_or(|(p, _)| p.services.is_none() || p.services_need_full());
        let mut snapshot = self.shared.snapshot(needs_full);
        let mut services = Some(std::mem::take(&mut snapshot.services));
        let mut policy = Some(std::mem::take(&mut snapshot.policy));
        let result = self
            .reconcile_snapshot(forced, &snapshot, &mut services, &mut policy)
            .await;
        // Changes not handed to their compiler (an early return or an error before it) are
        // journaled again, not lost. Without the service proxy or policy enforcement
        // nothing consumes those changes.
        let (proxying, enforcing) = self.program.as_ref().map_or((true, true), |(p, _)| {
            (p.services.is_some(), p.policy.is_some())
        });
        if let (Some(d), true) = (services, proxying) {
            self.shared.requeue(&d);
        }
        if let (Some(d), true) = (policy, enforcing) {
            self.shared.requeue_policy(&d);
        }
        result
    }

    async fn reconcile_snapshot(
        &mut self,
        forced: bool,
        snapshot: &Snapshot,
        services: &mut Option<ServiceDelta>,
        policy_delta: &mut Option<PolicyDelta>,
    ) -> Result<Option<Instant>> {
        if !snapshot.synced() {
            return Ok(None);
        }
        if !self.synced_logged {
            self.synced_logged = true;
            tracing::info!(
                services = snapshot.service_count,
                endpoints = snapshot.endpoint_count,
                "watch caches synced"
            );
        }
        let state = &snapshot.cluster;
        let rv = state.max_resource_version;
        let name = self.config.node_name.clone();
        let Some(me) = state.node(&name).cloned() else {
            // Our Node was deleted: register again (the watch brings it back).
            node::ensure_registered(&self.nodes, &name, self.uplink.address).await?;
            return Ok(None);
        };
        let desired =
            node::desired_annotations(self.config.backend, self.uplink.address, self.vtep);
        if me.public_ip != Some(self.uplink.address)
            || me.vtep_mac != self.vtep
            || me.backend.as_deref() != Some(self.config.backend.as_str())
        {
            let current = self
                .nodes
                .get(&name)
                .await
                .map_err(|e| Error::kube("get node", e))?;
            node::publish_annotations(&self.nodes, &current, &desired).await?;
        }

        // A plan that cannot be compiled (a bad Node) fails the fabric part only: services
        // and policy go on. Remote Nodes that conflict are left out and reported.
        {
            let set = self.remote_cidrs.borrow();
            self.local.remote_cluster_cidrs.clone_from(&set.remote);
            self.local.global_egress = set.global_egress.clone();
        }
        let plan = match self.trust.compile(state, &self.local) {
            Ok(p) => {
                self.bgp_cidrs.send_if_modified(|c| {
                    let changed = *c != p.pod_cidrs;
                    if changed {
                        c.clone_from(&p.pod_cidrs);
                    }
                    changed
                });
                let refused = self.trust.unreported(&p);
                if !refused.is_empty() {
                    let client = self.nodes.clone().into_client();
                    crate::conflicts::report(client, &name, &refused).await;
                }
                Ok(p)
            }
            Err(PlanError::NoPodCidr(_)) => {
                if !self.waiting_logged {
                    if self.local.backend == Backend::Vpc {
                        tracing::info!(node = %name, "waiting for the node's first VPC addresses");
                    } else {
                        tracing::info!(node = %name, "waiting for spec.podCIDR");
                    }
                    self.waiting_logged = true;
                }
                return Ok(None);
            }
            p => p.map_err(|e| e.to_string()),
        };

        let started = Instant::now();
        let remote_nodes = plan.as_ref().map_or(0, |p| p.remote_nodes);
        let mut inputs = Inputs {
            plan,
            forced,
            node: crate::services::proxy_node(&name, self.uplink.address, &me),
            services: services.take(),
            policy: policy_delta.take(),
            now: Instant::now(),
        };
        let (mut program, mut applier) = self
            .program
            .take()
            .ok_or_else(|| Error::Config("the node's compilers were lost to a panic".into()))?;
        let shared = self.shared.clone();
        let (program, applier, inputs, done) = tokio::task::spawn_blocking(move || {
            let r = program.program(&mut applier, &shared, &mut inputs);
            (program, applier, inputs, r)
        })
        .await
        .map_err(|e| Error::Config(format!("programming task failed: {e}")))?;
        // Changes no compiler consumed go back to the journal (the caller requeues them).
        *services = inputs.services;
        *policy_delta = inputs.policy;
        let failing: Vec<Part> = program.failing().keys().copied().collect();
        let next_retry = program.next_retry();
        let failing_errors: Vec<(Part, String)> = program
            .failing()
            .iter()
            .map(|(p, f)| (*p, f.error.clone()))
            .collect();
        self.program = Some((program, applier));

        let m = &self.metrics;
        if done.commits > 0 {
            m.reconciles.fetch_add(1, Ordering::Relaxed);
            m.last_reconcile_micros
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        m.remote_nodes.store(remote_nodes as u64, Ordering::Relaxed);
        crate::health::record_applied(m, &done.applied);
        if done.fabric_applied && done.applied.fabric_ops > 0 {
            tracing::info!(
                ops = done.applied.fabric_ops,
                remote_nodes,
                "programmed node"
            );
        }
        let endpoints = snapshot.endpoint_count;
        let Some((program, _)) = self.program.as_mut() else {
            return Ok(None);
        };
        let mut services_count = 0;
        if let (Some(proxy), Some(staged)) = (program.services.as_mut(), done.services) {
            let svc = proxy.finish(staged).await;
            services_count = svc.services;
            crate::services::record(&self.metrics, &svc, endpoints);
        }
        if let (Some(policy), Some(staged)) = (program.policy.as_mut(), done.policy) {
            let report = policy.finish(staged);
            crate::policy::record(&self.metrics, &report);
        }
        crate::health::record_parts(&self.metrics, &done.failed, &failing);
        if failing != self.reported_failing {
            // Reported on the Node as a condition; a failed write is tried again with the
            // next reconcile.
            node::set_degraded(&self.nodes, &name, &failing_errors).await?;
            self.reported_failing = failing.clone();
        }
        if !failing.is_empty() {
            // Not programmed as a whole: readiness and the observed resourceVersion wait.
            return Ok(next_retry);
        }

        let first = !self.metrics.programmed.swap(true, Ordering::Relaxed);
        if first {
            tracing::info!(node = %name, services = services_count, ms = started.elapsed().as_millis() as u64, "node network ready");
        }
        if !me.network_ready {
            node::set_network_ready(&self.nodes, &name).await?;
        }
        self.metrics
            .observed_resource_version
            .store(rv, Ordering::Relaxed);
        self.rv_tx.send_if_modified(|cur| {
            if *cur != rv || first {
                *cur = rv;
                true
            } else {
                false
            }
        });
        Ok(None)
    }
}
