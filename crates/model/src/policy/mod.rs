//! NetworkPolicy domain types: pods, namespaces and NetworkPolicies as policy sees them,
//! validated as the API server validates them. The policy compiler (`sarasa-policy`), the
//! cluster view and `sarasa trace` share them; no Kubernetes client types here (`sarasa-policy`'s
//! `k8s` feature converts from k8s-openapi).

#[cfg(feature = "k8s")]
mod k8s;
mod validate;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::selector::{LabelSelector, Labels, SelectorError};
pub use crate::Protocol;
pub use validate::validate_port_name;

/// A rejected input, naming the field at fault (`spec.ingress[0].ports[1].endPort`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl PolicyError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<SelectorError> for PolicyError {
    fn from(e: SelectorError) -> Self {
        PolicyError {
            field: e.field,
            message: e.message,
        }
    }
}

/// The label every namespace carries with its own name (set by the API server).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// `namespace/name` of a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `namespace/name` of a NetworkPolicy.
pub type PolicyKey = PodKey;

/// A container port a pod declares (what named ports resolve against).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
}

/// A pod as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// Pod addresses (`status.podIPs`); empty while the pod has none.
    pub ips: Vec<IpAddr>,
    pub ports: Vec<ContainerPort>,
    /// `spec.nodeName`: the node that enforces this pod's policies.
    pub node: Option<String>,
}

impl PolicyPod {
    pub fn key(&self) -> PodKey {
        PodKey::new(&self.namespace, &self.name)
    }

    /// The container port `name` with `protocol` resolves to, if any.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }
}

/// A namespace as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyNamespace {
    pub name: String,
    pub labels: Labels,
}

impl PolicyNamespace {
    /// A namespace; `kubernetes.io/metadata.name` is added as the API server does.
    pub fn new(name: impl Into<String>, labels: Labels) -> Self {
        let name = name.into();
        let mut labels = labels;
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        PolicyNamespace { name, labels }
    }
}

/// Ingress or egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
}

/// An `ipBlock`: `cidr` minus the `except` prefixes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

impl IpBlock {
    /// Is `ip` in `cidr` and in none of `except`?
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

/// One entry of `from`/`to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector`. `namespace_selector: None` means the policy's
    /// own namespace; `pod_selector: None` means every pod of the selected namespaces.
    Pods {
        namespace_selector: Option<LabelSelector>,
        pod_selector: Option<LabelSelector>,
    },
    IpBlock(IpBlock),
}

/// The `port` of a policy port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    Number(u16),
    /// A container port name, resolved on the destination pod.
    Name(String),
}

/// One entry of `ports`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyPort {
    pub protocol: Protocol,
    /// `None`: every port of `protocol`.
    pub port: Option<PortRef>,
    /// With a numeric `port`: the last port of the range.
    pub end_port: Option<u16>,
}

impl PolicyPort {
    /// Does this entry allow `protocol`/`port` towards `dst` (the pod whose container ports
    /// named ports resolve on; `None` for a destination outside the cluster's pods)?
    pub fn allows(&self, protocol: Protocol, port: u16, dst: Option<&PolicyPod>) -> bool {
        if self.protocol != protocol {
            return false;
        }
        match &self.port {
            None => true,
            Some(PortRef::Number(p)) => match self.end_port {
                Some(end) => (*p..=end).contains(&port),
                None => *p == port,
            },
            Some(PortRef::Name(n)) => dst.and_then(|d| d.named_port(n, protocol)) == Some(port),
        }
    }
}

/// One ingress or egress rule: `from`/`to` peers and `ports`. Empty peers = every peer; empty
/// ports = every port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PolicyPort>,
}

impl PolicyRule {
    /// `- {}`: allows everything.
    pub fn allow_all() -> Self {
        PolicyRule::default()
    }
}

/// A NetworkPolicy, validated. `policy_types` is already resolved (the implicit rules applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: LabelSelector,
    /// Directions this policy isolates in; `Ingress` before `Egress`, no duplicates.
    pub policy_types: Vec<Direction>,
    pub ingress: Vec<PolicyRule>,
    pub egress: Vec<PolicyRule>,
}

impl NetworkPolicy {
    pub fn key(&self) -> PolicyKey {
        PodKey::new(&self.namespace, &self.name)
    }

    /// The `policyTypes` Kubernetes assumes when the field is omitted: `Ingress`, plus `Egress`
    /// when there are egress rules.
    pub fn implicit_policy_types(egress_rules: usize) -> Vec<Direction> {
        if egress_rules > 0 {
            vec![Direction::Ingress, Direction::Egress]
        } else {
            vec![Direction::Ingress]
        }
    }

    /// This policy without its rules: it isolates the same pods in the same directions and
    /// allows nothing. What a policy that cannot be enforced as written is replaced with
    /// (fail closed: its pods are isolated, never left open).
    pub fn isolating(&self) -> NetworkPolicy {
        NetworkPolicy {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            pod_selector: self.pod_selector.clone(),
            policy_types: self.policy_types.clone(),
            ingress: Vec::new(),
            egress: Vec::new(),
        }
    }

    /// Does this policy isolate its pods in `dir`?
    pub fn isolates(&self, dir: Direction) -> bool {
        self.policy_types.contains(&dir)
    }

    /// The rules of one direction.
    pub fn rules(&self, dir: Direction) -> &[PolicyRule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Checks everything the API server checks and sorts selector requirements so equal
    /// selectors are equal. Errors name the field (`spec.ingress[0].from[1].ipBlock.except[0]`).
    pub fn validate(&mut self) -> Result<(), PolicyError> {
        validate::validate_policy(self)
    }
}
