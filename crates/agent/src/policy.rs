//! NetworkPolicy on the node: feeds Namespaces, Pods (of every node: selectors match pods
//! anywhere), NetworkPolicies and node addresses to a long-lived
//! [`sarasa_policy::PolicyCompiler`] that only enforces for this node's pods (ingress at the
//! destination's node, egress at the source's), and stages its transactions for table
//! `inet sarasa-policy` (hooked at `forward`, after service DNAT, so service traffic is judged on
//! pod addresses) in the reconcile's plan delta, committed with the other tables by the agent's
//! one applier ([`crate::staging`]).
//!
//! As for services: the first sync (and any after a failed commit) diffs the whole table against
//! the kernel, never flushing it; later syncs feed the changes journaled since the previous one
//! ([`PolicyDelta`], through the cluster view's `Consumer` interface) to the compiler and stage
//! one transaction for all of them. An invalid NetworkPolicy is logged and left out; the others
//! keep being enforced. Which pods are policed, and each node's addresses, follow the cluster
//! view's rule ([`sarasa_cluster::policy_objects`]), the one `sarasa policy matrix` uses.
//!
//! The compiler's [`PolicyState`] is published (copied on change) for the drop-log reader
//! ([`crate::droplog`]) which names pods and policies of logged drops.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sarasa_cluster::objects::{NETWORK_POLICY, POD};
use sarasa_cluster::watch::Shared;
use sarasa_cluster::{build_policy_state, Fed, PolicyDelta};
use sarasa_nft::Family;
use sarasa_plan::{Applier, TableId};
use sarasa_policy::{CompileOptions, PolicyCompiler, PolicyState, TABLE};

use crate::error::{Error, Result};
use crate::netns::NetnsTarget;
use crate::staging::Staging;

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySyncReport {
    pub full: bool,
    pub changed_objects: usize,
    pub ops: usize,
    /// Policies enforced (valid ones).
    pub policies: usize,
    /// Policies this sync left out because they are invalid.
    pub invalid: usize,
    pub duration: Duration,
}

/// The policy state the drop-log reader resolves addresses against.
pub type SharedPolicyState = Arc<Mutex<PolicyState>>;

/// The node's NetworkPolicy enforcement.
pub struct PolicyEnforcer {
    opts: CompileOptions,
    compiler: Option<PolicyCompiler>,
    shared: SharedPolicyState,
    /// The next sync must rebuild from every object and diff the table against the kernel.
    full_pending: bool,
    /// The failsafe isolation table ([`crate::failsafe`]) may be on the node (at start: left
    /// by an earlier run): the next sync removes it in the policy table's delta.
    failsafe: bool,
}

/// IPv6 is policed as soon as any pod has an IPv6 address (a family not compiled is not
/// policed at all); switching means a full rebuild.
fn any_ipv6(state: &PolicyState) -> bool {
    state.pods().any(|p| p.ips.iter().any(IpAddr::is_ipv6))
}

/// Logs what a sync left out; returns the number of NetworkPolicies among it.
fn log_rejected(fed: &Fed) -> usize {
    for r in &fed.rejected {
        match r.kind {
            NETWORK_POLICY => {
                tracing::warn!(networkpolicy = %r.key, error = %r.reason, "invalid NetworkPolicy not enforced")
            }
            POD => tracing::warn!(pod = %r.key, error = %r.reason, "pod left out of policy"),
            kind => tracing::warn!(kind, object = %r.key, error = %r.reason, "left out of policy"),
        }
    }
    fed.rejected_of(NETWORK_POLICY).count()
}

impl PolicyEnforcer {
    /// Enforcement for the pods of `node`, logging drops to nflog `log_group`.
    pub fn new(node: &str, log_group: u16) -> Self {
        PolicyEnforcer {
            opts: CompileOptions {
                node: Some(node.to_string()),
                log_group,
                ..CompileOptions::default()
            },
            compiler: None,
            shared: Arc::new(Mutex::new(PolicyState::new())),
            full_pending: true,
            failsafe: true,
        }
    }

    pub fn options(&self) -> &CompileOptions {
        &self.opts
    }

    /// The state drop events are resolved against (updated after each sync).
    pub fn shared_state(&self) -> SharedPolicyState {
        self.shared.clone()
    }

    /// The next sync rebuilds from every object (first sync, after a failure).
    pub fn needs_full(&self) -> bool {
        self.full_pending || self.compiler.is_none()
    }

