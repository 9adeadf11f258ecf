//! What a cluster set is made of, kept in `<state root>/.clustersets/<SET>/set.json`: its
//! cable kind, the WAN's delay and loss, the broker's token and the member labs with their
//! WAN addresses. The leading dot keeps the directory apart from labs (a lab's name is a DNS
//! label).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::state::{read_json, write_json_atomic};
use crate::LabError;

/// The WAN between sites: one /24 in the set's own namespace; the broker is `.1`, the labs'
/// site routers `.10` on.
pub const WAN_NET: &str = "172.30.0.0/24";
pub const BROKER_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
pub const BROKER_PORT: u16 = 6443;
const FIRST_SITE: u8 = 10;

/// Each cluster's share of the set's GlobalNet range (Submariner's default cluster size).
pub const GLOBAL_CIDR_PREFIX: u8 = 16;

/// Each dual-stack cluster's share of the set's IPv6 GlobalNet range: as many addresses as an
/// IPv4 /16 holds.
pub const GLOBAL_CIDR_PREFIX_V6: u8 = 112;

/// `--globalnet CIDR[,CIDR6]`: an IPv4 range at least a /16 (each cluster gets a /16 of it),
/// and an IPv6 one at least a /112 (each dual-stack cluster gets a /112 of it), unique local
/// (fc00::/7), as the lab's other IPv6 ranges.
pub fn parse_globalnet(text: &str) -> Result<(Ipv4Net, Option<Ipv6Net>), LabError> {
    let bad = |why: String| LabError::Invalid(format!("--globalnet {text}: {why}"));
    let mut parts = text.split(',').map(str::trim);
    let v4 = parts.next().unwrap_or_default();
    let net: Ipv4Net = v4
        .parse()
        .map_err(|e| bad(format!("{v4:?} is not an IPv4 CIDR: {e}")))?;
    if net.prefix_len() > GLOBAL_CIDR_PREFIX {
        return Err(bad(format!(
            "a /{} cannot give each cluster a /{GLOBAL_CIDR_PREFIX}",
            net.prefix_len()
        )));
    }
    let v6 = match parts.next() {
        None => None,
        Some(v6) => {
            let net6: Ipv6Net = v6
                .parse()
                .map_err(|e| bad(format!("{v6:?} is not an IPv6 CIDR: {e}")))?;
            if net6.prefix_len() > GLOBAL_CIDR_PREFIX_V6 {
                return Err(bad(format!(
                    "a /{} cannot give each cluster a /{GLOBAL_CIDR_PREFIX_V6}",
                    net6.prefix_len()
                )));
            }
            let unique_local: Ipv6Net = "fc00::/7".parse().expect("static CIDR");
            if !unique_local.contains(&net6) {
                return Err(bad(format!(
                    "{net6} is not unique local (fc00::/7): a lab never uses global IPv6 addresses"
                )));
            }
            Some(net6.trunc())
        }
    };
    if let Some(extra) = parts.next() {
        return Err(bad(format!(
            "{extra:?}: at most two ranges, IPv4 then IPv6"
        )));
    }
    Ok((net.trunc(), v6))
}

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
    /// Under GlobalNet: its global CIDR, out of the set's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_cidr: Option<IpNet>,
    /// Under GlobalNet with an IPv6 range, a dual-stack member's IPv6 global CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_cidr_v6: Option<IpNet>,
}

