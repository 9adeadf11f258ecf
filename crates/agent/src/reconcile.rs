//! One reconcile's programming, apart from the API and the async loop (`agent`): the
//! compilers — fabric and masquerade ([`sarasa_plan`]), the service proxy
//! ([`crate::services`]), NetworkPolicy ([`crate::policy`]) — stage their parts of this
//! reconcile's [`sarasa_plan::PlanDelta`] (the incremental transactions they already compute;
//! a full diff against the node only on a full sync), and one [`Applier::apply`] commits it.
//! Generic over the applier, so tests drive it with [`sarasa_plan::Recording`] and failing
//! ones, without a kernel.
//!
//! The three parts — fabric (routes, FDB, neighbours, the masquerade table, the conflist),
//! Services, NetworkPolicy — are independent: one that fails does not hold the others back.
//! While every part works, a reconcile is one delta (one kernel commit). When that commit
//! fails, or the fabric plan cannot be compiled (a bad Node), each part is committed on its
//! own; a part that fails is reported ([`Programmed::failed`]) and retried with backoff
//! ([`PartFailure`]), while the others go on programming their changes, one delta each, until
//! every part works again. A failed commit leaves the kernel without any of that delta: the
//! compilers whose changes it held go back to a full sync (a rebuild from every object, diffed
//! against the node), the fabric is applied again next time, and changes of a part not
//! attempted (in backoff) stay in [`Inputs`] for the caller to requeue.
//!
//! A feature turned off (`serviceProxy: false`, `networkPolicy: false`) has no compiler; its
//! tables are removed from the node whenever the fabric is applied (first reconcile, resyncs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sarasa_cluster::watch::Shared;
use sarasa_cluster::{PolicyDelta, ServiceDelta};
use sarasa_model::{CniMode, NodeInfo};
use sarasa_nft::Family;
use sarasa_plan::{Applied, Applier, CniPlan, FabricPlan, TableId};

use crate::error::{Error, Result};
use crate::policy::{PolicyEnforcer, StagedPolicy};
use crate::services::{ServiceProxy, StagedServices};
use crate::staging::Staging;

/// First retry delay of a failing part; doubled per failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A part of the node's programming that is reconciled on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// Routes, FDB and neighbour entries, the VXLAN device, the masquerade table, the
    /// conflist, and the removal of the tables of features turned off.
    Fabric,
    /// The service proxy's tables.
    Services,
    /// The NetworkPolicy table.
    Policy,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Fabric, Part::Services, Part::Policy];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Fabric => "fabric",
            Part::Services => "services",
            Part::Policy => "policy",
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A part that keeps failing: retried at `retry_at`, the delay doubling per failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartFailure {
    pub error: String,
    /// Failures in a row.
    pub failures: u32,
    pub retry_at: Instant,
    backoff: Duration,
}

/// What one reconcile programs from.
#[derive(Debug)]
pub struct Inputs {
    /// The fabric plan compiled from the cluster state, or why it could not be (a bad Node):
    /// the fabric part then fails and keeps what it last programmed.
    pub plan: std::result::Result<FabricPlan, String>,
    /// Re-apply the fabric, masquerade table and conflist against the node even when the plan
    /// did not change (periodic resync, retry after a failure).
    pub forced: bool,
    /// This node as the service proxy sees it.
    pub node: NodeInfo,
    /// Service changes; taken when handed to the proxy (what is left was not consumed).
    pub services: Option<ServiceDelta>,
    /// Policy changes; taken when handed to the enforcer.
    pub policy: Option<PolicyDelta>,
    /// Now: failing parts whose retry time has come are attempted again.
    pub now: Instant,
}

/// What one reconcile programmed.
#[derive(Debug, Default)]
pub struct Programmed {
    /// What the applier did, over every delta committed.
    pub applied: Applied,
    /// Deltas committed: 1, 0 when nothing changed, more for a full sync of a big ruleset
    /// ([`crate::staging::FLUSH_OPS`]) or when the parts were committed apart.
    pub commits: usize,
    /// The fabric, masquerade table and conflist were (re)applied.
    pub fabric_applied: bool,
    /// The service proxy's sync, when it committed.
    pub services: Option<StagedServices>,
    /// The policy sync, when it committed.
    pub policy: Option<StagedPolicy>,
    /// Parts that failed in this reconcile, with the error.
    pub failed: Vec<(Part, String)>,
    /// The policy part failed and the failsafe table ([`crate::failsafe`]) went in, isolating
    /// this many pod addresses.
    pub failsafe: Option<usize>,
}

