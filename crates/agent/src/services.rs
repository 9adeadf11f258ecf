//! The service proxy on the node: feeds Service and EndpointSlice changes to
//! [`sarasa_proxy::ProxyState`] and stages its transactions for the proxy's tables (`inet sarasa`
//! and its shards `inet sarasa-svcNN`, see [`sarasa_proxy`]) in the reconcile's plan delta,
//! which the agent's one applier commits with the other tables' ([`crate::staging`]).
//!
//! - First sync (and after any failed commit, or when the node's addresses or podCIDRs
//!   change): every table is built in turn, read back from the node through the applier and
//!   diffed against it, one table at a time so that memory stays bounded at 100k Services. A
//!   restarted agent changes nothing that is already right and never flushes a table
//!   (established connections keep their conntrack entries and DNAT).
//! - Afterwards each reconcile gets only the objects that changed ([`ServiceDelta`], from the
//!   watch journal), fed to the proxy compiler through the cluster view's [`Consumer`]
//!   interface; the per-Service transactions of all of them, across tables, are staged.
//! - After the commit, stale UDP conntrack entries are deleted ([`crate::conntrack`]) and
//!   health-check node ports updated ([`crate::healthcheck`]); a failed commit makes the next
//!   sync a full one.
//!
//! Masquerading: the proxy marks what kube-proxy masquerades (node → ClusterIP, external →
//! NodePort/LoadBalancer with Cluster policy, hairpin) and masquerades marked packets in its own
//! `nat-postrouting`; the agent's `inet sarasa-node` table masquerades pod → outside-cluster
//! traffic. The first NAT rule that sets a source binding wins for a connection, so a packet is
//! never translated twice, and pod → ClusterIP (DNATed to a pod address inside the cluster CIDR)
//! is translated by neither.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use sarasa_cluster::journal::split_key;
use sarasa_cluster::{objects, Consumer, Rejected};
use sarasa_model::{EndpointSlice, NodeInfo, Service};
use sarasa_nft::{Family, Table};
use sarasa_plan::{Applier, TableId};
use sarasa_proxy::{ProxyConfig, ProxyState, StaleUdp, Update};

use crate::error::{Error, Result};
use crate::healthcheck::HealthChecks;
use crate::netns::NetnsTarget;
use crate::staging::Staging;
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
    health: HealthChecks,
    /// The next sync must rebuild from every object and reconcile each table with the kernel.
    dirty: bool,
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

/// Stages every table of `proxy` against what the node holds, one table at a time (each
/// built, read back, diffed, staged, then dropped; staging commits early past its bound), and
/// the deletion of shards a larger earlier configuration left. Returns the operations staged.
fn stage_all<A: Applier>(staging: &mut Staging<'_, A>, proxy: &ProxyState) -> Result<usize> {
    let config = proxy.config();
    let mut ops = 0;
    let mut times = [Duration::ZERO; 2]; // build, read back + diff
    for (i, name) in config.table_names().iter().enumerate() {
        let t = Instant::now();
        let desired: Table = if i == 0 {
            proxy.main_table()
        } else {
            proxy.shard_table(i - 1)
        };
        times[0] += t.elapsed();
        let t = Instant::now();
        let tx = staging.diff_table(&TableId::of(&desired), Some(&desired))?;
        drop(desired);
        times[1] += t.elapsed();
        ops += tx.commands.len();
        staging.push(inet(name), tx)?;
    }
    // Shards a larger earlier configuration left behind (a lookup of a missing table is one
    // request).
    for i in config.shards..MAX_SHARDS {
        let id = inet(&config.shard_table(i));
        let gone = staging.diff_table(&id, None)?;
        ops += gone.commands.len();
        staging.push(id, gone)?;
    }
    tracing::info!(
        tables = config.table_names().len(),
        ops,
        build_ms = times[0].as_millis() as u64,
        read_back_diff_ms = times[1].as_millis() as u64,
        "service tables staged against the kernel"
    );
    Ok(ops)
}

/// Every table the proxy may own under `config`'s names: the main table and every shard up
/// to the most a configuration may have had (what `serviceProxy: false` removes).
pub fn all_table_ids(config: &ProxyConfig) -> Vec<TableId> {
    std::iter::once(inet(&config.table))
        .chain((0..MAX_SHARDS).map(|i| inet(&config.shard_table(i))))
        .collect()
}

fn inet(name: &str) -> TableId {
    TableId {
        family: Family::Inet,
        name: name.to_string(),
    }
}

/// What a staged sync leaves for after the commit.
#[derive(Debug, Default)]
pub struct StagedServices {
    pub report: SyncReport,
    started: Option<Instant>,
    stale_udp: Vec<StaleUdp>,
    refresh_health: bool,
}

