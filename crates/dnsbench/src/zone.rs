//! The benchmark cluster as RFC 1035 zone files for NSD: exactly the records the Kubernetes DNS
//! specification gives these Services (A, SRV per named port, PTR; headless: A per endpoint,
//! hostname records, SRV per endpoint, endpoint PTRs) plus `dns-version`, so both servers are
//! asked the same questions about the same data. Two zones: the cluster domain and
//! `10.in-addr.arpa` (every ClusterIP and endpoint address is in 10/8).

use std::fmt::Write as _;

use crate::cluster::{BenchService, PORTS};
use crate::{NAMESPACE, ZONE};

/// The reverse zone holding every PTR of the benchmark.
pub const REVERSE_ZONE: &str = "10.in-addr.arpa";
/// TTL of the zone's records (the cluster DNS default).
pub const TTL: u32 = 30;

fn header(out: &mut String, origin: &str) {
    let _ = writeln!(out, "$ORIGIN {origin}.\n$TTL {TTL}");
    let _ = writeln!(
        out,
        "@ SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 {TTL}\n@ NS ns.dns.{ZONE}."
    );
}

fn fqdn(svc: &BenchService) -> String {
    format!("{}.{NAMESPACE}.svc.{ZONE}.", svc.name)
}

/// The cluster domain's zone.
pub fn cluster_zone(services: &[BenchService]) -> String {
    let mut out = String::with_capacity(services.len() * 400);
    header(&mut out, ZONE);
    let _ = writeln!(out, "ns.dns A 10.96.0.10");
    let _ = writeln!(out, "dns-version TXT \"1.1.0\"");
    for svc in services {
        let name = fqdn(svc);
        match svc.cluster_ip {
            Some(ip) => {
                let _ = writeln!(out, "{name} A {ip}");
                for (port, proto, number) in PORTS {
                    let _ = writeln!(
                        out,
                        "_{port}._{}.{name} SRV 0 100 {number} {name}",
                        proto.to_ascii_lowercase()
                    );
                }
            }
            None => {
                for (host, ip) in &svc.endpoints {
                    let _ = writeln!(out, "{name} A {ip}");
                    let _ = writeln!(out, "{host}.{name} A {ip}");
                    for (port, proto, number) in PORTS {
                        let _ = writeln!(
                            out,
                            "_{port}._{}.{name} SRV 0 100 {number} {host}.{name}",
                            proto.to_ascii_lowercase(),
                        );
                    }
                }
            }
        }
    }
    out
}

/// `a.b.c.d` → `d.c.b` (relative to `10.in-addr.arpa`).
fn reverse_label(ip: std::net::Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}", o[3], o[2], o[1])
}

/// The reverse zone: the ClusterIP of each Service, each headless endpoint's address.
pub fn reverse_zone(services: &[BenchService]) -> String {
    let mut out = String::with_capacity(services.len() * 100);
    header(&mut out, REVERSE_ZONE);
    for svc in services {
        let name = fqdn(svc);
        match svc.cluster_ip {
            Some(ip) => {
                let _ = writeln!(out, "{} PTR {name}", reverse_label(ip));
            }
            None => {
                for (host, ip) in &svc.endpoints {
                    let _ = writeln!(out, "{} PTR {host}.{name}", reverse_label(*ip));
                }
            }
        }
    }
    out
}

/// `nsd.conf` serving both zones from `dir` on `addr` port `port`, one server process, response
/// rate limiting off (Debian's NSD limits NXDOMAIN answers per client /24 to 200/s by default,
/// which would drop most of the benchmark's NXDOMAIN share).
pub fn nsd_conf(dir: &std::path::Path, addr: &str, port: u16) -> String {
    let d = dir.display();
    format!(
        "server:\n  ip-address: {addr}@{port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"{d}/nsd.db\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n  server-count: 1\n  hide-version: yes\n  verbosity: 0\n  refuse-any: yes\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\nzone:\n  name: {ZONE}\n  zonefile: {ZONE}.zone\nzone:\n  name: {REVERSE_ZONE}\n  zonefile: {REVERSE_ZONE}.zone\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn services() -> Vec<BenchService> {
        vec![
            BenchService {
                name: "svc-0".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 3, 4)),
                endpoints: vec![("ep-0".into(), Ipv4Addr::new(10, 128, 0, 1))],
            },
            BenchService {
                name: "svc-9".into(),
                cluster_ip: None,
                endpoints: vec![
                    ("ep-0".into(), Ipv4Addr::new(10, 128, 0, 46)),
                    ("ep-1".into(), Ipv4Addr::new(10, 128, 0, 47)),
                ],
            },
        ]
    }

    #[test]
    fn cluster_ip_and_headless_records_follow_the_specification() {
        let z = cluster_zone(&services());
        assert!(z.contains("svc-0.bench.svc.cluster.local. A 10.96.3.4\n"));
        assert!(z.contains(
            "_http._tcp.svc-0.bench.svc.cluster.local. SRV 0 100 80 svc-0.bench.svc.cluster.local.\n"
        ));
        assert!(z.contains("_dns._udp.svc-0.bench.svc.cluster.local. SRV 0 100 53 "));
        // ClusterIP Services' endpoints have no records.
        assert!(!z.contains("10.128.0.1\n"));
        assert!(z.contains("svc-9.bench.svc.cluster.local. A 10.128.0.46\n"));
        assert!(z.contains("ep-1.svc-9.bench.svc.cluster.local. A 10.128.0.47\n"));
        assert!(z.contains(
            "_http._tcp.svc-9.bench.svc.cluster.local. SRV 0 100 80 ep-1.svc-9.bench.svc.cluster.local.\n"
        ));
        assert!(z.contains("dns-version TXT \"1.1.0\""));
    }

    #[test]
    fn reverse_zone_names_services_and_headless_endpoints() {
        let z = reverse_zone(&services());
        assert!(z.contains("4.3.96 PTR svc-0.bench.svc.cluster.local.\n"));
        assert!(z.contains("47.0.128 PTR ep-1.svc-9.bench.svc.cluster.local.\n"));
        assert!(!z.contains("1.0.128 PTR"));
    }
}
