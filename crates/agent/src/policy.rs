//! NetworkPolicy on the node: feeds Namespaces, Pods (of every node: selectors match pods
//! anywhere), NetworkPolicies and node addresses to a long-lived
//! [`sarasa_policy::PolicyCompiler`] that only enforces for this node's pods (ingress at the
//! destination's node, egress at the source's), and applies its transactions to table
//! `inet sarasa-policy` (hooked at `forward`, after service DNAT, so service traffic is judged on
//! pod addresses).
//!
//! As for services: the first sync (and any after a failure) diffs the whole table against the
//! kernel, never flushing it; later syncs send one transaction for all changed objects. An
//! invalid NetworkPolicy is logged and left out; the others keep being enforced.
//!
//! The compiler's [`PolicyState`] is published (copied on change) for the drop-log reader
//! ([`crate::droplog`]) which names pods and policies of logged drops.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sarasa_nft::{Family, NetlinkBackend, Transaction};
use sarasa_policy::{
    CompileOptions, NetworkPolicy, PodKey, PolicyCompiler, PolicyNamespace, PolicyPod, PolicyState,
    TABLE,
};

use crate::error::{Error, Result};
use crate::netns::NetnsTarget;
use sarasa_cluster::objects::{changes, Change, Converted};
use sarasa_cluster::ClusterState;

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySyncReport {
    pub full: bool,
    pub changed_objects: usize,
    pub ops: usize,
    /// Policies enforced (valid ones).
    pub policies: usize,
    /// Policies left out because they are invalid.
    pub invalid: usize,
    pub duration: Duration,
}

/// The policy state the drop-log reader resolves addresses against.
pub type SharedPolicyState = Arc<Mutex<PolicyState>>;

/// The node's NetworkPolicy enforcement.
pub struct PolicyEnforcer {
    target: NetnsTarget,
    opts: CompileOptions,
    compiler: Option<PolicyCompiler>,
    pods: BTreeMap<String, Converted<PolicyPod>>,
    namespaces: BTreeMap<String, Converted<PolicyNamespace>>,
    policies: BTreeMap<String, Converted<NetworkPolicy>>,
    nodes: BTreeMap<String, Vec<IpAddr>>,
    netlink: Option<NetlinkBackend>,
    shared: SharedPolicyState,
    dirty: bool,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Config(format!("blocking task failed: {e}")))
}

/// Every node's addresses (underlay and InternalIP): traffic between a pod and its node is
/// allowed, as Kubernetes documents.
fn node_addresses(state: &ClusterState) -> BTreeMap<String, Vec<IpAddr>> {
    state
        .nodes
        .items()
        .iter()
        .map(|(name, n)| {
            let mut a: Vec<IpAddr> = n.public_ip.into_iter().chain(n.internal_ip).collect();
            a.sort();
            a.dedup();
            (name.clone(), a)
        })
        .collect()
}

impl PolicyEnforcer {
    /// Enforcement for the pods of `node`, logging drops to nflog `log_group`.
    pub fn new(target: NetnsTarget, node: &str, log_group: u16) -> Self {
        PolicyEnforcer {
            target,
            opts: CompileOptions {
                node: Some(node.to_string()),
                log_group,
                ..CompileOptions::default()
            },
            compiler: None,
            pods: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            policies: BTreeMap::new(),
            nodes: BTreeMap::new(),
            netlink: None,
            shared: Arc::new(Mutex::new(PolicyState::new())),
            dirty: true,
        }
    }

    pub fn options(&self) -> &CompileOptions {
        &self.opts
    }

    /// The state drop events are resolved against (updated after each sync).
    pub fn shared_state(&self) -> SharedPolicyState {
        self.shared.clone()
    }

