//! `apply -f`: create what is missing, replace what changed, leave the rest — after the server
//! has accepted every object in a dry run, so a file with one invalid object changes nothing.
//!
//! Like kubectl's client-side apply, the manifest as applied is kept in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation: an object whose manifest is
//! unchanged is not written, and labels/annotations others added survive a re-apply.

use crate::api::{self, describe, is_conflict, is_not_found, to_dynamic, DEFAULT_NAMESPACE};
use crate::error::KubectlError;
use crate::kind::ResourceKind;
use crate::manifest::Manifest;
use crate::object::Object;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;

pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Replace attempts when the object changes between our read and our write.
const CONFLICT_RETRIES: usize = 5;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// `-n`: the namespace for objects without one; an object naming another is an error.
    pub namespace: Option<String>,
    /// Field manager recorded by the server.
    pub field_manager: String,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            namespace: None,
            field_manager: "sarasa".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl fmt::Display for ApplyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        })
    }
}

/// One applied object, as the server stored it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub object: Object,
    pub action: ApplyAction,
    /// `file (document N)` it came from.
    pub origin: String,
}

impl Applied {
    /// `deployment.apps/my-nginx configured`: kubectl's line.
    pub fn line(&self) -> String {
        format!("{} {}", self.object.reference(), self.action)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    pub applied: Vec<Applied>,
}

impl ApplyReport {
    /// The highest resourceVersion among the applied objects (the lab's are integers):
    /// `--wait` waits until every node has seen at least this.
    pub fn max_resource_version(&self) -> Option<u64> {
        self.applied
            .iter()
            .filter_map(|a| a.object.resource_version()?.parse::<u64>().ok())
            .max()
    }

    /// What `--wait` waits for every node's agent to have seen: the highest resourceVersion
    /// among the objects this apply changed that agents program. Unchanged objects ask nothing
    /// of them, and agents do not watch Deployments (their pods, waited for on their own,
    /// are what the agents program), so an apply of only those waits for no agent at all
    /// (`None`), however long ago the agents last saw a change.
    pub fn agent_resource_version(&self) -> Option<u64> {
        self.applied
            .iter()
            .filter(|a| a.action != ApplyAction::Unchanged)
            .filter(|a| a.object.kind() != ResourceKind::Deployment)
            .filter_map(|a| a.object.resource_version()?.parse::<u64>().ok())
            .max()
    }

    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.applied.iter().filter_map(|a| match &a.object {
            Object::Pod(p) => Some(p),
            _ => None,
        })
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.applied.iter().filter_map(|a| match &a.object {
            Object::Deployment(d) => Some(d),
            _ => None,
        })
    }
}

/// What one manifest needs.
enum Plan {
    Create(Object),
    Replace { desired: Object },
    Unchanged(Object),
}

struct Step<'a> {
    manifest: &'a Manifest,
    desired: Object,
    plan: Plan,
}

/// Applies `manifests` (Namespaces first, then file order), printing kubectl's lines to `out`.
///
/// Every create/replace is first sent as a server-side dry run; if the server rejects any,
/// nothing is written and the error lists each rejected object with the server's reason
/// (e.g. `spec.ports[0].port: Invalid value: 70000`).
pub async fn apply(
    client: &Client,
    manifests: &[Manifest],
    opts: &ApplyOptions,
    out: &mut (dyn Write + Send),
) -> Result<ApplyReport, KubectlError> {
    let mut ordered: Vec<&Manifest> = manifests.iter().collect();
    ordered.sort_by_key(|m| m.object.kind() != ResourceKind::Namespace);

    let mut steps = Vec::new();
    for manifest in ordered {
        let desired = desired_object(manifest, opts)?;
        let plan = plan(client, &desired).await?;
        steps.push(Step {
            manifest,
            desired,
            plan,
        });
    }

    dry_run(client, &steps, opts).await?;

    let mut report = ApplyReport::default();
    for step in steps {
        let (object, action) = match step.plan {
            Plan::Unchanged(live) => (live, ApplyAction::Unchanged),
            Plan::Create(desired) => match write(client, &desired, false, false, opts).await {
                Ok(created) => (created, ApplyAction::Created),
                // Created meanwhile (e.g. a namespace made by a controller): apply over it.
                Err(e) if status_code(&e) == Some(409) => (
                    replace_fresh(client, &step.desired, opts).await?,
                    ApplyAction::Configured,
                ),
                Err(e) => return Err(write_error(step.manifest, &desired, e)),
            },
            Plan::Replace { .. } => (
                replace_fresh(client, &step.desired, opts).await?,
                ApplyAction::Configured,
            ),
        };
        let applied = Applied {
            object,
            action,
            origin: step.manifest.origin(),
        };
        writeln!(out, "{}", applied.line())?;
        report.applied.push(applied);
    }
    Ok(report)
}

