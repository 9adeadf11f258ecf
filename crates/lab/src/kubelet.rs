//! The lab's pod runner — the kubelet's networking-relevant job for every lab node: for each
//! Pod bound to a lab node it makes the pod's network namespace, runs the node's CNI conflist
//! exactly as a container runtime would, starts each container as a process inside the pod's
//! namespace, and reports the pod's IPs and readiness in its status. Deleting a pod stops its
//! containers, runs CNI DEL and removes the namespace, then finalises the API object.
//!
//! Readiness follows each container's `readinessProbe` ([`crate::readiness`]): one task per
//! probed pod sleeps between periods and patches the pod's status when readiness changes; a
//! terminating pod keeps being probed until its containers are gone, so its EndpointSlice
//! endpoints read serving/terminating during the grace period.
//!
//! Records of what it started live on disk (`pods/<uid>.json`), so a restarted control plane
//! adopts running pods instead of starting them again.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use sarasa_netns::NetNs;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cni_runtime::{load_conflist, result_ips, Attachment, CniRuntime};
use crate::container_env::{expand, kubernetes_service_env};
use crate::container_log::LogPaths;
use crate::paths::LabPaths;
use crate::process::{BindMount, Daemon, ProcessRecord};
use crate::readiness::{readiness_probe, run_probe, ProbeState, ProbeTarget, ReadinessProbe};
use crate::resolv::{pod_resolv_conf, ClusterDns, ResolvConf};
use crate::spec::LabSpec;
use crate::state::{read_json, write_json_atomic};
use crate::LabError;

/// The interface name every pod gets.
pub const POD_IFNAME: &str = "eth0";

/// What the runner started for one pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ips: Vec<String>,
    pub cni_conflist: PathBuf,
    pub cni_result: Value,
    pub containers: Vec<ContainerRecord>,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub process: Option<ProcessRecord>,
    pub restarts: u32,
}

/// Binaries the runner executes.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Directory holding CNI plugins (`sarasa-cni`), passed as CNI_PATH.
    pub cni_path: PathBuf,
    /// The `sarasa` binary (containers without a command run `sarasa serve`).
    pub sarasa: PathBuf,
}

pub struct PodRunner {
    spec: LabSpec,
    paths: LabPaths,
    bins: Binaries,
    client: Client,
    records: Mutex<BTreeMap<String, PodRecord>>,
    busy: Mutex<HashSet<String>>,
    failures: Mutex<BTreeMap<String, std::time::Instant>>,
    /// Probe verdicts: pod uid → container name → ready (containers without a probe absent).
    readiness: Mutex<BTreeMap<String, BTreeMap<String, bool>>>,
    /// Pods whose probe task runs.
    probing: Mutex<HashSet<String>>,
}

impl PodRunner {
    pub fn new(spec: LabSpec, paths: LabPaths, bins: Binaries, client: Client) -> Arc<PodRunner> {
        let mut records = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(paths.pods_dir()) {
            for entry in dir.flatten() {
                let p = entry.path();
                if p.extension().is_some_and(|x| x == "json") {
                    if let Ok(Some(rec)) = read_json::<PodRecord>(&p) {
                        records.insert(rec.uid.clone(), rec);
                    }
                }
            }
        }
        Arc::new(PodRunner {
            spec,
            paths,
            bins,
            client,
            records: Mutex::new(records),
            busy: Mutex::new(HashSet::new()),
            failures: Mutex::new(BTreeMap::new()),
            readiness: Mutex::new(BTreeMap::new()),
            probing: Mutex::new(HashSet::new()),
        })
    }

