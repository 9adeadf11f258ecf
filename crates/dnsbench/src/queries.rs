//! The dnsperf query mix over the benchmark cluster: 40 % A (three ClusterIP Services to one
//! headless), 20 % SRV (named ports of both kinds), 20 % PTR (ClusterIPs and headless
//! endpoints), 20 % NXDOMAIN (Services that do not exist). Deterministic: the same file for
//! the same cluster, spread over every Service by a stride coprime to the count.

use std::fmt::Write as _;

use crate::cluster::BenchService;
use crate::{NAMESPACE, ZONE};

/// `count` lines of dnsperf input (`NAME TYPE`).
pub fn query_mix(services: &[BenchService], count: usize) -> String {
    let clusterip: Vec<&BenchService> =
        services.iter().filter(|s| s.cluster_ip.is_some()).collect();
    let headless: Vec<&BenchService> = services.iter().filter(|s| s.cluster_ip.is_none()).collect();
    let mut out = String::with_capacity(count * 48);
    if clusterip.is_empty() || headless.is_empty() {
        return out;
    }
    let stride = 7919; // a prime: consecutive picks land far apart
    let name = |s: &BenchService| format!("{}.{NAMESPACE}.svc.{ZONE}", s.name);
    for i in 0..count {
        // Round r of ten lines picks its Services by r, so every kind walks every Service.
        let r = i / 10 + i % 10;
        let c = clusterip[(r * stride) % clusterip.len()];
        let h = headless[(r * stride) % headless.len()];
        let line = match i % 10 {
            0..=2 => format!("{} A", name(c)),
            3 => format!("{} A", name(h)),
            4 => format!("_http._tcp.{} SRV", name(c)),
            5 => format!("_dns._udp.{} SRV", name(h)),
            6 => format!(
                "{} PTR",
                reverse(c.cluster_ip.map(|ip| ip.octets()).unwrap_or_default())
            ),
            7 => format!(
                "{} PTR",
                reverse(h.endpoints[(i / 10) % h.endpoints.len().max(1)].1.octets())
            ),
            _ => format!("missing-{i}.{NAMESPACE}.svc.{ZONE} A"),
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

fn reverse(o: [u8; 4]) -> String {
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_mix_has_each_kind_in_proportion() {
        let services: Vec<BenchService> = (0..20)
            .map(|i| BenchService {
                name: format!("svc-{i}"),
                cluster_ip: (i % 10 != 9).then(|| Ipv4Addr::new(10, 96, 0, i as u8 + 1)),
                endpoints: vec![("ep-0".into(), Ipv4Addr::new(10, 128, 0, i as u8 + 1))],
            })
            .collect();
        let q = query_mix(&services, 1000);
        let count = |t: &str| q.lines().filter(|l| l.ends_with(t)).count();
        assert_eq!(count(" A"), 600); // 40 % found + 20 % missing
        assert_eq!(count(" SRV"), 200);
        assert_eq!(count(" PTR"), 200);
        assert_eq!(q.lines().filter(|l| l.starts_with("missing-")).count(), 200);
        assert!(q.contains("svc-9.bench.svc.cluster.local A"));
        assert!(q.contains("1.0.96.10.in-addr.arpa PTR"));
    }
}