impl Member {
    /// Its global CIDRs, IPv4 first (none without GlobalNet).
    pub fn global_cidrs(&self) -> Vec<IpNet> {
        self.global_cidr
            .into_iter()
            .chain(self.global_cidr_v6)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayPort {
    pub node: String,
    pub wan_ip: Ipv4Addr,
    pub wan_port: String,
}

/// The internet between the sites, as the WAN namespace emulates it: each crossing of the WAN
/// bridge from one port to another (site router or gateway node to another) is delayed and
/// may be lost, so a round trip between two sites pays both twice. Frames to and from the
/// broker (the bridge's own address) are delayed on the way out to a site, never lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WanLink {
    /// Delay added to each crossing (the set's delay line), microseconds (`--wan-delay`).
    #[serde(default)]
    pub delay_us: u64,
    /// Probability of a frame being dropped as it crosses, in hundredths of a percent
    /// (`--wan-loss 0.5%` is 50), 0 to 10000.
    #[serde(default)]
    pub loss_bp: u32,
}

/// The longest `--wan-delay` (the delay line would hold too much beyond it).
pub const MAX_WAN_DELAY_US: u64 = 10_000_000;

impl WanLink {
    /// `--wan-delay`: a duration with a unit (`20ms`, `1.5s`, `250us`) or `0`, whole
    /// microseconds, at most 10 s. A bare number other than 0 is refused: Go and tc read it
    /// differently (seconds, microseconds).
    pub fn parse_delay(s: &str) -> Result<u64, LabError> {
        let bad = |why: &str| {
            LabError::Invalid(format!(
                "--wan-delay {s:?}: {why} (a duration such as 20ms, 1.5s or 0)"
            ))
        };
        let t = s.trim();
        if t == "0" {
            return Ok(0);
        }
        if t.parse::<f64>().is_ok() {
            return Err(bad("give a unit"));
        }
        let d = sarasa_workload::parse_duration(t).map_err(|e| bad(e.reason))?;
        if d.as_nanos() % 1000 != 0 {
            return Err(bad("whole microseconds only"));
        }
        let us = u64::try_from(d.as_micros()).map_err(|_| bad("out of range"))?;
        if us > MAX_WAN_DELAY_US {
            return Err(bad("at most 10s"));
        }
        Ok(us)
    }

    /// `--wan-loss`: a percentage from 0 to 100 with at most two decimals, the `%` optional
    /// (`0.5%`, `20`, `100%`); in hundredths of a percent.
    pub fn parse_loss(s: &str) -> Result<u32, LabError> {
        let bad = |why: &str| {
            LabError::Invalid(format!(
                "--wan-loss {s:?}: {why} (a percentage from 0% to 100%, at most two decimals, e.g. 0.5%)"
            ))
        };
        let t = s.trim();
        let t = t.strip_suffix('%').unwrap_or(t);
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || (t.contains('.') && frac.is_empty()) {
            return Err(bad("not a number"));
        }
        if frac.len() > 2 {
            return Err(bad("more than two decimals"));
        }
        if int.trim_start_matches('0').len() > 3 {
            return Err(bad("over 100%"));
        }
        let whole: u32 = int.parse().map_err(|_| bad("not a number"))?;
        let hundredths: u32 = format!("{frac:0<2}")
            .parse()
            .map_err(|_| bad("not a number"))?;
        let bp = whole * 100 + hundredths;
        if bp > 10_000 {
            return Err(bad("over 100%"));
        }
        Ok(bp)
    }

    /// The delay as given back to the user: `20ms`, `1.5s` as `1500ms`, `250us`, `0`.
    pub fn delay_text(&self) -> String {
        match self.delay_us {
            0 => "0".into(),
            us if us % 1_000_000 == 0 => format!("{}s", us / 1_000_000),
            us if us % 1000 == 0 => format!("{}ms", us / 1000),
            us => format!("{us}us"),
        }
    }

