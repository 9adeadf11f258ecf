//! sysctls under `/proc/sys`, for the calling thread's network namespace.
//!
//! `/proc/sys/net/...` resolves against the network namespace of the thread that opens the
//! file, so these act on whatever namespace the caller is in. To act on another namespace,
//! call them inside [`NetNs::run`](crate::NetNs::run) or use
//! [`NetNs::sysctl_write`](crate::NetNs::sysctl_write).

use std::path::PathBuf;

use crate::error::{Error, Result};

/// `net.ipv4.conf.eth0.proxy_arp` → `/proc/sys/net/ipv4/conf/eth0/proxy_arp`.
///
/// Dots separate components; an interface name containing a dot can be written with `/`
/// separators instead (`net/ipv4/conf/eth0.100/proxy_arp`), as sysctl(8) accepts.
pub fn path(key: &str) -> PathBuf {
    let rel = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    PathBuf::from("/proc/sys").join(rel)
}

/// Writes `value` to the sysctl `key`.
pub fn write(key: &str, value: &str) -> Result<()> {
    let p = path(key);
    std::fs::write(&p, value.as_bytes()).map_err(|e| Error::os(format!("sysctl {key}={value}"), e))
}

/// Reads the sysctl `key`, trimmed.
pub fn read(key: &str) -> Result<String> {
    let p = path(key);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::os(format!("sysctl read {key}"), e))
}

/// Writes `value` only if the current value differs (avoids needless writes, and works where
/// the file is read-only but already right).
pub fn ensure(key: &str, value: &str) -> Result<()> {
    match read(key) {
        Ok(v) if v == value => Ok(()),
        _ => write(key, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_to_path() {
        assert_eq!(
            path("net.ipv4.conf.eth0.proxy_arp"),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0/proxy_arp")
        );
        assert_eq!(
            path("net/ipv4/conf/eth0.100/proxy_arp"),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/proxy_arp")
        );
    }
}
