//! One reconcile's programming, apart from the API and the async loop (`agent`): the
//! compilers — fabric and masquerade ([`sarasa_plan`]), the service proxy
//! ([`crate::services`]), NetworkPolicy ([`crate::policy`]) — stage their parts of this
//! reconcile's [`sarasa_plan::PlanDelta`] (the incremental transactions they already compute;
//! a full diff against the node only on a full sync), and one [`Applier::apply`] commits it.
//! Generic over the applier, so tests drive it with [`sarasa_plan::Recording`] and a failing
//! one, without a kernel.
//!
//! A failed commit leaves the kernel without any of it: every compiler that staged goes back
//! to a full sync (a rebuild from every object, diffed against the node), the fabric is
//! applied again next time, and changes that were never handed to a compiler are given back
//! to the caller to requeue.

use std::path::PathBuf;

use sarasa_cluster::watch::Shared;
use sarasa_cluster::{PolicyDelta, ServiceDelta};
use sarasa_model::{CniMode, NodeInfo};
use sarasa_plan::{Applied, Applier, CniPlan, FabricPlan, TableId};

use crate::error::Result;
use crate::policy::{PolicyEnforcer, StagedPolicy};
use crate::services::{ServiceProxy, StagedServices};
use crate::staging::Staging;

/// What one reconcile programs from.
#[derive(Debug)]
pub struct Inputs {
    /// The fabric plan compiled from the cluster state.
    pub plan: FabricPlan,
    /// Re-apply the fabric, masquerade table and conflist against the node even when the plan
    /// did not change (periodic resync, retry after a failure).
    pub forced: bool,
    /// This node as the service proxy sees it.
    pub node: NodeInfo,
    /// Service changes; taken when handed to the proxy (what is left was not consumed).
    pub services: Option<ServiceDelta>,
    /// Policy changes; taken when handed to the enforcer.
    pub policy: Option<PolicyDelta>,
}

/// What one reconcile programmed.
#[derive(Debug, Default)]
pub struct Programmed {
    /// What the applier did, over every delta committed.
    pub applied: Applied,
    /// Deltas committed: 1, 0 when nothing changed, more only for a full sync of a big
    /// ruleset ([`crate::staging::FLUSH_OPS`]).
    pub commits: usize,
    /// The fabric, masquerade table and conflist were (re)applied.
    pub fabric_applied: bool,
    pub services: StagedServices,
    pub policy: Option<StagedPolicy>,
}

/// The node's compilers and what they last committed.
pub struct NodeProgram {
    pub services: ServiceProxy,
    pub policy: Option<PolicyEnforcer>,
    cni_mode: CniMode,
    ipam_data_dir: PathBuf,
    /// The fabric plan of the last successful commit.
    last_plan: Option<FabricPlan>,
}

impl NodeProgram {
    pub fn new(
        services: ServiceProxy,
        policy: Option<PolicyEnforcer>,
        cni_mode: CniMode,
        ipam_data_dir: PathBuf,
    ) -> Self {
        NodeProgram {
            services,
            policy,
            cni_mode,
            ipam_data_dir,
            last_plan: None,
        }
    }

    /// Stages every compiler's part of this reconcile and commits it through `applier`.
    /// Blocks: run it on the blocking pool.
    pub fn program<A: Applier>(
        &mut self,
        applier: &mut A,
        shared: &Shared,
        inputs: &mut Inputs,
    ) -> Result<Programmed> {
        let mut staging = Staging::new(applier);
        let mut out = Programmed::default();
        let mut services_staged = false;
        let mut policy_staged = false;
        let result = self.stage_and_commit(
            &mut staging,
            shared,
            inputs,
            &mut out,
            &mut services_staged,
            &mut policy_staged,
        );
        let ok = result.is_ok();
        if services_staged {
            self.services.committed(ok);
        }
        if let (true, Some(p)) = (policy_staged, self.policy.as_mut()) {
            p.committed(ok);
        }
        self.last_plan = ok.then(|| inputs.plan.clone());
        out.applied = std::mem::take(&mut staging.applied);
        out.commits = staging.commits;
        result.map(|()| out)
    }

