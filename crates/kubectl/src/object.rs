//! A typed Kubernetes object of one of the supported kinds.

use crate::kind::ResourceKind;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sarasa_model::mcs::{ServiceExport, ServiceImport};
use serde::de::DeserializeOwned;

#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Node(Node),
    Pod(Pod),
    Deployment(Deployment),
    Service(Service),
    EndpointSlice(EndpointSlice),
    NetworkPolicy(NetworkPolicy),
    Event(Box<Event>),
    ServiceExport(Box<ServiceExport>),
    ServiceImport(Box<ServiceImport>),
}

macro_rules! each {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Object::Namespace($o) => $body,
            Object::Node($o) => $body,
            Object::Pod($o) => $body,
            Object::Deployment($o) => $body,
            Object::Service($o) => $body,
            Object::EndpointSlice($o) => $body,
            Object::NetworkPolicy($o) => $body,
            Object::Event($o) => $body,
            Object::ServiceExport($o) => $body,
            Object::ServiceImport($o) => $body,
        }
    };
}

impl Object {
    pub fn kind(&self) -> ResourceKind {
        match self {
            Object::Namespace(_) => ResourceKind::Namespace,
            Object::Node(_) => ResourceKind::Node,
            Object::Pod(_) => ResourceKind::Pod,
            Object::Deployment(_) => ResourceKind::Deployment,
            Object::Service(_) => ResourceKind::Service,
            Object::EndpointSlice(_) => ResourceKind::EndpointSlice,
            Object::NetworkPolicy(_) => ResourceKind::NetworkPolicy,
            Object::Event(_) => ResourceKind::Event,
            Object::ServiceExport(_) => ResourceKind::ServiceExport,
            Object::ServiceImport(_) => ResourceKind::ServiceImport,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each!(self, o => &o.metadata)
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each!(self, o => &mut o.metadata)
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    pub fn resource_version(&self) -> Option<&str> {
        self.metadata().resource_version.as_deref()
    }

    /// `pod/web`, `deployment.apps/my-nginx`: how kubectl names an object in its output.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.kind().qualified_singular(), self.name())
    }

    /// The object as JSON, with `apiVersion` and `kind`.
    pub fn to_json(&self) -> serde_json::Value {
        // k8s-openapi types always serialize (plain data, string keys).
        each!(self, o => serde_json::to_value(o)).unwrap_or(serde_json::Value::Null)
    }

    /// An object of `kind` from JSON (e.g. an API server response).
    pub fn from_json(kind: ResourceKind, value: serde_json::Value) -> serde_json::Result<Object> {
        fn typed<T: DeserializeOwned>(v: serde_json::Value) -> serde_json::Result<T> {
            serde_json::from_value(v)
        }
        Ok(match kind {
            ResourceKind::Namespace => Object::Namespace(typed(value)?),
            ResourceKind::Node => Object::Node(typed(value)?),
            ResourceKind::Pod => Object::Pod(typed(value)?),
            ResourceKind::Deployment => Object::Deployment(typed(value)?),
            ResourceKind::Service => Object::Service(typed(value)?),
            ResourceKind::EndpointSlice => Object::EndpointSlice(typed(value)?),
            ResourceKind::NetworkPolicy => Object::NetworkPolicy(typed(value)?),
            ResourceKind::Event => Object::Event(Box::new(typed(value)?)),
            ResourceKind::ServiceExport => Object::ServiceExport(Box::new(typed(value)?)),
            ResourceKind::ServiceImport => Object::ServiceImport(Box::new(typed(value)?)),
        })
    }

    /// An object of `kind` from one YAML document (errors carry the field path and position).
    pub(crate) fn from_yaml(kind: ResourceKind, text: &str) -> Result<Object, serde_norway::Error> {
        Ok(match kind {
            ResourceKind::Namespace => Object::Namespace(serde_norway::from_str(text)?),
            ResourceKind::Node => Object::Node(serde_norway::from_str(text)?),
            ResourceKind::Pod => Object::Pod(serde_norway::from_str(text)?),
            ResourceKind::Deployment => Object::Deployment(serde_norway::from_str(text)?),
            ResourceKind::Service => Object::Service(serde_norway::from_str(text)?),
            ResourceKind::EndpointSlice => Object::EndpointSlice(serde_norway::from_str(text)?),
            ResourceKind::NetworkPolicy => Object::NetworkPolicy(serde_norway::from_str(text)?),
            ResourceKind::Event => Object::Event(Box::new(serde_norway::from_str(text)?)),
            ResourceKind::ServiceExport => {
                Object::ServiceExport(Box::new(serde_norway::from_str(text)?))
            }
            ResourceKind::ServiceImport => {
                Object::ServiceImport(Box::new(serde_norway::from_str(text)?))
            }
        })
    }

    /// An object of `kind` from an already parsed YAML value (a `List` item).
    pub(crate) fn from_yaml_value(
        kind: ResourceKind,
        value: serde_norway::Value,
    ) -> Result<Object, serde_norway::Error> {
        fn typed<T: DeserializeOwned>(v: serde_norway::Value) -> Result<T, serde_norway::Error> {
            serde_norway::from_value(v)
        }
        Ok(match kind {
            ResourceKind::Namespace => Object::Namespace(typed(value)?),
            ResourceKind::Node => Object::Node(typed(value)?),
            ResourceKind::Pod => Object::Pod(typed(value)?),
            ResourceKind::Deployment => Object::Deployment(typed(value)?),
            ResourceKind::Service => Object::Service(typed(value)?),
            ResourceKind::EndpointSlice => Object::EndpointSlice(typed(value)?),
            ResourceKind::NetworkPolicy => Object::NetworkPolicy(typed(value)?),
            ResourceKind::Event => Object::Event(Box::new(typed(value)?)),
            ResourceKind::ServiceExport => Object::ServiceExport(Box::new(typed(value)?)),
            ResourceKind::ServiceImport => Object::ServiceImport(Box::new(typed(value)?)),
        })
    }
}
