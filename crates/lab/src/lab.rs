//! Lab lifecycle: `up` builds the topology, starts the control plane (API server and the
//! nodes' kubelet) and installs the agents from deploy/ as a cluster does ([`crate::agents`]),
//! then waits until every node's agent pod is ready; `down` stops everything the lab started
//! and removes its namespaces and state; `status` reports nodes, agents and pods.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::Api;

use crate::paths::LabPaths;
use crate::process::{Daemon, ProcessRecord};
use crate::spec::LabSpec;
use crate::state::{read_json, write_json_atomic};
use crate::{client, topology, LabError};

/// Binaries a lab runs: the `sarasa` binary itself (the lab's `sarasa` image; the agent
/// DaemonSet installs the `sarasa-cni` beside it on every node).
#[derive(Debug, Clone)]
pub struct LabBinaries {
    pub sarasa: PathBuf,
}

/// An existing lab (its spec was written by `up`).
#[derive(Debug, Clone)]
pub struct Lab {
    pub spec: LabSpec,
    pub paths: LabPaths,
}

/// One row of `lab status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    pub pod_cidr: String,
    pub agent: String,
    pub pods: usize,
}

const CONTROL_PLANE: &str = "control-plane";

/// The recorded loopback port of the API server.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LoopbackRecord {
    port: u16,
}
const EXTERNAL_SERVER: &str = "external-server";
const EXTERNAL_DNS: &str = "external-dns";
const FABRIC_ROUTER: &str = "fabric-router";
/// The lab's sync with its cluster set's broker ([`crate::clusterset::sync`]).
pub(crate) const CLUSTERSET_SYNC: &str = "clusterset-sync";

impl Lab {
    /// Opens the lab named `name`, or says clearly that it is not up.
    pub fn open(name: &str) -> Result<Lab, LabError> {
        crate::spec::validate_lab_name(name)?;
        let paths = LabPaths::new(name);
        match read_json::<LabSpec>(&paths.spec_file())? {
            Some(spec) => Ok(Lab { spec, paths }),
            // Its other state is there: the spec was lost, not the lab.
            None if paths.pids_dir().exists() || paths.store_dir().exists() => {
                Err(LabError::NotUp(format!(
                    "lab {name:?} has state in {} but its spec {} is missing: the lab's                      namespaces and processes cannot be found without it; restore the file",
                    paths.root.display(),
                    paths.spec_file().display()
                )))
            }
            None => Err(LabError::NotUp(format!(
                "no lab named {name:?} is up; start one with `sarasa lab up`"
            ))),
        }
    }

    /// Builds and starts a lab; returns when every node's agent is ready. On failure, removes
    /// everything it made.
    pub fn up(spec: LabSpec, bins: &LabBinaries, timeout: Duration) -> Result<Lab, LabError> {
        let name = spec.name.as_str();
        let paths = LabPaths::new(name);
        if paths.spec_file().exists() {
            return Err(LabError::Invalid(format!(
                "lab {name:?} is already up (see `sarasa --lab {name} lab status`; \
                 take it down with `sarasa --lab {name} lab down`)"
            )));
        }
        let lab = Lab { spec, paths };
        let result = lab.bring_up(bins, timeout);
        if let Err(e) = result {
            let _ = lab.down();
            return Err(e);
        }
        Ok(lab)
    }

    fn bring_up(&self, bins: &LabBinaries, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        std::fs::create_dir_all(&self.paths.root).map_err(|e| LabError::io(&self.paths.root, e))?;
        write_json_atomic(&self.paths.spec_file(), &self.spec)?;
        topology::create(&self.spec)?;
        self.start_external_server(bins)?;
        self.start_external_dns()?;
        if self.spec.backend == crate::spec::Backend::Bgp {
            self.start_fabric_router()?;
        }
        self.write_node_resolv_conf()?;
        crate::pki::Pki::new(self.paths.pki_dir()).generate(&self.spec)?;
        self.start_control_plane(bins)?;
        // The components' identities and roles, then the agents' Namespace, ConfigMap and
        // DaemonSet, as an install on a cluster applies them.
        crate::rbac::apply(&self.spec, deadline)?;
        crate::agents::install(&self.spec, deadline)?;
        self.wait_ready(deadline)
    }

