//! The server's settings, validated once: the cluster domain, TTLs, the pod-records mode, the
//! upstream resolvers and the cache bound. Every error names the flag that was wrong, so the
//! CLI can print it as is.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hickory_proto::rr::Name;

/// A setting that could not be used, naming its flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub message: String,
}

fn err(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

/// Pod records (`a-b-c-d.ns.pod.zone`), as CoreDNS's `pods` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodsMode {
    /// Answered only when a pod with that address exists in that namespace.
    #[default]
    Verified,
    /// Answered for any well-formed address (the specification's deprecated form).
    Insecure,
    /// Never answered (NXDOMAIN).
    Disabled,
}

impl FromStr for PodsMode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "verified" => Ok(PodsMode::Verified),
            "insecure" => Ok(PodsMode::Insecure),
            "disabled" => Ok(PodsMode::Disabled),
            other => Err(err(
                "--pods",
                format!("{other:?} is not one of verified, insecure, disabled"),
            )),
        }
    }
}

/// What the cluster zone is served with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The cluster domain, lowercase, fully qualified (`cluster.local.`).
    pub domain: Name,
    /// TTL of every positive cluster answer.
    pub ttl: u32,
    /// SOA minimum (and SOA TTL) of negative cluster answers: how long NXDOMAIN/NODATA is cached.
    pub negative_ttl: u32,
    pub pods: PodsMode,
    /// The cluster set's domain (`clusterset.local.`), where the MCS DNS specification puts
    /// the names of ServiceImports.
    pub clusterset_domain: Name,
}

/// Default TTLs. The specification does not fix them; 30 s bounds how long a deleted Service
/// stays in client caches (CoreDNS's default of 5 s trades that for 6× the query rate).
pub const DEFAULT_TTL: u32 = 30;
pub const DEFAULT_NEGATIVE_TTL: u32 = 30;
/// Upstream cache entries when `--cache-size` is not given.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;

impl ZoneConfig {
    pub fn new(domain: &str) -> Result<Self, ConfigError> {
        Ok(ZoneConfig {
            domain: parse_domain(domain)?,
            ttl: DEFAULT_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            pods: PodsMode::default(),
            clusterset_domain: parse_domain_flag("--clusterset-domain", DEFAULT_CLUSTERSET_DOMAIN)?,
        })
    }
}

/// The MCS DNS specification's cluster set domain.
pub const DEFAULT_CLUSTERSET_DOMAIN: &str = "clusterset.local";

/// Parses `--cluster-domain`: a valid DNS name of letters, digits and hyphens, not the root.
pub fn parse_domain(s: &str) -> Result<Name, ConfigError> {
    parse_domain_flag("--cluster-domain", s)
}

/// Parses a domain given with `flag` (`--cluster-domain`, `--clusterset-domain`).
pub fn parse_domain_flag(flag: &'static str, s: &str) -> Result<Name, ConfigError> {
    let trimmed = s.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(err(flag, "the domain must not be empty or the root"));
    }
    for label in trimmed.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(err(
                flag,
                format!("{s:?}: label {label:?} is not a DNS label (RFC 1123)"),
            ));
        }
    }
    let name =
        Name::from_ascii(format!("{trimmed}.")).map_err(|e| err(flag, format!("{s:?}: {e}")))?;
    Ok(name.to_lowercase())
}

/// Parses `--upstream IP[:PORT]` (`[v6]:port` for IPv6 with a port); port 53 by default.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(sa) = SocketAddr::from_str(s) {
        return Ok(sa);
    }
    IpAddr::from_str(s)
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            err(
                "--upstream",
                format!("{s:?} is not IP, IP:PORT or [IPv6]:PORT"),
            )
        })
}

/// Parses `--listen ADDR:PORT`.
pub fn parse_listen(flag: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    SocketAddr::from_str(s).map_err(|_| err(flag, format!("{s:?} is not ADDR:PORT")))
}

/// The `nameserver` lines of a resolv.conf, port 53 (unparsable lines are skipped).
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        // A zone index (fe80::1%eth0) is dropped: std cannot parse it.
        .filter_map(|a| IpAddr::from_str(a.split('%').next().unwrap_or(a)).ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Checks a TTL flag: 0 is allowed (no caching) but not more than a week.
pub fn check_ttl(flag: &'static str, ttl: u32) -> Result<u32, ConfigError> {
    if ttl > 604_800 {
        return Err(err(flag, format!("{ttl} s is more than a week")));
    }
    Ok(ttl)
}

/// The most UDP worker threads `--udp-workers` takes (one socket each per listen address).
pub const MAX_UDP_WORKERS: usize = 256;

/// Checks `--udp-workers`: 0 (one per available core) up to [`MAX_UDP_WORKERS`].
pub fn check_udp_workers(n: usize) -> Result<usize, ConfigError> {
    if n > MAX_UDP_WORKERS {
        return Err(err(
            "--udp-workers",
            format!("{n} is more than {MAX_UDP_WORKERS} (0: one per core)"),
        ));
    }
    Ok(n)
}

/// Checks `--cache-size`: at least one entry.
pub fn check_cache_size(n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        return Err(err("--cache-size", "must be at least 1"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_validated_and_lowercased() {
        assert_eq!(
            parse_domain("Cluster.Local").unwrap().to_ascii(),
            "cluster.local."
        );
        assert_eq!(
            parse_domain("cluster.local.").unwrap().to_ascii(),
            "cluster.local."
        );
        for bad in ["", ".", "a..b", "-a.b", "a_b.c", &"x".repeat(64)] {
            let e = parse_domain(bad).unwrap_err();
            assert_eq!(e.flag, "--cluster-domain", "{bad}");
        }
    }

    #[test]
    fn upstreams_listen_and_resolv_conf() {
        assert_eq!(
            parse_upstream("10.0.0.1").unwrap(),
            "10.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("10.0.0.1:5353").unwrap(),
            "10.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("fd00::1").unwrap(),
            "[fd00::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_upstream("[fd00::1]:54").unwrap(),
            "[fd00::1]:54".parse().unwrap()
        );
        assert_eq!(parse_upstream("x").unwrap_err().flag, "--upstream");
        assert_eq!(
            parse_listen("--listen", "1.2.3.4").unwrap_err().flag,
            "--listen"
        );
        let rc = "# c\nsearch a\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bad\n";
        assert_eq!(
            resolv_conf_nameservers(rc),
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!("insecure".parse::<PodsMode>().unwrap(), PodsMode::Insecure);
        assert_eq!("x".parse::<PodsMode>().unwrap_err().flag, "--pods");
        assert_eq!(check_cache_size(0).unwrap_err().flag, "--cache-size");
        assert_eq!(check_ttl("--ttl", 700_000).unwrap_err().flag, "--ttl");
        assert_eq!(check_udp_workers(0).unwrap(), 0);
        assert_eq!(check_udp_workers(4).unwrap(), 4);
        assert_eq!(
            check_udp_workers(100_000).unwrap_err().flag,
            "--udp-workers"
        );
    }
}
