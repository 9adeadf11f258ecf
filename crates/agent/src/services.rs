//! The service proxy on the node: feeds Service and EndpointSlice changes to
//! [`sarasa_proxy::ProxyState`] and applies its transactions to the proxy's tables (`inet sarasa`
//! and its shards `inet sarasa-svcNN`, see [`sarasa_proxy`]).
//!
//! - First sync (and after any failure, or when the node's addresses or podCIDRs change): every
//!   table is built in turn, read back from the kernel over netlink and diffed against it
//!   ([`diff_kernel`]), one table at a time so that memory stays bounded at 100k Services. A
//!   restarted agent changes nothing that is already right and never flushes a table
//!   (established connections keep their conntrack entries and DNAT).
//! - Afterwards each reconcile gets only the objects that changed ([`ServiceDelta`], from the
//!   watch journal), fed to the proxy compiler through the cluster view's
//!   [`Consumer`] interface, and sends the per-Service transactions of all of them, across tables, as one
//!   atomic netlink batch.
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

use std::sync::Arc;

use sarasa_cluster::journal::split_key;
use sarasa_cluster::{objects, Consumer, Rejected};
use sarasa_model::{EndpointSlice, NodeInfo, Service};
use sarasa_nft::{diff_kernel, Family, NetlinkBackend, Table, Transaction};
use sarasa_proxy::{ProxyConfig, ProxyState, StaleUdp, Update};

use crate::error::{Error, Result};
use crate::healthcheck::HealthChecks;
use crate::netns::NetnsTarget;
use sarasa_cluster::watch::Shared;
use sarasa_cluster::ServiceDelta;

/// Shard tables beyond the configured count that a previous configuration may have left.
const MAX_SHARDS: usize = 64;

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The tables were reconciled against the kernel (start, recovery, node change).
    pub full: bool,
    /// Objects (Services + EndpointSlices) whose change was applied.
    pub changed_objects: usize,
    /// Operations in the applied transaction(s).
    pub ops: usize,
    /// Chains the incremental transaction wrote, as `table/chain` (empty for a full sync).
    pub chains_written: Vec<String>,
    pub services: usize,
    pub stale_udp: usize,
    pub duration: Duration,
}

/// The node's service proxy.
pub struct ServiceProxy {
    target: NetnsTarget,
    config: ProxyConfig,
    proxy: Option<ProxyState>,
    netlink: Option<NetlinkBackend>,
    health: HealthChecks,
    /// The next sync must rebuild from every object and reconcile each table with the kernel.
    dirty: bool,
}

fn nft_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Nft(format!("{what}: {e}"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Config(format!("blocking task failed: {e}")))
}

/// The proxy compiler as a [`Consumer`] of Services and EndpointSlices: each change becomes
/// its transactions, gathered into one update (sent as one batch).
struct ProxyFeed<'a> {
    proxy: &'a mut ProxyState,
    update: Update,
}

impl Consumer<Service> for ProxyFeed<'_> {
    fn apply(&mut self, svc: Arc<Service>) -> std::result::Result<(), String> {
        self.update.append(self.proxy.upsert_service(svc));
        Ok(())
    }
    fn delete(&mut self, key: &str) {
        let (ns, name) = split_key(key);
        self.update.append(self.proxy.delete_service(ns, name));
    }
}

impl Consumer<EndpointSlice> for ProxyFeed<'_> {
    fn apply(&mut self, slice: Arc<EndpointSlice>) -> std::result::Result<(), String> {
        self.update.append(self.proxy.upsert_endpoint_slice(slice));
        Ok(())
    }
    fn delete(&mut self, key: &str) {
        let (ns, name) = split_key(key);
        self.update
            .append(self.proxy.delete_endpoint_slice(ns, name));
    }
}

fn log_rejected(rejected: &[Rejected]) {
    for r in rejected {
        tracing::warn!(kind = r.kind, object = %r.key, error = %r.reason, "skipped");
    }
}

/// Feeds one delta to the proxy; returns the combined update.
fn feed(proxy: &mut ProxyState, delta: ServiceDelta) -> Update {
    let mut feed = ProxyFeed {
        proxy,
        update: Update::default(),
    };
    let fed = delta.feed(&mut feed);
    log_rejected(&fed.rejected);
    feed.update
}