    /// Watches pods and reconciles forever (level-triggered: every event and every tick
    /// re-examines all pods, so nothing depends on seeing one particular event).
    pub async fn run(self: Arc<Self>) -> Result<(), LabError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let (store, writer) = reflector::store();
        let stream = reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::warn!("pod watch: {e}");
                }
                let _ = tx.try_send(());
            }
        });
        store
            .wait_until_ready()
            .await
            .map_err(|e| LabError::Api(format!("pod watch never became ready: {e}")))?;
        self.gc_nodes();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = rx.recv() => {},
                _ = tick.tick() => {},
            }
            self.reconcile(&store.state());
        }
    }

    fn reconcile(self: &Arc<Self>, pods: &[Arc<Pod>]) {
        let mut seen = HashSet::new();
        for pod in pods {
            let Some(uid) = pod.uid() else { continue };
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            if self.spec.node(&node).is_none() {
                continue;
            }
            seen.insert(uid.clone());
            let has_record = self.records.lock().expect("lock").contains_key(&uid);
            let terminating = pod.metadata.deletion_timestamp.is_some();
            if terminating {
                self.spawn_job(uid, Job::Terminate((**pod).clone()));
            } else if !has_record {
                if self.backing_off(&uid) {
                    continue;
                }
                self.spawn_job(uid, Job::Start((**pod).clone()));
            } else {
                self.spawn_job(uid, Job::Check((**pod).clone()));
            }
        }
        let orphans: Vec<String> = self
            .records
            .lock()
            .expect("lock")
            .keys()
            .filter(|uid| !seen.contains(*uid))
            .cloned()
            .collect();
        for uid in orphans {
            self.spawn_job(uid.clone(), Job::Orphan(uid));
        }
    }

    fn backing_off(&self, uid: &str) -> bool {
        let failures = self.failures.lock().expect("lock");
        failures
            .get(uid)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
    }

    fn spawn_job(self: &Arc<Self>, uid: String, job: Job) {
        if !self.busy.lock().expect("lock").insert(uid.clone()) {
            return;
        }
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let result = match job {
                Job::Start(pod) => me.start(pod).await,
                Job::Check(pod) => me.check(pod).await,
                Job::Terminate(pod) => me.terminate(pod).await,
                Job::Orphan(uid) => me.clone().teardown_blocking(uid).await,
            };
            if let Err(e) = result {
                tracing::warn!(pod = %uid, "{e}");
                me.failures
                    .lock()
                    .expect("lock")
                    .insert(uid.clone(), std::time::Instant::now());
            } else {
                me.failures.lock().expect("lock").remove(&uid);
            }
            me.busy.lock().expect("lock").remove(&uid);
        });
    }

    async fn start(self: &Arc<Self>, pod: Pod) -> Result<(), LabError> {
        // Volumes before anything runs: a missing ConfigMap or token keeps the pod pending.
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let node_root = self.paths.node_dir(&node).join("root");
        let vols = crate::volumes::resolve(&self.client, &pod, &node_root).await?;
        crate::volumes::materialize(&self.pod_dir(&pod.uid().unwrap_or_default()), &pod, &vols)?;
        let me = Arc::clone(self);
        let pod2 = pod.clone();
        let rec = tokio::task::spawn_blocking(move || me.start_blocking(&pod2))
            .await
            .map_err(|e| LabError::Process(format!("pod start task: {e}")))??;
        self.start_probing(&pod);
        self.report_status(&pod, &rec).await
    }

    /// Starts the pod's probe task unless it runs already or no container has a probe. Probed
    /// containers start not ready, as on a kubelet.
    fn start_probing(self: &Arc<Self>, pod: &Pod) {
        let Some(uid) = pod.uid() else { return };
        if self.probing.lock().expect("lock").contains(&uid) {
            return;
        }
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let mut probes = Vec::new();
        for c in &containers {
            match readiness_probe(c) {
                Ok(Some(p)) => probes.push((c.name.clone(), Some(p))),
                Ok(None) => {}
                Err(e) => {
                    // Never ready: the probe cannot run.
                    tracing::warn!(pod = %pod.name_any(), "{e}");
                    probes.push((c.name.clone(), None));
                }
            }
        }
        if probes.is_empty() || !self.probing.lock().expect("lock").insert(uid.clone()) {
            return;
        }
        self.readiness.lock().expect("lock").insert(
            uid,
            probes
                .iter()
                .map(|(name, _)| (name.clone(), false))
                .collect(),
        );
        let probes: Vec<(String, ReadinessProbe)> = probes
            .into_iter()
            .filter_map(|(name, p)| Some((name, p?)))
            .collect();
        tokio::spawn(Arc::clone(self).probe_loop(pod.clone(), probes));
    }

    /// Probes each container every period (after its initial delay) while the pod has a
    /// record, including while it terminates; reports status when readiness changes.
    async fn probe_loop(self: Arc<Self>, pod: Pod, probes: Vec<(String, ReadinessProbe)>) {
        let uid = pod.uid().unwrap_or_default();
        let start = tokio::time::Instant::now();
        let mut next: Vec<tokio::time::Instant> = probes
            .iter()
            .map(|(_, p)| start + p.initial_delay)
            .collect();
        let mut states = vec![ProbeState::default(); probes.len()];
        loop {
            let due = next.iter().min().copied().unwrap_or(start);
            tokio::time::sleep_until(due).await;
            let Some(rec) = rec_snapshot(&self.records, &uid) else {
                break;
            };
            let node_netns = self.spec.node(&rec.node).map(|n| n.netns.clone());
            let pod_ip = rec
                .ips
                .first()
                .and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
            let now = tokio::time::Instant::now();
            let mut changed = false;
            for (i, (name, probe)) in probes.iter().enumerate() {
                if next[i] > now {
                    continue;
                }
                next[i] = now + probe.period;
                let alive = rec
                    .containers
                    .iter()
                    .any(|c| &c.name == name && c.process.is_some_and(|p| p.alive()));
                let ok = match (alive, &node_netns, pod_ip) {
                    (true, Some(node_netns), Some(pod_ip)) => {
                        let probe = probe.clone();
                        let node_netns = node_netns.clone();
                        let pod_netns = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&rec.netns);
                        tokio::task::spawn_blocking(move || {
                            let Ok(node) = NetNs::open(&node_netns) else {
                                return false;
                            };
                            run_probe(
                                &probe,
                                &ProbeTarget {
                                    pod_netns: &pod_netns,
                                    node: &node,
                                    pod_ip,
                                },
                            )
                        })
                        .await
                        .unwrap_or(false)
                    }
                    _ => false,
                };
                let before = states[i].ready;
                if alive {
                    states[i].record(ok, probe);
                } else {
                    // A container that is not running is not ready, whatever the thresholds.
                    states[i] = ProbeState::default();
                }
                if states[i].ready != before {
                    changed = true;
                    if let Some(m) = self.readiness.lock().expect("lock").get_mut(&uid) {
                        m.insert(name.clone(), states[i].ready);
                    }
                }
            }
            if changed {
                if let Err(e) = self.report_status(&pod, &rec).await {
                    tracing::warn!(pod = %rec.name, "{e}");
                }
            }
        }
        self.readiness.lock().expect("lock").remove(&uid);
        self.probing.lock().expect("lock").remove(&uid);
    }

    /// Whether a container counts as ready: running and, when probed, its probe says so.
    fn container_ready(&self, uid: &str, c: &ContainerRecord) -> bool {
        c.process.is_some_and(|p| p.alive())
            && self
                .readiness
                .lock()
                .expect("lock")
                .get(uid)
                .and_then(|m| m.get(&c.name).copied())
                .unwrap_or(true)
    }

    fn pod_ready(&self, rec: &PodRecord) -> bool {
        rec.containers
            .iter()
            .all(|c| self.container_ready(&rec.uid, c))
    }

    /// Network first (netns + CNI ADD), then containers; any failure undoes what was done.
    fn start_blocking(&self, pod: &Pod) -> Result<PodRecord, LabError> {
        let uid = pod.uid().unwrap_or_default();
        let namespace = pod.namespace().unwrap_or_else(|| "default".into());
        let name = pod.name_any();
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let node = self.spec.node(&node_name).ok_or_else(|| {
            LabError::Invalid(format!("pod {namespace}/{name}: unknown node {node_name}"))
        })?;
        let conf = load_conflist(&self.paths.cni_conf_dir(&node_name))?.ok_or_else(|| {
            LabError::Cni(format!(
                "node {node_name} has no CNI config yet (its agent writes it once the node has a podCIDR)"
            ))
        })?;
        let node_ns = NetNs::open(&node.netns).map_err(LabError::netns)?;
        let netns_name = self.spec.pod_netns(&uid);
        // A leftover namespace of an earlier failed attempt is removed first.
        let _ = NetNs::delete(&netns_name);
        let pod_ns = NetNs::create(&netns_name).map_err(LabError::netns)?;
        let att = Attachment {
            container_id: uid.clone(),
            netns: pod_ns.path().to_path_buf(),
            ifname: POD_IFNAME.into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={uid};K8S_POD_UID={uid}"
            ),
        };
        let cni = CniRuntime {
            cni_path: &self.bins.cni_path,
            node: &node_ns,
        };
        // Loopback up, as runtimes do before calling the plugin.
        if let Err(e) = crate::topology::ns_lo_up(&pod_ns) {
            let _ = NetNs::delete(&netns_name);
            return Err(e);
        }
        let result = match cni.add(&conf, &att) {
            Ok(r) => r,
            Err(e) => {
                let _ = NetNs::delete(&netns_name);
                return Err(e);
            }
        };
        let ips = result_ips(&result);
        let mut rec = PodRecord {
            uid: uid.clone(),
            namespace,
            name,
            node: node_name,
            netns: netns_name,
            ips,
            cni_conflist: conf.path.clone(),
            cni_result: result,
            containers: Vec::new(),
            started_at: now_rfc3339(),
        };
        if let Err(e) = self.write_resolv_conf(&rec, pod) {
            self.undo(&rec);
            return Err(e);
        }
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        for c in &containers {
            // A new pod (maybe with the name of a deleted one) starts with no logs.
            if let Err(e) = self.log_paths(&rec.namespace, &rec.name, &c.name).clear() {
                self.undo(&rec);
                return Err(LabError::Process(format!(
                    "clearing old logs of container {}: {e}",
                    c.name
                )));
            }
            match self.spawn_container(&rec, c) {
                Ok(p) => rec.containers.push(ContainerRecord {
                    name: c.name.clone(),
                    process: Some(p),
                    restarts: 0,
                }),
                Err(e) => {
                    self.undo(&rec);
                    return Err(e);
                }
            }
        }
        self.save(&rec)?;
        Ok(rec)
    }

    fn undo(&self, rec: &PodRecord) {
        for c in &rec.containers {
            if let Some(p) = c.process {
                let _ = p.stop(Duration::from_secs(2));
            }
        }
        let _ = self.cni_del(rec);
        let _ = NetNs::delete(&rec.netns);
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.paths.pods_dir().join(uid)
    }

    /// The pod's resolv.conf as the kubelet composes it from its dnsPolicy and dnsConfig
    /// ([`crate::resolv`]), bind-mounted over /etc/resolv.conf in each container.
    fn write_resolv_conf(&self, rec: &PodRecord, pod: &Pod) -> Result<(), LabError> {
        let dir = self.pod_dir(&rec.uid);
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
        let node_path = self.paths.node_resolv_conf();
        let node = match std::fs::read_to_string(&node_path) {
            Ok(text) => ResolvConf::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ResolvConf::default(),
            Err(e) => return Err(LabError::io(&node_path, e)),
        };
        let cluster = ClusterDns {
            nameservers: vec![crate::dns_ip(&self.spec).into()],
            domain: crate::CLUSTER_DOMAIN.to_string(),
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let body = pod_resolv_conf(&spec, &rec.namespace, &cluster, &node)?.render();
        let path = dir.join("resolv.conf");
        std::fs::write(&path, body).map_err(|e| LabError::io(&path, e))
    }

    /// The record of a pod the runner started, by uid.
    pub fn record(&self, uid: &str) -> Option<PodRecord> {
        rec_snapshot(&self.records, uid)
    }

    /// Where the logs of a container of a pod are kept.
    pub fn log_paths(&self, namespace: &str, pod: &str, container: &str) -> LogPaths {
        LogPaths::new(
            &self.paths.logs_dir().join("pods"),
            namespace,
            pod,
            container,
        )
    }

    /// The pod's /etc/resolv.conf, as its containers see it.
    pub fn resolv_conf(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("resolv.conf")
    }

    /// What the pod's containers (and `exec` into them) have mounted: see [`pod_mounts`].
    pub fn pod_mounts(&self, uid: &str) -> Vec<BindMount> {
        pod_mounts(&self.paths, uid)
    }

    /// What one container (and `exec` into it) has mounted: the pod's mounts, then its
    /// `volumeMounts` ([`crate::volumes`]).
    pub fn container_mounts(&self, uid: &str, container: &str) -> Vec<BindMount> {
        let mut m = pod_mounts(&self.paths, uid);
        m.extend(crate::volumes::container_mounts(
            &self.paths,
            uid,
            Some(container),
        ));
        m
    }

    /// The environment `c` of the pod `rec` runs with ([`container_env`]).
    pub fn container_env(&self, rec: &PodRecord, c: &Container) -> Vec<(String, String)> {
        container_env(&self.spec, rec, c)
    }

    /// True when `node` is a node of this lab.
    pub fn runs_node(&self, node: &str) -> bool {
        self.spec.node(node).is_some()
    }

    fn spawn_container(&self, rec: &PodRecord, c: &Container) -> Result<ProcessRecord, LabError> {
        let env = container_env(&self.spec, rec, c);
        let (program, args) = container_argv(c, &self.bins.sarasa)?;
        let args = args.iter().map(|a| expand(a, &env)).collect();
        let netns = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&rec.netns);
        let mounts = self.container_mounts(&rec.uid, &c.name);
        let log = self.log_paths(&rec.namespace, &rec.name, &c.name).current;
        let (stdout, stderr) = crate::container_log::spawn_shim(&self.bins.sarasa, &log)?;
        Daemon {
            program,
            args,
            env,
            netns: Some(&netns),
            mounts: &mounts,
            log,
        }
        .spawn_with(stdout.into(), stderr.into())
    }

    fn save(&self, rec: &PodRecord) -> Result<(), LabError> {
        write_json_atomic(
            &self.paths.pods_dir().join(format!("{}.json", rec.uid)),
            rec,
        )?;
        self.records
            .lock()
            .expect("lock")
            .insert(rec.uid.clone(), rec.clone());
        Ok(())
    }

    /// Restarts containers whose process died (counting restarts) and keeps status current.
    async fn check(self: &Arc<Self>, pod: Pod) -> Result<(), LabError> {
        let uid = pod.uid().unwrap_or_default();
        let Some(mut rec) = self.records.lock().expect("lock").get(&uid).cloned() else {
            return Ok(());
        };
        let mut changed = false;
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        for cr in rec.containers.iter_mut() {
            if cr.process.is_some_and(|p| p.alive()) {
                continue;
            }
            if let Some(c) = containers.iter().find(|c| c.name == cr.name) {
                // The instance that ended keeps its log for `kubectl logs --previous`.
                if let Err(e) = self.log_paths(&rec.namespace, &rec.name, &cr.name).rotate() {
                    tracing::warn!(pod = %uid, container = %cr.name, "rotating the log: {e}");
                }
                let rec_now = rec_snapshot(&self.records, &uid);
                cr.process = rec_now.and_then(|r| self.spawn_container(&r, c).ok());
                cr.restarts += 1;
                changed = true;
            }
        }
        self.start_probing(&pod);
        if let Err(e) =
            crate::volumes::refresh_tokens(&self.client, &self.pod_dir(&uid), &pod).await
        {
            tracing::warn!(pod = %uid, "refreshing projected tokens: {e}");
        }
        let status_stale = !status_matches(&pod, &rec, self.pod_ready(&rec));
        if changed {
            self.save(&rec)?;
        }
        if changed || status_stale {
            self.report_status(&pod, &rec).await?;
        }
        Ok(())
    }

    async fn terminate(self: &Arc<Self>, pod: Pod) -> Result<(), LabError> {
        let uid = pod.uid().unwrap_or_default();
        // The API's grace period, honoured whole: SIGTERM now, SIGKILL when it runs out.
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64;
        let grace = Duration::from_secs(grace);
        // preStop hooks first, while the containers still run; what they take comes out of
        // the grace period, as on a kubelet.
        let running = rec_snapshot(&self.records, &uid).filter(|r| {
            r.containers
                .iter()
                .any(|c| c.process.is_some_and(|p| p.alive()))
        });
        let grace = match running {
            Some(rec) => {
                let containers = pod
                    .spec
                    .as_ref()
                    .map(|s| s.containers.clone())
                    .unwrap_or_default();
                let netns = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&rec.netns);
                let took = tokio::task::spawn_blocking(move || {
                    crate::prestop::run_pre_stop(&containers, &netns, grace)
                })
                .await
                .map_err(|e| LabError::Process(format!("preStop task: {e}")))?;
                grace.saturating_sub(took)
            }
            None => grace,
        };
        let me = Arc::clone(self);
        let uid2 = uid.clone();
        tokio::task::spawn_blocking(move || me.teardown(&uid2, grace))
            .await
            .map_err(|e| LabError::Process(format!("pod stop task: {e}")))??;
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            &pod.namespace().unwrap_or_else(|| "default".into()),
        );
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(LabError::Api(format!("finalising pod deletion: {e}"))),
        }
    }

    async fn teardown_blocking(self: Arc<Self>, uid: String) -> Result<(), LabError> {
        tokio::task::spawn_blocking(move || self.teardown(&uid, Duration::from_secs(2)))
            .await
            .map_err(|e| LabError::Process(format!("pod teardown task: {e}")))?
    }

    /// Stops containers, CNI DEL, removes the namespace and the record. Keeps going after an
    /// error and reports them all at the end.
    fn teardown(&self, uid: &str, grace: Duration) -> Result<(), LabError> {
        let Some(rec) = self.records.lock().expect("lock").get(uid).cloned() else {
            return Ok(());
        };
        // Every container gets SIGTERM at once and the same deadline, then SIGKILL.
        let mut errors: Vec<String> = std::thread::scope(|s| {
            let stops: Vec<_> = rec
                .containers
                .iter()
                .filter_map(|c| c.process)
                .map(|p| s.spawn(move || p.stop(grace)))
                .collect();
            stops
                .into_iter()
                .filter_map(|h| match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("container stop thread panicked".into()),
                })
                .collect()
        });
        if let Err(e) = self.cni_del(&rec) {
            errors.push(e.to_string());
        }
        if let Err(e) = NetNs::delete(&rec.netns) {
            errors.push(format!("deleting netns {}: {e}", rec.netns));
        }
        let _ = std::fs::remove_dir_all(self.pod_dir(uid));
        if errors.is_empty() {
            let _ = std::fs::remove_file(self.paths.pods_dir().join(format!("{uid}.json")));
            self.records.lock().expect("lock").remove(uid);
            Ok(())
        } else {
            Err(LabError::Process(format!(
                "tearing down pod {}/{}: {}",
                rec.namespace,
                rec.name,
                errors.join("; ")
            )))
        }
    }

    fn cni_del(&self, rec: &PodRecord) -> Result<(), LabError> {
        let node = self
            .spec
            .node(&rec.node)
            .ok_or_else(|| LabError::Invalid(format!("unknown node {}", rec.node)))?;
        let node_ns = NetNs::open(&node.netns).map_err(LabError::netns)?;
        let conf = match load_conflist(&self.paths.cni_conf_dir(&rec.node))? {
            Some(c) => c,
            None => return Ok(()),
        };
        let att = Attachment {
            container_id: rec.uid.clone(),
            netns: PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&rec.netns),
            ifname: POD_IFNAME.into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                rec.namespace, rec.name
            ),
        };
        CniRuntime {
            cni_path: &self.bins.cni_path,
            node: &node_ns,
        }
        .del(&conf, &att, Some(&rec.cni_result))
    }

    /// CNI GC on every node with the attachments the runner still holds: releases addresses
    /// of pods that vanished while the control plane was down.
    fn gc_nodes(&self) {
        let records = self.records.lock().expect("lock").clone();
        for node in &self.spec.nodes {
            let Ok(Some(conf)) = load_conflist(&self.paths.cni_conf_dir(&node.name)) else {
                continue;
            };
            let Ok(node_ns) = NetNs::open(&node.netns) else {
                continue;
            };
            let valid: Vec<(String, String)> = records
                .values()
                .filter(|r| r.node == node.name)
                .map(|r| (r.uid.clone(), POD_IFNAME.to_string()))
                .collect();
            let rt = CniRuntime {
                cni_path: &self.bins.cni_path,
                node: &node_ns,
            };
            if let Err(e) = rt.gc(&conf, &valid) {
                tracing::warn!(node = %node.name, "CNI GC: {e}");
            }
        }
    }

    async fn report_status(&self, pod: &Pod, rec: &PodRecord) -> Result<(), LabError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &rec.namespace);
        let node_ip = self
            .spec
            .node(&rec.node)
            .map(|n| n.ip.to_string())
            .unwrap_or_default();
        let ready = if self.pod_ready(rec) { "True" } else { "False" };
        let now = now_rfc3339();
        let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": now, "lastProbeTime": null});
        let statuses: Vec<Value> = rec
            .containers
            .iter()
            .map(|c| {
                let image = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.iter().find(|x| x.name == c.name))
                    .and_then(|x| x.image.clone())
                    .unwrap_or_default();
                let running = c.process.is_some_and(|p| p.alive());
                json!({
                    "name": c.name, "ready": self.container_ready(&rec.uid, c), "started": running,
                    "restartCount": c.restarts, "image": image, "imageID": "",
                    "state": if running { json!({"running": {"startedAt": rec.started_at}}) }
                             else { json!({"waiting": {"reason": "CrashLoopBackOff"}}) },
                })
            })
            .collect();
        let status = json!({"status": {
            "phase": "Running",
            "hostIP": node_ip,
            "hostIPs": [{"ip": node_ip}],
            "podIP": rec.ips.first(),
            "podIPs": rec.ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "startTime": rec.started_at,
            "conditions": [
                cond("PodScheduled", "True"), cond("Initialized", "True"),
                cond("ContainersReady", ready), cond("Ready", ready),
            ],
            "containerStatuses": statuses,
        }});
        api.patch_status(&rec.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map(|_| ())
            .map_err(|e| {
                LabError::Api(format!(
                    "updating status of pod {}/{}: {e}",
                    rec.namespace, rec.name
                ))
            })
    }
}

