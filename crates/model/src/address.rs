//! Addresses that can never be a node's, a Service's or an endpoint's: the kernel treats them
//! specially (loopback, link-local, multicast, unspecified, broadcast), so routing or DNATing
//! them redirects traffic that was never meant for the cluster.

use std::net::IpAddr;

/// Why `ip` is special, or `None` for an ordinary unicast address.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some("unspecified")
            } else if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_address(IpAddr::V4(v4));
            }
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_special_kind() {
        let k = |s: &str| special_address(s.parse().unwrap());
        assert_eq!(k("127.0.0.1"), Some("loopback"));
        assert_eq!(k("169.254.169.254"), Some("link-local"));
        assert_eq!(k("224.0.0.1"), Some("multicast"));
        assert_eq!(k("0.0.0.0"), Some("unspecified"));
        assert_eq!(k("255.255.255.255"), Some("broadcast"));
        assert_eq!(k("::1"), Some("loopback"));
        assert_eq!(k("fe80::1"), Some("link-local"));
        assert_eq!(k("ff02::1"), Some("multicast"));
        assert_eq!(k("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(k("::"), Some("unspecified"));
        assert_eq!(k("192.168.33.1"), None);
        assert_eq!(k("2001:db8::1"), None);
    }
}
