//! `sarasa lab ...`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use sarasa_lab::lab::LabBinaries;
use sarasa_lab::spec::parse_size;
use sarasa_lab::{kubeconfig, Backend, CniMode, Lab, LabSpec};

#[derive(Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build the lab and start its control plane and agents; returns when every agent is ready.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How pods on different nodes reach each other [default: vxlan; vpc with --ipam vpc]
        #[arg(long, value_enum)]
        backend: Option<Backend>,
        /// How the CNI plugin attaches pods [default: bridge; routed with --ipam vpc]
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// Where pod addresses come from: each node's podCIDR (host-local), or the lab's
        /// cloud VPC, which assigns each node addresses up to its limit and routes them (vpc)
        #[arg(long, value_enum, default_value_t = IpamArg::HostLocal)]
        ipam: IpamArg,
        /// With --ipam vpc: the most VPC addresses one node may hold (its instance type's
        /// limit); the node's max pods is this plus 1 (the agent's host-network pod)
        #[arg(long, default_value_t = sarasa_lab::vpc::DEFAULT_ADDRESS_LIMIT)]
        vpc_address_limit: u32,
        /// With --ipam vpc: free addresses each node's agent keeps ready (its warm pool), so a
        /// pod's ADD never waits on the cloud
        #[arg(long, default_value_t = sarasa_lab::vpc::DEFAULT_WARM_ADDRESSES)]
        vpc_warm_addresses: u32,
        /// How long to wait for the agents, and then for the cluster DNS (at least 60 s).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Rotate a container's log once it passes this size (the kubelet's
        /// containerLogMaxSize): bytes, or with Ki, Mi, Gi (K, M, G decimal); at least 4Ki.
        #[arg(long, default_value = "10Mi")]
        container_log_max_size: String,
        /// Log files kept per container, the one written included (the kubelet's
        /// containerLogMaxFiles); 2 to 100.
        #[arg(long, default_value_t = sarasa_lab::container_log::LOG_KEEP_ROTATED + 1)]
        container_log_max_files: usize,
        /// The pods' IPv4 range (the cluster CIDR); each node takes a /24 of it as its podCIDR;
        /// with --dual-stack IPV4,IPV6 (a /64 per node) [default: 10.244.0.0/16]
        #[arg(long)]
        pod_cidr: Option<String>,
        /// The Services' IPv4 range, /12 to /28: the `kubernetes` Service takes its first
        /// address, the cluster DNS its tenth; with --dual-stack IPV4,IPV6 (/108 to /124)
        /// [default: 10.96.0.0/12]
        #[arg(long)]
        service_cidr: Option<String>,
        /// The lab's id in a cluster set (MCS's cluster.clusterset.k8s.io): a DNS label
        /// [default: the lab's name]
        #[arg(long)]
        cluster_id: Option<String>,
        /// IPv6 as well as IPv4 for the underlay, nodes, pods and Services (IPv4 stays the
        /// primary family): pods fd00:10:244::/56 (a /64 per node), Services fd00:10:96::/112,
        /// unless --pod-cidr/--service-cidr give IPV4,IPV6
        #[arg(long)]
        dual_stack: bool,
        /// Benchmark only: serve the API as before its security (plain HTTP, no tokens, every
        /// request allowed), to measure what TLS and RBAC cost (scripts/bench-lab.sh up-security)
        #[arg(long, hide = true)]
        insecure_api: bool,
    },
    /// Remove everything the lab made: processes, namespaces, links, state.
    Down,
    /// Nodes (name, address, podCIDR, agent state) and pod counts.
    Status,
    /// The topology: fabric, nodes, tunnels, bridges, pods, Services and their endpoints.
    Graph(crate::cmd_graph::GraphArgs),
    /// Stop, start or restart one node's agent, a pod of the sarasa-agent DaemonSet (the
    /// datapath it programmed stays in place): stop labels the Node sarasa.io/agent=stopped,
    /// which the DaemonSet excludes; start removes the label; restart deletes the pod and the
    /// DaemonSet makes a new one.
    Agent {
        #[arg(value_enum)]
        action: Action,
        node: String,
    },
    /// Stop, start or restart the control plane (objects are kept).
    ControlPlane {
        #[arg(value_enum)]
        action: Action,
    },
    /// Internal: a container's log shim (started by the pod runner): stamps the lines of the
    /// container's stdout (stdin) and stderr (descriptor 3) into its CRI log (stdout).
    #[command(hide = true)]
    LogShim {
        /// The log file (the shim's stdout), so it can be rotated by size.
        #[arg(long)]
        path: Option<std::path::PathBuf>,
        /// Rotate past this many bytes.
        #[arg(long, default_value_t = sarasa_lab::container_log::LOG_MAX_BYTES)]
        max_bytes: u64,
        /// Rotated files to keep.
        #[arg(long, default_value_t = sarasa_lab::container_log::LOG_KEEP_ROTATED)]
        keep: usize,
    },
    /// Internal: the control-plane process itself (started by `lab up`).
    #[command(hide = true)]
    RunControlPlane {
        /// The inherited descriptor of the 127.0.0.1 listener `lab up` bound.
        #[arg(long)]
        loopback_fd: Option<i32>,
    },
    /// Compare every node's nftables tables with the plan compiled from the API's objects (as
    /// `sarasa trace` compiles it); exit 1 when any differs
    Check {
        /// Only this node
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop, start or restart the fabric's BGP router (`--backend bgp`; BIRD, the nodes'
    /// top-of-rack router and route reflector). Stop is a graceful restart: the nodes keep
    /// its routes (RFC 4724) and report the session down on their Node
    /// (condition BGPPeersEstablished).
    Router {
        #[arg(value_enum)]
        action: Action,
    },
    /// Print a kubeconfig for the lab's API (published on 127.0.0.1, as kind does); `lab up`
    /// also merges its `sarasa-<lab>` context into your kubeconfig.
    Kubeconfig {
        /// The lab (default: the global --lab).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Action {
    Stop,
    Start,
    Restart,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IpamArg {
    HostLocal,
    Vpc,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Bridge,
    Routed,
}

/// How long `lab up` waits at least for the DNS replicas (they start after the nodes are ready).
const DNS_READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(lab: &str, args: LabArgs) -> Result<ExitCode> {
    match args.command {
        LabCommand::Up {
            nodes,
            backend,
            mode,
            ipam,
            vpc_address_limit,
            vpc_warm_addresses,
            timeout,
            container_log_max_size,
            container_log_max_files,
            pod_cidr,
            service_cidr,
            cluster_id,
            dual_stack,
            insecure_api,
        } => {
            let vpc = ipam == IpamArg::Vpc || backend == Some(Backend::Vpc);
            let mode = match mode {
                Some(ModeArg::Bridge) => CniMode::Bridge,
                Some(ModeArg::Routed) => CniMode::Routed,
                None if vpc => CniMode::Routed,
                None => CniMode::Bridge,
            };
            let backend = backend.unwrap_or(if vpc { Backend::Vpc } else { Backend::Vxlan });
            let max_bytes = parse_size(&container_log_max_size, "--container-log-max-size")?;
            let mut spec = LabSpec::new(lab, nodes, backend, mode)?
                .with_container_logs(max_bytes, container_log_max_files)?;
            if dual_stack {
                spec = spec.with_dual_stack()?;
            }
            spec = spec.with_networks(
                pod_cidr.as_deref(),
                service_cidr.as_deref(),
                cluster_id.as_deref(),
            )?;
            if vpc {
                let v = sarasa_lab::vpc::VpcSpec::new(vpc_address_limit, vpc_warm_addresses)?;
                spec = spec.with_vpc(v)?;
            }
            spec.insecure_api = insecure_api;
            let started = std::time::Instant::now();
            let lab = Lab::up(spec, &binaries()?, timeout)?;
            // The cluster DNS add-on, as a cluster's bootstrap installs CoreDNS; a lab whose
            // DNS never gets ready is taken down like any other failed `up`.
            if let Err(e) = crate::cluster_dns::install(&lab, timeout.max(DNS_READY_TIMEOUT)) {
                let _ = lab.down();
                return Err(e);
            }
            println!(
                "lab {:?} is up: {} nodes, backend {}, CNI mode {} ({:.1}s)",
                lab.spec.name,
                lab.spec.nodes.len(),
                backend.as_str(),
                mode.as_str(),
                started.elapsed().as_secs_f64()
            );
            print_status(&lab)?;
            // The lab works without the merged context (`lab kubeconfig` prints one): a
            // kubeconfig that cannot be updated is reported, not fatal.
            if lab.spec.insecure_api {
                println!("API on {} without TLS or authorization (--insecure-api, for benchmarks only); no kubectl context added", lab.spec.api_url());
            } else if let Err(e) = merge_kubeconfig(&lab) {
                eprintln!("warning: {e:#}");
            }
        }
        LabCommand::Down => {
            let lab = Lab::open(lab)?;
            // The kubeconfig entries go even when taking the lab down reports errors.
            let unmerged = kubeconfig::user_path()
                .and_then(|p| kubeconfig::edit(&p, |d| kubeconfig::remove(d, &lab.spec.name)));
            lab.down()?;
            if let Err(e) = unmerged {
                eprintln!("warning: removing the lab's context from your kubeconfig: {e}");
            }
            println!("lab {:?} is down", lab.spec.name);
        }
        LabCommand::Status => print_status(&Lab::open(lab)?)?,
        LabCommand::Graph(args) => return crate::cmd_graph::run(lab, args),
        LabCommand::Agent { action, node } => {
            let lab = Lab::open(lab)?;
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            match action {
                Action::Stop => lab.stop_agent(&node)?,
                Action::Start => lab.start_agent(&node, deadline)?,
                Action::Restart => lab.restart_agent(&node, deadline)?,
            }
        }
        LabCommand::Router { action } => {
            let lab = Lab::open(lab)?;
            if matches!(action, Action::Stop | Action::Restart) {
                lab.stop_fabric_router()?;
            }
            if matches!(action, Action::Start | Action::Restart) {
                lab.start_fabric_router()?;
            }
        }
        LabCommand::ControlPlane { action } => {
            let lab = Lab::open(lab)?;
            if matches!(action, Action::Stop | Action::Restart) {
                lab.stop_control_plane()?;
            }
            if matches!(action, Action::Start | Action::Restart) {
                let rec = lab.start_control_plane(&binaries()?)?;
                lab.wait_control_plane_ready(
                    &rec,
                    std::time::Instant::now() + Duration::from_secs(60),
                )?;
            }
        }
        LabCommand::LogShim {
            path,
            max_bytes,
            keep,
        } => {
            let rotation = path.map(|path| sarasa_lab::container_log::Rotation {
                path,
                max_bytes,
                keep,
            });
            sarasa_lab::container_log::run_shim_on_stdio(rotation)
                .context("copying container output into its log")?;
        }
        LabCommand::Check { node } => {
            let lab = Lab::open(lab)?;
            let (diffs, warnings) = crate::lab_check::check(&lab, node.as_deref())?;
            if !crate::lab_check::print(&diffs, &warnings) {
                return Ok(ExitCode::from(1));
            }
        }
        LabCommand::Kubeconfig { name } => {
            let lab = Lab::open(name.as_deref().unwrap_or(lab))?;
            let doc = lab.kubeconfig()?;
            print!("{}", serde_norway::to_string(&doc)?);
        }
        LabCommand::RunControlPlane { loopback_fd } => {
            let lab = Lab::open(lab)?;
            let loopback = loopback_fd.map(|fd| {
                // SAFETY: `lab up` bound this listener, cleared its close-on-exec flag and
                // passed its number for this process alone; nothing else here owns it.
                unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            });
            let bins = sarasa_lab::kubelet::Binaries {
                sarasa: std::env::current_exe().context("locating the sarasa binary")?,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(sarasa_lab::control_plane::run(
                lab.spec, lab.paths, bins, loopback,
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Merges the lab's `sarasa-<lab>` cluster, user and context into the user's kubeconfig.
fn merge_kubeconfig(lab: &Lab) -> Result<()> {
    let path = kubeconfig::user_path()?;
    let url = lab.loopback_url()?;
    let mut merged = Ok(());
    kubeconfig::edit(&path, |d| merged = lab.merge_into(d))
        .and(merged)
        .with_context(|| format!("merging the lab's context into {}", path.display()))?;
    println!(
        "API on {url}; kubectl context {:?} added to {} (kubectl --context {0} get nodes)",
        kubeconfig::context_name(&lab.spec.name),
        path.display()
    );
    Ok(())
}

fn print_status(lab: &Lab) -> Result<()> {
    let rows = lab.status()?;
    println!("NODE       ADDRESS          POD-CIDR         AGENT      PODS");
    for r in rows {
        println!(
            "{:<10} {:<16} {:<16} {:<10} {}",
            r.name, r.address, r.pod_cidr, r.agent, r.pods
        );
    }
    println!(
        "cluster id {}: pods {}, Services {} (DNS {})",
        lab.spec.cluster_id(),
        join(&lab.spec.cluster_cidrs()),
        join(&lab.spec.service_cidrs()),
        sarasa_lab::dns_ip(&lab.spec)
    );
    Ok(())
}

/// The `sarasa` binary, which is the lab's `sarasa` image: `sarasa-cni` must be built next
/// to it (the agent DaemonSet's init container installs it on every node from there).
pub fn binaries() -> Result<LabBinaries> {
    let sarasa = std::env::current_exe().context("locating the sarasa binary")?;
    let dir = sarasa
        .parent()
        .map(PathBuf::from)
        .context("the sarasa binary has no directory")?;
    if !dir.join("sarasa-cni").exists() {
        anyhow::bail!(
            "no sarasa-cni plugin next to {} (build it with `cargo build --bins`)",
            sarasa.display()
        );
    }
    Ok(LabBinaries { sarasa })
}

/// Ranges as the flags take them: `IPV4[,IPV6]`.
fn join(nets: &[ipnet::IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
