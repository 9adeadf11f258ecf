//! Services: what the proxy programs for each.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Layer-4 protocol of a Service, endpoint, container or NetworkPolicy port (`TCP` when
/// omitted, as everywhere in Kubernetes). The one Protocol type of the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Parses the Kubernetes spelling (case-sensitive, as the API server is).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The lowercase spelling of nftables, kernel object names and `PORT/tcp` (`tcp`, `udp`,
    /// `sctp`).
    pub fn lowercase(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// Family of an address.
    pub fn of(addr: &IpAddr) -> IpFamily {
        if addr.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }
}

/// `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// `sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionAffinity {
    #[default]
    None,
    /// `ClientIP` with `sessionAffinityConfig.clientIP.timeoutSeconds` (default 10800).
    ClientIp { timeout_seconds: u32 },
}

/// `targetPort`: resolved per pod by the EndpointSlice controller; informational here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// Port name; empty for a single unnamed port. EndpointSlice ports match by this name.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    pub target_port: Option<TargetPort>,
}

/// `namespace/name` of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service, as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub type_: ServiceType,
    /// `spec.clusterIPs` (empty for headless and ExternalName).
    pub cluster_ips: Vec<IpAddr>,
    /// `clusterIP: None`.
    pub headless: bool,
    pub ports: Vec<ServicePort>,
    pub external_ips: Vec<IpAddr>,
    /// IPs of `status.loadBalancer.ingress` (hostname-only ingress is ignored).
    pub load_balancer_ips: Vec<IpAddr>,
    pub load_balancer_source_ranges: Vec<IpNet>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    pub session_affinity: SessionAffinity,
    /// Served by the agent for `externalTrafficPolicy: Local` LoadBalancers, not by nftables.
    pub health_check_node_port: Option<u16>,
    pub ip_families: Vec<IpFamily>,
    pub external_name: Option<String>,
    /// `spec.publishNotReadyAddresses`: cluster DNS publishes every endpoint, ready or not.
    pub publish_not_ready_addresses: bool,
    /// The `multicluster.kubernetes.io/service-name` label of a derived Service: the
    /// ServiceImport it stands for, which cluster DNS names under `clusterset.local`.
    pub mcs_import: Option<String>,
    /// GlobalNet: the global ingress address of an exported Service
    /// ([`crate::ANNOTATION_GLOBAL_IP`]), where the other clusters of its set reach it. Served
    /// like the ClusterIP (internal policy, the source kept: the other cluster's egress
    /// address), not like an external address.
    pub global_ips: Vec<IpAddr>,
}

impl Service {
    /// A ClusterIP Service with these addresses and no ports yet (tests and builders).
    pub fn cluster_ip(namespace: &str, name: &str, cluster_ips: Vec<IpAddr>) -> Self {
        Service {
            namespace: namespace.to_string(),
            name: name.to_string(),
            ip_families: cluster_ips.iter().map(IpFamily::of).collect(),
            cluster_ips,
            ..Service::default()
        }
    }

    pub fn key(&self) -> ServiceRef {
        ServiceRef::new(&self.namespace, &self.name)
    }

    /// False for headless and ExternalName Services (DNS serves them).
    pub fn is_proxied(&self) -> bool {
        !self.headless && self.type_ != ServiceType::ExternalName && !self.cluster_ips.is_empty()
    }

    /// NodePorts are open for NodePort and LoadBalancer Services.
    pub fn has_node_ports(&self) -> bool {
        matches!(
            self.type_,
            ServiceType::NodePort | ServiceType::LoadBalancer
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_spellings_and_default() {
        for (p, k8s, lower) in [
            (Protocol::Tcp, "TCP", "tcp"),
            (Protocol::Udp, "UDP", "udp"),
            (Protocol::Sctp, "SCTP", "sctp"),
        ] {
            assert_eq!((p.as_str(), p.lowercase()), (k8s, lower));
            assert_eq!(Protocol::parse(k8s), Some(p));
            assert_eq!(Protocol::parse(lower), None, "the API is case-sensitive");
        }
        assert_eq!(Protocol::default(), Protocol::Tcp);
    }
}
