//! Deterministic host-side interface names.
//!
//! `sa` + 3 hex digits of the network name's hash + 10 hex digits of the attachment's hash
//! (container id + ifname) = 15 characters, the Linux limit. The network part lets GC of one
//! network leave another network's veths alone; the attachment part lets DEL and GC find the
//! veth without any state.

use sarasa_model::hash::fnv1a64;

const PREFIX: &str = "sa";

/// The name prefix of this network's host veths (5 characters).
pub fn network_prefix(network: &str) -> String {
    format!("{PREFIX}{:03x}", fnv1a64(network.as_bytes()) & 0xfff)
}

/// The host veth name of (network, container id, ifname).
pub fn host_veth(network: &str, container_id: &str, ifname: &str) -> String {
    let mut key = Vec::with_capacity(container_id.len() + ifname.len() + 1);
    key.extend_from_slice(container_id.as_bytes());
    key.push(0);
    key.extend_from_slice(ifname.as_bytes());
    format!(
        "{}{:010x}",
        network_prefix(network),
        fnv1a64(&key) & 0xff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_short_and_distinct() {
        let a = host_veth("pods", "abc", "eth0");
        assert_eq!(a, host_veth("pods", "abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with(&network_prefix("pods")));
        assert_ne!(a, host_veth("pods", "abc", "eth1"));
        assert_ne!(a, host_veth("pods", "abd", "eth0"));
        // the separator keeps ("ab","ceth0") and ("abc","eth0") apart
        assert_ne!(host_veth("pods", "ab", "ceth0"), a);
        assert_ne!(network_prefix("pods"), network_prefix("other"));
    }

    #[test]
    fn names_are_pinned() {
        // Host veths of running pods carry these names: a change of hash would orphan them.
        assert_eq!(network_prefix("pods"), "sac2d");
        assert_eq!(host_veth("pods", "abc", "eth0"), "sac2de81be81b20");
    }
}
