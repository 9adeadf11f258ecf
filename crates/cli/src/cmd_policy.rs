//! `sarasa policy matrix`: the NetworkPolicy allow/deny matrix between the pods of some
//! namespaces, computed from the cluster's objects with `sarasa-policy` and, with `--probe`,
//! measured with real connections from each source pod's network namespace.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use sarasa_cluster::{objects, ClusterView};
use sarasa_lab::{Lab, LabError};
use sarasa_netns::NetNs;
use sarasa_policy::{matrix, render_bits, Matrix, PodKey, PolicyState, Protocol};
use sarasa_workload::ProbeTarget;
use serde_json::json;

#[derive(Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// The allow/deny matrix between pods (rows from, columns to; `.` allowed, `X` denied),
    /// computed from the NetworkPolicies; with --probe also measured, differences marked `!`.
    Matrix(MatrixArgs),
}

#[derive(Args)]
pub struct MatrixArgs {
    /// Namespaces whose pods make the rows and columns (comma-separated or repeated);
    /// default: every namespace with pods except kube-*.
    #[arg(short = 'n', long = "namespace", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Destination port.
    #[arg(long, default_value_t = 80)]
    port: u16,
    #[arg(long, value_enum, default_value_t = Proto::Tcp)]
    proto: Proto,
    /// Also connect from every pod to every pod and compare with the computed matrix; exits
    /// 1 when a cell differs.
    #[arg(long)]
    probe: bool,
    /// Per-probe timeout (a denied TCP connection or UDP datagram waits this long).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Probes run at once.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Probe a cell that differs from the model again, up to this many times (the last
    /// measurement counts), so one lost datagram does not report a difference.
    #[arg(long, default_value_t = 1)]
    retries: usize,
    /// text (default) or json.
    #[arg(short = 'o', long, default_value = "text")]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn policy(self) -> Protocol {
        match self {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
        }
    }
    fn scheme(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

pub fn run(lab: &str, args: PolicyArgs) -> Result<ExitCode> {
    match args.command {
        PolicyCommand::Matrix(m) => run_matrix(lab, m),
    }
}

/// The cluster as the agents see it (one list of every kind, through their projections).
fn fetch(lab: &Lab) -> Result<ClusterView, LabError> {
    sarasa_lab::client::with_client(&lab.spec, |c| async move {
        sarasa_cluster::list_view(&c)
            .await
            .map_err(|e| LabError::Api(e.to_string()))
    })
}

/// The policy state of the cluster, built by the rule the agents' enforcers use; objects left
/// out are reported in `warnings`. Rows and columns are the pods that can answer a probe now
/// (running, with an address, not shutting down): the others are dropped from the state, which
/// changes no verdict between the pods that remain.
fn build_state(view: &ClusterView, warnings: &mut Vec<String>) -> PolicyState {
    let (mut state, fed) = view.build_policy_state();
    let policy_kinds = [objects::POD, objects::NAMESPACE, objects::NETWORK_POLICY];
    warnings.extend(
        view.rejected
            .iter()
            .chain(&fed.rejected)
            .filter(|r| policy_kinds.contains(&r.kind))
            .map(|r| format!("{r} (left out, as the agents leave it out)")),
    );
    for pod in view.pods.values().filter(|p| !p.is_serving()) {
        state.delete_pod(&PodKey::new(&pod.namespace, &pod.name));
    }
    state
}

/// The namespaces asked for, or every namespace with live pods except the kube-* ones.
fn choose_namespaces(asked: &[String], state: &PolicyState) -> Vec<String> {
    if !asked.is_empty() {
        return asked.to_vec();
    }
    let mut names: Vec<String> = state.pods().map(|p| p.namespace.clone()).collect();
    names.dedup();
    names.retain(|n| !n.starts_with("kube-"));
    names
}

fn run_matrix(lab_name: &str, args: MatrixArgs) -> Result<ExitCode> {
    let lab = Lab::open(lab_name)?;
    let view = fetch(&lab)?;
    let mut warnings = Vec::new();
    let state = build_state(&view, &mut warnings);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let namespaces = choose_namespaces(&args.namespaces, &state);
    let ns_refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let model = matrix(&state, &ns_refs, args.port, args.proto.policy())?;
    if model.pods.is_empty() {
        bail!(
            "no running pods in namespaces {}",
            if namespaces.is_empty() {
                "(none)".to_string()
            } else {
                namespaces.join(",")
            }
        );
    }
    let model_bits = model.allowed();
    let measured = if args.probe {
        let jobs = probe_jobs(&lab, &view, &state, &model, &args)?;
        Some(measure_with_retries(&jobs, &model_bits, &args))
    } else {
        None
    };
    let differences = differences(&model, measured.as_deref());
    match args.output {
        Output::Text => print_text(&model, measured.as_deref(), &differences, &args),
        Output::Json => print_json(&model, measured.as_deref(), &differences, &args)?,
    }
    if !differences.is_empty() {
        eprintln!(
            "{} of {} cells differ between the policies and the measurement",
            differences.len(),
            model.pods.len() * model.pods.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// One probe: from the source pod's namespace to the destination pod's address.
struct Job {
    netns: NetNs,
    target: ProbeTarget,
}

/// `jobs[from * n + to]`, in matrix order.
fn probe_jobs(
    lab: &Lab,
    view: &ClusterView,
    state: &PolicyState,
    model: &Matrix,
    args: &MatrixArgs,
) -> Result<Vec<Job>> {
    let uids: BTreeMap<PodKey, &str> = view
        .pods
        .values()
        .filter(|p| p.is_serving())
        .map(|p| (PodKey::new(&p.namespace, &p.name), p.uid.as_str()))
        .collect();
    let mut netns = Vec::with_capacity(model.pods.len());
    let mut addrs = Vec::with_capacity(model.pods.len());
    for key in &model.pods {
        let uid = uids
            .get(key)
            .with_context(|| format!("pod {key} has no uid"))?;
        let path = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(lab.spec.pod_netns(uid));
        netns.push(
            NetNs::open(&path).with_context(|| format!("pod {key}: opening {}", path.display()))?,
        );
        let ip = state
            .pod(key)
            .and_then(|p| p.ips.first().copied())
            .with_context(|| format!("pod {key} has no address"))?;
        addrs.push(ip);
    }
    let mut jobs = Vec::with_capacity(netns.len() * addrs.len());
    for ns in &netns {
        for ip in &addrs {
            let url = format!(
                "{}://{}",
                args.proto.scheme(),
                SocketAddr::new(*ip, args.port)
            );
            let target: ProbeTarget = url
                .parse()
                .map_err(|e| anyhow::anyhow!("probe target {url}: {e}"))?;
            jobs.push(Job {
                netns: ns.clone(),
                target,
            });
        }
    }
    Ok(jobs)
}

/// Probes every job, then probes again (up to `retries` times) the cells that differ from the
/// model; the last measurement of a cell counts. Returns `measured[from][to]`.
fn measure_with_retries(jobs: &[Job], model: &[Vec<bool>], args: &MatrixArgs) -> Vec<Vec<bool>> {
    let n = model.len();
    let flat_model: Vec<bool> = model.iter().flatten().copied().collect();
    let all: Vec<usize> = (0..jobs.len()).collect();
    let mut flat = vec![false; jobs.len()];
    for (i, ok) in all.iter().zip(measure(jobs, &all, args)) {
        flat[*i] = ok;
    }
    for _ in 0..args.retries {
        let again: Vec<usize> = (0..jobs.len())
            .filter(|&i| flat[i] != flat_model[i])
            .collect();
        if again.is_empty() {
            break;
        }
        for (i, ok) in again.iter().zip(measure(jobs, &again, args)) {
            flat[*i] = ok;
        }
    }
    flat.chunks(n.max(1)).map(<[bool]>::to_vec).collect()
}

/// Runs the jobs at `which`, `args.parallel` at a time; true = connected.
fn measure(jobs: &[Job], which: &[usize], args: &MatrixArgs) -> Vec<bool> {
    let next = AtomicUsize::new(0);
    let results: Vec<AtomicBool> = which.iter().map(|_| AtomicBool::new(false)).collect();
    let workers = args.parallel.clamp(1, which.len().max(1));
    let timeout = args.timeout;
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = which.get(k) else { break };
                let job = &jobs[i];
                let target = &job.target;
                let ok = job
                    .netns
                    .run(|| sarasa_workload::probe(target, timeout).is_ok())
                    .unwrap_or(false);
                results[k].store(ok, Ordering::Relaxed);
            });
        }
    });
    results.into_iter().map(AtomicBool::into_inner).collect()
}

