//! Which ClusterIPs and NodePorts stored Services hold, and allocation of free ones.
//!
//! The index is derived from the stored Services alone (updated on every Service write), so
//! allocation survives a restart and a dry run commits nothing.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::meta;

/// Owner of an allocation: `namespace/name`.
pub type Owner = String;

#[derive(Debug, Default)]
pub struct ServiceIndex {
    pub cluster_ips: HashMap<IpAddr, Owner>,
    pub node_ports: HashMap<u16, Owner>,
    next_ip: HashMap<bool, u128>,
    next_port: u16,
}

fn owner(svc: &Value) -> Owner {
    format!("{}/{}", meta::namespace(svc), meta::name(svc))
}

/// ClusterIPs of a Service (`spec.clusterIPs`, falling back to `spec.clusterIP`), without "None".
pub fn cluster_ips(svc: &Value) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = meta::path(svc, "spec.clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if out.is_empty() {
        if let Some(ip) = meta::path_str(svc, "spec.clusterIP").and_then(|s| s.parse().ok()) {
            out.push(ip);
        }
    }
    out
}

/// NodePorts (and the health-check node port) a Service holds.
pub fn node_ports(svc: &Value) -> Vec<u16> {
    let mut out: Vec<u16> = meta::path(svc, "spec.ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.get("nodePort")?.as_u64())
                .filter_map(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .collect()
        })
        .unwrap_or_default();
    if let Some(h) = meta::path(svc, "spec.healthCheckNodePort").and_then(Value::as_u64) {
        if let Ok(h) = u16::try_from(h) {
            if h != 0 {
                out.push(h);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn u128_to_ip(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(n.into())
    } else {
        IpAddr::V4((n as u32).into())
    }
}

/// The usable offsets of a CIDR for ClusterIPs: not the network address, not the IPv4 broadcast;
/// huge IPv6 ranges are capped at 2^20 addresses.
fn usable(net: IpNet) -> (u128, u128) {
    let host_bits = (net.max_prefix_len() - net.prefix_len()) as u32;
    let size: u128 = if host_bits >= 20 && matches!(net, IpNet::V6(_)) {
        1 << 20
    } else {
        1u128 << host_bits
    };
    let base = ip_to_u128(net.network());
    let last = if matches!(net, IpNet::V4(_)) && host_bits >= 2 {
        size - 2
    } else {
        size - 1
    };
    (base + 1, base + last.max(1))
}

impl ServiceIndex {
    pub fn add(&mut self, svc: &Value) {
        let o = owner(svc);
        for ip in cluster_ips(svc) {
            self.cluster_ips.insert(ip, o.clone());
            // The next allocation starts after the highest address seen.
            let next = ip_to_u128(ip) + 1;
            let hint = self.next_ip.entry(ip.is_ipv6()).or_insert(0);
            *hint = (*hint).max(next);
        }
        for p in node_ports(svc) {
            self.node_ports.insert(p, o.clone());
            self.next_port = self.next_port.max(p.saturating_add(1));
        }
    }

    pub fn remove(&mut self, svc: &Value) {
        let o = owner(svc);
        for ip in cluster_ips(svc) {
            if self.cluster_ips.get(&ip) == Some(&o) {
                self.cluster_ips.remove(&ip);
            }
        }
        for p in node_ports(svc) {
            if self.node_ports.get(&p) == Some(&o) {
                self.node_ports.remove(&p);
            }
        }
    }

    /// Who holds a ClusterIP, if anyone other than `me`.
    pub fn ip_taken(&self, ip: IpAddr, me: &str) -> bool {
        self.cluster_ips.get(&ip).is_some_and(|o| o != me)
    }

    pub fn port_taken(&self, port: u16, me: &str) -> bool {
        self.node_ports.get(&port).is_some_and(|o| o != me)
    }

    /// A free ClusterIP of `net`, skipping `also_taken` (chosen earlier in the same request).
    /// Allocation goes round the range from a moving hint.
    pub fn free_ip(&self, net: IpNet, also_taken: &[IpAddr]) -> Option<IpAddr> {
        let v6 = matches!(net, IpNet::V6(_));
        let (first, last) = usable(net);
        let span = last - first + 1;
        // Skip the first address: it is the `kubernetes` Service's by convention.
        let hint = self.next_ip.get(&v6).copied().unwrap_or(first + 1);
        let start = if hint < first || hint > last {
            first
        } else {
            hint
        };
        let free = |ip: &IpAddr| !self.cluster_ips.contains_key(ip) && !also_taken.contains(ip);
        for i in 0..span {
            let n = first + (start - first + i) % span;
            if n == first {
                continue;
            }
            let ip = u128_to_ip(v6, n);
            if free(&ip) {
                return Some(ip);
            }
        }
        // The first address only when nothing else is left.
        Some(u128_to_ip(v6, first)).filter(free)
    }

    /// A free NodePort of `range`, skipping `also_taken`.
    pub fn free_port(&self, range: (u16, u16), also_taken: &[u16]) -> Option<u16> {
        let (lo, hi) = range;
        let span = (hi - lo) as u32 + 1;
        let start = if self.next_port < lo || self.next_port > hi {
            lo
        } else {
            self.next_port
        };
        (0..span)
            .map(|i| lo + (((start - lo) as u32 + i) % span) as u16)
            .find(|p| !self.node_ports.contains_key(p) && !also_taken.contains(p))
    }
}

/// Whether `ip` lies in `net` and is a usable ClusterIP there.
pub fn in_service_range(net: IpNet, ip: IpAddr) -> bool {
    if !net.contains(&ip) {
        return false;
    }
    let n = ip_to_u128(ip);
    let base = ip_to_u128(net.network());
    let host_bits = (net.max_prefix_len() - net.prefix_len()) as u32;
    if n == base {
        return false;
    }
    if matches!(net, IpNet::V4(_)) && host_bits >= 2 && n == base + (1u128 << host_bits) - 1 {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allocates_round_and_skips_taken() {
        let mut idx = ServiceIndex::default();
        let net: IpNet = "10.96.0.0/30".parse().unwrap();
        // usable: .1 (reserved first) and .2
        let ip = idx.free_ip(net, &[]).unwrap();
        assert_eq!(ip.to_string(), "10.96.0.2");
        idx.add(&json!({"metadata":{"name":"a","namespace":"d"},"spec":{"clusterIP":"10.96.0.2"}}));
        let ip2 = idx.free_ip(net, &[]).unwrap();
        assert_eq!(ip2.to_string(), "10.96.0.1");
        idx.add(&json!({"metadata":{"name":"b","namespace":"d"},"spec":{"clusterIP":"10.96.0.1"}}));
        assert!(idx.free_ip(net, &[]).is_none());
        assert!(idx.ip_taken("10.96.0.1".parse().unwrap(), "d/a"));
        assert!(!idx.ip_taken("10.96.0.1".parse().unwrap(), "d/b"));
    }

    #[test]
    fn node_ports_and_release() {
        let mut idx = ServiceIndex::default();
        let svc = json!({"metadata":{"name":"a","namespace":"d"},"spec":{"ports":[{"nodePort":30000}],"healthCheckNodePort":30001}});
        idx.add(&svc);
        assert_eq!(idx.free_port((30000, 30002), &[]), Some(30002));
        idx.remove(&svc);
        assert!(!idx.port_taken(30000, "d/b"));
        // Round-robin: the next allocation continues after the last one seen, then wraps.
        assert_eq!(idx.free_port((30000, 30002), &[30002]), Some(30000));
    }

    #[test]
    fn range_edges() {
        let net: IpNet = "10.96.0.0/12".parse().unwrap();
        assert!(!in_service_range(net, "10.96.0.0".parse().unwrap()));
        assert!(in_service_range(net, "10.96.0.10".parse().unwrap()));
        assert!(!in_service_range(net, "10.111.255.255".parse().unwrap()));
        assert!(!in_service_range(net, "10.0.0.1".parse().unwrap()));
    }
}