/// The manifest's object with its namespace settled and the last-applied annotation set.
fn desired_object(manifest: &Manifest, opts: &ApplyOptions) -> Result<Object, KubectlError> {
    let mut object = manifest.object.clone();
    let kind = object.kind();
    let meta = object.metadata_mut();
    if kind.namespaced() {
        match (meta.namespace.as_deref(), opts.namespace.as_deref()) {
            (Some(own), Some(flag)) if own != flag => {
                return Err(KubectlError::NamespaceMismatch {
                    origin: manifest.origin(),
                    object: own.to_string(),
                    flag: flag.to_string(),
                })
            }
            (Some(_), _) => {}
            (None, flag) => meta.namespace = Some(flag.unwrap_or(DEFAULT_NAMESPACE).to_string()),
        }
    } else {
        meta.namespace = None;
    }
    // The annotation holds the manifest without itself (as kubectl does).
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
    let last_applied = object.to_json().to_string();
    object
        .metadata_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(LAST_APPLIED_ANNOTATION.to_string(), last_applied);
    Ok(object)
}

async fn plan(client: &Client, desired: &Object) -> Result<Plan, KubectlError> {
    match get_live(client, desired).await? {
        None => Ok(Plan::Create(desired.clone())),
        Some(live) if last_applied(&live) == last_applied(desired) => Ok(Plan::Unchanged(live)),
        Some(live) => Ok(Plan::Replace {
            desired: merge_for_replace(desired, &live),
        }),
    }
}

async fn get_live(client: &Client, object: &Object) -> Result<Option<Object>, KubectlError> {
    let api = api::api(client, object.kind(), object.namespace());
    match api.get(object.name()).await {
        Ok(live) => Ok(Some(api::from_dynamic(object.kind(), &live)?)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(error) => Err(KubectlError::Api {
            what: format!("cannot read {}", object.reference()),
            error,
        }),
    }
}

/// Sends every write as a dry run first; collects every rejection.
async fn dry_run(
    client: &Client,
    steps: &[Step<'_>],
    opts: &ApplyOptions,
) -> Result<(), KubectlError> {
    // Namespaces this apply creates: their objects cannot be dry-run created yet.
    let new_namespaces: BTreeSet<&str> = steps
        .iter()
        .filter(|s| {
            matches!(s.plan, Plan::Create(_)) && s.desired.kind() == ResourceKind::Namespace
        })
        .map(|s| s.desired.name())
        .collect();
    let mut rejected = Vec::new();
    for step in steps {
        let (object, replace) = match &step.plan {
            Plan::Unchanged(_) => continue,
            Plan::Create(o) => (o, false),
            Plan::Replace { desired } => (desired, true),
        };
        match write(client, object, replace, true, opts).await {
            Ok(_) => {}
            Err(e)
                if is_not_found(&e)
                    && object
                        .namespace()
                        .is_some_and(|ns| new_namespaces.contains(ns)) => {}
            // Someone changed it since we read it: the real write re-reads.
            Err(e) if replace && is_conflict(&e) => {}
            Err(e) => rejected.push(format!(
                "{}: {}: {}",
                step.manifest.origin(),
                object.reference(),
                describe(&e)
            )),
        }
    }
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(KubectlError::Invalid(rejected))
    }
}

async fn write(
    client: &Client,
    object: &Object,
    replace: bool,
    dry_run: bool,
    opts: &ApplyOptions,
) -> Result<Object, kube::Error> {
    let api = api::api(client, object.kind(), object.namespace());
    let params = PostParams {
        dry_run,
        field_manager: Some(opts.field_manager.clone()),
    };
    let body = to_dynamic(object)
        .map_err(|e| kube::Error::Service(Box::new(std::io::Error::other(e.to_string()))))?;
    let stored = if replace {
        api.replace(object.name(), &params, &body).await?
    } else {
        api.create(&params, &body).await?
    };
    api::from_dynamic(object.kind(), &stored)
        .map_err(|e| kube::Error::Service(Box::new(std::io::Error::other(e.to_string()))))
}

/// Re-reads the live object and replaces it, retrying on write conflicts (controllers update
/// status concurrently, which bumps the resourceVersion).
async fn replace_fresh(
    client: &Client,
    desired: &Object,
    opts: &ApplyOptions,
) -> Result<Object, KubectlError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let merged = match get_live(client, desired).await? {
            Some(live) => merge_for_replace(desired, &live),
            None => {
                return write(client, desired, false, false, opts)
                    .await
                    .map_err(|e| api_error(desired, "create", e))
            }
        };
        match write(client, &merged, true, false, opts).await {
            Ok(stored) => return Ok(stored),
            Err(e) if is_conflict(&e) && attempt < CONFLICT_RETRIES => continue,
            Err(e) => return Err(api_error(desired, "update", e)),
        }
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    api::status(e).map(|s| s.code)
}

