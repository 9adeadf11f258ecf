//! EndpointSlices: the backends of a Service.

use std::net::IpAddr;

use crate::service::{Protocol, ServiceRef};

/// `addressType` of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressType {
    #[default]
    Ipv4,
    Ipv6,
    /// Not proxied; endpoints of such slices are dropped on conversion.
    Fqdn,
}

/// Endpoint conditions with Kubernetes' defaults applied (ready unset = ready, serving unset =
/// ready, terminating unset = false).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointConditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Default for EndpointConditions {
    fn default() -> Self {
        EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// One endpoint (a pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    pub conditions: EndpointConditions,
    pub node_name: Option<String>,
    /// `hostname`: the endpoint's DNS label under its headless Service (cluster DNS).
    pub hostname: Option<String>,
}

impl Endpoint {
    /// A ready endpoint with one address.
    pub fn ready(addr: IpAddr, node_name: Option<&str>) -> Self {
        Endpoint {
            addresses: vec![addr],
            conditions: EndpointConditions::default(),
            node_name: node_name.map(str::to_string),
            hostname: None,
        }
    }
}

/// One port of a slice; matches the Service port of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointPort {
    /// Empty for an unnamed port.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// An EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EndpointSlice {
    pub namespace: String,
    pub name: String,
    /// The `kubernetes.io/service-name` label.
    pub service_name: String,
    pub address_type: AddressType,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<EndpointPort>,
    /// The `multicluster.kubernetes.io/source-cluster` label of an MCS slice: the cluster
    /// whose endpoints these are.
    pub source_cluster: Option<String>,
}

impl EndpointSlice {
    /// The Service this slice belongs to.
    pub fn service(&self) -> ServiceRef {
        ServiceRef::new(&self.namespace, &self.service_name)
    }
}
