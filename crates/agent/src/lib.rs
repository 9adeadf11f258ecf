//! The node agent: watch cluster state, program the node's datapath.
//!
//! Flow: the cluster view's watchers ([`sarasa_cluster::watch`]) keep a
//! [`sarasa_cluster::ClusterState`] of small projections and journal the objects the compilers
//! consume; a debounced reconcile loop (`agent`) compiles it into a [`NodePlan`] (`plan`,
//! pure), feeds the journaled changes to the service proxy (`services`) and the policy
//! enforcer (`policy`), stages every part of the reconcile in one plan delta (`reconcile`,
//! `staging`) and commits it through one applier (`applier`: the fabric by diff over
//! `sarasa-netns`'s netlink client, the one the CNI plugin uses, every nftables table in one
//! netlink batch, the CNI config last), and reports readiness (`node`: NetworkUnavailable=False, `lease`: observed resourceVersion,
//! `health`: /healthz and /metrics).
//!
//! Embedding (what `sarasa agent` does):
//! ```no_run
//! #[derive(clap::Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     agent: sarasa_agent::AgentConfig,
//! }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cli = <Cli as clap::Parser>::parse();
//! // Any tokio runtime with IO and time enabled works; a current-thread one keeps memory low.
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(sarasa_agent::run(cli.agent))?;
//! # Ok(())
//! # }
//! ```
//! The process must already run inside the node's network namespace; in the machine's root
//! namespace [`run`] refuses to start unless `--host-netns` is given (a real node).

mod agent;
pub mod applier;
pub mod bgp;
pub mod bgp_services;
mod client;
pub mod cni_config;
pub mod config;
pub mod config_file;
pub mod conflicts;
pub mod conntrack;
pub mod datapath;
pub mod diff;
pub mod droplog;
mod error;
pub mod failsafe;
pub mod gateway;
pub mod health;
pub mod healthcheck;
pub mod install_cni;
pub mod lease;
pub mod masquerade;
pub mod netns;
pub mod nftables;
pub mod node;
pub mod plan;
pub mod podcidr;
pub mod policy;
pub mod reconcile;
pub mod services;
pub mod staging;
pub mod uninstall;
pub mod vpc;
pub mod wireguard;

pub use agent::{run, start, AgentHandle};
pub use config::{AgentConfig, Backend, CniMode};
pub use error::{Error, Result};
pub use plan::NodePlan;
