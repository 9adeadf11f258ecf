//! The kind registry: every resource the server stores, with its REST names and JSON schema
//! (the k8s-openapi type its objects must decode into).

use k8s_openapi::api::{apps, coordination, core, discovery, events, networking, rbac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Index of a resource in [`RESOURCES`].
pub type ResId = usize;

pub const NAMESPACES: ResId = 0;
pub const NODES: ResId = 1;
pub const PODS: ResId = 2;
pub const SERVICES: ResId = 3;
pub const EVENTS: ResId = 4;
pub const LEASES: ResId = 5;
pub const DEPLOYMENTS: ResId = 6;
pub const ENDPOINTSLICES: ResId = 7;
pub const NETWORKPOLICIES: ResId = 8;
pub const EVENTS_V1: ResId = 9;
pub const CONFIGMAPS: ResId = 10;
pub const SECRETS: ResId = 11;
pub const SERVICEACCOUNTS: ResId = 12;
pub const DAEMONSETS: ResId = 13;
pub const ROLES: ResId = 14;
pub const CLUSTERROLES: ResId = 15;
pub const ROLEBINDINGS: ResId = 16;
pub const CLUSTERROLEBINDINGS: ResId = 17;
pub const SERVICEEXPORTS: ResId = 18;
pub const SERVICEIMPORTS: ResId = 19;

/// Every resource, for controllers that watch them all.
pub const ALL: &[ResId] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
];

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    /// API group, "" for core.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Serves `/status`.
    pub status: bool,
    /// Serves `/scale`.
    pub scale: bool,
    /// PUT of a missing object creates it (as kube-apiserver allows for these kinds).
    pub create_on_update: bool,
    /// Decodes an object into its typed form and back: rejects wrong field types and drops
    /// unknown fields, as kube-apiserver does.
    pub normalize: fn(Value) -> Result<Value, String>,
    /// Registers the kind's JSON schema (and those it references) with a generator; returns
    /// the reference to it. The OpenAPI documents are built from these.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`, as kube-apiserver names resources in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

fn schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $short:expr, $ns:expr,
     $status:expr, $scale:expr, $cou:expr, $ty:ty) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: $short,
            namespaced: $ns,
            status: $status,
            scale: $scale,
            create_on_update: $cou,
            normalize: roundtrip::<$ty>,
            schema: schema_of::<$ty>,
        }
    };
}

/// Every served resource; the index is the [`ResId`].
pub static RESOURCES: &[Resource] = &[
    res!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        &["ns"],
        false,
        true,
        false,
        false,
        core::v1::Namespace
    ),
    res!(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        &["no"],
        false,
        true,
        false,
        false,
        core::v1::Node
    ),
    res!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        &["po"],
        true,
        true,
        false,
        false,
        core::v1::Pod
    ),
    res!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        &["svc"],
        true,
        true,
        false,
        false,
        core::v1::Service
    ),
    res!(
        "",
        "v1",
        "Event",
        "events",
        "event",
        &["ev"],
        true,
        false,
        false,
        true,
        core::v1::Event
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        &[],
        true,
        false,
        false,
        true,
        coordination::v1::Lease
    ),
    res!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        &["deploy"],
        true,
        true,
        true,
        false,
        apps::v1::Deployment
    ),
    res!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        &[],
        true,
        false,
        false,
        false,
        discovery::v1::EndpointSlice
    ),
    res!(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        &["netpol"],
        true,
        false,
        false,
        false,
        networking::v1::NetworkPolicy
    ),
    res!(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        &[],
        true,
        false,
        false,
        true,
        events::v1::Event
    ),
    res!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        &["cm"],
        true,
        false,
        false,
        false,
        core::v1::ConfigMap
    ),
    res!(
        "",
        "v1",
        "Secret",
        "secrets",
        "secret",
        &[],
        true,
        false,
        false,
        false,
        core::v1::Secret
    ),
    res!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        &["sa"],
        true,
        false,
        false,
        false,
        core::v1::ServiceAccount
    ),
    res!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        &["ds"],
        true,
        true,
        false,
        false,
        apps::v1::DaemonSet
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        &[],
        true,
        false,
        false,
        true,
        rbac::v1::Role
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        &[],
        false,
        false,
        false,
        true,
        rbac::v1::ClusterRole
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        &[],
        true,
        false,
        false,
        true,
        rbac::v1::RoleBinding
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        &[],
        false,
        false,
        false,
        true,
        rbac::v1::ClusterRoleBinding
    ),
    res!(
        crate::mcs::GROUP,
        crate::mcs::VERSION,
        "ServiceExport",
        "serviceexports",
        "serviceexport",
        &["svcex", "svcexport"],
        true,
        true,
        false,
        false,
        crate::mcs::ServiceExport
    ),
    res!(
        crate::mcs::GROUP,
        crate::mcs::VERSION,
        "ServiceImport",
        "serviceimports",
        "serviceimport",
        &["svcim", "svcimport"],
        true,
        true,
        false,
        false,
        crate::mcs::ServiceImport
    ),
];

/// The resource served at `/<group>/<version>/<plural>`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<ResId> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of an `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<ResId> {
    RESOURCES
        .iter()
        .position(|r| r.api_version() == api_version && r.kind == kind)
}

/// Distinct (group, version) pairs, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
