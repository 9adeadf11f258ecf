//! `sarasa agent [FLAGS]` runs the node agent; `agent install-cni` is the DaemonSet init
//! container's step; `sarasa agent uninstall` removes sarasa from the
//! node. Argument parsing is by hand around the derived parts for two reasons: the agent's
//! required `--node-name` must not be demanded of `uninstall`, and `--config` needs to know
//! which flags the command line gave (they win over the file), which only the raw matches tell.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches};
use sarasa_agent::config_file::ConfigFile;
use sarasa_agent::install_cni::InstallCniConfig;
use sarasa_agent::uninstall::UninstallConfig;
use sarasa_agent::AgentConfig;

pub enum AgentArgs {
    Run {
        config: Box<AgentConfig>,
        /// Ids of the arguments given on the command line or in the environment.
        explicit: BTreeSet<String>,
    },
    Uninstall(UninstallConfig),
    InstallCni(InstallCniConfig),
}

impl FromArgMatches for AgentArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut m.clone())
    }

    fn from_arg_matches_mut(m: &mut ArgMatches) -> Result<Self, clap::Error> {
        if let Some((name, sub)) = m.remove_subcommand() {
            return match name.as_str() {
                "uninstall" => Ok(AgentArgs::Uninstall(UninstallConfig::from_arg_matches(
                    &sub,
                )?)),
                "install-cni" => Ok(AgentArgs::InstallCni(InstallCniConfig::from_arg_matches(
                    &sub,
                )?)),
                other => Err(clap::Error::raw(
                    clap::error::ErrorKind::InvalidSubcommand,
                    format!("unknown agent subcommand {other:?}"),
                )),
            };
        }
        let explicit = m
            .ids()
            .filter(|id| {
                matches!(
                    m.value_source(id.as_str()),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(|id| id.as_str().to_string())
            .collect();
        Ok(AgentArgs::Run {
            config: Box::new(AgentConfig::from_arg_matches_mut(m)?),
            explicit,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for AgentArgs {
    fn augment_args(cmd: Command) -> Command {
        AgentConfig::augment_args(cmd)
            .subcommand(UninstallConfig::augment_args(Command::new("uninstall")))
            .subcommand(InstallCniConfig::augment_args(Command::new("install-cni")))
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    match args {
        AgentArgs::Run {
            mut config,
            explicit,
        } => {
            // The file is read and checked before anything else: a bad one stops the agent
            // before it touches the node.
            if let Some(path) = config.config.clone() {
                let file = ConfigFile::load(&path)?;
                file.apply(&mut config, &|id: &str| explicit.contains(id))
                    .with_context(|| format!("--config {}", path.display()))?;
            }
            config.validate()?;
            run_agent(*config)
        }
        AgentArgs::InstallCni(config) => {
            let r = sarasa_agent::install_cni::install(&config)?;
            let verb = if r.replaced {
                "installed"
            } else {
                "unchanged:"
            };
            println!("{verb} {}", r.installed.display());
            for s in r.sysctls {
                println!("set {s}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentArgs::Uninstall(config) => {
            let target = sarasa_agent::netns::NetnsTarget::Current;
            let report = sarasa_agent::uninstall::uninstall(&config, &target)?;
            if report.is_empty() {
                println!("nothing of sarasa left on this node");
            } else {
                for t in &report.tables {
                    println!("removed nftables table {t}");
                }
                for l in &report.links {
                    println!("removed link {l}");
                }
                if report.routes > 0 {
                    println!("removed {} routes", report.routes);
                }
                for f in &report.files {
                    println!("removed {}", f.display());
                }
            }
            if config.wait {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                    anyhow::Ok(())
                })?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_agent(config: AgentConfig) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut agent =
            sarasa_agent::start(config, sarasa_agent::netns::NetnsTarget::Current).await?;
        // SIGTERM (kubelet stopping the pod, a rolling update) stops the agent and leaves the
        // datapath programmed: pods keep their network until the new agent takes over. An
        // active cluster-set gateway hands its Lease over first.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let stopped = tokio::select! {
            r = agent.failed() => return r.map_err(anyhow::Error::from),
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "interrupted",
        };
        tracing::info!("{stopped}: stopping; the datapath stays in place");
        agent.shut_down().await;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