impl ServiceProxy {
    pub fn new(target: NetnsTarget, config: ProxyConfig) -> Self {
        ServiceProxy {
            health: HealthChecks::new(target.clone()),
            target,
            config,
            proxy: None,
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

    /// Feeds `delta` (the Services and EndpointSlices changed since the last sync) for `node`
    /// to the compiler and stages its transactions; when a full sync is due, rebuilds from
    /// every object in `shared` and stages each table against what the node holds. Blocks
    /// (the applier reads the kernel): call it from the blocking pool. Until
    /// [`ServiceProxy::committed`] says the delta went in, the next sync is a full one.
    pub fn stage<A: Applier>(
        &mut self,
        shared: &Shared,
        delta: ServiceDelta,
        node: NodeInfo,
        staging: &mut Staging<'_, A>,
    ) -> Result<StagedServices> {
        let mut staged = StagedServices {
            started: Some(Instant::now()),
            // Health-check node ports are refreshed after a full sync or a change to one of
            // them (listing them is cheap, but not needed per change).
            refresh_health: true,
            ..StagedServices::default()
        };
        let report = &mut staged.report;
        let node_changed = self.proxy.as_ref().is_none_or(|p| *p.node() != node);

        if self.dirty || node_changed {
            // Every object (a partial delta is subsumed by them); until the commit succeeds,
            // `dirty` stays set.
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
            report.ops = stage_all(staging, &proxy)?;
            report.full = true;
            self.proxy = Some(proxy);
        } else if let Some(proxy) = self.proxy.as_mut() {
            report.changed_objects = delta.len();
            let update = feed(proxy, delta);
            // From here the compiler is ahead of the kernel until the commit succeeds.
            self.dirty = true;
            staged.refresh_health = update.health_checks_changed || self.health.incomplete();
            report.ops = update.ops();
            report.chains_written = update.chains_written();
            report.stale_udp = update.stale_udp.len();
            staged.stale_udp = update.stale_udp;
            for (table, tx) in update.transactions {
                staging.push(inet(&table), tx)?;
            }
        }
        if let Some(proxy) = &self.proxy {
            report.services = proxy.service_count();
        }
        Ok(staged)
    }

    /// Whether the delta holding the staged transactions was committed. When it was not, the
    /// kernel holds none of it (one batch): the next sync starts over from a full diff.
    pub fn committed(&mut self, ok: bool) {
        self.dirty = !ok;
    }

    /// After a successful commit: deletes stale UDP conntrack entries (their endpoint is no
    /// longer in the rules) and updates the health-check node ports.
    pub async fn finish(&mut self, staged: StagedServices) -> SyncReport {
        let mut report = staged.report;
        self.cleanup_conntrack(staged.stale_udp).await;
        if let (Some(proxy), true) = (&self.proxy, staged.refresh_health) {
            self.health.update(&proxy.health_checks()).await;
        }
        report.duration = staged.started.map(|t| t.elapsed()).unwrap_or_default();
        report
    }

    async fn cleanup_conntrack(&self, stale: Vec<StaleUdp>) {
        if stale.is_empty() {
            return;
        }
        let target = self.target.clone();
        let report = match blocking(move || crate::conntrack::delete_stale(&target, &stale)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "stale UDP conntrack cleanup failed");
                return;
            }
        };
        for e in &report.errors {
            tracing::warn!(error = %e, "stale UDP conntrack cleanup failed");
        }
        tracing::debug!(
            destinations = report.ran,
            deleted = report.deleted,
            "stale UDP conntrack entries deleted"
        );
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
                source_cluster: None,
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

    /// The nftables half of the agent's applier, over a socket in a test namespace.
    struct NftOnly(sarasa_nft::NetlinkBackend);

    impl Applier for NftOnly {
        type Error = sarasa_nft::NftError;
        fn diff_table(
            &mut self,
            id: &TableId,
            desired: Option<&Table>,
        ) -> std::result::Result<sarasa_nft::Transaction, Self::Error> {
            Ok(match desired {
                Some(t) => sarasa_nft::diff_kernel(self.0.list_table_like(t)?.as_ref(), t),
                None if self.0.list_table(id.family, &id.name)?.is_some() => {
                    sarasa_nft::Transaction::delete_table(id.family, &id.name)
                }
                None => sarasa_nft::Transaction::default(),
            })
        }
        fn apply(
            &mut self,
            delta: &sarasa_plan::PlanDelta,
        ) -> std::result::Result<sarasa_plan::Applied, Self::Error> {
            let parts: Vec<_> = delta
                .tables
                .iter()
                .map(|t| (t.table.family, t.table.name.as_str(), &t.transaction))
                .collect();
            self.0.apply_batch(&parts)?;
            Ok(sarasa_plan::Applied::default())
        }
    }

    /// Stages every table of `proxy` against the namespace's and commits them as one delta;
    /// returns the operations and the deltas committed.
    fn program_all(nl: &mut NftOnly, proxy: &ProxyState) -> (usize, usize) {
        let mut staging = Staging::new(nl);
        let ops = stage_all(&mut staging, proxy).unwrap();
        staging.commit().unwrap();
        (ops, staging.commits)
    }

    #[test]
    fn full_program_makes_every_table_right_and_removes_stale_shards() {
        let ns = Netns::new();
        // What an earlier agent with more shards left: a shard table this configuration no
        // longer has, and a stray chain in the main table.
        ns.nft("add table inet sarasa-svc05\nadd chain inet sarasa-svc05 old\nadd table inet sarasa\nadd chain inet sarasa stray\n");
        let proxy = proxy(2);
        let backend = crate::nftables::open(&NetnsTarget::Path(ns.path().into())).unwrap();
        let mut nl = NftOnly(backend);
        let (ops, commits) = program_all(&mut nl, &proxy);
        assert!(ops > 0);
        assert_eq!(commits, 1, "every table in one delta");
        assert_eq!(nl.0.native_count, 1, "one netlink batch");
        let backend = &mut nl.0;
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
                sarasa_nft::diff_kernel(kernel.as_ref(), &desired).is_empty(),
                "{name} differs from the model"
            );
        }
        // A second program (an agent restart) changes nothing and commits nothing.
        assert_eq!(program_all(&mut nl, &proxy), (0, 0));
    }
}