    /// The server standing in for the internet, in the external namespace: the built-in server
    /// on TCP and UDP port 80 (it reports the client address it sees, e.g. a node's address
    /// after masquerade).
    fn start_external_server(&self, bins: &LabBinaries) -> Result<ProcessRecord, LabError> {
        let netns = netns_path(&self.spec.external_netns);
        let mut env = log_env();
        env.push(("POD_NAME".into(), "external".into()));
        env.push(("POD_NAMESPACE".into(), "".into()));
        env.push(("POD_IP".into(), self.spec.external_ip.to_string()));
        let rec = Daemon {
            program: bins.sarasa.clone(),
            args: vec![
                "serve".into(),
                "--port".into(),
                "80/tcp".into(),
                "--port".into(),
                "80/udp".into(),
            ],
            env,
            netns: Some(&netns),
            mounts: &[],
            log: self.paths.logs_dir().join("external-server.log"),
        }
        .spawn()?;
        rec.save(&self.pid_file(EXTERNAL_SERVER))?;
        Ok(rec)
    }

    /// The internet's name server: NSD on the external host ([`crate::nsd`]), answering
    /// before `up` goes on.
    fn start_external_dns(&self) -> Result<ProcessRecord, LabError> {
        let netns = netns_path(&self.spec.external_netns);
        let (program, args) = crate::nsd::prepare(&self.paths.nsd_dir(), self.spec.external_ip)?;
        let rec = Daemon {
            program,
            args,
            env: Vec::new(),
            netns: Some(&netns),
            mounts: &[],
            log: self.paths.logs_dir().join("external-dns.log"),
        }
        .spawn()?;
        rec.save(&self.pid_file(EXTERNAL_DNS))?;
        crate::nsd::wait_answering(
            &self.spec.external_netns,
            self.spec.external_ip,
            Duration::from_secs(10),
        )?;
        Ok(rec)
    }

    /// `--backend bgp`: the fabric's top-of-rack router and route reflector ([`crate::tor`]),
    /// answering before the agents start.
    pub fn start_fabric_router(&self) -> Result<ProcessRecord, LabError> {
        if self.spec.backend != crate::spec::Backend::Bgp {
            return Err(LabError::Invalid(format!(
                "lab {:?} has no BGP router (its backend is {}; lab up --backend bgp)",
                self.spec.name, self.spec.backend
            )));
        }
        let netns = netns_path(&self.spec.fabric_netns);
        let dir = self.paths.bird_dir();
        let (program, args) = crate::tor::prepare(
            &dir,
            self.spec.fabric_ip,
            self.spec.underlay,
            ipnet::IpNet::V4(self.spec.cluster_cidr),
            &self.spec.announced_service_ranges(),
        )?;
        let rec = Daemon {
            program,
            args,
            env: Vec::new(),
            netns: Some(&netns),
            mounts: &[],
            log: self.paths.logs_dir().join("fabric-router.log"),
        }
        .spawn()?;
        rec.save(&self.pid_file(FABRIC_ROUTER))?;
        crate::tor::wait_answering(&dir, Duration::from_secs(10))?;
        Ok(rec)
    }

    /// The nodes' resolv.conf: they resolve through the external host's name server, as a
    /// node resolves through its provider's. `dnsPolicy: Default` pods get this file.
    fn write_node_resolv_conf(&self) -> Result<(), LabError> {
        let conf = crate::resolv::ResolvConf {
            nameservers: vec![self.spec.external_ip.to_string()],
            ..Default::default()
        };
        let path = self.paths.node_resolv_conf();
        std::fs::write(&path, conf.render()).map_err(|e| LabError::io(&path, e))
    }

