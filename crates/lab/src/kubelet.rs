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
//! hostNetwork pods run in their node's namespace: no pod namespace, no CNI, the node's address
//! as podIP; their teardown stops processes and touches nothing of the node. Container
//! environments take their `valueFrom`/`envFrom` values from the API at start ([`crate::pod_env`]).
//!
//! It registers the lab's Nodes when it starts, as their kubelets would.
//!
//! Records of what it started live on disk (`pods/<uid>.json`), so a restarted control plane
//! adopts running pods instead of starting them again.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use sarasa_netns::NetNs;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni_runtime::{load_conflist, result_ips, Attachment, CniRuntime};
use crate::container_env::{expand, kubernetes_service_env};
use crate::container_log::LogPaths;
use crate::paths::LabPaths;
use crate::pod_env::{EnvSources, PodFacts};
use crate::process::{BindMount, Daemon, ProcessRecord};
use crate::resolv::{pod_resolv_conf, ClusterDns, ResolvConf};
use crate::spec::LabSpec;
use crate::state::{read_json, write_json_atomic};
use crate::LabError;

mod containers;
mod init;
mod liveness;
pub mod node_status;
mod orphans;
mod ready;
mod register;
mod restarts;
mod status;
mod teardown;
use status::status_matches;

use containers::check_env;
pub use containers::{container_argv, container_env, pod_mounts};

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
    /// Runs in the node's namespace (`netns` is the node's): no CNI attachment to undo.
    #[serde(default)]
    pub host_network: bool,
    /// Each container's envFrom + env as resolved at start (container name → variables).
    #[serde(default)]
    pub env: BTreeMap<String, Vec<(String, String)>>,
    /// Init containers that ran to completion, in order.
    #[serde(default)]
    pub init: Vec<init::InitRecord>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    /// The running instance; None once it ended (restarting after a back-off, or done).
    pub process: Option<ProcessRecord>,
    pub restarts: u32,
    /// When the current instance started.
    #[serde(default)]
    pub started_at: String,
    /// How the previous instance ended (`lastState.terminated`).
    #[serde(default)]
    pub last_state: Option<restarts::Terminated>,
    /// Ended for good (restartPolicy Never, or OnFailure after success).
    #[serde(default)]
    pub terminated: Option<restarts::Terminated>,
    /// When the back-off after a crash lets it start again.
    #[serde(skip)]
    pub restart_at: Option<std::time::Instant>,
}

/// Binaries the runner executes.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `sarasa` binary: the lab's `sarasa` image (containers without a command run
    /// `sarasa serve`); `sarasa-cni` beside it is what the agent DaemonSet's init container
    /// installs into each node's /opt/cni/bin.
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
    /// Pods whose liveness task runs.
    liveness: Mutex<HashSet<String>>,
    /// Pods being deleted: a running init container stops waiting.
    cancel: Mutex<HashSet<String>>,
    /// Last init container failure per pod (status and crash back-off).
    init_failures: Mutex<BTreeMap<String, init::InitFailure>>,
    /// CNI ADDs hold it shared, CNI GC exclusively: GC's list of valid attachments is taken
    /// with no ADD in flight, so it never releases an address an ADD just handed out.
    cni_gate: std::sync::RwLock<()>,
}

