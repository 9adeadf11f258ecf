//! Host ports (`hostPort`, the CNI `portMappings` capability) recorded with the attachment
//! that holds them, so an attachment's addresses and its ports appear and go together: one
//! transaction checks a port is free on the node and records it; DEL and GC drop both.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One mapping of a port of the node to a port of the attachment's addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPort {
    /// The node's port.
    pub host_port: u16,
    /// The pod's port.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Only this node address; `None` for every address of the node, an unspecified address
    /// (`0.0.0.0`, `::`) for every address of that family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

impl HostPort {
    /// Whether both would claim the same packets: same protocol and port, and node addresses
    /// that meet (one a wildcard covering the other, or equal).
    pub fn overlaps(&self, other: &HostPort) -> bool {
        if self.protocol != other.protocol || self.host_port != other.host_port {
            return false;
        }
        match (self.host_ip, other.host_ip) {
            (None, _) | (_, None) => true,
            (Some(a), Some(b)) if a.is_unspecified() || b.is_unspecified() => {
                a.is_ipv4() == b.is_ipv4()
            }
            (Some(a), Some(b)) => a == b,
        }
    }

    /// Whether packets of this family may match.
    pub fn covers_family(&self, v4: bool) -> bool {
        self.host_ip.is_none_or(|ip| ip.is_ipv4() == v4)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        write!(
            f,
            "{}/{} -> {}",
            self.host_port, self.protocol, self.container_port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(port: u16, proto: &str, ip: Option<&str>) -> HostPort {
        HostPort {
            host_port: port,
            container_port: 80,
            protocol: proto.into(),
            host_ip: ip.map(|s| s.parse().unwrap()),
        }
    }

    #[test]
    fn overlap_follows_protocol_port_and_address() {
        assert!(hp(80, "tcp", None).overlaps(&hp(80, "tcp", Some("192.0.2.1"))));
        assert!(!hp(80, "tcp", None).overlaps(&hp(80, "udp", None)));
        assert!(!hp(80, "tcp", None).overlaps(&hp(81, "tcp", None)));
        assert!(hp(80, "tcp", Some("0.0.0.0")).overlaps(&hp(80, "tcp", Some("192.0.2.1"))));
        assert!(!hp(80, "tcp", Some("0.0.0.0")).overlaps(&hp(80, "tcp", Some("2001:db8::1"))));
        assert!(!hp(80, "tcp", Some("192.0.2.1")).overlaps(&hp(80, "tcp", Some("192.0.2.2"))));
        assert!(hp(80, "tcp", Some("192.0.2.1")).overlaps(&hp(80, "tcp", Some("192.0.2.1"))));
    }

    #[test]
    fn families() {
        assert!(hp(80, "tcp", None).covers_family(true));
        assert!(hp(80, "tcp", None).covers_family(false));
        assert!(!hp(80, "tcp", Some("0.0.0.0")).covers_family(false));
        assert!(hp(80, "tcp", Some("::")).covers_family(false));
    }

    #[test]
    fn serialises_in_camel_case_without_an_absent_host_ip() {
        let s = serde_json::to_string(&hp(8080, "tcp", None)).unwrap();
        assert_eq!(
            s,
            r#"{"hostPort":8080,"containerPort":80,"protocol":"tcp"}"#
        );
    }
}