/// The node's compilers and what they last committed.
pub struct NodeProgram {
    /// None: `serviceProxy: false` (kube-proxy programs Services).
    pub services: Option<ServiceProxy>,
    /// None: `networkPolicy: false`.
    pub policy: Option<PolicyEnforcer>,
    cni_mode: CniMode,
    ipam_data_dir: PathBuf,
    /// The fabric plan of the last successful commit.
    last_plan: Option<FabricPlan>,
    /// Tables of the features turned off, removed with each application of the fabric.
    removed: Vec<TableId>,
    /// Parts failing now.
    failing: BTreeMap<Part, PartFailure>,
}

/// What the one-delta path staged.
#[derive(Default)]
struct Together {
    services_staged: bool,
    policy_staged: bool,
    services: Option<StagedServices>,
    policy: Option<StagedPolicy>,
}

fn add_applied(out: &mut Programmed, staging: &mut Staging<'_, impl Applier>) {
    let a = std::mem::take(&mut staging.applied);
    out.applied.fabric_ops += a.fabric_ops;
    out.applied.nft_ops += a.nft_ops;
    out.applied.nft_batches += a.nft_batches;
    out.applied.cni_written |= a.cni_written;
    out.commits += std::mem::take(&mut staging.commits);
}

impl NodeProgram {
    pub fn new(
        services: Option<ServiceProxy>,
        policy: Option<PolicyEnforcer>,
        cni_mode: CniMode,
        ipam_data_dir: PathBuf,
    ) -> Self {
        let mut removed = Vec::new();
        if services.is_none() {
            removed.extend(crate::services::all_table_ids(
                &sarasa_proxy::ProxyConfig::default(),
            ));
        }
        if policy.is_none() {
            removed.push(TableId {
                family: Family::Inet,
                name: sarasa_policy::TABLE.to_string(),
            });
            removed.push(crate::failsafe::id());
        }
        NodeProgram {
            services,
            policy,
            cni_mode,
            ipam_data_dir,
            last_plan: None,
            removed,
            failing: BTreeMap::new(),
        }
    }

    /// The service proxy needs every Service and EndpointSlice next time.
    pub fn services_need_full(&self) -> bool {
        self.services.as_ref().is_some_and(ServiceProxy::needs_full)
    }

    /// The parts failing now.
    pub fn failing(&self) -> &BTreeMap<Part, PartFailure> {
        &self.failing
    }