/// How often the runner runs CNI GC on every node (as container runtimes do), releasing what
/// pods whose DEL failed or never ran left allocated.
pub const CNI_GC_INTERVAL: Duration = Duration::from_secs(60);

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
            liveness: Mutex::new(HashSet::new()),
            cancel: Mutex::new(HashSet::new()),
            init_failures: Mutex::new(BTreeMap::new()),
            cni_gate: std::sync::RwLock::new(()),
        })
    }

    /// Watches pods and reconciles forever (level-triggered: every event and every tick
    /// re-examines all pods, so nothing depends on seeing one particular event).
    pub async fn run(self: Arc<Self>) -> Result<(), LabError> {
        // As each node's kubelet registers its Node before it runs pods.
        register::register_nodes(&self.client, &self.spec).await?;
        tokio::spawn(node_status::run(self.client.clone(), self.spec.clone()));
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
        let gc_every = Duration::from_secs(self.spec.cni_gc_interval_secs.max(1));
        let mut gc_tick = tokio::time::interval(gc_every);
        gc_tick.reset();
        let mut log_tick = tokio::time::interval(crate::daemon_log::CHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = rx.recv() => {},
                _ = tick.tick() => {},
                _ = gc_tick.tick() => {
                    let me = self.clone();
                    let _ = tokio::task::spawn_blocking(move || me.gc_nodes()).await;
                },
                _ = log_tick.tick() => {
                    // The lab's process logs (agents, control plane) rotate by size.
                    let dir = self.paths.logs_dir();
                    let _ = tokio::task::spawn_blocking(move || {
                        use crate::daemon_log::{rotate_dir, KEEP, MAX_BYTES};
                        if let Err(e) = rotate_dir(&dir, MAX_BYTES, KEEP) {
                            tracing::warn!("rotating the logs in {}: {e}", dir.display());
                        }
                    })
                    .await;
                },
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
                self.cancel.lock().expect("lock").insert(uid.clone());
                self.spawn_job(uid, Job::Terminate((**pod).clone()));
            } else if !has_record {
                if self.backing_off(&uid) || self.init_backing_off(pod) {
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
        let sources = crate::pod_env::fetch(&self.client, &pod).await?;
        if let Err((container, e)) = check_env(&pod, &sources) {
            self.report_config_error(&pod, &container, &e.0).await?;
            return Err(LabError::Invalid(format!(
                "pod {}: container {container}: {e}",
                pod.name_any()
            )));
        }
        // Volumes before anything runs: a missing ConfigMap or token keeps the pod pending.
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let node_root = self.paths.node_root(&node);
        let vols = crate::volumes::resolve(&self.client, &pod, &node_root).await?;
        crate::volumes::materialize(
            &self.pod_dir(&pod.uid().unwrap_or_default()),
            &pod,
            &vols,
            &crate::image_fs::hide_binaries(&self.paths),
        )?;
        let me = Arc::clone(self);
        let pod2 = pod.clone();
        let rec = tokio::task::spawn_blocking(move || me.start_blocking(&pod2, &sources))
            .await
            .map_err(|e| LabError::Process(format!("pod start task: {e}")))?;
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                if let LabError::Cni(msg) = &e {
                    let object = k8s_openapi::api::core::v1::ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(pod.name_any()),
                        namespace: pod.namespace(),
                        uid: pod.uid(),
                        ..Default::default()
                    };
                    let message = format!(
                        "Failed to create pod sandbox: failed to set up the pod's network: {msg}"
                    );
                    let ev = crate::events::warning(
                        object,
                        "FailedCreatePodSandBox",
                        &message,
                        "kubelet",
                        Some(&node),
                        crate::events::now(),
                    );
                    crate::events::post(self.client.clone(), ev).await;
                }
                let failure = pod
                    .uid()
                    .and_then(|uid| self.init_failures.lock().expect("lock").get(&uid).cloned());
                if let Some(f) = failure.filter(|f| f.at.elapsed() < Duration::from_secs(5)) {
                    let partial = PodRecord {
                        init: f.done.clone(),
                        ..self.placeholder_record(&pod)
                    };
                    if let Err(e) = self
                        .report_init_status(&pod, &partial, f.index, Some(&f))
                        .await
                    {
                        tracing::warn!(pod = %pod.name_any(), "{e}");
                    }
                }
                return Err(e);
            }
        };
        self.start_probing(&pod);
        self.start_liveness(&pod);
        self.report_status(&pod, &rec).await
    }

    /// Network first (netns + CNI ADD; the node's own for hostNetwork), then containers; any
    /// failure undoes what was done.
    fn start_blocking(&self, pod: &Pod, sources: &EnvSources) -> Result<PodRecord, LabError> {
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
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let mut rec = PodRecord {
            uid: uid.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            node: node_name.clone(),
            netns: node.netns.clone(),
            ips: node.ips().iter().map(ToString::to_string).collect(),
            cni_conflist: PathBuf::new(),
            cni_result: Value::Null,
            containers: Vec::new(),
            started_at: now_rfc3339(),
            host_network,
            env: BTreeMap::new(),
            init: Vec::new(),
        };
        // A pod started with no record of it may have run before (its record lost or
        // damaged): what is left of that instance — its log shims and the processes writing
        // into them — ends first, so it does not run on beside the new one, outside the lab.
        // This is what finds a hostNetwork pod's containers, which share the node's namespace;
        // a pod's own namespace is also emptied below.
        self.end_earlier_instance(&namespace, &name);
        if !host_network {
            self.attach_pod_network(&mut rec, port_mappings(pod))?;
        }
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let inits = pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.clone())
            .unwrap_or_default();
        let facts = PodFacts {
            pod,
            node: &rec.node,
            pod_ips: &rec.ips,
            host_ip: &node.ip.to_string(),
        };
        let base = kubernetes_service_env(&self.spec);
        let mut env = BTreeMap::new();
        for c in inits.iter().chain(&containers) {
            match crate::pod_env::resolve(c, &facts, sources, &base) {
                Ok(vars) => {
                    env.insert(c.name.clone(), vars);
                }
                Err(e) => {
                    self.undo(&rec);
                    return Err(LabError::Invalid(format!("container {}: {e}", c.name)));
                }
            }
        }
        rec.env = env;
        if let Err(e) = self.write_resolv_conf(&rec, pod) {
            self.undo(&rec);
            return Err(e);
        }
        if let Err(e) = self.run_init_containers(pod, &mut rec, &inits) {
            self.undo(&rec);
            return Err(e);
        }
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
                    started_at: now_rfc3339(),
                    ..ContainerRecord::default()
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

    /// Ends the processes of an earlier instance of pod `namespace/name` ([`orphans`]).
    fn end_earlier_instance(&self, namespace: &str, name: &str) {
        let dir = self.paths.logs_dir().join("pods");
        let procs = orphans::pod_processes(&dir, namespace, name);
        if procs.is_empty() {
            return;
        }
        let killed = orphans::end(&procs, Duration::from_secs(5));
        if killed > 0 {
            tracing::warn!(pod = %name, killed, "ended the log shims and container processes left by an earlier instance");
        }
    }

    /// The pod's own namespace and its CNI ADD; fills `netns`, `ips` and the CNI result.
    fn attach_pod_network(
        &self,
        rec: &mut PodRecord,
        port_mappings: Vec<Value>,
    ) -> Result<(), LabError> {
        let (uid, namespace, name) = (&rec.uid, &rec.namespace, &rec.name);
        let node = self
            .spec
            .node(&rec.node)
            .ok_or_else(|| LabError::Invalid(format!("unknown node {}", rec.node)))?;
        let conf = load_conflist(&self.paths.cni_conf_dir(&rec.node))?.ok_or_else(|| {
            LabError::Cni(format!(
                "node {} has no CNI config yet (its agent writes it once the node has a podCIDR)",
                rec.node
            ))
        })?;
        let node_ns = NetNs::open(&node.netns).map_err(LabError::netns)?;
        let netns_name = self.spec.pod_netns(uid);
        // A leftover namespace of an earlier attempt is removed first, with whatever still
        // runs in it: containers of an instance whose record was lost (their log shims end
        // with them), which would otherwise run on beside the new one, outside the lab.
        let killed = end_processes_in(&netns_name, Duration::from_secs(5));
        if killed > 0 {
            tracing::warn!(pod = %name, killed, "ended processes left in the pod's namespace by an earlier instance");
        }
        let _ = NetNs::delete(&netns_name);
        let pod_ns = NetNs::create(&netns_name).map_err(LabError::netns)?;
        let att = Attachment {
            container_id: uid.clone(),
            netns: pod_ns.path().to_path_buf(),
            ifname: POD_IFNAME.into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={uid};K8S_POD_UID={uid}"
            ),
            port_mappings,
        };
        let cni = CniRuntime::for_node(&self.paths, &rec.node, &node_ns);
        // Loopback up, as runtimes do before calling the plugin.
        if let Err(e) = crate::topology::ns_lo_up(&pod_ns) {
            let _ = NetNs::delete(&netns_name);
            return Err(e);
        }
        let gate = self.cni_gate.read().unwrap_or_else(|p| p.into_inner());
        let result = match cni.add(&conf, &att) {
            Ok(r) => r,
            Err(e) => {
                let _ = NetNs::delete(&netns_name);
                return Err(e);
            }
        };
        drop(gate);
        rec.ips = result_ips(&result);
        rec.netns = netns_name;
        rec.cni_conflist = conf.path.clone();
        rec.cni_result = result;
        Ok(())
    }

    /// A record of a pod with nothing started (for status while it is not running).
    fn placeholder_record(&self, pod: &Pod) -> PodRecord {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        PodRecord {
            uid: pod.uid().unwrap_or_default(),
            namespace: pod.namespace().unwrap_or_else(|| "default".into()),
            name: pod.name_any(),
            node,
            netns: String::new(),
            ips: Vec::new(),
            cni_conflist: PathBuf::new(),
            cni_result: Value::Null,
            containers: Vec::new(),
            started_at: now_rfc3339(),
            host_network: false,
            env: BTreeMap::new(),
            init: Vec::new(),
        }
    }

    fn undo(&self, rec: &PodRecord) {
        for c in &rec.containers {
            if let Some(p) = c.process {
                let _ = p.stop(Duration::from_secs(2));
            }
        }
        if !rec.host_network {
            let _ = self.cni_del(rec);
            let _ = NetNs::delete(&rec.netns);
        }
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
        let (stdout, stderr) = crate::container_log::spawn_shim(
            &self.bins.sarasa,
            &log,
            self.spec.container_log_max_bytes,
            self.spec.container_log_keep_rotated(),
        )?;
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
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        for cr in rec.containers.iter_mut() {
            let Some(c) = containers.iter().find(|c| c.name == cr.name) else {
                continue;
            };
            match restarts::next_step(cr, &policy, std::time::Instant::now()) {
                restarts::Step::Nothing => {}
                restarts::Step::Changed => changed = true,
                restarts::Step::Restart => {
                    // The instance that ended keeps its log for `kubectl logs --previous`.
                    if let Err(e) = self.log_paths(&rec.namespace, &rec.name, &cr.name).rotate() {
                        tracing::warn!(pod = %uid, container = %cr.name, "rotating the log: {e}");
                    }
                    let rec_now = rec_snapshot(&self.records, &uid);
                    cr.process = rec_now.and_then(|r| self.spawn_container(&r, c).ok());
                    cr.restarts += 1;
                    cr.started_at = now_rfc3339();
                    changed = true;
                }
            }
        }
        self.start_probing(&pod);
        self.start_liveness(&pod);
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
}