/// Files every object of a complete delta at once (no per-object transactions: the tables
/// are built whole and diffed against the kernel afterwards).
fn load(proxy: &mut ProxyState, all: ServiceDelta) {
    let (services, mut rejected) = all.services.into_objects(objects::SERVICE);
    let (slices, more) = all.slices.into_objects(objects::ENDPOINT_SLICE);
    rejected.extend(more);
    log_rejected(&rejected);
    proxy.load(services, slices);
}

/// Makes the kernel hold every table of `proxy`, one table at a time (each built, read back,
/// diffed and applied, then dropped). Returns the operations applied.
fn program_all(
    backend: &mut NetlinkBackend,
    proxy: &ProxyState,
) -> std::result::Result<usize, sarasa_nft::NftError> {
    let config = proxy.config();
    let mut ops = 0;
    let mut times = [Duration::ZERO; 4]; // build, read back, diff, apply
    for (i, name) in config.table_names().iter().enumerate() {
        let t = Instant::now();
        let desired: Table = if i == 0 {
            proxy.main_table()
        } else {
            proxy.shard_table(i - 1)
        };
        times[0] += t.elapsed();
        // Looked up by the model's names: a full chain dump covers every chain of every inet
        // table, so one per shard would cost time quadratic in the whole ruleset.
        let t = Instant::now();
        let current = backend.list_table_like(&desired)?;
        times[1] += t.elapsed();
        let t = Instant::now();
        let tx = diff_kernel(current.as_ref(), &desired);
        drop(current);
        drop(desired);
        times[2] += t.elapsed();
        ops += tx.commands.len();
        let t = Instant::now();
        backend.apply_batch(&[(Family::Inet, name.as_str(), &tx)])?;
        times[3] += t.elapsed();
    }
    tracing::info!(
        tables = config.table_names().len(),
        ops,
        build_ms = times[0].as_millis() as u64,
        read_back_ms = times[1].as_millis() as u64,
        diff_ms = times[2].as_millis() as u64,
        apply_ms = times[3].as_millis() as u64,
        "service tables programmed"
    );
    // Shards a larger earlier configuration left behind (a lookup of a missing table is one
    // request).
    for i in config.shards..MAX_SHARDS {
        let name = config.shard_table(i);
        if backend.list_table(Family::Inet, &name)?.is_some() {
            let gone = Transaction::delete_table(Family::Inet, &name);
            backend.apply_batch(&[(Family::Inet, name.as_str(), &gone)])?;
            ops += 1;
        }
    }
    Ok(ops)
}

impl ServiceProxy {
    pub fn new(target: NetnsTarget, config: ProxyConfig) -> Self {
        ServiceProxy {
            health: HealthChecks::new(target.clone()),
            target,
            config,
            proxy: None,
            netlink: None,
            dirty: true,
        }
    }

    /// The next sync rebuilds from every Service and EndpointSlice (first sync, after a
    /// failure): give it all of them.
    pub fn needs_full(&self) -> bool {
        self.dirty || self.proxy.is_none()
    }

    /// The main table the proxy owns (its shards are `<table>-svcNN`).
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