/// A cell where the model and the measurement disagree.
struct Difference {
    from: usize,
    to: usize,
    model: bool,
}

fn differences(model: &Matrix, measured: Option<&[Vec<bool>]>) -> Vec<Difference> {
    let Some(measured) = measured else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, row) in model.cells.iter().enumerate() {
        for (j, cell) in row.iter().enumerate() {
            if measured[i][j] != cell.allowed {
                out.push(Difference {
                    from: i,
                    to: j,
                    model: cell.allowed,
                });
            }
        }
    }
    out
}

fn print_text(
    model: &Matrix,
    measured: Option<&[Vec<bool>]>,
    differences: &[Difference],
    args: &MatrixArgs,
) {
    let what = format!(
        "{}/{} (rows from, columns to; . allowed, X denied)",
        args.proto.policy().as_str(),
        args.port
    );
    println!("model {what}");
    print!("{}", model.render());
    let Some(measured) = measured else { return };
    let model_bits = model.allowed();
    println!("\nmeasured {what}; ! where it differs from the model");
    print!("{}", render_bits(&model.pods, measured, Some(&model_bits)));
    if differences.is_empty() {
        println!(
            "\nmodel and measurement agree on all {} cells",
            model.pods.len() * model.pods.len()
        );
        return;
    }
    println!("\ndifferences:");
    for d in differences {
        let v = &model.cells[d.from][d.to];
        let word = |b: bool| if b { "allowed" } else { "denied" };
        println!(
            "{} -> {}: model {}, measured {} (ingress isolated by [{}], egress isolated by [{}])",
            model.pods[d.from],
            model.pods[d.to],
            word(d.model),
            word(!d.model),
            join_keys(&v.ingress_isolated_by),
            join_keys(&v.egress_isolated_by),
        );
    }
}

