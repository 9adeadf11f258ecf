//! Address ranges in host-local's shape: a range set is a list of `{subnet, rangeStart?,
//! rangeEnd?, gateway?}` of one address family; a config holds one set per family (or more).
//! This module validates them and walks them for free addresses; it does no I/O.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One range as written in a config (`ipam.ranges[i][j]`). Strings are parsed by
/// [`RangeSet::new`] so errors can name the field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConfig {
    /// The subnet, e.g. `10.244.1.0/24` (a node's podCIDR).
    pub subnet: String,
    /// First allocatable address (default: the subnet's first host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    /// Last allocatable address (default: the last host; for IPv4 the one before broadcast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    /// The gateway (default: the subnet's first host, `.1`). Never allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A validated range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The subnet (network address, no host bits).
    pub subnet: IpNet,
    /// First allocatable address.
    pub start: IpAddr,
    /// Last allocatable address.
    pub end: IpAddr,
    /// The gateway, reserved.
    pub gateway: IpAddr,
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}-{})", self.subnet, self.start, self.end)
    }
}

impl Range {
    fn parse(cfg: &RangeConfig, where_: &str) -> Result<Range> {
        let invalid = |m: String| Error::InvalidConfig(format!("{where_}: {m}"));
        let subnet: IpNet = cfg
            .subnet
            .trim()
            .parse()
            .map_err(|_| invalid(format!("subnet {:?} is not a CIDR", cfg.subnet)))?;
        if subnet.addr() != subnet.network() {
            return Err(invalid(format!(
                "subnet {subnet} has host bits set; the network address is {}/{}",
                subnet.network(),
                subnet.prefix_len()
            )));
        }
        if subnet.max_prefix_len() - subnet.prefix_len() < 2 {
            return Err(invalid(format!(
                "subnet {subnet} is too small to allocate from"
            )));
        }
        let parse_ip = |field: &str, v: &Option<String>| -> Result<Option<IpAddr>> {
            match v {
                None => Ok(None),
                Some(s) => {
                    let ip: IpAddr = s
                        .trim()
                        .parse()
                        .map_err(|_| invalid(format!("{field} {s:?} is not an IP address")))?;
                    if ip.is_ipv4() != subnet.addr().is_ipv4() {
                        return Err(invalid(format!(
                            "{field} {ip} is not of the family of subnet {subnet}"
                        )));
                    }
                    Ok(Some(ip))
                }
            }
        };
        let first = from_u128(to_u128(subnet.network()) + 1, &subnet.network());
        let last = {
            let b = to_u128(subnet.broadcast());
            // IPv4 reserves the broadcast address; IPv6 has none.
            from_u128(
                if subnet.addr().is_ipv4() { b - 1 } else { b },
                &subnet.network(),
            )
        };
        let start = parse_ip("rangeStart", &cfg.range_start)?.unwrap_or(first);
        let end = parse_ip("rangeEnd", &cfg.range_end)?.unwrap_or(last);
        let gateway = parse_ip("gateway", &cfg.gateway)?.unwrap_or(first);
        for (field, ip) in [("rangeStart", start), ("rangeEnd", end)] {
            if !subnet.contains(&ip) {
                return Err(invalid(format!("{field} {ip} is not in subnet {subnet}")));
            }
        }
        if to_u128(start) > to_u128(end) {
            return Err(invalid(format!(
                "rangeStart {start} is after rangeEnd {end}"
            )));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    /// True when `ip` may be handed out: inside start..=end and not the network, broadcast or
    /// gateway address.
    pub fn allocatable(&self, ip: IpAddr) -> bool {
        let v = to_u128(ip);
        ip.is_ipv4() == self.subnet.addr().is_ipv4()
            && v >= to_u128(self.start)
            && v <= to_u128(self.end)
            && ip != self.subnet.network()
            && !(ip.is_ipv4() && ip == self.subnet.broadcast())
            && ip != self.gateway
    }

    /// The address with the subnet's prefix length (what goes on the pod interface).
    pub fn with_prefix(&self, ip: IpAddr) -> IpNet {
        IpNet::new(ip, self.subnet.prefix_len()).expect("prefix of a valid subnet")
    }

    /// Whether the allocatable spans meet, as host-local decides it: ranges of one subnet
    /// with disjoint `rangeStart`-`rangeEnd` do not overlap.
    fn overlaps(&self, other: &Range) -> bool {
        if self.start.is_ipv4() != other.start.is_ipv4() {
            return false;
        }
        to_u128(self.start) <= to_u128(other.end) && to_u128(other.start) <= to_u128(self.end)
    }
}

/// A validated range set: one address is allocated from each set, from its first range with
/// room. All ranges are of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSet {
    /// The ranges, in config order.
    pub ranges: Vec<Range>,
}

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.ranges.iter().map(|r| r.to_string()).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

impl RangeSet {
    /// Validates one set (`ipam.ranges[index]`).
    pub fn new(cfgs: &[RangeConfig], index: usize) -> Result<RangeSet> {
        if cfgs.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "ipam.ranges[{index}] is an empty range set"
            )));
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(cfgs.len());
        for (j, c) in cfgs.iter().enumerate() {
            let r = Range::parse(c, &format!("ipam.ranges[{index}][{j}]"))?;
            if let Some(first) = ranges.first() {
                if first.subnet.addr().is_ipv4() != r.subnet.addr().is_ipv4() {
                    return Err(Error::InvalidConfig(format!(
                        "ipam.ranges[{index}] mixes IPv4 and IPv6 ({} and {}); use one set per family",
                        first.subnet, r.subnet
                    )));
                }
            }
            if let Some(o) = ranges.iter().find(|o| o.overlaps(&r)) {
                return Err(Error::InvalidConfig(format!(
                    "ipam.ranges[{index}][{j}] {r} overlaps {o}"
                )));
            }
            ranges.push(r);
        }
        Ok(RangeSet { ranges })
    }

    /// Validates every set and checks sets do not overlap each other.
    pub fn parse_all(cfgs: &[Vec<RangeConfig>]) -> Result<Vec<RangeSet>> {
        if cfgs.is_empty() {
            return Err(Error::InvalidConfig(
                "ipam.ranges is empty: at least one range set is required".into(),
            ));
        }
        let mut sets: Vec<RangeSet> = Vec::with_capacity(cfgs.len());
        for (i, c) in cfgs.iter().enumerate() {
            let s = RangeSet::new(c, i)?;
            for other in &sets {
                for a in &s.ranges {
                    if let Some(b) = other.ranges.iter().find(|b| a.overlaps(b)) {
                        return Err(Error::InvalidConfig(format!(
                            "ipam.ranges[{i}] {a} overlaps {b} of another set"
                        )));
                    }
                }
            }
            sets.push(s);
        }
        Ok(sets)
    }

    /// True for an IPv6 set.
    pub fn is_v6(&self) -> bool {
        self.ranges[0].subnet.addr().is_ipv6()
    }

    /// A stable key for this set (its first subnet), used to remember the last address
    /// handed out.
    pub fn key(&self) -> String {
        self.ranges[0].subnet.to_string()
    }

    /// The range that may hand out `ip`.
    pub fn range_of(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.allocatable(ip))
    }

    /// The next free address after `last` (round robin, so a released address is not reused
    /// at once), or `None` when the set is exhausted.
    pub fn next_free(
        &self,
        taken: &HashSet<IpAddr>,
        last: Option<IpAddr>,
    ) -> Option<(IpAddr, &Range)> {
        // Start right after `last` when it lies in a range, else at the first range's start.
        let (start_range, start_at) = last
            .and_then(|l| {
                self.ranges
                    .iter()
                    .position(|r| to_u128(l) >= to_u128(r.start) && to_u128(l) <= to_u128(r.end))
                    .map(|i| {
                        if to_u128(l) >= to_u128(self.ranges[i].end) {
                            let next = (i + 1) % self.ranges.len();
                            (next, to_u128(self.ranges[next].start))
                        } else {
                            (i, to_u128(l) + 1)
                        }
                    })
            })
            .unwrap_or((0, to_u128(self.ranges[0].start)));
        let n = self.ranges.len();
        // Visit ranges start_range.. wrapping around, and finally the head of start_range.
        for step in 0..=n {
            let idx = (start_range + step) % n;
            let r = &self.ranges[idx];
            let (lo, hi) = if step == 0 {
                (start_at, to_u128(r.end))
            } else if step == n {
                (to_u128(r.start), start_at.saturating_sub(1))
            } else {
                (to_u128(r.start), to_u128(r.end))
            };
            if step == n && start_at <= to_u128(r.start) {
                continue;
            }
            let mut v = lo;
            while v <= hi {
                let ip = from_u128(v, &r.start);
                if r.allocatable(ip) && !taken.contains(&ip) {
                    return Some((ip, r));
                }
                if v == hi {
                    break;
                }
                v += 1;
            }
        }
        None
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address `v` of the family of `like`.
pub fn from_u128(v: u128, like: &IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(subnet: &str) -> RangeConfig {
        RangeConfig {
            subnet: subnet.into(),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_reserve_network_gateway_broadcast() {
        let s = RangeSet::new(&[rc("10.244.1.0/24")], 0).unwrap();
        let r = &s.ranges[0];
        assert_eq!(r.start, ip("10.244.1.1"));
        assert_eq!(r.end, ip("10.244.1.254"));
        assert_eq!(r.gateway, ip("10.244.1.1"));
        assert!(!r.allocatable(ip("10.244.1.0")));
        assert!(!r.allocatable(ip("10.244.1.1")));
        assert!(!r.allocatable(ip("10.244.1.255")));
        assert!(r.allocatable(ip("10.244.1.2")));
        assert!(r.allocatable(ip("10.244.1.254")));
        let (first, _) = s.next_free(&HashSet::new(), None).unwrap();
        assert_eq!(first, ip("10.244.1.2"));
        assert_eq!(r.with_prefix(first).to_string(), "10.244.1.2/24");
    }

    #[test]
    fn ipv6_defaults() {
        let s = RangeSet::new(&[rc("fd00:10:244:1::/64")], 1).unwrap();
        assert!(s.is_v6());
        let r = &s.ranges[0];
        assert_eq!(r.gateway, ip("fd00:10:244:1::1"));
        assert_eq!(r.end, ip("fd00:10:244:1:ffff:ffff:ffff:ffff"));
        let (first, _) = s.next_free(&HashSet::new(), None).unwrap();
        assert_eq!(first, ip("fd00:10:244:1::2"));
    }

    #[test]
    fn start_end_gateway_honoured() {
        let cfg = RangeConfig {
            subnet: "10.0.0.0/24".into(),
            range_start: Some("10.0.0.10".into()),
            range_end: Some("10.0.0.12".into()),
            gateway: Some("10.0.0.11".into()),
        };
        let s = RangeSet::new(&[cfg], 0).unwrap();
        let mut taken = HashSet::new();
        let mut got = vec![];
        let mut last = None;
        while let Some((a, _)) = s.next_free(&taken, last) {
            taken.insert(a);
            last = Some(a);
            got.push(a.to_string());
        }
        assert_eq!(got, vec!["10.0.0.10", "10.0.0.12"]);
    }

    #[test]
    fn round_robin_wraps_across_ranges() {
        let s = RangeSet::new(
            &[
                RangeConfig {
                    subnet: "10.0.0.0/30".into(),
                    ..Default::default()
                },
                RangeConfig {
                    subnet: "10.0.1.0/30".into(),
                    ..Default::default()
                },
            ],
            0,
        )
        .unwrap();
        // /30: .1 gateway, .2 the only host each
        let taken = HashSet::new();
        let (a, _) = s.next_free(&taken, None).unwrap();
        assert_eq!(a, ip("10.0.0.2"));
        let (b, _) = s.next_free(&taken, Some(a)).unwrap();
        assert_eq!(b, ip("10.0.1.2"));
        let (c, _) = s.next_free(&taken, Some(b)).unwrap();
        assert_eq!(c, ip("10.0.0.2"), "wraps to the first range");
        let full: HashSet<IpAddr> = [a, b].into_iter().collect();
        assert!(s.next_free(&full, Some(b)).is_none());
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases: Vec<(RangeConfig, &str)> = vec![
            (rc("nonsense"), "not a CIDR"),
            (rc("10.0.0.1/24"), "host bits"),
            (rc("10.0.0.0/31"), "too small"),
            (
                RangeConfig {
                    subnet: "10.0.0.0/24".into(),
                    range_start: Some("10.0.1.5".into()),
                    ..Default::default()
                },
                "rangeStart 10.0.1.5 is not in subnet",
            ),
            (
                RangeConfig {
                    subnet: "10.0.0.0/24".into(),
                    range_start: Some("10.0.0.50".into()),
                    range_end: Some("10.0.0.40".into()),
                    ..Default::default()
                },
                "after rangeEnd",
            ),
            (
                RangeConfig {
                    subnet: "10.0.0.0/24".into(),
                    gateway: Some("fd00::1".into()),
                    ..Default::default()
                },
                "gateway fd00::1 is not of the family",
            ),
            (
                RangeConfig {
                    subnet: "10.0.0.0/24".into(),
                    range_end: Some("x".into()),
                    ..Default::default()
                },
                "rangeEnd \"x\" is not an IP",
            ),
        ];
        for (cfg, want) in cases {
            let err = RangeSet::new(std::slice::from_ref(&cfg), 0)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{cfg:?}: {err}");
            assert!(err.contains("ipam.ranges[0][0]"), "{err}");
        }
        let err = RangeSet::new(&[rc("10.0.0.0/24"), rc("fd00::/64")], 0).unwrap_err();
        assert!(err.to_string().contains("mixes"), "{err}");
        let err = RangeSet::new(&[rc("10.0.0.0/16"), rc("10.0.1.0/24")], 0).unwrap_err();
        assert!(err.to_string().contains("overlaps"), "{err}");
        let err =
            RangeSet::parse_all(&[vec![rc("10.0.0.0/16")], vec![rc("10.0.1.0/24")]]).unwrap_err();
        assert!(err.to_string().contains("overlaps"), "{err}");
        assert!(RangeSet::parse_all(&[]).is_err());
        assert!(RangeSet::new(&[], 0).is_err());
        // One subnet, disjoint spans (host-local accepts them): no overlap.
        let one = |ip: &str| RangeConfig {
            subnet: "10.244.0.0/16".into(),
            range_start: Some(ip.into()),
            range_end: Some(ip.into()),
            ..Default::default()
        };
        assert!(RangeSet::new(&[one("10.244.0.4"), one("10.244.0.9")], 0).is_ok());
        let err = RangeSet::new(&[one("10.244.0.4"), one("10.244.0.4")], 0).unwrap_err();
        assert!(err.to_string().contains("overlaps"), "{err}");
    }
}