    /// Programs the policies of `state` for this node's pods.
    pub async fn sync(&mut self, state: &ClusterState) -> Result<PolicySyncReport> {
        let started = Instant::now();
        let mut report = PolicySyncReport::default();
        let new_pods = state.policy_pods.items();
        let new_namespaces = state.namespaces.items();
        let new_policies = state.network_policies.items();
        let new_nodes = node_addresses(state);
        // IPv6 is policed as soon as any pod has an IPv6 address (a family not compiled is
        // not policed at all); switching means a full rebuild.
        let ipv6 = new_pods
            .values()
            .filter_map(|p| p.as_ref().ok())
            .any(|p| p.ips.iter().any(IpAddr::is_ipv6));
        let mut changed = false;

        if self.dirty || ipv6 != self.opts.ipv6 {
            if self.compiler.is_none() {
                ensure_bridge_netfilter(&self.target).await;
            }
            self.opts.ipv6 = ipv6;
            let mut ps = PolicyState::new();
            for ns in new_namespaces.values().filter_map(|n| n.as_ref().ok()) {
                ps.apply_namespace(PolicyNamespace::clone(ns));
            }
            for (key, pod) in new_pods {
                match pod {
                    Ok(p) => ps.apply_pod(PolicyPod::clone(p)),
                    Err(e) => tracing::warn!(pod = %key, error = %e, "pod left out of policy"),
                }
            }
            for (name, addrs) in &new_nodes {
                ps.apply_node(name.clone(), addrs.clone());
            }
            for (key, np) in new_policies {
                let r = match np {
                    Ok(np) => ps
                        .apply_policy(NetworkPolicy::clone(np))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.clone()),
                };
                if let Err(e) = r {
                    report.invalid += 1;
                    tracing::warn!(networkpolicy = %key, error = %e, "invalid NetworkPolicy not enforced");
                }
            }
            self.compiler = None;
            let compiler = PolicyCompiler::new(ps, self.opts.clone());
            let desired = compiler.table().clone();
            let target = self.target.clone();
            let backend = self.netlink.take();
            let (backend, result) = blocking(move || {
                let mut backend = match backend.map_or_else(|| crate::nftables::open(&target), Ok) {
                    Ok(b) => b,
                    Err(e) => return (None, Err(e)),
                };
                let r = crate::nftables::reconcile(&mut backend, &desired);
                (Some(backend), r)
            })
            .await?;
            self.netlink = backend;
            let tx = result.map_err(|e| {
                Error::Nft(format!("reconcile policy table against the kernel: {e}"))
            })?;
            report.full = true;
            report.ops = tx.commands.len();
            report.changed_objects = new_pods.len() + new_namespaces.len() + new_policies.len();
            self.compiler = Some(compiler);
            self.dirty = false;
            changed = true;
        } else if let Some(pc) = self.compiler.as_mut() {
            // Namespaces and nodes first, pods next, policies last: a policy's peers resolve
            // against the newest pods and labels.
            for c in changes(&self.namespaces, new_namespaces) {
                report.changed_objects += 1;
                match c {
                    Change::Upsert(_, ns) => pc.apply_namespace(PolicyNamespace::clone(ns)),
                    Change::Delete(_, ns) => pc.delete_namespace(&ns.name),
                    Change::Invalid(..) => {}
                }
            }
            for (name, addrs) in &new_nodes {
                if self.nodes.get(name) != Some(addrs) {
                    report.changed_objects += 1;
                    pc.apply_node(name, addrs.clone());
                }
            }
            for name in self.nodes.keys().filter(|n| !new_nodes.contains_key(*n)) {
                report.changed_objects += 1;
                pc.delete_node(name);
            }
            for c in changes(&self.pods, new_pods) {
                report.changed_objects += 1;
                match c {
                    Change::Upsert(_, p) => pc.apply_pod(PolicyPod::clone(p)),
                    Change::Delete(_, p) => pc.delete_pod(&PodKey::new(&p.namespace, &p.name)),
                    Change::Invalid(k, e) => {
                        tracing::warn!(pod = %k, error = %e, "pod left out of policy")
                    }
                }
            }
            for c in changes(&self.policies, new_policies) {
                report.changed_objects += 1;
                match c {
                    Change::Upsert(k, np) => {
                        if let Err(e) = pc.apply_policy(NetworkPolicy::clone(np)) {
                            // The previous version (if any) is withdrawn: an object the API
                            // holds in a form we cannot enforce must not keep old rules.
                            pc.delete_policy(&np.key());
                            tracing::warn!(networkpolicy = %k, error = %e, "invalid NetworkPolicy not enforced");
                        }
                    }
                    Change::Delete(_, np) => pc.delete_policy(&np.key()),
                    Change::Invalid(k, e) => {
                        tracing::warn!(networkpolicy = %k, error = %e, "invalid NetworkPolicy not enforced")
                    }
                }
            }
            let tx = pc.take_transaction();
            report.ops = tx.commands.len();
            if let Err(e) = self.apply(tx).await {
                self.dirty = true;
                return Err(e);
            }
            changed = report.changed_objects > 0;
        }
        self.pods = new_pods.clone();
        self.namespaces = new_namespaces.clone();
        self.policies = new_policies.clone();
        self.nodes = new_nodes;
        if let Some(pc) = &self.compiler {
            report.policies = pc.state().policies().count();
            if changed {
                let copy = pc.state().clone();
                match self.shared.lock() {
                    Ok(mut g) => *g = copy,
                    Err(p) => *p.into_inner() = copy,
                }
            }
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    async fn apply(&mut self, tx: Transaction) -> Result<()> {
        if tx.is_empty() {
            return Ok(());
        }
        let backend = self.netlink.take();
        let target = self.target.clone();
        let (backend, result) = blocking(move || {
            let mut backend = match backend.map_or_else(|| crate::nftables::open(&target), Ok) {
                Ok(b) => b,
                Err(e) => return (None, Err(e)),
            };
            let r = backend.apply_to(Family::Inet, TABLE, &tx).map(|_| ());
            (Some(backend), r)
        })
        .await?;
        self.netlink = backend;
        result.map_err(|e| Error::Nft(format!("apply policy update: {e}")))
    }
}

const BRIDGE_NF: [&str; 2] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

/// Pods on one node bridge (`--cni-mode bridge`) talk without routing; their packets meet the
/// `forward` hook only with bridge netfilter on in the node's namespace (the sysctl is per
/// namespace, default on once `br_netfilter` is loaded). Turns it on there; without the module
/// same-node traffic on a bridge is not policed, which is logged.
async fn ensure_bridge_netfilter(target: &NetnsTarget) {
    let r = crate::netns::run_in(target, || {
        let mut missing = false;
        for path in BRIDGE_NF {
            match std::fs::read_to_string(path) {
                Ok(v) if v.trim() == "1" => {}
                Ok(_) => std::fs::write(path, "1").map_err(|source| Error::Sysctl {
                    key: path.to_string(),
                    source,
                })?,
                Err(_) => missing = true,
            }
        }
        Ok(missing)
    })
    .await;
    match r {
        Ok(false) => {}
        Ok(true) => tracing::warn!(
            "br_netfilter is not loaded: traffic between pods on one node bridge is not policed"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot enable bridge netfilter"),
    }
}

/// Publishes a sync's figures.
pub fn record(metrics: &crate::health::Metrics, report: &PolicySyncReport) {
    use std::sync::atomic::Ordering::Relaxed;
    metrics
        .network_policies
        .store(report.policies as u64, Relaxed);
    metrics
        .last_policy_sync_micros
        .store(report.duration.as_micros() as u64, Relaxed);
}
