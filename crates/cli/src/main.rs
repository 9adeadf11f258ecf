//! `sarasa`: the lab (`lab up/down/status`), kubectl-like commands against it
//! (`apply/get/delete/exec`), the node agent (`agent`), and the built-in workload
//! (`serve`, `probe`).

mod cluster_dns;
mod cmd_agent;
mod cmd_clusterset;
mod cmd_dns;
mod cmd_drops;
mod cmd_graph;
mod cmd_lab;
mod cmd_objects;
mod cmd_policy;
mod cmd_trace;
mod drops;
mod lab_check;
mod topology;
mod trace_fetch;
mod trace_handles;
mod trace_live;
mod trace_svg;
mod trace_world;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sarasa",
    version,
    about = "sarasa: a Kubernetes networking stack and its lab"
)]
struct Cli {
    /// Which lab to act on (several labs can be up at once).
    #[arg(long, global = true, env = "SARASA_LAB", default_value = "default")]
    lab: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build, inspect and remove a lab: a multi-node cluster network on this machine.
    Lab(cmd_lab::LabArgs),
    /// Create or update objects from Kubernetes YAML (file, directory or - for stdin).
    Apply(cmd_objects::ApplyArgs),
    /// Delete objects named in YAML, or one object by kind and name.
    Delete(cmd_objects::DeleteArgs),
    /// List or show objects, like kubectl get.
    Get(cmd_objects::GetArgs),
    /// Run a command inside a pod's, a node's (node/NAME), the fabric's (fabric) or the external host's namespace.
    Exec(cmd_objects::ExecArgs),
    /// The node agent: watch the cluster and program this node's datapath (`agent uninstall`:
    /// remove sarasa from this node).
    Agent(cmd_agent::AgentArgs),
    /// The cluster DNS server (Kubernetes DNS-Based Service Discovery 1.1.0 + forwarding).
    Dns(cmd_dns::DnsArgs),
    /// The built-in server lab pods run on their containerPorts.
    Serve(sarasa_workload::ServeArgs),
    /// Connect to tcp://, udp:// or http:// targets; exit 0 when connected.
    Probe(sarasa_workload::ProbeArgs),
    /// NetworkPolicy tools: `policy matrix` (computed and, with --probe, measured).
    Policy(cmd_policy::PolicyArgs),
    /// Recent NetworkPolicy drop events from every node: pods, port, direction, policies.
    Drops(cmd_drops::DropsArgs),
    /// Explain what the network does with one packet: every node, hook, Service, policy and
    /// route it crosses, from the node plans the agents program.
    Trace(cmd_trace::TraceArgs),
    /// Cluster sets of labs: join, status, leave, delete, broker stop|start (see
    /// `sarasa clusterset --help`)
    Clusterset {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // `clusterset` repeats `--lab`, which is global everywhere else: it parses its own.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("clusterset") {
        init_logging_with("warn,kube_client=off");
        return finish(cmd_clusterset::run(argv[2..].to_vec()));
    }
    let cli = Cli::parse();
    init_logging(&cli.command);
    let result = match cli.command {
        Command::Lab(args) => cmd_lab::run(&cli.lab, args),
        Command::Apply(args) => cmd_objects::apply(&cli.lab, args),
        Command::Delete(args) => cmd_objects::delete(&cli.lab, args),
        Command::Get(args) => cmd_objects::get(&cli.lab, args),
        Command::Exec(args) => cmd_objects::exec(&cli.lab, args),
        Command::Policy(args) => cmd_policy::run(&cli.lab, args),
        Command::Drops(args) => cmd_drops::run(&cli.lab, args),
        Command::Trace(args) => cmd_trace::run(&cli.lab, args),
        Command::Agent(args) => cmd_agent::run(args),
        Command::Dns(args) => cmd_dns::run(args),
        Command::Serve(args) => sarasa_workload::run_serve(&args)
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Probe(args) => sarasa_workload::run_probe(&args, &mut std::io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Clusterset { args } => cmd_clusterset::run(args),
    };
    finish(result)
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(command: &Command) {
    // Long-running processes log at info by default; one-shot commands only warn. The kube
    // client's own connection errors are not logged by commands that poll the API while it
    // comes up: they return their errors instead.
    let default = match command {
        Command::Agent(_) => "info",
        // hickory's server logs every request at info: a line per query would cost more than
        // the query.
        Command::Dns(_) => "info,hickory_server=warn",
        Command::Lab(_) => "info,kube_client=off",
        _ => "warn,kube_client=off",
    };
    init_logging_with(default);
}

fn init_logging_with(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SARASA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
