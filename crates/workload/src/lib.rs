//! The built-in workload every lab pod runs, like Kubernetes' e2e agnhost:
//! `serve` answers TCP (raw lines and HTTP) and UDP with a JSON [`ServeReply`] naming the pod
//! and the client address it saw; `probe` is the matching client (exit 0 = connected).
//!
//! Blocking std sockets and threads only: the server must be small and start fast in every pod.

mod args;
mod duration;
mod http;
mod probe;
mod reply;
mod serve;

pub use args::{run_probe, run_serve, ProbeArgs, ServeArgs};
pub use duration::{parse_duration, DurationError};
pub use probe::{hold, probe, HoldReport, HostPort, ProbeError, ProbeReply, ProbeTarget};
pub use reply::{PodIdentity, ServeReply};
pub use serve::{serve, PortSpec, Protocol, ServeConfig, ServeError, Server};
