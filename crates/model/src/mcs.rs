//! The Multi-Cluster Services API's kinds (`multicluster.x-k8s.io/v1alpha1`, KEP-1645):
//! ServiceExport and ServiceImport, as the CRDs of kubernetes-sigs/mcs-api define them. k8s-openapi
//! has no types for them, so their shapes are written here (feature `mcs`), for the API server's
//! schema, decoding and OpenAPI documents (feature `schema`) and for `sarasa get`/`apply`; the names and JSON field names are the CRDs', the definition names
//! those a kube-apiserver serving the CRDs publishes (`io.x-k8s.multicluster.v1alpha1.*`).

use k8s_openapi::api::core::v1::SessionAffinityConfig;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "multicluster.x-k8s.io";
pub const VERSION: &str = "v1alpha1";

/// Declares that the Service of the same namespace and name is to be consumed from the other
/// clusters of the cluster set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.x-k8s.multicluster.v1alpha1.ServiceExport")
)]
pub struct ServiceExport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServiceExportSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceExportStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.x-k8s.multicluster.v1alpha1.ServiceExportSpec")
)]
pub struct ServiceExportSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// Conditions `Valid` (the Service can be exported: it exists and is not ExternalName) and
/// `Conflict` (the clusters' exports disagree on a property).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.x-k8s.multicluster.v1alpha1.ServiceExportStatus")
)]
pub struct ServiceExportStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

/// A Service imported from the clusters of the cluster set that export it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.x-k8s.multicluster.v1alpha1.ServiceImport")
)]
pub struct ServiceImport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ServiceImportSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceImportStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.x-k8s.multicluster.v1alpha1.ServiceImportSpec")
)]
pub struct ServiceImportSpec {
    /// The union of the exporting clusters' ports (required, possibly empty: an absent list
    /// stays absent so admission can name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ServiceImportPort>>,
    /// The ClusterSetIP(s) when `type` is ClusterSetIP; at most one per family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
    /// `ClusterSetIP` or `Headless`.
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_config: Option<SessionAffinityConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_families: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.x-k8s.multicluster.v1alpha1.ServiceImportPort")
)]
pub struct ServiceImportPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default)]
    pub port: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.x-k8s.multicluster.v1alpha1.ServiceImportStatus")
)]
pub struct ServiceImportStatus {
    /// The exporting clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<ClusterStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[cfg_attr(
    feature = "schema",
    schemars(rename = "io.x-k8s.multicluster.v1alpha1.ClusterStatus")
)]
pub struct ClusterStatus {
    /// The exporting cluster's id (a DNS label).
    pub cluster: String,
}
