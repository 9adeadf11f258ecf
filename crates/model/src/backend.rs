//! How a node's pods are wired. The cross-node mode — how pods on different nodes reach each
//! other — is one enum for the agent's `--backend`, the lab's `lab.json` and the
//! `sarasa.io/backend` Node annotation, all spelled `vxlan` / `host-gw` / `bgp` / `vpc`; the CNI attachment mode
//! (`bridge` / `routed`) is one enum for the agent's `--cni-mode`, `lab.json`, the node plan and
//! trace (feature `clap` derives the command-line values, feature `serde` the JSON).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Backend {
    /// One VXLAN device per node with static FDB/neighbour entries (flannel's layout).
    Vxlan,
    /// A route per remote podCIDR via the remote node's underlay address (nodes share an L2).
    HostGw,
    /// Routes per remote podCIDR via the remote node's underlay address, as with host-gw, but
    /// learned over BGP: each node's BIRD announces its podCIDR to the top-of-rack router (a
    /// route reflector) and installs what the others announce (Calico's layout).
    Bgp,
    /// No routes on the nodes at all: each pod address is one the cloud assigned to its node
    /// (the agent keeps a warm pool through the cloud's allocation API) and the VPC routes it
    /// there, as AWS's VPC CNI does. Pods attach routed.
    Vpc,
}

impl Backend {
    /// The spelling on the command line, in `lab.json` and in the `sarasa.io/backend` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::Bgp => "bgp",
            Backend::Vpc => "vpc",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `sarasa.io/backend` value (or flag) that names no backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend {0:?}: expected vxlan, host-gw, bgp or vpc")]
pub struct ParseBackendError(String);

impl FromStr for Backend {
    type Err = ParseBackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            "bgp" => Ok(Backend::Bgp),
            "vpc" => Ok(Backend::Vpc),
            _ => Err(ParseBackendError(s.to_string())),
        }
    }
}

/// How the CNI plugin attaches pods on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum CniMode {
    /// Pods hang off the node bridge `sarasa0`, which holds the gateway address.
    Bridge,
    /// Per-pod /32 routes, pod default route via 169.254.1.1 answered by proxy ARP.
    Routed,
}

impl CniMode {
    /// The spelling on the command line, in `lab.json` and in the CNI config's `mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniMode::Bridge => "bridge",
            CniMode::Routed => "routed",
        }
    }
}

impl fmt::Display for CniMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CNI mode value that names no mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CNI mode {0:?}: expected bridge or routed")]
pub struct ParseCniModeError(String);

impl FromStr for CniMode {
    type Err = ParseCniModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bridge" => Ok(CniMode::Bridge),
            "routed" => Ok(CniMode::Routed),
            _ => Err(ParseCniModeError(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_mode_spellings_round_trip() {
        for m in [CniMode::Bridge, CniMode::Routed] {
            assert_eq!(m.to_string().parse::<CniMode>(), Ok(m));
        }
        assert!("ipvlan"
            .parse::<CniMode>()
            .unwrap_err()
            .to_string()
            .contains("ipvlan"));
    }

    #[test]
    fn spellings_round_trip() {
        for b in [Backend::Vxlan, Backend::HostGw] {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
            assert_eq!(b.to_string(), b.as_str());
        }
        assert_eq!(Backend::HostGw.as_str(), "host-gw");
        assert!("host_gw".parse::<Backend>().is_err());
    }
}
