//! Names of the per-Service objects: readable, unique, and stable across restarts (the
//! kernel diff relies on the same inputs giving the same names).

use std::fmt::Write;
use std::net::IpAddr;

use sarasa_model::hash::fnv1a64;
use sarasa_model::{IpFamily, ServicePort, ServiceRef};

/// Global objects, one per family where it matters.
pub(crate) mod global {
    use sarasa_model::IpFamily;

    pub const SERVICES: &str = "services";
    pub const NAT_PREROUTING: &str = "nat-prerouting";
    pub const NAT_OUTPUT: &str = "nat-output";
    pub const NAT_PREROUTING_NODEPORTS: &str = "nat-prerouting-nodeports";
    pub const NAT_OUTPUT_NODEPORTS: &str = "nat-output-nodeports";
    pub const MASQUERADING: &str = "masquerading";
    pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
    pub const ENDPOINTS_CHECK: &str = "endpoints-check";
    pub const FIREWALL_CHECK: &str = "firewall-check";
    pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
    pub const REJECT: &str = "reject-chain";

    macro_rules! per_family {
        ($fn:ident, $v4:literal, $v6:literal) => {
            pub fn $fn(f: IpFamily) -> &'static str {
                match f {
                    IpFamily::V4 => $v4,
                    IpFamily::V6 => $v6,
                }
            }
        };
    }
    per_family!(service_ips, "service-ips-v4", "service-ips-v6");
    per_family!(
        service_nodeports,
        "service-nodeports-v4",
        "service-nodeports-v6"
    );
    per_family!(
        no_endpoint_services,
        "no-endpoint-services-v4",
        "no-endpoint-services-v6"
    );
    per_family!(
        no_endpoint_nodeports,
        "no-endpoint-nodeports-v4",
        "no-endpoint-nodeports-v6"
    );
    per_family!(firewall_ips, "firewall-ips-v4", "firewall-ips-v6");
    per_family!(cluster_ips, "cluster-ips-v4", "cluster-ips-v6");
    per_family!(service_cidrs, "service-cidrs-v4", "service-cidrs-v6");
    per_family!(cluster_cidrs, "cluster-cidrs-v4", "cluster-cidrs-v6");
}

/// FNV-1a, 32 bits shown: the hash keeps names unique and tells similar names apart.
fn short_hash(s: &str) -> u32 {
    let h = fnv1a64(s.as_bytes());
    (h ^ (h >> 32)) as u32
}

fn family_digit(f: IpFamily) -> char {
    match f {
        IpFamily::V4 => '4',
        IpFamily::V6 => '6',
    }
}

fn port_label(p: &ServicePort) -> String {
    if p.name.is_empty() {
        p.port.to_string()
    } else {
        p.name.clone()
    }
}

/// Max length of a readable part; kernel names may be 256 bytes.
const MAX_READABLE: usize = 180;

fn finish(mut readable: String, key: &str) -> String {
    // Truncate on a character boundary (names are ASCII once the API validated them, but
    // nothing here relies on it).
    let mut cut = MAX_READABLE.min(readable.len());
    while !readable.is_char_boundary(cut) {
        cut -= 1;
    }
    readable.truncate(cut);
    let _ = write!(readable, "-{:08x}", short_hash(key));
    // A name nft would not take unquoted becomes one it does (unchanged when valid), so the
    // kernel holds the very name the model has and the diff stays empty.
    sarasa_nft::text::ident(&readable).into_owned()
}

/// Names of one Service port's objects in one family.
#[derive(Debug, Clone)]
pub(crate) struct PortNames {
    base: String,
    key: String,
    digit: char,
}

impl PortNames {
    pub fn new(svc: &ServiceRef, port: &ServicePort, family: IpFamily) -> Self {
        let label = port_label(port);
        PortNames {
            base: format!("{}-{}-{}", svc.namespace, svc.name, label),
            key: format!(
                "{}/{}/{}/{}/{}",
                svc.namespace,
                svc.name,
                port.protocol.lowercase(),
                label,
                family_digit(family)
            ),
            digit: family_digit(family),
        }
    }

    fn chain(&self, prefix: &str) -> String {
        finish(
            format!("{prefix}{}-{}", self.digit, self.base),
            &format!("{prefix}/{}", self.key),
        )
    }

    /// Endpoints for Cluster policy (and the ClusterIP entry point).
    pub fn cluster(&self) -> String {
        self.chain("svc")
    }
    /// Node-local endpoints (traffic policy Local).
    pub fn local(&self) -> String {
        self.chain("local")
    }
    /// Entry point for NodePort, externalIPs and LoadBalancer IPs.
    pub fn external(&self) -> String {
        self.chain("ext")
    }
    /// loadBalancerSourceRanges filter.
    pub fn firewall(&self) -> String {
        self.chain("fw")
    }

    fn endpoint_part(&self, ip: &IpAddr, port: u16) -> (String, String) {
        let ip_s = ip.to_string().replace(':', ".");
        (
            format!("{}-{}-{}", self.base, ip_s, port),
            format!("{}__{}/{}", self.key, ip, port),
        )
    }

    /// Per-endpoint chain (DNAT).
    pub fn endpoint(&self, ip: &IpAddr, port: u16) -> String {
        let (readable, key) = self.endpoint_part(ip, port);
        finish(format!("ep{}-{readable}", self.digit), &format!("ep/{key}"))
    }

    /// Per-endpoint session-affinity set.
    pub fn affinity(&self, ip: &IpAddr, port: u16) -> String {
        let (readable, key) = self.endpoint_part(ip, port);
        finish(
            format!("aff{}-{readable}", self.digit),
            &format!("aff/{key}"),
        )
    }

    /// `namespace/name:port` for comments.
    pub fn comment(&self) -> String {
        self.key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_model::Protocol;

    #[test]
    fn names_are_readable_unique_and_valid() {
        let svc = ServiceRef::new("default", "web");
        let port = ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            target_port: None,
        };
        let v4 = PortNames::new(&svc, &port, IpFamily::V4);
        let v6 = PortNames::new(&svc, &port, IpFamily::V6);
        assert!(v4.cluster().starts_with("svc4-default-web-http-"));
        assert_ne!(v4.cluster(), v6.cluster());
        let ep = v6.endpoint(&"fd00::1".parse().unwrap(), 8080);
        assert!(ep.starts_with("ep6-default-web-http-fd00..1-8080-"), "{ep}");
        let udp = ServicePort {
            protocol: Protocol::Udp,
            ..port
        };
        assert_ne!(
            PortNames::new(&svc, &udp, IpFamily::V4).cluster(),
            v4.cluster()
        );
    }

    #[test]
    fn hostile_names_still_give_valid_nft_names() {
        let svc = ServiceRef::new("ns\"; flush ruleset; \"", "wé b}");
        let port = ServicePort {
            name: "p\nq".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            target_port: None,
        };
        let n = PortNames::new(&svc, &port, IpFamily::V4);
        let ep: IpAddr = "10.0.0.1".parse().unwrap();
        for name in [
            n.cluster(),
            n.external(),
            n.endpoint(&ep, 80),
            n.affinity(&ep, 80),
        ] {
            assert_eq!(sarasa_nft::text::ident(&name), name, "{name}");
        }
    }
}