    /// When the first failing part is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.failing.values().map(|f| f.retry_at).min()
    }

    fn due(&self, part: Part, now: Instant) -> bool {
        self.failing.get(&part).is_none_or(|f| now >= f.retry_at)
    }

    fn fail(&mut self, part: Part, error: String, now: Instant) {
        let (failures, backoff) = match self.failing.get(&part) {
            Some(f) => (f.failures + 1, (f.backoff * 2).min(MAX_BACKOFF)),
            None => (1, FIRST_BACKOFF),
        };
        tracing::warn!(%part, failures, error = %error, "programming {part} failed; retrying in {backoff:?}, the other parts go on");
        self.failing.insert(
            part,
            PartFailure {
                error,
                failures,
                retry_at: now + backoff,
                backoff,
            },
        );
    }

    fn succeeded(&mut self, part: Part) {
        if let Some(f) = self.failing.remove(&part) {
            tracing::info!(%part, failures = f.failures, "programming {part} works again");
        }
    }

    /// Stages every compiler's part of this reconcile and commits it through `applier`:
    /// one delta while every part works, each part on its own otherwise. Blocks: run it on
    /// the blocking pool.
    pub fn program<A: Applier>(
        &mut self,
        applier: &mut A,
        shared: &Shared,
        inputs: &mut Inputs,
    ) -> Programmed {
        let mut out = Programmed::default();
        if self.failing.is_empty() && inputs.plan.is_ok() {
            match self.together(applier, shared, inputs, &mut out) {
                Ok(()) => return out,
                Err(e) => {
                    tracing::warn!(error = %e, "committing the reconcile failed; committing fabric, services and policy apart")
                }
            }
        }
        let now = inputs.now;
        for part in Part::ALL {
            if !self.due(part, now) {
                continue;
            }
            let r = match part {
                Part::Fabric => self.fabric_alone(applier, inputs, &mut out),
                Part::Services => self.services_alone(applier, shared, inputs, &mut out),
                Part::Policy => self.policy_alone(applier, shared, inputs, &mut out),
            };
            match r {
                Ok(()) => self.succeeded(part),
                Err(e) => {
                    let e = e.to_string();
                    out.failed.push((part, e.clone()));
                    self.fail(part, e, now);
                }
            }
        }
        out
    }

    /// Every part in one delta. On failure nothing of it is in the kernel: the compilers that
    /// staged go back to a full sync, the fabric is applied again.
    fn together<A: Applier>(
        &mut self,
        applier: &mut A,
        shared: &Shared,
        inputs: &mut Inputs,
        out: &mut Programmed,
    ) -> Result<()> {
        let mut staging = Staging::new(applier);
        let mut staged = Together::default();
        let result = self.stage_together(&mut staging, shared, inputs, out, &mut staged);
        let Together {
            services_staged,
            policy_staged,
            services,
            policy,
        } = staged;
        let ok = result.is_ok();
        if let (true, Some(p)) = (services_staged, self.services.as_mut()) {
            p.committed(ok);
        }
        if let (true, Some(p)) = (policy_staged, self.policy.as_mut()) {
            p.committed(ok);
        }
        add_applied(out, &mut staging);
        if ok {
            if out.fabric_applied {
                self.last_plan = inputs.plan.as_ref().ok().cloned();
            }
            out.services = services;
            out.policy = policy;
        } else {
            self.last_plan = None;
            out.fabric_applied = false;
        }
        result
    }

    fn stage_together<A: Applier>(
        &mut self,
        staging: &mut Staging<'_, A>,
        shared: &Shared,
        inputs: &mut Inputs,
        out: &mut Programmed,
        staged: &mut Together,
    ) -> Result<()> {
        if let Ok(plan) = &inputs.plan {
            if self.fabric_due(plan, inputs.forced) {
                out.fabric_applied = true;
                self.stage_fabric(staging, plan)?;
            }
        }
        if let Some(proxy) = self.services.as_mut() {
            let delta = inputs.services.take().unwrap_or_default();
            staged.services_staged = true;
            staged.services = Some(proxy.stage(shared, delta, inputs.node.clone(), staging)?);
        }
        if let Some(enforcer) = self.policy.as_mut() {
            let delta = inputs.policy.take().unwrap_or_default();
            staged.policy_staged = true;
            staged.policy = Some(enforcer.stage(shared, delta, staging)?);
        }
        staging.commit()
    }

    fn fabric_due(&self, plan: &FabricPlan, forced: bool) -> bool {
        forced || self.last_plan.as_ref() != Some(plan)
    }

    /// The fabric, the masquerade table (small: diffed against the node each time), the
    /// conflist, and the removal of the tables of features turned off.
    fn stage_fabric<A: Applier>(
        &self,
        staging: &mut Staging<'_, A>,
        plan: &FabricPlan,
    ) -> Result<()> {
        staging.delta.fabric = Some(plan.clone());
        let masq = sarasa_plan::masquerade::table(&plan.masquerade);
        let id = TableId::of(&masq);
        let tx = staging.diff_table(&id, Some(&masq))?;
        staging.push(id, tx)?;
        for id in &self.removed {
            let tx = staging.diff_table(id, None)?;
            staging.push(id.clone(), tx)?;
        }
        staging.delta.cni = Some(CniPlan {
            mode: self.cni_mode,
            conflist: plan.conflist(self.cni_mode, &self.ipam_data_dir),
        });
        Ok(())
    }

    fn fabric_alone<A: Applier>(
        &mut self,
        applier: &mut A,
        inputs: &Inputs,
        out: &mut Programmed,
    ) -> Result<()> {
        let plan = inputs.plan.as_ref().map_err(|e| Error::Node {
            node: inputs.node.name.clone(),
            reason: e.clone(),
        })?;
        // A part retried after a failure is applied again even when the plan is the same.
        let retry = self.failing.contains_key(&Part::Fabric);
        if !self.fabric_due(plan, inputs.forced || retry) {
            return Ok(());
        }
        let mut staging = Staging::new(applier);
        let r = self
            .stage_fabric(&mut staging, plan)
            .and_then(|()| staging.commit());
        add_applied(out, &mut staging);
        self.last_plan = r.is_ok().then(|| plan.clone());
        out.fabric_applied |= r.is_ok();
        r
    }

    fn services_alone<A: Applier>(
        &mut self,
        applier: &mut A,
        shared: &Shared,
        inputs: &mut Inputs,
        out: &mut Programmed,
    ) -> Result<()> {
        let Some(proxy) = self.services.as_mut() else {
            return Ok(());
        };
        let mut staging = Staging::new(applier);
        let delta = inputs.services.take().unwrap_or_default();
        let r = proxy
            .stage(shared, delta, inputs.node.clone(), &mut staging)
            .and_then(|s| staging.commit().map(|()| s));
        proxy.committed(r.is_ok());
        add_applied(out, &mut staging);
        out.services = Some(r?);
        Ok(())
    }

    fn policy_alone<A: Applier>(
        &mut self,
        applier: &mut A,
        shared: &Shared,
        inputs: &mut Inputs,
        out: &mut Programmed,
    ) -> Result<()> {
        let Some(enforcer) = self.policy.as_mut() else {
            return Ok(());
        };
        let mut staging = Staging::new(applier);
        let delta = inputs.policy.take().unwrap_or_default();
        let r = enforcer
            .stage(shared, delta, &mut staging)
            .and_then(|s| staging.commit().map(|()| s));
        enforcer.committed(r.is_ok());
        add_applied(out, &mut staging);
        drop(staging);
        match r {
            Ok(s) => {
                out.policy = Some(s);
                Ok(())
            }
            Err(e) => {
                // Fail closed: the pods the policies select are isolated until the policy
                // table goes in.
                let mut staging = Staging::new(applier);
                let isolated = enforcer
                    .isolate(shared, &mut staging)
                    .and_then(|n| staging.commit().map(|()| n));
                enforcer.isolated();
                add_applied(out, &mut staging);
                match isolated {
                    Ok(n) => {
                        out.failsafe = Some(n);
                        tracing::warn!(addresses = n, "policy table refused: the pods policies select are isolated by table {}", crate::failsafe::TABLE);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "policy table refused and the failsafe isolation table too")
                    }
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::runtime::watcher::Event;
    use sarasa_model::{Backend, MacAddr};
    use sarasa_nft::{Table, Transaction};
    use sarasa_plan::{LocalNode, PlanDelta, Recording};
    use serde_json::json;

    use crate::netns::NetnsTarget;
    use crate::Error;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn node(name: &str, cidr: &str, ip: &str, mac: &str) -> Node {
        obj(json!({
            "metadata": {"name": name, "annotations": {
                "sarasa.io/public-ip": ip, "sarasa.io/vtep-mac": mac, "sarasa.io/backend": "vxlan"}},
            "spec": {"podCIDR": cidr},
        }))
    }

    fn slice(addresses: &[&str]) -> EndpointSlice {
        let endpoints: Vec<_> = addresses
            .iter()
            .map(|a| json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "n1"}))
            .collect();
        obj(json!({
            "metadata": {"namespace": "default", "name": "web-1",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        }))
    }

    fn deny_ingress(name: &str, app: &str) -> NetworkPolicy {
        obj(json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"]},
        }))
    }

    /// Two nodes, a pod on n1 behind Service `web`, and a policy isolating it, as the first
    /// list of every kind.
    fn cluster() -> Shared {
        let shared = Shared::default();
        shared.update(|w| {
            w.apply_node_event(Event::InitApply(node(
                "n1",
                "10.244.1.0/24",
                "192.168.33.11",
                "02:00:00:00:00:01",
            )));
            w.apply_node_event(Event::InitApply(node(
                "n2",
                "10.244.2.0/24",
                "192.168.33.12",
                "02:00:00:00:00:02",
            )));
            w.apply_node_event(Event::InitDone);
            w.apply_namespace_event(Event::InitApply(obj::<Namespace>(
                json!({"metadata": {"name": "default"}}),
            )));
            w.apply_namespace_event(Event::InitDone);
            w.apply_pod_event(Event::InitApply(obj::<Pod>(json!({
                "metadata": {"namespace": "default", "name": "web", "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
                "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}], "phase": "Running"},
            }))));
            w.apply_pod_event(Event::InitDone);
            w.apply_network_policy_event(Event::InitApply(deny_ingress("isolate-web", "web")));
            w.apply_network_policy_event(Event::InitDone);
            w.apply_service_event(Event::InitApply(obj::<Service>(json!({
                "metadata": {"namespace": "default", "name": "web"},
                "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                         "ports": [{"name": "http", "protocol": "TCP", "port": 80}]},
            }))));
            w.apply_service_event(Event::InitDone);
            w.apply_endpoint_slice_event(Event::InitApply(slice(&["10.244.1.5"])));
            w.apply_endpoint_slice_event(Event::InitDone);
        });
        shared
    }

    fn local() -> LocalNode {
        LocalNode {
            name: "n1".into(),
            backend: Backend::Vxlan,
            underlay_ip: "192.168.33.11".parse().unwrap(),
            uplink: "eth0".into(),
            uplink_mtu: 1500,
            vtep_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            remote_cluster_cidrs: Vec::new(),
            global_egress: Vec::new(),
        }
    }

    fn proxy() -> ServiceProxy {
        let config = sarasa_proxy::ProxyConfig {
            service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            ..sarasa_proxy::ProxyConfig::default()
        };
        ServiceProxy::new(NetnsTarget::Current, config)
    }

    fn program() -> NodeProgram {
        NodeProgram::new(
            Some(proxy()),
            Some(PolicyEnforcer::new("n1", 100)),
            CniMode::Bridge,
            "/var/lib/sarasa/ipam".into(),
        )
    }

    /// One reconcile as the agent runs it: a snapshot, the fabric plan, the program.
    fn reconcile<A: Applier>(
        p: &mut NodeProgram,
        applier: &mut A,
        shared: &Shared,
    ) -> (Programmed, Inputs) {
        reconcile_at(p, applier, shared, Instant::now(), None)
    }

    /// A reconcile at `now`; `bad_plan`: the fabric plan could not be compiled.
    fn reconcile_at<A: Applier>(
        p: &mut NodeProgram,
        applier: &mut A,
        shared: &Shared,
        now: Instant,
        bad_plan: Option<&str>,
    ) -> (Programmed, Inputs) {
        let snap = shared.snapshot(p.services.is_none() || p.services_need_full());
        let me = snap.cluster.node("n1").unwrap().clone();
        let plan = match bad_plan {
            Some(e) => Err(e.to_string()),
            None => Ok(crate::plan::compile(&snap.cluster, &local()).unwrap()),
        };
        let mut inputs = Inputs {
            plan,
            forced: false,
            node: crate::services::proxy_node("n1", "192.168.33.11".parse().unwrap(), &me),
            services: Some(snap.services),
            policy: Some(snap.policy),
            now,
        };
        let r = p.program(applier, shared, &mut inputs);
        // What the agent does with what no compiler took.
        if let (Some(d), true) = (inputs.services.as_ref(), p.services.is_some()) {
            shared.requeue(d);
        }
        if let Some(d) = inputs.policy.as_ref() {
            shared.requeue_policy(d);
        }
        (r, inputs)
    }

    /// Past every backoff.
    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn tables(d: &PlanDelta) -> Vec<&str> {
        d.tables.iter().map(|t| t.table.name.as_str()).collect()
    }

    fn script(d: &PlanDelta, table: &str) -> String {
        d.tables
            .iter()
            .filter(|t| t.table.name == table)
            .map(|t| t.transaction.script())
            .collect()
    }

    /// The shard holding Service default/web.
    fn web_shard(d: &PlanDelta) -> String {
        d.tables
            .iter()
            .find(|t| t.table.name.contains("-svc") && t.transaction.script().contains("web"))
            .map(|t| t.table.name.clone())
            .expect("a shard with default/web")
    }

    #[test]
    fn one_delta_per_reconcile_carries_fabric_services_and_policy() {
        let shared = cluster();
        let mut p = program();
        let mut rec = Recording::default();

        let (r, left) = reconcile(&mut p, &mut rec, &shared);
        let first = r;
        assert!(first.failed.is_empty());
        assert_eq!(first.commits, 1);
        assert!(
            left.services.is_none() && left.policy.is_none(),
            "all consumed"
        );
        assert_eq!(rec.applied.len(), 1, "one delta");
        let d = &rec.applied[0];
        assert_eq!(d.fabric.as_ref().unwrap().remote_nodes, 1);
        assert!(d.cni.as_ref().unwrap().conflist.contains("10.244.1.0/24"));
        let names = tables(d);
        for t in ["sarasa-node", "sarasa", "sarasa-policy"] {
            assert!(names.contains(&t), "{t} not in {names:?}");
        }
        let shard = web_shard(d);
        assert!(script(d, &shard).contains("10.244.1.5"));
        assert!(script(d, "sarasa-policy").contains("ing_default_web"));
        assert_eq!(first.applied.nft_batches, 1);

        // Nothing changed: nothing committed.
        let (r, _) = reconcile(&mut p, &mut rec, &shared);
        assert_eq!(r.commits, 0);
        assert_eq!(rec.applied.len(), 1);

        // A third node, a new endpoint and a new policy: one delta with the fabric, only the
        // web shard and the policy table (incremental, not the 33 proxy tables again).
        shared.update(|w| {
            w.apply_node_event(Event::Apply(node(
                "n3",
                "10.244.3.0/24",
                "192.168.33.13",
                "02:00:00:00:00:03",
            )));
            w.apply_endpoint_slice_event(Event::Apply(slice(&["10.244.1.5", "10.244.1.6"])));
            w.apply_network_policy_event(Event::Apply(deny_ingress("isolate-more", "web")));
        });
        let (r, _) = reconcile(&mut p, &mut rec, &shared);
        let second = r;
        assert_eq!((second.commits, rec.applied.len()), (1, 2));
        let d = &rec.applied[1];
        assert_eq!(d.fabric.as_ref().unwrap().remote_nodes, 2);
        let mut names = tables(d);
        names.sort();
        let mut want = vec![shard.as_str(), "sarasa-node", "sarasa-policy"];
        want.sort();
        assert_eq!(
            names, want,
            "masquerade (fabric changed), web's shard, policy"
        );
        assert!(script(d, &shard).contains("10.244.1.6"));
        assert!(script(d, "sarasa-policy").contains("isolate-more"));
        let report = &second.services.as_ref().unwrap().report;
        assert!(report.changed_objects >= 1 && !report.full);
    }

    /// An applier whose commits fail (the kernel refused the batch); reads an empty node.
    struct Failing;

    impl Applier for Failing {
        type Error = Error;
        fn diff_table(&mut self, id: &TableId, desired: Option<&Table>) -> Result<Transaction> {
            Recording::default()
                .diff_table(id, desired)
                .map_err(|e| match e {})
        }
        fn apply(&mut self, _: &PlanDelta) -> Result<Applied> {
            Err(Error::Apply("batch rejected (test)".into()))
        }
    }

    /// A recording applier whose kernel refuses some deltas: those carrying a table whose
    /// name contains `bad_table`, or (`bad_fabric`) the fabric (a route that cannot be added).
    #[derive(Default)]
    struct Picky {
        rec: Recording,
        bad_table: Option<&'static str>,
        bad_fabric: bool,
    }

    impl Applier for Picky {
        type Error = Error;
        fn diff_table(&mut self, id: &TableId, desired: Option<&Table>) -> Result<Transaction> {
            self.rec.diff_table(id, desired).map_err(|e| match e {})
        }
        fn apply(&mut self, d: &PlanDelta) -> Result<Applied> {
            if let Some(bad) = self.bad_table {
                if d.tables.iter().any(|t| t.table.name.contains(bad)) {
                    return Err(Error::Apply(format!("kernel rejected {bad} (test)")));
                }
            }
            if self.bad_fabric && d.fabric.is_some() {
                return Err(Error::Apply("route: File exists (test)".into()));
            }
            self.rec.apply(d).map_err(|e| match e {})
        }
    }

    fn parts(failed: &[(Part, String)]) -> Vec<Part> {
        failed.iter().map(|(p, _)| *p).collect()
    }

    #[test]
    fn a_failed_commit_sends_every_compiler_back_to_a_full_sync() {
        let shared = cluster();
        let mut p = program();
        let mut rec = Recording::default();
        assert!(reconcile(&mut p, &mut rec, &shared).0.failed.is_empty());

        shared.update(|w| {
            w.apply_endpoint_slice_event(Event::Apply(slice(&["10.244.1.5", "10.244.1.7"])));
            w.apply_network_policy_event(Event::Apply(deny_ingress("isolate-more", "web")));
            w.apply_node_event(Event::Apply(node(
                "n3",
                "10.244.3.0/24",
                "192.168.33.13",
                "02:00:00:00:00:03",
            )));
        });
        let (r, _) = reconcile(&mut p, &mut Failing, &shared);
        // The one delta failed, then each part on its own: all three failed, each reported.
        assert_eq!(
            parts(&r.failed),
            [Part::Fabric, Part::Services, Part::Policy]
        );
        assert!(r.failed[1].1.contains("batch rejected"), "{:?}", r.failed);
        assert!(p.services_need_full(), "services: full sync next");
        assert!(
            p.policy.as_ref().unwrap().needs_full(),
            "policy: full sync next"
        );
        assert_eq!(p.failing().len(), 3);
        assert!(p.next_retry().unwrap() > Instant::now());

        // Before the backoff ends nothing is attempted, and nothing is lost.
        let (r, _) = reconcile(&mut p, &mut rec, &shared);
        assert!(r.failed.is_empty() && r.commits == 0);
        assert_eq!(rec.applied.len(), 1);

        // Once due, with a working kernel: every part programs what failed, each in its own
        // delta (the fabric again, rebuilt tables with the changes)...
        let (r, _) = reconcile_at(&mut p, &mut rec, &shared, later(), None);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert!(p.failing().is_empty());
        assert_eq!((r.commits, rec.applied.len()), (3, 4));
        assert!(r.services.as_ref().unwrap().report.full);
        let fabric = &rec.applied[1];
        assert_eq!(fabric.fabric.as_ref().unwrap().remote_nodes, 2);
        let svc = &rec.applied[2];
        assert!(script(svc, &web_shard(svc)).contains("10.244.1.7"));
        assert!(script(&rec.applied[3], "sarasa-policy").contains("isolate-more"));

        // ...and with every part working again, a reconcile is one delta again.
        shared.update(|w| {
            w.apply_endpoint_slice_event(Event::Apply(slice(&["10.244.1.5", "10.244.1.8"])));
            w.apply_network_policy_event(Event::Apply(deny_ingress("isolate-most", "web")));
        });
        let (r, _) = reconcile(&mut p, &mut rec, &shared);
        assert_eq!((r.commits, rec.applied.len()), (1, 5));
    }

    #[test]
    fn a_service_batch_the_kernel_rejects_does_not_stop_policy() {
        let shared = cluster();
        let mut p = program();
        let mut k = Picky::default();
        assert!(reconcile(&mut p, &mut k, &shared).0.failed.is_empty());

        // The kernel now refuses anything touching the service tables.
        k.bad_table = Some("-svc");
        shared.update(|w| {
            w.apply_endpoint_slice_event(Event::Apply(slice(&["10.244.1.5", "10.244.1.9"])));
            w.apply_network_policy_event(Event::Apply(deny_ingress("isolate-more", "web")));
        });
        let (r, _) = reconcile(&mut p, &mut k, &shared);
        assert_eq!(parts(&r.failed), [Part::Services]);
        assert!(
            r.failed[0].1.contains("kernel rejected -svc"),
            "{:?}",
            r.failed
        );
        assert!(r.policy.is_some(), "policy committed");
        let last = k.rec.applied.last().unwrap();
        assert!(script(last, "sarasa-policy").contains("isolate-more"));

        // While services are in backoff, policy changes keep being programmed, alone.
        shared.update(|w| {
            w.apply_endpoint_slice_event(Event::Apply(slice(&["10.244.1.5", "10.244.1.10"])));
            w.apply_network_policy_event(Event::Apply(deny_ingress("isolate-most", "web")));
        });
        let before = k.rec.applied.len();
        let (r, left) = reconcile(&mut p, &mut k, &shared);
        assert!(r.failed.is_empty(), "services not attempted yet");
        assert!(left.services.is_some(), "their changes are handed back");
        assert_eq!(k.rec.applied.len(), before + 1);
        let last = k.rec.applied.last().unwrap();
        assert_eq!(tables(last), ["sarasa-policy"]);
        assert!(script(last, "sarasa-policy").contains("isolate-most"));

        // The kernel takes service batches again: services recover with a full sync that has
        // every endpoint change made meanwhile.
        k.bad_table = None;
        let (r, _) = reconcile_at(&mut p, &mut k, &shared, later(), None);
        assert!(r.failed.is_empty() && p.failing().is_empty());
        let svc = r.services.unwrap();
        assert!(svc.report.full);
        let all: String = k.rec.applied[before + 1..]
            .iter()
            .map(|d| {
                d.tables
                    .iter()
                    .map(|t| t.transaction.script())
                    .collect::<String>()
            })
            .collect();
        assert!(all.contains("10.244.1.10"), "{all}");
    }

    #[test]
    fn a_bad_node_does_not_stop_services_or_policy() {
        let shared = cluster();
        let mut p = program();
        let mut k = Picky::default();
        assert!(reconcile(&mut p, &mut k, &shared).0.failed.is_empty());

        // A plan that cannot be compiled (a conflicting or malformed Node).
        shared.update(|w| {
            w.apply_endpoint_slice_event(Event::Apply(slice(&["10.244.1.5", "10.244.1.11"])));
            w.apply_network_policy_event(Event::Apply(deny_ingress("isolate-more", "web")));
        });
        let (r, _) = reconcile_at(
            &mut p,
            &mut k,
            &shared,
            Instant::now(),
            Some("node n9: podCIDR 10.244.1.0/24 conflicts with n1"),
        );
        assert_eq!(parts(&r.failed), [Part::Fabric]);
        assert!(r.failed[0].1.contains("conflicts with n1"));
        let svc = r.services.expect("services committed");
        assert_eq!(svc.report.changed_objects, 1);
        assert!(r.policy.is_some(), "policy committed");
        let scripts: String = k.rec.applied[1..]
            .iter()
            .flat_map(|d| d.tables.iter().map(|t| t.transaction.script()))
            .collect();
        assert!(scripts.contains("10.244.1.11") && scripts.contains("isolate-more"));
        assert!(k.rec.applied[1..].iter().all(|d| d.fabric.is_none()));

        // A fabric the kernel refuses (a route that collides) fails the fabric alone too.
        k.bad_fabric = true;
        shared.update(|w| {
            w.apply_node_event(Event::Apply(node(
                "n3",
                "10.244.3.0/24",
                "192.168.33.13",
                "02:00:00:00:00:03",
            )));
            w.apply_endpoint_slice_event(Event::Apply(slice(&["10.244.1.5", "10.244.1.12"])));
        });
        let (r, _) = reconcile_at(&mut p, &mut k, &shared, later(), None);
        assert_eq!(parts(&r.failed), [Part::Fabric]);
        assert!(r.failed[0].1.contains("File exists"));
        assert_eq!(r.services.unwrap().report.changed_objects, 1);

        // Fixed: the fabric is applied again, then everything is one delta again.
        k.bad_fabric = false;
        let due = p.next_retry().unwrap();
        let (r, _) = reconcile_at(&mut p, &mut k, &shared, due, None);
        assert!(r.failed.is_empty() && r.fabric_applied);
        assert_eq!(
            k.rec
                .applied
                .last()
                .unwrap()
                .fabric
                .as_ref()
                .unwrap()
                .remote_nodes,
            2
        );
    }

    fn pod_on_n1(name: &str, app: &str, ip: &str) -> Pod {
        obj(json!({
            "metadata": {"namespace": "default", "name": name, "labels": {"app": app}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}], "phase": "Running"},
        }))
    }

    #[test]
    fn a_policy_table_the_kernel_rejects_isolates_the_selected_pods() {
        let shared = cluster();
        let mut p = program();
        let mut k = Picky::default();
        assert!(reconcile(&mut p, &mut k, &shared).0.failed.is_empty());

        // The kernel now refuses the policy table; a new pod the policy selects and one it
        // does not arrive.
        k.bad_table = Some("sarasa-policy");
        shared.update(|w| {
            w.apply_pod_event(Event::Apply(pod_on_n1("web-2", "web", "10.244.1.6")));
            w.apply_pod_event(Event::Apply(pod_on_n1("other", "other", "10.244.1.7")));
        });
        let (r, _) = reconcile(&mut p, &mut k, &shared);
        assert_eq!(parts(&r.failed), [Part::Policy]);
        assert_eq!(r.failsafe, Some(2), "web and web-2 isolated");
        let last = k.rec.applied.last().unwrap();
        assert_eq!(tables(last), [crate::failsafe::TABLE], "a delta of its own");
        let text = script(last, crate::failsafe::TABLE);
        assert!(
            text.contains("ip daddr { 10.244.1.5, 10.244.1.6 }") && text.contains("drop"),
            "{text}"
        );
        assert!(
            !text.contains("10.244.1.7"),
            "unselected pods stay open: {text}"
        );
        // The node now holds it (the recording applier does not track tables itself).
        let held = sarasa_nft::KernelTable {
            family: Family::Inet,
            name: crate::failsafe::TABLE.into(),
            chains: Default::default(),
            sets: Default::default(),
        };
        k.rec.kernel.insert(crate::failsafe::id(), held);

        // Retried while still refused: the failsafe follows the pods (a third one).
        shared.update(|w| {
            w.apply_pod_event(Event::Apply(pod_on_n1("web-3", "web", "10.244.1.8")));
        });
        let due = p.next_retry().unwrap();
        let (r, _) = reconcile_at(&mut p, &mut k, &shared, due, None);
        assert_eq!(parts(&r.failed), [Part::Policy]);
        assert_eq!(r.failsafe, Some(3));

        // The kernel takes the policy table again: it goes in with the failsafe's removal, in
        // one delta, so the pods are never open in between.
        k.bad_table = None;
        let (r, _) = reconcile_at(&mut p, &mut k, &shared, later(), None);
        assert!(
            r.failed.is_empty() && r.failsafe.is_none(),
            "{:?}",
            r.failed
        );
        let last = k.rec.applied.last().unwrap();
        assert!(script(last, "sarasa-policy").contains("ing_default_web"));
        assert!(
            script(last, crate::failsafe::TABLE).contains("delete table inet sarasa-failsafe"),
            "{:?}",
            tables(last)
        );
    }

    #[test]
    fn features_turned_off_remove_their_tables() {
        let shared = cluster();
        let mut p = NodeProgram::new(None, None, CniMode::Bridge, "/var/lib/sarasa/ipam".into());
        // The node holds the tables of an earlier configuration that had both on.
        let mut rec = Recording::default();
        {
            let mut full = program();
            reconcile(&mut full, &mut rec, &shared);
            let d = &rec.applied[0];
            for t in &d.tables {
                let held = sarasa_nft::KernelTable {
                    family: t.table.family,
                    name: t.table.name.clone(),
                    chains: Default::default(),
                    sets: Default::default(),
                };
                rec.kernel.insert(t.table.clone(), held);
            }
        }
        let held = rec.kernel.len();
        assert!(
            held > 3,
            "sarasa-node, sarasa, shards, sarasa-policy: {held}"
        );
        let (r, _) = reconcile(&mut p, &mut rec, &shared);
        assert!(r.failed.is_empty());
        assert!(r.services.is_none() && r.policy.is_none());
        let d = rec.applied.last().unwrap();
        let deleted: Vec<&str> = d
            .tables
            .iter()
            .filter(|t| t.transaction.script().contains("delete table"))
            .map(|t| t.table.name.as_str())
            .collect();
        assert!(deleted.contains(&"sarasa-policy"), "{deleted:?}");
        assert!(deleted.contains(&"sarasa"), "{deleted:?}");
        assert!(deleted.contains(&"sarasa-svc00"), "{deleted:?}");
        assert!(
            !deleted.contains(&"sarasa-node"),
            "the masquerade table stays"
        );
        assert_eq!(deleted.len(), held - 1);
    }
}
