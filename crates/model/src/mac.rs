//! A 48-bit Ethernet (vtep) MAC address, printed and parsed as `aa:bb:cc:dd:ee:ff`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// From netlink's link-layer address bytes; `None` unless exactly 6 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// A unicast station address: not all-zero (VXLAN's default FDB entry, which floods to
    /// every remote) and without the group bit (multicast, broadcast).
    pub fn is_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 1 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets separated by ':'")]
pub struct ParseMacError(String);

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(|| ParseMacError(s.into()))?;
            if part.len() != 2 {
                return Err(ParseMacError(s.into()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ParseMacError(s.into()))?;
        }
        if parts.next().is_some() {
            return Err(ParseMacError(s.into()));
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicast_excludes_zero_multicast_and_broadcast() {
        let m = |s: &str| s.parse::<MacAddr>().unwrap();
        assert!(m("02:00:00:00:00:01").is_unicast());
        assert!(!m("00:00:00:00:00:00").is_unicast());
        assert!(!m("01:00:5e:00:00:01").is_unicast());
        assert!(!m("ff:ff:ff:ff:ff:ff").is_unicast());
    }

    #[test]
    fn round_trip_and_rejects() {
        let m: MacAddr = "0a:1B:2c:3d:4e:5f".parse().unwrap();
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
        for bad in [
            "",
            "0a:1b",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:zz",
            "0a1:b:2c:3d:4e:5f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert_eq!(MacAddr::from_bytes(&[1, 2, 3]), None);
    }
}
