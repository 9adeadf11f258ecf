//! The resource kinds sarasa's kubectl knows: their API coordinates, kubectl's names and
//! aliases (`po`, `svc`, `deploy`, `netpol`, ...), and whether they live in a namespace.

use kube::core::ApiResource;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Namespace,
    Node,
    Pod,
    Deployment,
    Service,
    EndpointSlice,
    NetworkPolicy,
    Event,
    ServiceExport,
    ServiceImport,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 10] = [
        ResourceKind::Namespace,
        ResourceKind::Node,
        ResourceKind::Pod,
        ResourceKind::Deployment,
        ResourceKind::Service,
        ResourceKind::EndpointSlice,
        ResourceKind::NetworkPolicy,
        ResourceKind::Event,
        ResourceKind::ServiceExport,
        ResourceKind::ServiceImport,
    ];

    /// The `kind` field: `Pod`, `Deployment`, ...
    pub fn kind(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "Namespace",
            ResourceKind::Node => "Node",
            ResourceKind::Pod => "Pod",
            ResourceKind::Deployment => "Deployment",
            ResourceKind::Service => "Service",
            ResourceKind::EndpointSlice => "EndpointSlice",
            ResourceKind::NetworkPolicy => "NetworkPolicy",
            ResourceKind::Event => "Event",
            ResourceKind::ServiceExport => "ServiceExport",
            ResourceKind::ServiceImport => "ServiceImport",
        }
    }

    /// API group, empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            ResourceKind::Deployment => "apps",
            ResourceKind::EndpointSlice => "discovery.k8s.io",
            ResourceKind::NetworkPolicy => "networking.k8s.io",
            ResourceKind::ServiceExport | ResourceKind::ServiceImport => "multicluster.x-k8s.io",
            _ => "",
        }
    }

    /// The `apiVersion` field: `v1`, `apps/v1`, ...
    pub fn api_version(self) -> &'static str {
        match self {
            ResourceKind::Deployment => "apps/v1",
            ResourceKind::EndpointSlice => "discovery.k8s.io/v1",
            ResourceKind::NetworkPolicy => "networking.k8s.io/v1",
            ResourceKind::ServiceExport | ResourceKind::ServiceImport => {
                "multicluster.x-k8s.io/v1alpha1"
            }
            _ => "v1",
        }
    }

    /// The URL resource name: `pods`, `networkpolicies`, ...
    pub fn plural(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "namespaces",
            ResourceKind::Node => "nodes",
            ResourceKind::Pod => "pods",
            ResourceKind::Deployment => "deployments",
            ResourceKind::Service => "services",
            ResourceKind::EndpointSlice => "endpointslices",
            ResourceKind::NetworkPolicy => "networkpolicies",
            ResourceKind::Event => "events",
            ResourceKind::ServiceExport => "serviceexports",
            ResourceKind::ServiceImport => "serviceimports",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, ResourceKind::Namespace | ResourceKind::Node)
    }

    /// kubectl's name in `created`/`configured` lines: `pod`, `deployment.apps`, ...
    pub fn qualified_singular(self) -> String {
        let singular = self.kind().to_ascii_lowercase();
        match self.group() {
            "" => singular,
            group => format!("{singular}.{group}"),
        }
    }

    /// kubectl's name in NotFound messages: `pods`, `deployments.apps`, ...
    pub fn qualified_plural(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// The kind of an object by its `apiVersion` and `kind` fields.
    pub fn from_type(api_version: &str, kind: &str) -> Option<ResourceKind> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.kind() == kind)
    }

    /// kubectl's command-line names: singular, plural, short name, optionally `.group`,
    /// any case (`po`, `pods`, `Pod`, `deploy`, `deployments.apps`, `netpol`, ...).
    pub fn from_cli_name(name: &str) -> Option<ResourceKind> {
        let name = name.to_ascii_lowercase();
        let (base, group) = match name.split_once('.') {
            Some((b, g)) => (b.to_string(), Some(g.to_string())),
            None => (name, None),
        };
        ResourceKind::ALL.into_iter().find(|k| {
            let group_ok = group
                .as_deref()
                .is_none_or(|g| g == k.group() || g == k.api_version());
            let singular = k.kind().to_ascii_lowercase();
            group_ok
                && (base == singular
                    || base == k.plural()
                    || k.short_names().contains(&base.as_str()))
        })
    }

    fn short_names(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Namespace => &["ns"],
            ResourceKind::Node => &["no"],
            ResourceKind::Pod => &["po"],
            ResourceKind::Deployment => &["deploy"],
            ResourceKind::Service => &["svc"],
            ResourceKind::EndpointSlice => &[],
            ResourceKind::NetworkPolicy => &["netpol"],
            ResourceKind::Event => &["ev"],
            ResourceKind::ServiceExport => &["svcex", "svcexport"],
            ResourceKind::ServiceImport => &["svcim", "svcimport"],
        }
    }

    pub fn api_resource(self) -> ApiResource {
        let (group, version) = match self.api_version().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version()),
        };
        ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: self.api_version().to_string(),
            kind: self.kind().to_string(),
            plural: self.plural().to_string(),
        }
    }

    /// Names accepted on the command line, for error messages.
    pub fn supported_cli_names() -> &'static str {
        "nodes (no), namespaces (ns), pods (po), deployments (deploy), services (svc), endpointslices, networkpolicies (netpol), events (ev), serviceexports (svcex), serviceimports (svcim)"
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_names_and_aliases_resolve() {
        use ResourceKind::*;
        for (name, kind) in [
            ("no", Node),
            ("nodes", Node),
            ("node", Node),
            ("ns", Namespace),
            ("namespaces", Namespace),
            ("po", Pod),
            ("Pod", Pod),
            ("pods", Pod),
            ("deploy", Deployment),
            ("deployments.apps", Deployment),
            ("deployment.apps/v1", Deployment),
            ("svc", Service),
            ("services", Service),
            ("endpointslices", EndpointSlice),
            ("endpointslice.discovery.k8s.io", EndpointSlice),
            ("netpol", NetworkPolicy),
            ("networkpolicies", NetworkPolicy),
            ("networkpolicy.networking.k8s.io", NetworkPolicy),
            ("ev", Event),
            ("events", Event),
            ("svcex", ServiceExport),
            ("serviceexports.multicluster.x-k8s.io", ServiceExport),
            ("svcim", ServiceImport),
            ("ServiceImport", ServiceImport),
        ] {
            assert_eq!(ResourceKind::from_cli_name(name), Some(kind), "{name}");
        }
        for bad in ["pod.apps", "configmaps", "svcs", ""] {
            assert_eq!(ResourceKind::from_cli_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn types_and_names() {
        assert_eq!(
            ResourceKind::from_type("apps/v1", "Deployment"),
            Some(ResourceKind::Deployment)
        );
        assert_eq!(ResourceKind::from_type("v1", "Deployment"), None);
        assert_eq!(
            ResourceKind::Deployment.qualified_singular(),
            "deployment.apps"
        );
        assert_eq!(ResourceKind::Pod.qualified_plural(), "pods");
        let ar = ResourceKind::NetworkPolicy.api_resource();
        assert_eq!(
            (ar.group.as_str(), ar.version.as_str()),
            ("networking.k8s.io", "v1")
        );
        assert_eq!(ResourceKind::Node.api_resource().group, "");
    }
}