fn join_keys(keys: &[PodKey]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_json(
    model: &Matrix,
    measured: Option<&[Vec<bool>]>,
    differences: &[Difference],
    args: &MatrixArgs,
) -> Result<()> {
    let keys = |ks: &[PodKey]| ks.iter().map(ToString::to_string).collect::<Vec<_>>();
    let cells: Vec<Vec<serde_json::Value>> = model
        .cells
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| {
                    json!({
                        "allowed": v.allowed,
                        "ingressIsolatedBy": keys(&v.ingress_isolated_by),
                        "egressIsolatedBy": keys(&v.egress_isolated_by),
                    })
                })
                .collect()
        })
        .collect();
    let out = json!({
        "protocol": args.proto.policy().as_str(),
        "port": args.port,
        "pods": keys(&model.pods),
        "model": model.allowed(),
        "cells": cells,
        "measured": measured,
        "differences": differences.iter().map(|d| json!({
            "from": model.pods[d.from].to_string(),
            "to": model.pods[d.to].to_string(),
            "model": d.model,
            "measured": !d.model,
        })).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_cluster::ClusterObjects;
    use serde_json::json;

    fn cluster() -> ClusterView {
        let pod = |ns: &str, name: &str, ip: &str, phase: &str| {
            serde_json::from_value(json!({
                "metadata": {"namespace": ns, "name": name, "uid": format!("u-{name}"), "labels": {"pod": name}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [
                    {"name": "serve-80-tcp", "containerPort": 80}]}]},
                "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}
            }))
            .unwrap()
        };
        let host_pod = serde_json::from_value(json!({
            "metadata": {"namespace": "x", "name": "host", "labels": {"pod": "host"}},
            "spec": {"nodeName": "node-1", "hostNetwork": true, "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "192.168.33.11", "podIPs": [{"ip": "192.168.33.11"}]}
        }))
        .unwrap();
        let ns = |name: &str| serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        let np = |v: serde_json::Value| serde_json::from_value(v).unwrap();
        ClusterView::from_objects(ClusterObjects {
            pods: vec![
                pod("x", "a", "10.244.1.2", "Running"),
                pod("x", "b", "10.244.2.2", "Running"),
                pod("x", "pending", "10.244.2.3", "Pending"),
                pod("kube-system", "dns", "10.244.3.2", "Running"),
                host_pod,
            ],
            namespaces: vec![ns("x"), ns("kube-system")],
            network_policies: vec![
                np(json!({"metadata": {"namespace": "x", "name": "deny-b"},
                    "spec": {"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Ingress"]}})),
                np(json!({"metadata": {"namespace": "x", "name": "broken"},
                    "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}})),
            ],
            nodes: vec![
                serde_json::from_value(json!({"metadata": {"name": "node-1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.33.11"}]}}))
                .unwrap(),
            ],
            ..ClusterObjects::default()
        })
    }

    fn args(parallel: usize, retries: usize) -> MatrixArgs {
        MatrixArgs {
            namespaces: vec![],
            port: 80,
            proto: Proto::Tcp,
            probe: true,
            timeout: Duration::from_millis(500),
            parallel,
            retries,
            output: Output::Text,
        }
    }

    /// A line server on 127.0.0.1 (answers each connection's first line), and a port nothing
    /// listens on.
    fn servers() -> (SocketAddr, SocketAddr) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut line = String::new();
                let _ = BufReader::new(&conn).read_line(&mut line);
                let _ = conn.write_all(b"{}\n");
            }
        });
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        (open, closed)
    }

    #[test]
    fn measure_probes_each_job_from_its_namespace() {
        let (open, closed) = servers();
        let here = NetNs::current().unwrap();
        let job = |a: SocketAddr| Job {
            netns: here.clone(),
            target: format!("tcp://{a}").parse().unwrap(),
        };
        // a 2x2 matrix: row-major, connected where the target listens
        let jobs = vec![job(open), job(closed), job(closed), job(open)];
        let all: Vec<usize> = (0..4).collect();
        assert_eq!(
            measure(&jobs, &all, &args(3, 0)),
            vec![true, false, false, true]
        );
        assert_eq!(measure(&jobs, &[1, 3], &args(1, 0)), vec![false, true]);
        // a model that disagrees everywhere: retried, the measurement stands
        let model = vec![vec![false, true], vec![true, false]];
        assert_eq!(
            measure_with_retries(&jobs, &model, &args(8, 2)),
            vec![vec![true, false], vec![false, true]]
        );
    }

    #[test]
    fn state_from_cluster_objects() {
        let mut warnings = Vec::new();
        let state = build_state(&cluster(), &mut warnings);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("x/broken") && warnings[0].contains("endPort"));
        assert!(state.pod(&PodKey::new("x", "pending")).is_none());
        assert!(
            state.pod(&PodKey::new("x", "host")).is_none(),
            "host-network pods are not policy pods"
        );
        assert_eq!(choose_namespaces(&[], &state), vec!["x".to_string()]);
        assert_eq!(
            choose_namespaces(&["kube-system".into()], &state),
            vec!["kube-system".to_string()]
        );
        let m = matrix(&state, &["x"], 80, Protocol::Tcp).unwrap();
        // The broken policy (every pod of x) fails closed: it isolates x/a and x/b as the
        // agents enforce it, rather than being left out.
        assert_eq!(m.render(), "-\tx/a\tx/b\nx/a\t.\tX\nx/b\tX\t.\n");
        assert_eq!(
            m.cells[0][1].ingress_isolated_by,
            vec![PodKey::new("x", "broken"), PodKey::new("x", "deny-b")]
        );
        assert_eq!(
            m.cells[1][0].ingress_isolated_by,
            vec![PodKey::new("x", "broken")]
        );
    }

    #[test]
    fn differences_list_disagreeing_cells() {
        let state = build_state(&cluster(), &mut Vec::new());
        let m = matrix(&state, &["x"], 80, Protocol::Tcp).unwrap();
        let measured = vec![vec![true, true], vec![false, true]];
        let d = differences(&m, Some(&measured));
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].from, d[0].to, d[0].model), (0, 1, false));
        assert!(differences(&m, Some(&m.allowed())).is_empty());
        assert!(differences(&m, None).is_empty());
    }
}