    /// Programs `delta` (the Services and EndpointSlices changed since the last sync) for
    /// `node`; rebuilds from every object in `shared` when a full sync is due.
    pub async fn sync(
        &mut self,
        shared: &Shared,
        delta: ServiceDelta,
        node: NodeInfo,
    ) -> Result<SyncReport> {
        let started = Instant::now();
        let mut report = SyncReport::default();
        let node_changed = self.proxy.as_ref().is_none_or(|p| *p.node() != node);
        // Health-check node ports are refreshed after a full sync or a change to one of them
        // (listing them is cheap, but not needed per change).
        let mut refresh_health = true;

        if self.dirty || node_changed {
            // Every object (a partial delta is subsumed by them); if this fails, `dirty` stays
            // set.
            let all = if delta.complete() {
                delta
            } else {
                drop(delta);
                shared.all_services()
            };
            self.proxy = None;
            self.dirty = true;
            report.changed_objects = all.len();
            let t = Instant::now();
            let mut proxy = ProxyState::new(self.config.clone(), node)
                .map_err(|e| Error::Config(e.to_string()))?;
            load(&mut proxy, all);
            tracing::info!(
                objects = report.changed_objects,
                ms = t.elapsed().as_millis() as u64,
                "service proxy state built"
            );
            let backend = self.netlink.take();
            let target = self.target.clone();
            let (backend, proxy, result) = blocking(move || {
                let mut backend = match backend.map_or_else(|| crate::nftables::open(&target), Ok) {
                    Ok(b) => b,
                    Err(e) => return (None, proxy, Err(e)),
                };
                let r = program_all(&mut backend, &proxy);
                (Some(backend), proxy, r)
            })
            .await?;
            self.netlink = backend;
            let ops = result.map_err(|e| nft_err("program service tables", e))?;
            report.full = true;
            report.ops = ops;
            if ops > 0 {
                tracing::info!(ops, "service tables reconciled against the kernel");
            }
            self.proxy = Some(proxy);
            self.dirty = false;
        } else if let Some(proxy) = self.proxy.as_mut() {
            report.changed_objects = delta.len();
            let mut update = feed(proxy, delta);
            refresh_health = update.health_checks_changed || self.health.incomplete();
            report.ops = update.ops();
            report.chains_written = update.chains_written();
            if let Err(e) = self.apply(std::mem::take(&mut update.transactions)).await {
                // The kernel holds none of it (one batch): start over from a full diff.
                self.dirty = true;
                return Err(e);
            }
            report.stale_udp = update.stale_udp.len();
            self.cleanup_conntrack(update.stale_udp).await?;
        }

        if let Some(proxy) = &self.proxy {
            if refresh_health {
                self.health.update(&proxy.health_checks()).await;
            }
            report.services = proxy.service_count();
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Sends every table's part of an update as one netlink batch (one atomic commit); the
    /// socket is opened on first use in the node's namespace.
    async fn apply(&mut self, parts: BTreeMap<String, Transaction>) -> Result<()> {
        if parts.values().all(Transaction::is_empty) {
            return Ok(());
        }
        let backend = self.netlink.take();
        let target = self.target.clone();
        let (backend, result) = blocking(move || {
            let mut backend = match backend.map_or_else(|| crate::nftables::open(&target), Ok) {
                Ok(b) => b,
                Err(e) => return (None, Err(e)),
            };
            let batch: Vec<(Family, &str, &Transaction)> = parts
                .iter()
                .map(|(t, tx)| (Family::Inet, t.as_str(), tx))
                .collect();
            let r = backend.apply_batch(&batch).map(|_| ());
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
        tracing::debug!(
            destinations = report.ran,
            deleted = report.deleted,
            "stale UDP conntrack entries deleted"
        );
        Ok(())
    }

    /// The desired tables, main first (for tests and diagnostics).
    pub fn desired_tables(&self) -> Option<Vec<Table>> {
        self.proxy.as_ref().map(|p| p.tables())
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
pub fn proxy_node(name: &str, underlay: IpAddr, me: &sarasa_cluster::NodeInfo) -> NodeInfo {
    let mut addresses = vec![underlay];
    addresses.extend(me.internal_ip.filter(|ip| *ip != underlay));
    NodeInfo {
        name: name.to_string(),
        addresses,
        pod_cidrs: me.pod_cidrs.clone(),
    }
}

/// Publishes a sync's figures.
pub fn record(metrics: &crate::health::Metrics, report: &SyncReport, endpoints: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    metrics.services.store(report.services as u64, Relaxed);
    metrics.endpoints.store(endpoints as u64, Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_model::{
        AddressType, Endpoint, EndpointPort, EndpointSlice, Protocol, Service, ServicePort,
    };
    use std::process::Command;

    /// A network namespace made by the test, removed on drop (also when the test fails).
    struct Netns(String);

    impl Netns {
        fn new() -> Netns {
            let name = format!("sarasa-t{}-svcprog", std::process::id());
            let ok = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip netns add {name} (root needed)");
            Netns(name)
        }
        fn path(&self) -> String {
            format!("/run/netns/{}", self.0)
        }
        fn nft(&self, script: &str) {
            sarasa_nft::NftCli::in_netns(self.path())
                .run_script(script)
                .unwrap_or_else(|e| panic!("{e}\n{script}"));
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn proxy(shards: usize) -> ProxyState {
        let config = ProxyConfig {
            shards,
            ..ProxyConfig::default()
        };
        let node = NodeInfo {
            name: "node-1".into(),
            addresses: vec!["192.168.33.11".parse().unwrap()],
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
        };
        let mut p = ProxyState::new(config, node).unwrap();
        let services = (0..20).map(|i| {
            let mut s = Service::cluster_ip(
                "default",
                &format!("s{i}"),
                vec![format!("10.96.0.{}", i + 10).parse().unwrap()],
            );
            s.ports = vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                target_port: None,
            }];
            std::sync::Arc::new(s)
        });
        let slices = (0..20).map(|i| {
            std::sync::Arc::new(EndpointSlice {
                namespace: "default".into(),
                name: format!("s{i}-1"),
                service_name: format!("s{i}"),
                address_type: AddressType::Ipv4,
                endpoints: vec![Endpoint::ready(
                    format!("10.244.1.{}", i + 10).parse().unwrap(),
                    Some("node-1"),
                )],
                ports: vec![EndpointPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080,
                }],
            })
        });
        p.load(services, slices);
        p
    }

    /// A delta of `(key, conversion)` items.
    fn delta<T>(items: Vec<(&str, Option<Result<T, &str>>)>) -> sarasa_cluster::Delta<T> {
        sarasa_cluster::Delta {
            items: items
                .into_iter()
                .map(|(k, v)| {
                    let v = v.map(|r| r.map(std::sync::Arc::new).map_err(str::to_string));
                    (k.to_string(), v)
                })
                .collect(),
            complete: false,
        }
    }

    #[test]
    fn the_proxy_consumes_service_deltas() {
        let mut p = proxy(1);
        let loaded = p.tables();
        // s0 changes address, s1 fails conversion (withdrawn), s2 is gone, s3-1 loses its
        // endpoints: one update for all of them.
        let mut s0 = Service::cluster_ip("default", "s0", vec!["10.96.1.10".parse().unwrap()]);
        s0.ports = vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            target_port: None,
        }];
        let d = ServiceDelta {
            services: delta(vec![
                ("default/s0", Some(Ok(s0))),
                ("default/s1", Some(Err("field spec.clusterIP: bad"))),
                ("default/s2", None),
            ]),
            slices: delta(vec![("default/s3-1", None)]),
        };
        let update = feed(&mut p, d);
        assert!(update.ops() > 0);
        assert_eq!(p.service_count(), 18, "s1 withdrawn, s2 deleted");
        assert_ne!(p.tables(), loaded);
        // Nothing changed: nothing to send.
        assert!(feed(&mut p, ServiceDelta::default()).is_empty());
    }

    #[test]
    fn full_program_makes_every_table_right_and_removes_stale_shards() {
        let ns = Netns::new();
        // What an earlier agent with more shards left: a shard table this configuration no
        // longer has, and a stray chain in the main table.
        ns.nft("add table inet sarasa-svc05\nadd chain inet sarasa-svc05 old\nadd table inet sarasa\nadd chain inet sarasa stray\n");
        let proxy = proxy(2);
        let mut backend = crate::nftables::open(&NetnsTarget::Path(ns.path().into())).unwrap();
        assert!(program_all(&mut backend, &proxy).unwrap() > 0);
        assert_eq!(
            backend.list_table(Family::Inet, "sarasa-svc05").unwrap(),
            None,
            "stale shard left"
        );
        for (i, name) in proxy.config().table_names().iter().enumerate() {
            let desired = if i == 0 {
                proxy.main_table()
            } else {
                proxy.shard_table(i - 1)
            };
            let kernel = backend.list_table(Family::Inet, name).unwrap();
            assert!(kernel.is_some(), "{name} missing");
            assert!(
                diff_kernel(kernel.as_ref(), &desired).is_empty(),
                "{name} differs from the model"
            );
        }
        // A second program (an agent restart) changes nothing.
        assert_eq!(program_all(&mut backend, &proxy).unwrap(), 0);
    }
}