fn api_error(object: &Object, verb: &str, source: kube::Error) -> KubectlError {
    KubectlError::Failed(format!(
        "cannot {verb} {}: {}",
        object.reference(),
        describe(&source)
    ))
}

fn write_error(manifest: &Manifest, object: &Object, source: kube::Error) -> KubectlError {
    KubectlError::Failed(format!(
        "{}: cannot create {}: {}",
        manifest.origin(),
        object.reference(),
        describe(&source)
    ))
}

fn last_applied(object: &Object) -> Option<&str> {
    object
        .metadata()
        .annotations
        .as_ref()?
        .get(LAST_APPLIED_ANNOTATION)
        .map(String::as_str)
}

/// The desired object, made fit to replace `live`: the live resourceVersion; fields the server
/// or controllers own that the manifest leaves out (a Service's clusterIP and nodePorts, a
/// Pod's node); labels and annotations others added (not ones our last apply set).
fn merge_for_replace(desired: &Object, live: &Object) -> Object {
    let mut merged = desired.clone();
    let previous: Option<serde_json::Value> =
        last_applied(live).and_then(|s| serde_json::from_str(s).ok());
    let previous_map = |field: &str| -> BTreeSet<String> {
        previous
            .as_ref()
            .and_then(|p| p.pointer(&format!("/metadata/{field}")))
            .and_then(|m| m.as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let prev_labels = previous_map("labels");
    let prev_annotations = previous_map("annotations");
    let live_meta = live.metadata();
    let meta = merged.metadata_mut();
    meta.resource_version = live_meta.resource_version.clone();
    meta.labels = merge_map(live_meta.labels.as_ref(), meta.labels.take(), &prev_labels);
    meta.annotations = merge_map(
        live_meta.annotations.as_ref(),
        meta.annotations.take(),
        &prev_annotations,
    );
    if meta.finalizers.is_none() {
        meta.finalizers = live_meta.finalizers.clone();
    }
    if meta.owner_references.is_none() {
        meta.owner_references = live_meta.owner_references.clone();
    }
    match (&mut merged, live) {
        (Object::Service(d), Object::Service(l)) => {
            if let (Some(ds), Some(ls)) = (d.spec.as_mut(), l.spec.as_ref()) {
                if ds.cluster_ip.is_none() {
                    ds.cluster_ip = ls.cluster_ip.clone();
                    if ds.cluster_ips.is_none() {
                        ds.cluster_ips = ls.cluster_ips.clone();
                    }
                }
                if ds.ip_families.is_none() {
                    ds.ip_families = ls.ip_families.clone();
                }
                if ds.ip_family_policy.is_none() {
                    ds.ip_family_policy = ls.ip_family_policy.clone();
                }
                if ds.health_check_node_port.is_none() {
                    ds.health_check_node_port = ls.health_check_node_port;
                }
                let live_ports = ls.ports.as_deref().unwrap_or(&[]);
                for port in ds.ports.iter_mut().flatten() {
                    if port.node_port.is_none() {
                        let proto = |p: &Option<String>| p.clone().unwrap_or_else(|| "TCP".into());
                        port.node_port = live_ports
                            .iter()
                            .find(|lp| {
                                lp.port == port.port && proto(&lp.protocol) == proto(&port.protocol)
                            })
                            .and_then(|lp| lp.node_port);
                    }
                }
            }
        }
        (Object::Pod(d), Object::Pod(l)) => {
            if let (Some(ds), Some(ls)) = (d.spec.as_mut(), l.spec.as_ref()) {
                if ds.node_name.is_none() {
                    ds.node_name = ls.node_name.clone();
                }
                keep_service_account_admission(ds, ls);
            }
        }
        _ => {}
    }
    merged
}

/// What the ServiceAccount admission added when the pod was created — `serviceAccountName` and
/// the `kube-api-access-*` projected volume with its mount in every container — stays: a pod's
/// spec is immutable, and kubectl's patch keeps these fields because its manifest never set them.
fn keep_service_account_admission(
    desired: &mut k8s_openapi::api::core::v1::PodSpec,
    live: &k8s_openapi::api::core::v1::PodSpec,
) {
    const PREFIX: &str = "kube-api-access-";
    if desired.service_account_name.is_none() {
        desired.service_account_name = live.service_account_name.clone();
    }
    if desired.service_account.is_none() {
        desired.service_account = live.service_account.clone();
    }
    for v in live.volumes.iter().flatten() {
        let present = desired.volumes.iter().flatten().any(|d| d.name == v.name);
        if v.name.starts_with(PREFIX) && !present {
            desired.volumes.get_or_insert_with(Vec::new).push(v.clone());
        }
    }
    let live_containers = live
        .containers
        .iter()
        .chain(live.init_containers.iter().flatten());
    let live_mounts: Vec<(&str, &k8s_openapi::api::core::v1::VolumeMount)> = live_containers
        .flat_map(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .filter(|m| m.name.starts_with(PREFIX))
                .map(move |m| (c.name.as_str(), m))
        })
        .collect();
    let desired_containers = desired
        .containers
        .iter_mut()
        .chain(desired.init_containers.iter_mut().flatten());
    for c in desired_containers {
        for (_, m) in live_mounts.iter().filter(|(name, _)| *name == c.name) {
            let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
            if !mounts.iter().any(|d| d.name == m.name) {
                mounts.push((*m).clone());
            }
        }
    }
}

/// Live entries, minus those our previous apply set and this one drops, plus the desired ones.
fn merge_map(
    live: Option<&BTreeMap<String, String>>,
    desired: Option<BTreeMap<String, String>>,
    previously_applied: &BTreeSet<String>,
) -> Option<BTreeMap<String, String>> {
    let desired = desired.unwrap_or_default();
    let mut merged: BTreeMap<String, String> = live
        .into_iter()
        .flatten()
        .filter(|(k, _)| !previously_applied.contains(*k) || desired.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    merged.extend(desired);
    (!merged.is_empty()).then_some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifests;

    fn one(text: &str) -> Manifest {
        parse_manifests("t.yaml", text).unwrap().remove(0)
    }

    #[test]
    fn namespaces_default_and_conflict_with_the_flag() {
        let m = one("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");
        let d = desired_object(&m, &ApplyOptions::default()).unwrap();
        assert_eq!(d.namespace(), Some("default"));
        let opts = ApplyOptions {
            namespace: Some("shop".into()),
            ..Default::default()
        };
        assert_eq!(desired_object(&m, &opts).unwrap().namespace(), Some("shop"));
        let m = one("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: other}\n");
        let e = desired_object(&m, &opts).unwrap_err().to_string();
        assert!(e.contains("\"other\"") && e.contains("\"shop\""), "{e}");
        let m = one("apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n");
        assert_eq!(desired_object(&m, &opts).unwrap().namespace(), None);
    }

    #[test]
    fn last_applied_excludes_itself() {
        let m = one("apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n");
        let d = desired_object(&m, &ApplyOptions::default()).unwrap();
        let again = Manifest {
            object: d.clone(),
            ..m
        };
        let d2 = desired_object(&again, &ApplyOptions::default()).unwrap();
        assert_eq!(last_applied(&d), last_applied(&d2));
        assert!(!last_applied(&d).unwrap().contains(LAST_APPLIED_ANNOTATION));
    }

    #[test]
    fn replace_keeps_server_owned_fields_and_foreign_labels() {
        let desired = desired_object(
            &one("apiVersion: v1\nkind: Service\nmetadata: {name: s, labels: {app: web}}\nspec:\n  type: NodePort\n  ports: [{port: 80}]\n"),
            &ApplyOptions::default(),
        )
        .unwrap();
        let live = Object::from_json(
            ResourceKind::Service,
            serde_json::json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "s", "namespace": "default", "resourceVersion": "42",
                             "labels": {"app": "web", "old": "x", "team": "net"},
                             "annotations": {LAST_APPLIED_ANNOTATION: "{\"metadata\":{\"labels\":{\"app\":\"web\",\"old\":\"x\"}}}"}},
                "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                         "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}}),
        )
        .unwrap();
        let Object::Service(merged) = merge_for_replace(&desired, &live) else {
            panic!("not a service")
        };
        assert_eq!(merged.metadata.resource_version.as_deref(), Some("42"));
        let labels = merged.metadata.labels.unwrap();
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            ["app", "team"],
            "our dropped label goes, a foreign one stays"
        );
        let spec = merged.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
        assert_eq!(spec.ports.unwrap()[0].node_port, Some(30080));
    }

    #[test]
    fn replace_keeps_what_serviceaccount_admission_added_to_a_pod() {
        let desired = desired_object(
            &one("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: b}}\nspec:\n  containers: [{name: c, image: x}]\n"),
            &ApplyOptions::default(),
        )
        .unwrap();
        let live = Object::from_json(
            ResourceKind::Pod,
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "default", "resourceVersion": "7"},
                "spec": {"nodeName": "node-1", "serviceAccountName": "default",
                         "containers": [{"name": "c", "image": "x", "volumeMounts": [
                             {"name": "kube-api-access-abcde", "readOnly": true,
                              "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
                         "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": []}}]}}),
        )
        .unwrap();
        let Object::Pod(merged) = merge_for_replace(&desired, &live) else {
            panic!("not a pod")
        };
        let spec = merged.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert_eq!(spec.volumes.unwrap()[0].name, "kube-api-access-abcde");
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        assert_eq!(mounts[0].name, "kube-api-access-abcde");
        assert_eq!(mounts.len(), 1);
    }

    #[test]
    fn wait_asks_agents_only_for_changed_objects_they_program() {
        let applied = |text: &str, rv: &str, action: ApplyAction| {
            let mut m = one(text);
            m.object.metadata_mut().resource_version = Some(rv.into());
            Applied {
                object: m.object,
                action,
                origin: "t.yaml".into(),
            }
        };
        let svc =
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n";
        let dep = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 0, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}}\n";
        // Re-applying an unchanged Service (newest in the cluster) waits for no agent.
        let report = ApplyReport {
            applied: vec![applied(svc, "90", ApplyAction::Unchanged)],
        };
        assert_eq!(report.agent_resource_version(), None);
        assert_eq!(report.max_resource_version(), Some(90));
        // A Deployment at 0 replicas, created or changed: nothing for the agents either.
        let report = ApplyReport {
            applied: vec![
                applied(dep, "95", ApplyAction::Configured),
                applied(svc, "90", ApplyAction::Unchanged),
            ],
        };
        assert_eq!(report.agent_resource_version(), None);
        // A changed Service is waited for, whatever else came along.
        let report = ApplyReport {
            applied: vec![
                applied(svc, "91", ApplyAction::Configured),
                applied(dep, "95", ApplyAction::Created),
            ],
        };
        assert_eq!(report.agent_resource_version(), Some(91));
    }
}