enum Job {
    Start(Pod),
    Check(Pod),
    Terminate(Pod),
    Orphan(String),
}

fn rec_snapshot(records: &Mutex<BTreeMap<String, PodRecord>>, uid: &str) -> Option<PodRecord> {
    records.lock().expect("lock").get(uid).cloned()
}

/// True when the pod's status already says what the record says (no write needed).
fn status_matches(pod: &Pod, rec: &PodRecord, ready: bool) -> bool {
    let Some(st) = &pod.status else { return false };
    let reported = st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    st.pod_ip.as_deref() == rec.ips.first().map(String::as_str)
        && st.phase.as_deref() == Some("Running")
        && reported == ready
}

/// The environment a container's processes (and commands exec'd in it) get: the `kubernetes`
/// Service's address as kubelet injects it, the pod's identity as the lab's downward API gives
/// it, then the container's own `env` values (`$(VAR)` expanded).
pub fn container_env(spec: &LabSpec, rec: &PodRecord, c: &Container) -> Vec<(String, String)> {
    let mut env = kubernetes_service_env(spec);
    env.extend([
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("POD_NAME".to_string(), rec.name.clone()),
        ("POD_NAMESPACE".to_string(), rec.namespace.clone()),
        (
            "POD_IP".to_string(),
            rec.ips.first().cloned().unwrap_or_default(),
        ),
        ("POD_IPS".to_string(), rec.ips.join(",")),
        ("NODE_NAME".to_string(), rec.node.clone()),
        ("HOSTNAME".to_string(), rec.name.clone()),
    ]);
    for e in c.env.iter().flatten() {
        if let Some(v) = &e.value {
            let v = expand(v, &env);
            env.push((e.name.clone(), v));
        }
    }
    env
}

