//! `sarasa clusterset`: cluster sets of labs (issue 12). Parsed on its own because its
//! `--lab` repeats (`join SET --lab A --lab B`), where every other command takes the one
//! global `--lab`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sarasa_lab::clusterset::{self, Cable, WanLink};

#[derive(Parser)]
#[command(
    name = "sarasa clusterset",
    about = "Cluster sets: labs joined through a WAN and a broker"
)]
struct ClustersetCli {
    #[command(subcommand)]
    command: ClustersetCommand,
}

#[derive(Subcommand)]
enum ClustersetCommand {
    /// Join labs to a cluster set (made when it does not exist): the WAN namespace
    /// sarasa-wan-SET, the broker on it, and each lab's sync with the broker
    Join {
        set: String,
        /// A lab to join (repeat for several)
        #[arg(long = "lab", required = true)]
        labs: Vec<String>,
        /// The cable between the clusters' gateways: wireguard (encrypted) or vxlan
        #[arg(long)]
        cable: Option<String>,
        /// GlobalNet, for clusters whose ranges overlap: the IPv4 range (at least a /16) each
        /// cluster gets a /16 global CIDR of (e.g. 242.0.0.0/8), then optionally an IPv6 unique
        /// local range (at least a /112) each dual-stack cluster gets a /112 of
        /// (e.g. 242.0.0.0/8,fd00:242::/96)
        #[arg(long)]
        globalnet: Option<String>,
        /// The WAN's delay per crossing (e.g. 20ms: 40ms more round trip between two sites);
        /// the set's, replaced when given again. A delay line in the WAN namespace holds each
        /// IPv4 packet crossing it (NFQUEUE, iptables)
        #[arg(long, value_name = "DURATION")]
        wan_delay: Option<String>,
        /// The WAN's loss per crossing, 0% to 100% (e.g. 0.5%); the set's, replaced when
        /// given again
        #[arg(long, value_name = "PERCENT")]
        wan_loss: Option<String>,
    },
    /// The set's clusters, broker and each cluster's sync
    Status {
        set: String,
        /// `json` for the whole status as JSON
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
    /// Take a lab out of a set: its exports leave the other clusters, theirs leave it
    Leave {
        set: String,
        #[arg(long)]
        lab: String,
    },
    /// Every lab leaves, the broker stops and the WAN namespace goes
    Delete { set: String },
    /// Stop or start the broker (its store is kept); clusters keep their last state meanwhile
    Broker {
        #[arg(value_parser = ["stop", "start"])]
        action: String,
        set: String,
    },
    /// The broker process (started by join, in the WAN namespace)
    #[command(hide = true)]
    RunBroker { set: String },
    /// The WAN's delay line (started by join with --wan-delay, in the WAN namespace)
    #[command(hide = true)]
    RunDelay {
        set: String,
        #[arg(long)]
        delay_us: u64,
    },
    /// A lab's sync with the broker (started by join, in the lab's fabric namespace)
    #[command(hide = true)]
    RunSync {
        set: String,
        #[arg(long)]
        lab: String,
    },
}

/// Runs `sarasa clusterset ARGS...` (`args` without the program and `clusterset`).
pub fn run(args: Vec<String>) -> Result<ExitCode> {
    let cli =
        ClustersetCli::try_parse_from(std::iter::once("sarasa clusterset".to_string()).chain(args))
            .unwrap_or_else(|e| e.exit());
    let sarasa = || std::env::current_exe().context("locating the sarasa binary");
    match cli.command {
        ClustersetCommand::Join {
            set,
            labs,
            cable,
            globalnet,
            wan_delay,
            wan_loss,
        } => {
            let cable = cable.map(|c| c.parse::<Cable>()).transpose()?;
            let wan = clusterset::WanChange {
                delay_us: wan_delay.map(|d| WanLink::parse_delay(&d)).transpose()?,
                loss_bp: wan_loss.map(|l| WanLink::parse_loss(&l)).transpose()?,
            };
            let cs = clusterset::join(&set, &labs, cable, globalnet.as_deref(), wan, &sarasa()?)?;
            println!(
                "cluster set {} ({} cable, WAN delay {}, loss {}): {}",
                cs.name,
                cs.cable,
                cs.wan.delay_text(),
                cs.wan.loss_text(),
                cs.members
                    .iter()
                    .map(|m| match m.global_cidrs().as_slice() {
                        [] => format!("{} (cluster {}, WAN {})", m.lab, m.cluster_id, m.wan_ip),
                        g => format!(
                            "{} (cluster {}, WAN {}, global {})",
                            m.lab,
                            m.cluster_id,
                            m.wan_ip,
                            g.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        ClustersetCommand::Status { set, output } => {
            let st = clusterset::status(&set)?;
            match output.as_deref() {
                Some("json") => println!("{}", serde_json::to_string_pretty(&st)?),
                None => print_status(&st),
                Some(other) => anyhow::bail!("-o {other}: only json"),
            }
        }
        ClustersetCommand::Leave { set, lab } => clusterset::leave(&set, &lab)?,
        ClustersetCommand::Delete { set } => clusterset::delete(&set)?,
        ClustersetCommand::Broker { action, set } => {
            clusterset::ClusterSet::open(&set)?;
            if action == "stop" {
                clusterset::broker::stop(&set)?
            } else {
                clusterset::broker::start(&set, &sarasa()?)?
            }
        }
        ClustersetCommand::RunBroker { set } => {
            runtime()?.block_on(clusterset::broker::run(&set))?;
        }
        ClustersetCommand::RunDelay { set, delay_us } => {
            clusterset::delay_line::run(&set, std::time::Duration::from_micros(delay_us))?;
        }
        ClustersetCommand::RunSync { set, lab } => {
            let lab = sarasa_lab::lab::Lab::open(&lab)?;
            runtime()?.block_on(clusterset::sync::run(&set, lab.spec))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn print_status(st: &clusterset::SetStatus) {
    println!(
        "cluster set {} ({} cable{})",
        st.name,
        st.cable,
        st.globalnet
            .as_deref()
            .map(|g| format!(", GlobalNet {g}"))
            .unwrap_or_default()
    );
    println!(
        "WAN {}: delay {}, loss {} per crossing",
        st.wan.netns, st.wan.delay, st.wan.loss
    );
    println!(
        "broker {} {}",
        st.broker.url,
        if st.broker.running {
            "running"
        } else {
            "stopped"
        }
    );
    println!(
        "{:<16} {:<16} {:<14} {:<6} {:<8} {:>8} {:>8}  LAST SYNC",
        "LAB", "CLUSTER", "WAN", "UP", "BROKER", "EXPORTED", "IMPORTED"
    );
    for c in &st.clusters {
        let (broker, exported, imported, last) = match &c.sync {
            Some(s) => (
                if s.broker_reachable {
                    "reached"
                } else {
                    "down"
                },
                s.exported_slices.to_string(),
                s.imported_slices.to_string(),
                s.last_sync.clone().unwrap_or_else(|| "-".into()),
            ),
            None => ("-", "-".into(), "-".into(), "-".into()),
        };
        let cluster = match (&c.global_cidr, &c.global_cidr_v6) {
            (Some(g), Some(g6)) => format!("{} ({g},{g6})", c.cluster_id),
            (Some(g), None) => format!("{} ({g})", c.cluster_id),
            _ => c.cluster_id.clone(),
        };
        println!(
            "{:<16} {:<16} {:<14} {:<6} {:<8} {:>8} {:>8}  {last}",
            c.lab,
            cluster,
            c.wan_ip,
            if c.lab_up { "yes" } else { "no" },
            broker,
            exported,
            imported
        );
    }
    println!("{:<16} {:<16} {:<14} ROLE", "CLUSTER", "GATEWAY", "WAN");
    for g in &st.gateways {
        println!(
            "{:<16} {:<16} {:<14} {}",
            g.cluster_id, g.node, g.wan_ip, g.role
        );
    }
    for c in &st.cables {
        let rtt = c.rtt_ms.map_or("-".into(), |r| format!("{r} ms"));
        let bytes = match (c.tx_bytes, c.rx_bytes) {
            (Some(t), Some(r)) => format!("tx {t} B, rx {r} B"),
            _ => "-".into(),
        };
        println!(
            "cable {} -> {} ({}, {} -> {}): {}, rtt {rtt}, {bytes}",
            c.from, c.to, c.cable, c.local_ip, c.remote_ip, c.state
        );
    }
}
