//! The service proxy on the node: feeds Service and EndpointSlice changes to
//! [`sarasa_proxy::ProxyState`] and applies its transactions to table `inet sarasa`.
//!
//! - First sync (and after any failure, or when the node's addresses or podCIDRs change): the
//!   whole desired table is diffed against what the kernel holds ([`Backend::reconcile`]), so a
//!   restarted agent changes nothing that is already right and never flushes the table
//!   (established connections keep their conntrack entries and DNAT).
//! - Afterwards each reconcile finds the changed objects by comparing the two snapshots and sends
//!   the per-Service transactions of all of them as one atomic netlink batch.
//! - Then stale UDP conntrack entries are deleted ([`crate::conntrack`]) and health-check node
//!   ports updated ([`crate::healthcheck`]).
//!
//! Masquerading: the proxy marks what kube-proxy masquerades (node → ClusterIP, external →
//! NodePort/LoadBalancer with Cluster policy, hairpin) and masquerades marked packets in its own
//! `nat-postrouting`; the agent's `inet sarasa-node` table masquerades pod → outside-cluster
//! traffic. The first NAT rule that sets a source binding wins for a connection, so a packet is
//! never translated twice, and pod → ClusterIP (DNATed to a pod address inside the cluster CIDR)
//! is translated by neither.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sarasa_model::{EndpointSlice, NodeInfo, Service};
use sarasa_nft::{Backend, Family, NetlinkBackend, NftCli, Table, Transaction};
use sarasa_proxy::{ProxyConfig, ProxyState, StaleUdp, Update};

use crate::error::{Error, Result};
use crate::healthcheck::HealthChecks;
use crate::netns::NetnsTarget;
use crate::objects::{changes, Change, Converted};
use crate::state::ClusterState;

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The table was reconciled against the kernel (start, recovery, node change).
    pub full: bool,
    /// Objects (Services + EndpointSlices) whose change was applied.
    pub changed_objects: usize,
    /// Operations in the applied transaction(s).
    pub ops: usize,
    /// Chains the incremental transaction wrote (empty for a full sync).
    pub chains_written: Vec<String>,
    pub services: usize,
    pub endpoints: usize,
    pub stale_udp: usize,
    pub duration: Duration,
}

/// The node's service proxy.
pub struct ServiceProxy {
    target: NetnsTarget,
    config: ProxyConfig,
    proxy: Option<ProxyState>,
    /// The objects as last programmed.
    services: BTreeMap<String, Converted<Service>>,
    slices: BTreeMap<String, Converted<EndpointSlice>>,
    netlink: Option<NetlinkBackend>,
    health: HealthChecks,
    /// The next sync must reconcile the whole table against the kernel.
    dirty: bool,
}

fn nft_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Nft(format!("{what}: {e}"))
}