    /// The loss as a percentage: `0.5%`, `20%`, `0.05%`.
    pub fn loss_text(&self) -> String {
        let (whole, frac) = (self.loss_bp / 100, self.loss_bp % 100);
        match frac {
            0 => format!("{whole}%"),
            f if f % 10 == 0 => format!("{whole}.{}%", f / 10),
            f => format!("{whole}.{f:02}%"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSet {
    pub name: String,
    pub cable: Cable,
    /// The WAN's delay and loss (none in a set.json from before they existed).
    #[serde(default)]
    pub wan: WanLink,
    /// What the members' syncs present to the broker.
    pub broker_token: String,
    pub members: Vec<Member>,
    /// `--globalnet`: the range each member's global CIDR (a /16) comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globalnet: Option<Ipv4Net>,
    /// `--globalnet CIDR,CIDR6`: the range each dual-stack member's IPv6 global CIDR (a /112)
    /// comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globalnet_v6: Option<Ipv6Net>,
}

/// The first subnet of `range` of length `prefix` that is neither `used` nor `taken`.
fn next_free(
    range: Option<IpNet>,
    prefix: u8,
    used: impl Iterator<Item = IpNet>,
    taken: &[IpNet],
) -> Result<Option<IpNet>, LabError> {
    let Some(range) = range else {
        return Ok(None);
    };
    let used: Vec<IpNet> = used.chain(taken.iter().copied()).collect();
    range
        .subnets(prefix)
        .map_err(|e| LabError::Invalid(format!("--globalnet {range}: {e}")))?
        .find(|c| !used.contains(c))
        .map(Some)
        .ok_or_else(|| {
            LabError::Invalid(format!(
                "--globalnet {range}: every /{prefix} of it is taken"
            ))
        })
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

    /// The lowest /16 of the set's GlobalNet range no member (nor `taken`) has; `None` without
    /// GlobalNet.
    pub fn next_global_cidr(&self, taken: &[IpNet]) -> Result<Option<IpNet>, LabError> {
        let used = self.members.iter().filter_map(|m| m.global_cidr);
        next_free(
            self.globalnet.map(IpNet::V4),
            GLOBAL_CIDR_PREFIX,
            used,
            taken,
        )
    }

    /// The lowest /112 of the set's IPv6 GlobalNet range no member (nor `taken`) has; `None`
    /// without one.
    pub fn next_global_cidr_v6(&self, taken: &[IpNet]) -> Result<Option<IpNet>, LabError> {
        let used = self.members.iter().filter_map(|m| m.global_cidr_v6);
        next_free(
            self.globalnet_v6.map(IpNet::V6),
            GLOBAL_CIDR_PREFIX_V6,
            used,
            taken,
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_delay_is_a_duration_with_a_unit() {
        for (s, us) in [
            ("20ms", 20_000),
            ("1.5s", 1_500_000),
            ("0", 0),
            ("0ms", 0),
            ("250us", 250),
            ("10s", 10_000_000),
        ] {
            assert_eq!(WanLink::parse_delay(s).unwrap(), us, "{s}");
        }
        for s in [
            "20", "-5ms", "20 ms", "fast", "", "11s", "1ns", "1.5", "20msx",
        ] {
            let e = WanLink::parse_delay(s).unwrap_err().to_string();
            assert!(e.starts_with("--wan-delay"), "{s}: {e}");
        }
    }

    #[test]
    fn wan_loss_is_a_percentage_with_two_decimals() {
        for (s, bp) in [
            ("0.5%", 50),
            ("0.5", 50),
            ("20%", 2000),
            ("0%", 0),
            ("0", 0),
            ("100%", 10_000),
            ("100.00%", 10_000),
            ("0.05%", 5),
            ("12.34%", 1234),
        ] {
            assert_eq!(WanLink::parse_loss(s).unwrap(), bp, "{s}");
        }
        for s in [
            "", "%", "-1%", "100.01%", "101", "1000%", "0.123%", "1.%", ".5%", "5%%", "1e1", "a%",
            "+5%",
        ] {
            let e = WanLink::parse_loss(s).unwrap_err().to_string();
            assert!(e.starts_with("--wan-loss"), "{s}: {e}");
        }
    }

    #[test]
    fn wan_values_read_back_as_given() {
        let w = |delay_us, loss_bp| WanLink { delay_us, loss_bp };
        assert_eq!(w(20_000, 50).delay_text(), "20ms");
        assert_eq!(w(20_000, 50).loss_text(), "0.5%");
        assert_eq!(w(1_500_000, 5).delay_text(), "1500ms");
        assert_eq!(w(1_500_000, 5).loss_text(), "0.05%");
        assert_eq!(w(0, 2000).delay_text(), "0");
        assert_eq!(w(0, 2000).loss_text(), "20%");
        assert_eq!(w(250, 1234).delay_text(), "250us");
        assert_eq!(w(250, 1234).loss_text(), "12.34%");
    }

    #[test]
    fn a_set_json_from_before_the_wan_values_loads() {
        let old = r#"{"name":"a","cable":"vxlan","broker_token":"t","members":[]}"#;
        let cs: ClusterSet = serde_json::from_str(old).unwrap();
        assert_eq!(cs.wan, WanLink::default());
    }
}
