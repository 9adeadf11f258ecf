//! The node agent: watch cluster state, program the node's datapath.
//!
//! Flow: watchers (`watch`) keep a [`ClusterState`] of small projections; a debounced reconcile
//! loop (`reconcile`) compiles it into a [`NodePlan`] (`plan`, pure) and applies it by diff
//! (`datapath` over rtnetlink, `masquerade` over `nft`), writes the CNI config (`cni_config`),
//! and reports readiness (`node`, `health`).

mod agent;
mod client;
pub mod cni_config;
pub mod config;
pub mod datapath;
pub mod diff;
mod error;
pub mod health;
pub mod lease;
pub mod mac;
pub mod masquerade;
pub mod netns;
pub mod node;
pub mod plan;
pub mod state;
pub mod watch;

pub use agent::{run, start, AgentHandle};
pub use config::{AgentConfig, Backend, CniMode};
pub use error::{Error, Result};
pub use plan::NodePlan;
pub use state::ClusterState;
