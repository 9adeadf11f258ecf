//! Admission: per-kind defaulting, validation and allocation run on every write, under the store
//! lock. Rejected writes store nothing.

use serde_json::{json, Value};

use crate::config::Config;
use crate::error::{ApiError, FieldError};
use crate::meta;
use crate::resources::*;
use crate::store::{Inner, Sub};
use crate::validate::addresses::{self, Protected};
use crate::validate::meta::{object_meta, NameRule};
use crate::validate::{
    configdata, daemonset, deployment, endpointslice, mcs, node, pod, policy, service,
};

/// The label every Namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// What admission may look at.
pub struct Ctx<'a> {
    pub inner: &'a Inner,
    pub config: &'a Config,
    /// The write comes from a controller inside the server.
    pub internal: bool,
}

fn name_rule(res: ResId) -> NameRule {
    match res {
        NAMESPACES => NameRule::Dns1123Label,
        // A ServiceExport is named after the Service it exports.
        SERVICES | SERVICEEXPORTS => NameRule::Dns1035Label,
        ROLES | CLUSTERROLES | ROLEBINDINGS | CLUSTERROLEBINDINGS => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

fn finish(res: ResId, obj: &Value, errs: Vec<FieldError>) -> Result<(), ApiError> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, meta::name(obj), errs))
    }
}

fn set_namespace_label(obj: &mut Value) {
    let name = meta::name(obj).to_string();
    let m = meta::metadata_mut(obj);
    let labels = m.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[NAMESPACE_NAME_LABEL] = json!(name);
}

/// Defaulting and validation shared by create and update of the main resource.
fn common(ctx: &Ctx, res: ResId, obj: &mut Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    object_meta(obj, name_rule(res), errs);
    match res {
        NAMESPACES => {
            set_namespace_label(obj);
            let spec = obj
                .as_object_mut()
                .map(|o| o.entry("spec").or_insert_with(|| json!({})));
            if let Some(Value::Object(spec)) = spec {
                spec.entry("finalizers").or_insert(json!(["kubernetes"]));
            }
        }
        NODES => {
            node::defaults(obj);
            node::validate(obj, errs);
            if let Some(old) = old {
                node::validate_update(obj, old, errs);
            }
            node::validate_cluster(
                obj,
                old,
                ctx.inner.iter(NODES, None).map(|o| &**o),
                &ctx.config.cluster_cidrs,
                errs,
            );
        }
        PODS => {
            if let Some(spec) = obj.get_mut("spec") {
                pod::default_spec(spec);
            }
            match obj.get("spec") {
                Some(spec) => pod::spec(spec, "spec", errs),
                None => errs.push(FieldError::required("spec.containers", "")),
            }
            if let Some(old) = old {
                if !ctx.internal {
                    pod::spec_update(obj, old, errs);
                }
            }
        }
        SERVICES => {
            service::defaults(obj);
            if let Some(old) = old {
                service::keep_allocated(obj, old);
            }
            let n = errs.len();
            service::validate(obj, errs);
            if errs.len() == n && addresses::claims_addresses(obj) {
                let protected = Protected::of(ctx.inner, ctx.config);
                addresses::service_spec(obj, old, &protected, ctx.config, errs);
            }
            if errs.len() == n {
                service::allocate(obj, old, &ctx.inner.services, ctx.config, errs);
            }
        }
        DEPLOYMENTS => {
            deployment::defaults(obj);
            deployment::validate(obj, ctx.config.limits.max_replicas, errs);
            if let Some(old) = old {
                deployment::validate_update(obj, old, errs);
            }
        }
        ENDPOINTSLICES => {
            endpointslice::defaults(obj);
            endpointslice::validate(obj, errs);
            if !ctx.internal {
                let protected = Protected::of(ctx.inner, ctx.config);
                addresses::endpoint_slice(obj, old, &protected, errs);
            }
        }
        NETWORKPOLICIES => {
            policy::defaults(obj);
            policy::validate(obj, errs);
        }
        DAEMONSETS => {
            daemonset::defaults(obj);
            daemonset::template_generation(obj, old);
            daemonset::validate(obj, errs);
            if let Some(old) = old {
                deployment::validate_update(obj, old, errs);
            }
        }
        CONFIGMAPS => {
            configdata::validate_configmap(obj, errs);
            if let Some(old) = old {
                configdata::validate_update(obj, old, &["data", "binaryData"], errs);
            }
        }
        SECRETS => {
            configdata::secret_defaults(obj);
            configdata::validate_secret(obj, errs);
            if let Some(old) = old {
                configdata::validate_update(obj, old, &["data"], errs);
            }
        }
        SERVICEIMPORTS => {
            mcs::import_defaults(obj);
            mcs::validate_import(obj, errs);
        }
        ROLES | CLUSTERROLES => crate::authz::validate::role(res, obj, errs),
        ROLEBINDINGS | CLUSTERROLEBINDINGS => crate::authz::validate::binding(res, obj, old, errs),
        _ => {}
    }
}

/// Runs on create, after system metadata is set.
pub fn on_create(ctx: &Ctx, res: ResId, obj: &mut Value) -> Result<(), ApiError> {
    crate::quota::check(
        ctx.inner,
        &ctx.config.limits,
        res,
        meta::namespace(obj),
        meta::name(obj),
    )?;
    if res == PODS && ctx.config.authentication.is_some() {
        let ns = meta::namespace(obj).to_string();
        crate::authn::admission::admit_pod(ctx.inner, &ns, obj)?;
    }
    let mut errs = Vec::new();
    common(ctx, res, obj, None, &mut errs);
    if let Some(o) = obj.as_object_mut() {
        // Status is the system's on create (nodes may register with theirs).
        match res {
            NAMESPACES => {
                o.insert("status".into(), json!({"phase": "Active"}));
            }
            PODS => {
                o.insert(
                    "status".into(),
                    json!({"phase": "Pending", "qosClass": "BestEffort"}),
                );
            }
            SERVICES => {
                o.insert("status".into(), json!({"loadBalancer": {}}));
            }
            DEPLOYMENTS | DAEMONSETS => {
                o.remove("status");
            }
            _ => {}
        }
    }
    finish(res, obj, errs)
}

/// Runs on update; `new` already carries the stored system metadata (and, for a main-resource
/// write, the stored status).
pub fn on_update(
    ctx: &Ctx,
    res: ResId,
    new: &mut Value,
    old: &Value,
    sub: Sub,
) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    match sub {
        Sub::Status => match res {
            PODS => {
                pod::status(new.get("status"), &mut errs);
                let claims = addresses::pod_status_claims(new, old);
                if errs.is_empty() && !claims.is_empty() {
                    let protected = Protected::of(ctx.inner, ctx.config);
                    addresses::pod_status(&claims, &protected, &mut errs);
                }
            }
            SERVICES => {
                service::validate_status(new, &mut errs);
                if errs.is_empty() {
                    let protected = Protected::of(ctx.inner, ctx.config);
                    addresses::load_balancer_status(new, old, ctx.internal, &protected, &mut errs);
                }
            }
            _ => {}
        },
        Sub::Main => common(ctx, res, new, Some(old), &mut errs),
    }
    finish(res, new, errs)
}
