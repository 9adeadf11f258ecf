//! How a node's pods are wired: the cross-node backend and the CNI attachment mode. Shared by
//! the agent, the lab, the node plan and trace, so each spells them the same way.

use std::fmt;
use std::str::FromStr;

/// How pods on different nodes reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Backend {
    /// One VXLAN device per node with static FDB/neighbour entries (flannel's layout).
    Vxlan,
    /// A route per remote podCIDR via the remote node's underlay address (nodes share an L2).
    HostGw,
}

impl Backend {
    /// The spelling on command lines, in lab.json and in the `sarasa.io/backend` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }
}

/// How the CNI plugin attaches pods on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniMode {
    /// Pods hang off the node bridge `sarasa0`, which holds the gateway address.
    Bridge,
    /// Per-pod /32 routes, pod default route via 169.254.1.1 answered by proxy ARP.
    Routed,
}

impl CniMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CniMode::Bridge => "bridge",
            CniMode::Routed => "routed",
        }
    }
}

/// A spelling that names no backend or mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected one of {expected}")]
pub struct ParseNetworkError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for Backend {
    type Err = ParseNetworkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            _ => Err(ParseNetworkError {
                what: "backend",
                value: s.into(),
                expected: "vxlan, host-gw",
            }),
        }
    }
}

impl FromStr for CniMode {
    type Err = ParseNetworkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bridge" => Ok(CniMode::Bridge),
            "routed" => Ok(CniMode::Routed),
            _ => Err(ParseNetworkError {
                what: "CNI mode",
                value: s.into(),
                expected: "bridge, routed",
            }),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CniMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_unknown_is_named() {
        for b in [Backend::Vxlan, Backend::HostGw] {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
        }
        for m in [CniMode::Bridge, CniMode::Routed] {
            assert_eq!(m.to_string().parse::<CniMode>(), Ok(m));
        }
        let e = "ipip".parse::<Backend>().unwrap_err().to_string();
        assert!(e.contains("backend") && e.contains("ipip"), "{e}");
    }
}
