//! What a cluster set is made of, kept in `<state root>/.clustersets/<SET>/set.json`: its
//! cable kind, the broker's token and the member labs with their WAN addresses. The leading
//! dot keeps the directory apart from labs (a lab's name is a DNS label).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::{read_json, write_json_atomic};
use crate::LabError;

/// The WAN between sites: one /24 in the set's own namespace; the broker is `.1`, the labs'
/// site routers `.10` on.
pub const WAN_NET: &str = "172.30.0.0/24";
pub const BROKER_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
pub const BROKER_PORT: u16 = 6443;
const FIRST_SITE: u8 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cable {
    Wireguard,
    Vxlan,
}

impl std::fmt::Display for Cable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cable::Wireguard => "wireguard",
            Cable::Vxlan => "vxlan",
        })
    }
}

impl std::str::FromStr for Cable {
    type Err = LabError;
    fn from_str(s: &str) -> Result<Self, LabError> {
        match s {
            "wireguard" => Ok(Cable::Wireguard),
            "vxlan" => Ok(Cable::Vxlan),
            other => Err(LabError::Invalid(format!(
                "--cable {other:?}: one of wireguard, vxlan"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub lab: String,
    pub cluster_id: String,
    /// The lab's site router (its fabric namespace) on the WAN.
    pub wan_ip: Ipv4Addr,
    /// Its port on the WAN bridge (in the set's namespace).
    pub wan_port: String,
    /// Its gateway nodes, each with a WAN link of its own.
    #[serde(default)]
    pub gateways: Vec<GatewayPort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayPort {
    pub node: String,
    pub wan_ip: Ipv4Addr,
    pub wan_port: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSet {
    pub name: String,
    pub cable: Cable,
    /// What the members' syncs present to the broker.
    pub broker_token: String,
    pub members: Vec<Member>,
}

/// `<state root>/.clustersets`.
pub fn sets_root() -> PathBuf {
    crate::paths::state_root().join(".clustersets")
}

pub fn set_dir(set: &str) -> PathBuf {
    sets_root().join(set)
}

pub fn wan_netns(set: &str) -> String {
    format!("sarasa-wan-{set}")
}

impl ClusterSet {
    fn file(set: &str) -> PathBuf {
        set_dir(set).join("set.json")
    }

    pub fn load(set: &str) -> Result<Option<ClusterSet>, LabError> {
        read_json(&Self::file(set))
    }

    /// The set, or an error naming it when it does not exist.
    pub fn open(set: &str) -> Result<ClusterSet, LabError> {
        Self::load(set)?.ok_or_else(|| {
            LabError::NotUp(format!(
                "cluster set {set:?} does not exist (sarasa clusterset join {set} --lab A --lab B)"
            ))
        })
    }

    pub fn save(&self) -> Result<(), LabError> {
        let dir = set_dir(&self.name);
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io(&dir, e))?;
        write_json_atomic(&Self::file(&self.name), self)
    }

    pub fn member(&self, lab: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.lab == lab)
    }

    /// The lowest free WAN address (beside `taken`) and its WAN port name.
    pub fn next_site(&self, taken: &[Ipv4Addr]) -> Result<(Ipv4Addr, String), LabError> {
        let used = |ip: Ipv4Addr| {
            taken.contains(&ip)
                || self
                    .members
                    .iter()
                    .any(|m| m.wan_ip == ip || m.gateways.iter().any(|g| g.wan_ip == ip))
        };
        for host in FIRST_SITE..=250 {
            let ip = Ipv4Addr::new(172, 30, 0, host);
            if !used(ip) {
                return Ok((ip, format!("site{host}")));
            }
        }
        Err(LabError::Invalid(format!(
            "cluster set {:?} is full ({} labs)",
            self.name,
            self.members.len()
        )))
    }
}

/// A cluster set's name: a DNS label short enough for its namespace name.
pub fn check_name(set: &str) -> Result<(), LabError> {
    let ok = !set.is_empty()
        && set.len() <= 20
        && set
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !set.starts_with('-')
        && !set.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "cluster set name {set:?}: 1-20 lowercase letters, digits or '-', starting and ending with a letter or digit"
        )))
    }
}