fn cli(target: &NetnsTarget) -> NftCli {
    match target {
        NetnsTarget::Current => NftCli::new(),
        NetnsTarget::Path(p) => NftCli::in_netns(p.clone()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Config(format!("blocking task failed: {e}")))
}

impl ServiceProxy {
    pub fn new(target: NetnsTarget, config: ProxyConfig) -> Self {
        ServiceProxy {
            health: HealthChecks::new(target.clone()),
            target,
            config,
            proxy: None,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            netlink: None,
            dirty: true,
        }
    }

    /// The table the proxy owns.
    pub fn table_name(&self) -> &str {
        &self.config.table
    }

    /// The compiler's state (None before the first sync).
    pub fn proxy(&self) -> Option<&ProxyState> {
        self.proxy.as_ref()
    }

    /// Health-check node ports served now.
    pub fn health_check_ports(&self) -> Vec<u16> {
        self.health.ports()
    }

    /// Programs the Services and EndpointSlices of `state` for `node`.
    pub async fn sync(&mut self, state: &ClusterState, node: NodeInfo) -> Result<SyncReport> {
        let started = Instant::now();
        let mut report = SyncReport::default();
        let new_services = state.services.items();
        let new_slices = state.endpoint_slices.items();
        let node_changed = self.proxy.as_ref().is_none_or(|p| *p.node() != node);

        if self.dirty || node_changed {
            let mut proxy = ProxyState::new(self.config.clone(), node)
                .map_err(|e| Error::Config(e.to_string()))?;
            for (key, svc) in new_services {
                match svc {
                    Ok(s) => {
                        proxy.upsert_service(Service::clone(s));
                    }
                    Err(e) => tracing::warn!(service = %key, error = %e, "service skipped"),
                }
            }
            for (key, slice) in new_slices {
                match slice {
                    Ok(s) => {
                        proxy.upsert_endpoint_slice(EndpointSlice::clone(s));
                    }
                    Err(e) => {
                        tracing::warn!(endpointslice = %key, error = %e, "EndpointSlice skipped")
                    }
                }
            }
            // The whole proxy is rebuilt: a later failure leaves `dirty` set.
            self.proxy = None;
            let desired = proxy.table();
            let target = self.target.clone();
            let tx = blocking(move || cli(&target).reconcile(&desired))
                .await?
                .map_err(|e| nft_err("reconcile table against the kernel", e))?;
            report.full = true;
            report.ops = tx.commands.len();
            report.changed_objects = new_services.len() + new_slices.len();
            if !tx.is_empty() {
                tracing::info!(
                    ops = tx.commands.len(),
                    "service table reconciled against the kernel"
                );
            }
            self.proxy = Some(proxy);
            self.dirty = false;
        } else if let Some(proxy) = self.proxy.as_mut() {
            let mut update = Update::default();
            let service_changes = changes(&self.services, new_services);
            let slice_changes = changes(&self.slices, new_slices);
            report.changed_objects = service_changes.len() + slice_changes.len();
            for c in service_changes {
                match c {
                    Change::Upsert(_, s) => update.append(proxy.upsert_service(Service::clone(s))),
                    Change::Delete(_, s) => {
                        update.append(proxy.delete_service(&s.namespace, &s.name))
                    }
                    Change::Invalid(k, e) => {
                        tracing::warn!(service = %k, error = %e, "service skipped")
                    }
                }
            }
            for c in slice_changes {
                match c {
                    Change::Upsert(_, s) => {
                        update.append(proxy.upsert_endpoint_slice(EndpointSlice::clone(s)))
                    }
                    Change::Delete(_, s) => {
                        update.append(proxy.delete_endpoint_slice(&s.namespace, &s.name))
                    }
                    Change::Invalid(k, e) => {
                        tracing::warn!(endpointslice = %k, error = %e, "EndpointSlice skipped")
                    }
                }
            }
            report.ops = update.transaction.commands.len();
            report.chains_written = update.transaction.chains_written.iter().cloned().collect();
            if let Err(e) = self.apply(update.transaction).await {
                // The kernel may hold part of nothing of it: start over from a full diff.
                self.dirty = true;
                return Err(e);
            }
            report.stale_udp = update.stale_udp.len();
            self.cleanup_conntrack(update.stale_udp).await?;
        }
        self.services = new_services.clone();
        self.slices = new_slices.clone();

        if let Some(proxy) = &self.proxy {
            self.health.update(&proxy.health_checks()).await;
            report.services = proxy.service_count();
        }
        report.endpoints = new_slices
            .values()
            .filter_map(|s| s.as_ref().ok())
            .map(|s| s.endpoints.len())
            .sum();
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Sends `tx` as one netlink batch (the backend falls back to `nft -f` for what it cannot
    /// encode); the socket is opened on first use in the node's namespace.
    async fn apply(&mut self, tx: Transaction) -> Result<()> {
        if tx.is_empty() {
            return Ok(());
        }
        let backend = self.netlink.take();
        let target = self.target.clone();
        let table = self.config.table.clone();
        let (backend, result) = blocking(move || {
            let mut backend = match backend {
                Some(b) => b,
                None => {
                    let b = match &target {
                        NetnsTarget::Current => NetlinkBackend::new(),
                        NetnsTarget::Path(p) => NetlinkBackend::in_netns(p.clone()),
                    };
                    match b {
                        Ok(b) => b,
                        Err(e) => return (None, Err(e)),
                    }
                }
            };
            let r = backend.apply_to(Family::Inet, &table, &tx).map(|_| ());
            (Some(backend), r)
        })
        .await?;
        self.netlink = backend;
        result.map_err(|e| nft_err("apply service update", e))
    }

    async fn cleanup_conntrack(&self, stale: Vec<StaleUdp>) -> Result<()> {
        if stale.is_empty() {
            return Ok(());
        }
        let target = self.target.clone();
        let report = blocking(move || crate::conntrack::delete_stale(&target, &stale)).await?;
        for e in &report.errors {
            tracing::warn!(error = %e, "stale UDP conntrack cleanup failed");
        }
        Ok(())
    }

    /// The desired table (for tests and diagnostics).
    pub fn desired_table(&self) -> Option<Table> {
        self.proxy.as_ref().map(|p| p.table())
    }
}

/// The proxy settings from the agent's flags (table `inet sarasa`).
pub fn proxy_config(config: &crate::AgentConfig) -> ProxyConfig {
    ProxyConfig {
        service_cidrs: config.service_cidr.clone(),
        cluster_cidrs: config.cluster_cidr.clone(),
        ..ProxyConfig::default()
    }
}

/// This node as the proxy sees it: NodePorts answer on its underlay address (and its
/// InternalIP when that differs); endpoints whose `nodeName` is `name` are local.
pub fn proxy_node(name: &str, underlay: IpAddr, me: &crate::state::NodeInfo) -> NodeInfo {
    let mut addresses = vec![underlay];
    addresses.extend(me.internal_ip.filter(|ip| *ip != underlay));
    NodeInfo {
        name: name.to_string(),
        addresses,
        pod_cidrs: me.pod_cidrs.clone(),
    }
}

/// Publishes a sync's figures.
pub fn record(metrics: &crate::health::Metrics, report: &SyncReport) {
    use std::sync::atomic::Ordering::Relaxed;
    metrics.services.store(report.services as u64, Relaxed);
    metrics.endpoints.store(report.endpoints as u64, Relaxed);
    metrics
        .last_service_sync_micros
        .store(report.duration.as_micros() as u64, Relaxed);
    if report.changed_objects > 0 {
        tracing::debug!(
            objects = report.changed_objects,
            ops = report.ops,
            full = report.full,
            "services programmed"
        );
    }
}