    /// Feeds `delta` (the policy inputs changed since the last sync) to the compiler and
    /// stages its transaction; when a full sync is due, rebuilds from every object in
    /// `cluster` and stages the table against what the node holds. Blocks (the applier reads
    /// the kernel): call it from the blocking pool. Until [`PolicyEnforcer::committed`] says
    /// the delta went in, the next sync is a full one.
    pub fn stage<A: Applier>(
        &mut self,
        cluster: &Shared,
        delta: PolicyDelta,
        staging: &mut Staging<'_, A>,
    ) -> Result<StagedPolicy> {
        let mut staged = StagedPolicy {
            started: Some(Instant::now()),
            ..StagedPolicy::default()
        };
        let report = &mut staged.report;
        let mut delta = Some(delta);
        let id = TableId {
            family: Family::Inet,
            name: TABLE.to_string(),
        };

        if let (false, Some(pc)) = (self.full_pending, self.compiler.as_mut()) {
            let pods_changed = delta.as_ref().is_some_and(|d| !d.pods.is_empty());
            let fed = delta.take().unwrap_or_default().feed(pc);
            report.changed_objects = fed.changed();
            report.invalid = log_rejected(&fed);
            if pods_changed && any_ipv6(pc.state()) != self.opts.ipv6 {
                // A family appeared or went: compile both anew (below).
                self.full_pending = true;
            } else {
                let tx = pc.take_transaction();
                report.ops = tx.commands.len();
                staging.push(id.clone(), tx)?;
                staged.changed = report.changed_objects > 0;
            }
        }

        if self.full_pending || self.compiler.is_none() {
            // Every object (the partial delta, fed or not, is subsumed by them); until the
            // commit succeeds, a full sync stays pending.
            let all = match delta.take() {
                Some(d) if d.complete() => d,
                _ => cluster.all_policy(),
            };
            self.compiler = None;
            self.full_pending = true;
            let (ps, fed) = build_policy_state(all);
            report.changed_objects = fed.changed();
            report.invalid = log_rejected(&fed);
            self.opts.ipv6 = any_ipv6(&ps);
            let compiler = PolicyCompiler::new(ps, self.opts.clone());
            let tx = staging.diff_table(&id, Some(compiler.table()))?;
            report.full = true;
            report.ops = tx.commands.len();
            staging.push(id, tx)?;
            self.compiler = Some(compiler);
            staged.changed = true;
        }
        if self.failsafe {
            let failsafe = crate::failsafe::id();
            let tx = staging.diff_table(&failsafe, None)?;
            staging.push(failsafe, tx)?;
        }
        if let Some(pc) = &self.compiler {
            report.policies = pc.state().policies().count();
        }
        Ok(staged)
    }

    /// Whether the delta holding the staged transaction was committed. When it was not, the
    /// kernel holds none of it: the next sync rebuilds and diffs the whole table.
    pub fn committed(&mut self, ok: bool) {
        self.full_pending = !ok;
        if ok {
            self.failsafe = false;
        }
    }

    /// After the policy part failed: stages, for a delta of its own, the failsafe table
    /// isolating this node's pods that some policy selects ([`crate::failsafe`]), from the
    /// state the compiler last built (every object when it has none). Returns how many pod
    /// addresses it isolates; commit `staging`, then call [`PolicyEnforcer::isolated`].
    pub fn isolate<A: Applier>(
        &mut self,
        cluster: &Shared,
        staging: &mut Staging<'_, A>,
    ) -> Result<usize> {
        let node = self.opts.node.as_deref();
        let isolated = match &self.compiler {
            Some(pc) => crate::failsafe::Isolated::of(pc.state(), node),
            None => {
                let (ps, _) = build_policy_state(cluster.all_policy());
                crate::failsafe::Isolated::of(&ps, node)
            }
        };
        let id = crate::failsafe::id();
        let tx = staging.diff_table(&id, Some(&crate::failsafe::table(&isolated)))?;
        staging.push(id, tx)?;
        Ok(isolated.ingress.len() + isolated.egress.len())
    }

    /// Whether the failsafe table staged by [`PolicyEnforcer::isolate`] went in (or may have):
    /// the next policy commit removes it.
    pub fn isolated(&mut self) {
        self.failsafe = true;
    }

    /// After a successful commit: publishes the compiler's state to the drop-log reader when
    /// it changed.
    pub fn finish(&mut self, staged: StagedPolicy) -> PolicySyncReport {
        if let (Some(pc), true) = (&self.compiler, staged.changed) {
            let copy = pc.state().clone();
            match self.shared.lock() {
                Ok(mut g) => *g = copy,
                Err(p) => *p.into_inner() = copy,
            }
        }
        let mut report = staged.report;
        report.duration = staged.started.map(|t| t.elapsed()).unwrap_or_default();
        report
    }
}

/// What a staged sync leaves for after the commit.
#[derive(Debug, Default)]
pub struct StagedPolicy {
    pub report: PolicySyncReport,
    started: Option<Instant>,
    /// The policy state changed: publish it once committed.
    changed: bool,
}

const BRIDGE_NF: [&str; 2] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

/// Pods on one node bridge (`--cni-mode bridge`) talk without routing; their packets meet the
/// `forward` hook only with bridge netfilter on in the node's namespace (the sysctl is per
/// namespace, default on once `br_netfilter` is loaded). Turns it on there; without the module
/// same-node traffic on a bridge is not policed, which is logged.
pub fn ensure_bridge_netfilter(target: &NetnsTarget) {
    let r = crate::netns::run_in_sync(target, || {
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
    });
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
