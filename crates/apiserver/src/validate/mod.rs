//! Validation rules per kind; each returns field errors with kube-apiserver's paths and wording.

pub mod addresses;
pub mod configdata;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
pub mod mcs;
pub mod meta;
pub mod node;
pub mod numeric;
pub mod pod;
pub mod pod_dns;
pub mod policy;
pub mod service;