    /// Starts the control plane in the fabric namespace. Its API is also published on
    /// 127.0.0.1 of the caller's namespace, as kind publishes a cluster's API: the loopback
    /// listener is bound here, before the child enters the fabric namespace, and handed over by
    /// descriptor; its port is recorded so a restarted control plane keeps it.
    pub fn start_control_plane(&self, bins: &LabBinaries) -> Result<ProcessRecord, LabError> {
        let netns = netns_path(&self.spec.fabric_netns);
        let loopback = self.bind_loopback()?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&loopback);
        let rec = Daemon {
            program: bins.sarasa.clone(),
            args: vec![
                "--lab".into(),
                self.spec.name.clone(),
                "lab".into(),
                "run-control-plane".into(),
                "--loopback-fd".into(),
                fd.to_string(),
            ],
            env: log_env(),
            netns: Some(&netns),
            mounts: &[],
            log: self.paths.logs_dir().join("control-plane.log"),
        }
        .spawn_passing(Some(std::os::fd::AsFd::as_fd(&loopback)))?;
        drop(loopback);
        rec.save(&self.pid_file(CONTROL_PLANE))?;
        Ok(rec)
    }

    /// Puts the agent back on `node` (see [`crate::agents::start`]) and waits until every
    /// node's agent is ready.
    pub fn start_agent(&self, node: &str, deadline: Instant) -> Result<(), LabError> {
        self.check_node(node)?;
        let spec = self.spec.clone();
        client::with_client(&self.spec, |c| async move {
            crate::agents::start(&c, &spec, node, deadline).await
        })
    }

    /// Replaces the agent pod of `node` (see [`crate::agents::restart`]).
    pub fn restart_agent(&self, node: &str, deadline: Instant) -> Result<(), LabError> {
        self.check_node(node)?;
        let spec = self.spec.clone();
        client::with_client(&self.spec, |c| async move {
            crate::agents::restart(&c, &spec, node, deadline).await
        })
    }

    fn check_node(&self, node: &str) -> Result<(), LabError> {
        match self.spec.node(node) {
            Some(_) => Ok(()),
            None => Err(LabError::Invalid(format!(
                "no node {node:?} in lab {}",
                self.spec.name
            ))),
        }
    }

    /// A kubeconfig for the lab's published API: TLS with the lab CA, the admin token.
    pub fn kubeconfig(&self) -> Result<serde_norway::Value, LabError> {
        self.secure_api()?;
        let pki = crate::pki::Pki::new(self.paths.pki_dir());
        let (ca, token, server) = (pki.ca_pem()?, pki.admin_token()?, self.loopback_url()?);
        let ep = crate::kubeconfig::Endpoint {
            server: &server,
            ca_pem: &ca,
            token: &token,
        };
        Ok(crate::kubeconfig::render(&self.spec.name, &ep))
    }

    /// Adds the lab's cluster, user and context to the kubeconfig `doc`.
    pub fn merge_into(&self, doc: &mut serde_norway::Value) -> Result<(), LabError> {
        self.secure_api()?;
        let pki = crate::pki::Pki::new(self.paths.pki_dir());
        let (ca, token, server) = (pki.ca_pem()?, pki.admin_token()?, self.loopback_url()?);
        let ep = crate::kubeconfig::Endpoint {
            server: &server,
            ca_pem: &ca,
            token: &token,
        };
        crate::kubeconfig::upsert(doc, &self.spec.name, &ep);
        Ok(())
    }

    /// Refuses kubeconfigs for a lab up with `--insecure-api` (no CA, no token to put in one).
    fn secure_api(&self) -> Result<(), LabError> {
        if self.spec.insecure_api {
            return Err(LabError::Invalid(format!(
                "lab {:?} serves its API without TLS or tokens (lab up --insecure-api, a benchmark mode): no kubeconfig; use {}",
                self.spec.name,
                self.spec.api_url()
            )));
        }
        Ok(())
    }

    /// Takes the agent off one node (the datapath it programmed stays in place); see
    /// [`crate::agents::stop`].
    pub fn stop_agent(&self, node: &str) -> Result<(), LabError> {
        self.check_node(node)?;
        client::with_client(&self.spec, |c| async move {
            crate::agents::stop(&c, node).await
        })
    }

    /// Binds 127.0.0.1 on the recorded port (a free one the first time, then recorded).
    fn bind_loopback(&self) -> Result<std::net::TcpListener, LabError> {
        let file = self.paths.api_loopback_file();
        let recorded = read_json::<LoopbackRecord>(&file)?.map(|r| r.port);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], recorded.unwrap_or(0)));
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            LabError::Api(format!(
                "publishing the API on {addr}: {e} (the lab's recorded port is taken)"
            ))
        })?;
        if recorded.is_none() {
            let port = listener
                .local_addr()
                .map_err(|e| LabError::io(&file, e))?
                .port();
            write_json_atomic(&file, &LoopbackRecord { port })?;
        }
        Ok(listener)
    }

    /// `https://127.0.0.1:PORT`: where the API is published for clients on this machine.
    pub fn loopback_url(&self) -> Result<String, LabError> {
        match read_json::<LoopbackRecord>(&self.paths.api_loopback_file())? {
            Some(r) => Ok(format!(
                "{}://127.0.0.1:{}",
                if self.spec.insecure_api {
                    "http"
                } else {
                    "https"
                },
                r.port
            )),
            None => Err(LabError::NotUp(format!(
                "lab {:?} has not published its API on 127.0.0.1 (its control plane never started)",
                self.spec.name
            ))),
        }
    }

    /// Stops the control plane (objects stay in its store; pods keep running).
    /// Stops the fabric's BGP router the way an operator takes a router down for maintenance:
    /// BIRD's `graceful restart` (its peers keep its routes, RFC 4724), then the process.
    pub fn stop_fabric_router(&self) -> Result<(), LabError> {
        let file = self.pid_file(FABRIC_ROUTER);
        let log = self.paths.logs_dir().join("fabric-router.log");
        let Some(rec) = ProcessRecord::recorded(&file, &log)? else {
            return Ok(());
        };
        crate::tor::graceful_shutdown(&self.paths.bird_dir());
        rec.stop(Duration::from_secs(5))?;
        let _ = std::fs::remove_file(file);
        Ok(())
    }

    pub fn stop_control_plane(&self) -> Result<(), LabError> {
        let file = self.pid_file(CONTROL_PLANE);
        let log = self.paths.logs_dir().join("control-plane.log");
        if let Some(rec) = ProcessRecord::recorded(&file, &log)? {
            rec.stop(Duration::from_secs(5))?;
        }
        let _ = std::fs::remove_file(file);
        Ok(())
    }

    pub(crate) fn pid_file(&self, key: &str) -> PathBuf {
        self.paths.pids_dir().join(format!("{key}.json"))
    }

    /// [`Lab::wait_ready`] behind a control plane just started as `rec`, failing as soon as
    /// that process exits, with the end of its log (a control plane that refuses its state
    /// says why, naming the file, instead of a minute's timeout).
    pub fn wait_control_plane_ready(
        &self,
        rec: &ProcessRecord,
        deadline: Instant,
    ) -> Result<(), LabError> {
        loop {
            let slice = (Instant::now() + Duration::from_secs(2)).min(deadline);
            match self.wait_ready(slice) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) if !rec.alive() => {
                    let log = self.paths.logs_dir().join("control-plane.log");
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let last = text
                        .lines()
                        .rev()
                        .find(|l| l.contains("error") || l.contains("ERROR"))
                        .unwrap_or("(no error in the log)");
                    return Err(LabError::Process(format!(
                        "the control plane exited at start ({}): {last}",
                        log.display()
                    )));
                }
                Err(_) => {}
            }
        }
    }

    /// Waits until the API answers, every node's network is up and its agent pod is Ready.
    pub fn wait_ready(&self, deadline: Instant) -> Result<(), LabError> {
        let spec = self.spec.clone();
        client::with_client(&self.spec, |c| async move {
            crate::agents::wait_all_ready(&c, &spec, deadline).await
        })
    }

    /// Stops every process of the lab and removes its namespaces and state. Keeps going after
    /// errors and reports them all.
    pub fn down(&self) -> Result<(), LabError> {
        let mut errors = Vec::new();
        if let Err(e) = self.stop_control_plane() {
            errors.push(e.to_string());
        }
        for key in [
            EXTERNAL_SERVER,
            EXTERNAL_DNS,
            FABRIC_ROUTER,
            CLUSTERSET_SYNC,
        ] {
            if let Some(rec) = ProcessRecord::load(&self.pid_file(key)) {
                if let Err(e) = rec.stop(Duration::from_secs(2)) {
                    errors.push(e.to_string());
                }
            }
        }
        // Containers the pod runner started (the agents among them).
        if let Ok(dir) = std::fs::read_dir(self.paths.pods_dir()) {
            for entry in dir.flatten() {
                if let Ok(Some(rec)) = read_json::<crate::kubelet::PodRecord>(&entry.path()) {
                    for c in rec.containers {
                        if let Some(p) = c.process {
                            if let Err(e) = p.stop(Duration::from_secs(2)) {
                                errors.push(e.to_string());
                            }
                        }
                    }
                }
            }
        }
        // What the agents left running in the nodes' namespaces, detached on purpose (the BGP
        // backend's BIRD outlives an agent restart), ends with the lab.
        for node in &self.spec.nodes {
            crate::kubelet::end_processes_in(&node.netns, Duration::from_secs(2));
        }
        if let Err(e) = topology::destroy(&self.spec) {
            errors.push(e.to_string());
        }
        if let Err(e) = self.remove_mount_points() {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            std::fs::remove_dir_all(&self.paths.root)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| LabError::io(&self.paths.root, e))?;
            Ok(())
        } else {
            Err(LabError::Process(errors.join("; ")))
        }
    }

    /// The mount points the lab's containers needed on the machine's filesystem go with the
    /// last lab that is down (another lab's containers may be using them).
    fn remove_mount_points(&self) -> Result<(), LabError> {
        let root = crate::paths::state_root();
        let others_up = std::fs::read_dir(&root)
            .map(|dir| {
                dir.flatten()
                    .any(|e| e.path() != self.paths.root && e.path().join("lab.json").exists())
            })
            .unwrap_or(false);
        if others_up {
            return Ok(());
        }
        let kept = crate::mount_points::remove_recorded(&root, Duration::from_secs(5))?;
        if !kept.is_empty() {
            tracing::warn!(?kept, "mount points the lab created are not empty; kept");
        }
        Ok(())
    }

    pub fn status(&self) -> Result<Vec<NodeStatus>, LabError> {
        let spec = self.spec.clone();
        client::with_client(&self.spec, |c| async move {
            let nodes: Vec<Node> = Api::<Node>::all(c.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| LabError::Api(format!("listing nodes: {e}")))?
                .items;
            let agents = crate::agents::pods(&c).await?;
            let pods: Vec<Pod> = Api::<Pod>::all(c)
                .list(&ListParams::default())
                .await
                .map_err(|e| LabError::Api(format!("listing pods: {e}")))?
                .items;
            Ok(spec
                .nodes
                .iter()
                .map(|n| {
                    let obj = nodes
                        .iter()
                        .find(|o| o.metadata.name.as_deref() == Some(&n.name));
                    NodeStatus {
                        name: n.name.clone(),
                        address: n
                            .ips()
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        pod_cidr: obj
                            .and_then(|o| o.spec.as_ref())
                            .and_then(|s| {
                                s.pod_cidrs
                                    .as_ref()
                                    .filter(|c| !c.is_empty())
                                    .map(|c| c.join(","))
                                    .or_else(|| s.pod_cidr.clone())
                            })
                            .or_else(|| obj.and_then(vpc_addresses))
                            .unwrap_or_else(|| "<none>".into()),
                        agent: crate::agents::agent_state(&agents, obj, &n.name).into(),
                        pods: pods
                            .iter()
                            .filter(|p| {
                                p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                                    == Some(n.name.as_str())
                            })
                            .count(),
                    }
                })
                .collect())
        })
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(name)
}

pub(crate) fn log_env() -> Vec<(String, String)> {
    let level = std::env::var("SARASA_LOG").unwrap_or_else(|_| "info".into());
    vec![("SARASA_LOG".into(), level)]
}

/// A node is ready when its agent set `NetworkUnavailable=False` on it.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "False")
        })
}

/// A vpc node's addresses for `lab status`'s POD-CIDR column: "vpc: N of LIMIT".
fn vpc_addresses(node: &k8s_openapi::api::core::v1::Node) -> Option<String> {
    let ann = node.metadata.annotations.as_ref()?;
    let held = ann.get("sarasa.io/vpc-addresses")?;
    let n = held.split(',').filter(|a| !a.is_empty()).count();
    let limit = ann
        .get("sarasa.io/vpc-address-limit")
        .map_or(String::new(), |l| format!(" of {l}"));
    Some(format!("vpc: {n}{limit}"))
}