enum Job {
    Start(Pod),
    Check(Pod),
    Terminate(Pod),
    Orphan(String),
}

/// Ends (SIGKILL) every process whose network namespace is the named one and waits up to
/// `wait` for them to be gone; returns how many there were. A namespace that does not exist
/// has none.
pub(crate) fn end_processes_in(netns: &str, wait: Duration) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) =
        std::fs::metadata(std::path::Path::new(sarasa_netns::NETNS_RUN_DIR).join(netns))
    else {
        return 0;
    };
    let inside = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|pid| {
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
            })
            .collect()
    };
    let pids = inside();
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = std::time::Instant::now() + wait;
    while !inside().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    pids.len()
}

/// The `portMappings` capability's argument, as kubelet's CRI runtimes build it: every
/// container port with a `hostPort` (protocol in lower case, `hostIP` when set).
fn port_mappings(pod: &Pod) -> Vec<Value> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = p.host_port.filter(|h| *h > 0)?;
            let mut m = serde_json::json!({
                "hostPort": host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
            });
            if let Some(ip) = p.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
                m["hostIP"] = Value::String(ip.to_string());
            }
            Some(m)
        })
        .collect()
}

fn uid2_of(pod: &Pod) -> String {
    pod.uid().unwrap_or_default()
}

fn rec_snapshot(records: &Mutex<BTreeMap<String, PodRecord>>, uid: &str) -> Option<PodRecord> {
    records.lock().expect("lock").get(uid).cloned()
}

pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}