    fn stage_and_commit<A: Applier>(
        &mut self,
        staging: &mut Staging<'_, A>,
        shared: &Shared,
        inputs: &mut Inputs,
        out: &mut Programmed,
        services_staged: &mut bool,
        policy_staged: &mut bool,
    ) -> Result<()> {
        let plan = &inputs.plan;
        if inputs.forced || self.last_plan.as_ref() != Some(plan) {
            out.fabric_applied = true;
            staging.delta.fabric = Some(plan.clone());
            // The masquerade table is small: diffed against the node each time the fabric is.
            let masq = sarasa_plan::masquerade::table(&plan.masquerade);
            let id = TableId::of(&masq);
            let tx = staging.diff_table(&id, Some(&masq))?;
            staging.push(id, tx)?;
            staging.delta.cni = Some(CniPlan {
                mode: self.cni_mode,
                conflist: crate::cni_config::render(
                    &plan.pod_cidrs,
                    self.cni_mode,
                    plan.mtu,
                    &self.ipam_data_dir,
                ),
            });
        }
        let services = inputs.services.take().unwrap_or_default();
        *services_staged = true;
        out.services = self
            .services
            .stage(shared, services, inputs.node.clone(), staging)?;
        if let Some(policy) = self.policy.as_mut() {
            let delta = inputs.policy.take().unwrap_or_default();
            *policy_staged = true;
            out.policy = Some(policy.stage(shared, delta, staging)?);
        }
        staging.commit()
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
        }
    }

    fn program() -> NodeProgram {
        let config = sarasa_proxy::ProxyConfig {
            service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            ..sarasa_proxy::ProxyConfig::default()
        };
        NodeProgram::new(
            ServiceProxy::new(NetnsTarget::Current, config),
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
    ) -> (Result<Programmed>, Inputs) {
        let snap = shared.snapshot(p.services.needs_full());
        let me = snap.cluster.node("n1").unwrap().clone();
        let plan = crate::plan::compile(&snap.cluster, &local()).unwrap();
        let mut inputs = Inputs {
            plan,
            forced: false,
            node: crate::services::proxy_node("n1", "192.168.33.11".parse().unwrap(), &me),
            services: Some(snap.services),
            policy: Some(snap.policy),
        };
        let r = p.program(applier, shared, &mut inputs);
        (r, inputs)
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
        let first = r.unwrap();
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
        assert_eq!(r.unwrap().commits, 0);
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
        let second = r.unwrap();
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
        assert!(second.services.report.changed_objects >= 1 && !second.services.report.full);
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

    /// An applier that cannot even read the node.
    struct Unreadable;

    impl Applier for Unreadable {
        type Error = Error;
        fn diff_table(&mut self, _: &TableId, _: Option<&Table>) -> Result<Transaction> {
            Err(Error::Nft("read back (test)".into()))
        }
        fn apply(&mut self, _: &PlanDelta) -> Result<Applied> {
            Err(Error::Nft("unreachable (test)".into()))
        }
    }

    #[test]
    fn a_failed_commit_sends_every_compiler_back_to_a_full_sync() {
        let shared = cluster();
        let mut p = program();
        let mut rec = Recording::default();
        reconcile(&mut p, &mut rec, &shared).0.unwrap();

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
        let (r, left) = reconcile(&mut p, &mut Failing, &shared);
        let err = r.unwrap_err().to_string();
        assert!(err.contains("batch rejected"), "{err}");
        assert!(left.services.is_none(), "fed to the proxy, not requeued");
        assert!(p.services.needs_full(), "services: full sync next");
        assert!(
            p.policy.as_ref().unwrap().needs_full(),
            "policy: full sync next"
        );

        // The next reconcile (a working applier) programs everything that failed, in one
        // delta: the fabric again, and the rebuilt tables with the changes.
        let (r, _) = reconcile(&mut p, &mut rec, &shared);
        let again = r.unwrap();
        assert_eq!((again.commits, rec.applied.len()), (1, 2));
        assert!(again.services.report.full);
        let d = &rec.applied[1];
        assert_eq!(d.fabric.as_ref().unwrap().remote_nodes, 2);
        let shard = web_shard(d);
        assert!(script(d, &shard).contains("10.244.1.7"));
        assert!(script(d, "sarasa-policy").contains("isolate-more"));
    }

    #[test]
    fn changes_no_compiler_took_are_handed_back() {
        let shared = cluster();
        let mut p = program();
        reconcile(&mut p, &mut Recording::default(), &shared)
            .0
            .unwrap();
        shared.update(|w| {
            w.apply_node_event(Event::Apply(node(
                "n3",
                "10.244.3.0/24",
                "192.168.33.13",
                "02:00:00:00:00:03",
            )));
            w.apply_endpoint_slice_event(Event::Apply(slice(&["10.244.1.8"])));
            w.apply_network_policy_event(Event::Apply(deny_ingress("isolate-more", "web")));
        });
        let (r, left) = reconcile(&mut p, &mut Unreadable, &shared);
        assert!(r.unwrap_err().to_string().contains("read back"));
        // The masquerade table (the fabric changed) could not be read: the proxy and policy
        // never saw their changes, which go back to the caller to requeue; their compilers
        // are still in step with the node.
        assert_eq!(left.services.unwrap().len(), 1);
        assert!(!left.policy.unwrap().is_empty());
        assert!(!p.services.needs_full());
        assert!(!p.policy.as_ref().unwrap().needs_full());
    }
}
