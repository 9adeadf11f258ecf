//! kubectl-like commands against a lab: apply, delete, get, exec.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use sarasa_lab::exec::ExecTarget;
use sarasa_lab::Lab;

#[derive(Args)]
pub struct ApplyArgs {
    /// A YAML file, a directory of them, or - for standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Namespace for objects that name none.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Return only when the pods are Running and every agent has programmed this state.
    #[arg(long)]
    wait: bool,
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// YAML naming the objects to delete.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// KIND NAME, e.g. `pod web-1` or `svc/web`.
    target: Vec<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

#[derive(Args)]
pub struct GetArgs {
    /// nodes, namespaces, pods, deployments, services, endpointslices, networkpolicies, events (or kubectl's short names).
    kind: String,
    name: Option<String>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// wide, yaml or json.
    #[arg(short = 'o', long)]
    output: Option<String>,
}

#[derive(Args)]
pub struct ExecArgs {
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// POD, node/NAME or external.
    target: String,
    /// The command and its arguments (after --).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn exec(lab: &str, args: ExecArgs) -> Result<ExitCode> {
    let lab = Lab::open(lab)?;
    let target = ExecTarget::parse(&args.target, &args.namespace)?;
    let code = sarasa_lab::exec::exec(&lab, &target, &args.command)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn parse_all(inputs: &[String]) -> Result<Vec<sarasa_kubectl::Manifest>> {
    let mut manifests = Vec::new();
    for input in inputs {
        manifests.extend(sarasa_kubectl::load_manifests(input)?);
    }
    Ok(manifests)
}

fn api_err(e: sarasa_kubectl::KubectlError) -> sarasa_lab::LabError {
    sarasa_lab::LabError::Api(e.to_string())
}

pub fn apply(lab: &str, args: ApplyArgs) -> Result<ExitCode> {
    // Parse everything before touching the lab: a bad file applies nothing.
    let manifests = parse_all(&args.files)?;
    let lab = Lab::open(lab)?;
    let opts = sarasa_kubectl::ApplyOptions {
        namespace: args.namespace.clone(),
        ..Default::default()
    };
    let report = sarasa_lab::client::with_client(&lab.spec, |c| async move {
        sarasa_kubectl::apply(&c, &manifests, &opts, &mut std::io::stdout())
            .await
            .map_err(api_err)
    })?;
    if args.wait {
        let ns_of = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (
                m.namespace.clone().unwrap_or_else(|| "default".into()),
                m.name.clone().unwrap_or_default(),
            )
        };
        let what = sarasa_lab::wait::WaitFor {
            pods: report.pods().map(|p| ns_of(&p.metadata)).collect(),
            deployments: report.deployments().map(|d| ns_of(&d.metadata)).collect(),
            resource_version: report.agent_resource_version().unwrap_or(0),
        };
        sarasa_lab::wait::wait(&lab, what, args.timeout)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn delete(lab: &str, args: DeleteArgs) -> Result<ExitCode> {
    let target = match (args.files.is_empty(), args.target.as_slice()) {
        (false, []) => Target::Files(parse_all(&args.files)?),
        (true, [kind_name]) if kind_name.contains('/') => {
            let (k, n) = kind_name.split_once('/').unwrap_or_default();
            Target::One(k.to_string(), n.to_string())
        }
        (true, [kind, name]) => Target::One(kind.clone(), name.clone()),
        _ => bail!("delete needs either -f FILE or KIND NAME"),
    };
    let lab = Lab::open(lab)?;
    let ns = args.namespace.clone();
    sarasa_lab::client::with_client(&lab.spec, |c| async move {
        let mut out = std::io::stdout();
        match target {
            Target::Files(m) => {
                sarasa_kubectl::delete_manifests(&c, &m, ns.as_deref(), &mut out).await
            }
            Target::One(kind, name) => {
                sarasa_kubectl::delete(&c, &kind, &name, ns.as_deref(), &mut out).await
            }
        }
        .map_err(api_err)
    })?;
    Ok(ExitCode::SUCCESS)
}

enum Target {
    Files(Vec<sarasa_kubectl::Manifest>),
    One(String, String),
}

pub fn get(lab: &str, args: GetArgs) -> Result<ExitCode> {
    let output: sarasa_kubectl::OutputFormat = match args.output.as_deref() {
        None => sarasa_kubectl::OutputFormat::Table,
        Some(o) => o.parse()?,
    };
    let scope = sarasa_kubectl::Scope::from_flags(args.namespace.as_deref(), args.all_namespaces);
    let lab = Lab::open(lab)?;
    let out = sarasa_lab::client::with_client(&lab.spec, |c| async move {
        sarasa_kubectl::get(&c, &args.kind, args.name.as_deref(), &scope, output)
            .await
            .map_err(api_err)
    })?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