/// The process a container runs: its command + args (`sarasa` meaning the lab's binary), or —
/// without a command — the built-in server on each declared containerPort.
pub fn container_argv(c: &Container, sarasa: &Path) -> Result<(PathBuf, Vec<String>), LabError> {
    match c.command.as_deref() {
        Some([program, rest @ ..]) => {
            let mut args: Vec<String> = rest.to_vec();
            args.extend(c.args.iter().flatten().cloned());
            // `sarasa` is the lab's image entrypoint: the lab's own binary, wherever it is.
            let program = if program == "sarasa" {
                sarasa.to_path_buf()
            } else {
                PathBuf::from(program)
            };
            Ok((program, args))
        }
        _ => {
            let mut args = vec!["serve".to_string()];
            for p in c.ports.iter().flatten() {
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                args.push("--port".into());
                args.push(format!("{}/{proto}", p.container_port));
            }
            Ok((sarasa.to_path_buf(), args))
        }
    }
}

/// The bind mounts of a pod's containers: its resolv.conf over /etc/resolv.conf once written.
pub fn pod_mounts(paths: &LabPaths, uid: &str) -> Vec<BindMount> {
    let resolv = paths.pods_dir().join(uid).join("resolv.conf");
    let mut mounts = Vec::new();
    if resolv.exists() {
        mounts.push(BindMount::new(resolv, "/etc/resolv.conf"));
    }
    mounts
}

pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn container_without_command_serves_its_ports() {
        let c = Container {
            name: "web".into(),
            ports: Some(vec![
                ContainerPort {
                    container_port: 80,
                    ..Default::default()
                },
                ContainerPort {
                    container_port: 53,
                    protocol: Some("UDP".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let (prog, args) = container_argv(&c, Path::new("/bin/sarasa")).unwrap();
        assert_eq!(prog, Path::new("/bin/sarasa"));
        assert_eq!(args, ["serve", "--port", "80/tcp", "--port", "53/udp"]);
        let c = Container {
            name: "sh".into(),
            command: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: Some(vec!["sleep 1".into()]),
            ..Default::default()
        };
        let (prog, args) = container_argv(&c, Path::new("/bin/sarasa")).unwrap();
        assert_eq!(prog, Path::new("/bin/sh"));
        assert_eq!(args, ["-c", "sleep 1"]);
        let c = Container {
            name: "dns".into(),
            command: Some(vec!["sarasa".into(), "dns".into()]),
            args: Some(vec!["--ttl=5".into()]),
            ..Default::default()
        };
        let (prog, args) = container_argv(&c, Path::new("/opt/lab/sarasa")).unwrap();
        assert_eq!(prog, Path::new("/opt/lab/sarasa"));
        assert_eq!(args, ["dns", "--ttl=5"]);
    }
}
