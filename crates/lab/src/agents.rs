//! The node agents, run the way a cluster runs them: `lab up` applies deploy/sarasa.yaml — the
//! file users apply — with only the `sarasa-config` ConfigMap's settings taken from the lab's
//! spec (backend, CNI mode, pod and Service CIDRs), plus the manifest's optional
//! `kubernetes-services-endpoint` ConfigMap naming the API server's real address. The
//! DaemonSet controller then makes one agent pod per Node and the lab's kubelet runs it:
//! host network (the node's namespace), the ConfigMap at /etc/sarasa, the node's
//! /etc/cni/net.d, /opt/cni/bin and /var/lib/sarasa as hostPaths under the node's root, and
//! in-cluster config from the ServiceAccount token the kubelet projects.
//!
//! One node's agent is managed as on a cluster:
//! - stop: label the Node `sarasa.io/agent=stopped`; the DaemonSet's node affinity excludes
//!   such nodes, so its controller deletes the pod (the agent exits gracefully and leaves the
//!   datapath in place);
//! - start: remove the label; the controller makes a new pod;
//! - restart: delete the pod; the controller makes a new one.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use crate::spec::LabSpec;
use crate::wait::pod_ready;
use crate::LabError;

/// deploy/sarasa.yaml as shipped.
pub const MANIFEST: &str = include_str!("../../../deploy/sarasa.yaml");
const MANIFEST_NAME: &str = "deploy/sarasa.yaml";
/// Where the DaemonSet lives.
pub const NAMESPACE: &str = "sarasa-system";
/// The DaemonSet's pod label (`app.kubernetes.io/name=sarasa-agent`).
pub const POD_SELECTOR: &str = "app.kubernetes.io/name=sarasa-agent";
/// The ConfigMap holding `config.yaml`.
pub const CONFIG_MAP: &str = "sarasa-config";
/// The optional ConfigMap the agent's environment comes from (the API's real address).
pub const ENDPOINT_CONFIG_MAP: &str = "kubernetes-services-endpoint";
/// The Node label that keeps the agent off a node (see deploy/sarasa.yaml's affinity).
pub const AGENT_LABEL: &str = "sarasa.io/agent";
pub const AGENT_STOPPED: &str = "stopped";
/// How long stop waits for the pod to be gone (the DaemonSet's grace period is 30 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The objects `lab up` applies: the manifest's, with the ConfigMap's settings set from
/// `spec`, and the `kubernetes-services-endpoint` ConfigMap ahead of the DaemonSet.
pub fn objects(spec: &LabSpec) -> Result<Vec<Value>, LabError> {
    let mut objects = crate::manifest::parse(MANIFEST_NAME, MANIFEST)?;
    let cm = objects
        .iter_mut()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == CONFIG_MAP)
        .ok_or_else(|| LabError::Invalid(format!("{MANIFEST_NAME}: no ConfigMap {CONFIG_MAP}")))?;
    let text = cm["data"]["config.yaml"].as_str().unwrap_or_default();
    cm["data"]["config.yaml"] = Value::String(overlay_config(text, spec)?);
    if spec.insecure_api {
        // The API speaks plain HTTP: in-cluster config (HTTPS) cannot reach it.
        for ds in objects.iter_mut().filter(|o| o["kind"] == "DaemonSet") {
            let containers = ds["spec"]["template"]["spec"]["containers"].as_array_mut();
            for c in containers.into_iter().flatten() {
                let arg = Value::String(format!("--apiserver={}", spec.api_url()));
                match c["args"].as_array_mut() {
                    Some(args) => args.push(arg),
                    None => c["args"] = Value::Array(vec![arg]),
                }
            }
        }
    }
    // Before the DaemonSet: an optional ConfigMap that appears after a pod started is not in
    // that pod's environment (as on a cluster).
    let at = objects
        .iter()
        .position(|o| o["kind"] == "DaemonSet")
        .unwrap_or(objects.len());
    objects.insert(
        at,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": ENDPOINT_CONFIG_MAP, "namespace": NAMESPACE},
            "data": {
                "KUBERNETES_SERVICE_HOST": spec.fabric_ip.to_string(),
                "KUBERNETES_SERVICE_PORT": spec.api_port.to_string(),
            },
        }),
    );
    Ok(objects)
}

/// `config.yaml` with the lab's settings in place of the shipped values (other keys kept).
pub fn overlay_config(text: &str, spec: &LabSpec) -> Result<String, LabError> {
    let bad = |e: String| LabError::Invalid(format!("{MANIFEST_NAME}: config.yaml: {e}"));
    let mut doc: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| bad(e.to_string()))?;
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| bad("is not a mapping".into()))?;
    let set = |map: &mut serde_norway::Mapping, k: &str, v: serde_norway::Value| {
        map.insert(serde_norway::Value::String(k.into()), v);
    };
    let s = |v: &str| serde_norway::Value::String(v.into());
    set(map, "backend", s(spec.backend.as_str()));
    set(map, "cniMode", s(spec.mode.as_str()));
    if let Some(vpc) = &spec.vpc {
        let url = format!(
            "http://{}:{}",
            spec.fabric_ip,
            sarasa_model::vpc::CLOUD_PORT
        );
        set(map, "vpcCloudURL", s(&url));
        set(
            map,
            "vpcWarmAddresses",
            serde_norway::Value::Number(vpc.warm_addresses.into()),
        );
    }
    set(
        map,
        "clusterCIDRs",
        serde_norway::Value::Sequence(
            spec.cluster_cidrs()
                .iter()
                .map(|c| s(&c.to_string()))
                .collect(),
        ),
    );
    set(
        map,
        "serviceCIDRs",
        serde_norway::Value::Sequence(
            spec.service_cidrs()
                .iter()
                .map(|c| s(&c.to_string()))
                .collect(),
        ),
    );
    serde_norway::to_string(&doc).map_err(|e| bad(e.to_string()))
}

/// Applies the agents' manifest, retrying until `deadline` while the API is not up yet.
pub fn install(spec: &LabSpec, deadline: Instant) -> Result<(), LabError> {
    crate::manifest::apply(spec, MANIFEST_NAME, objects(spec)?, deadline)
}

fn api(what: &str) -> impl Fn(kube::Error) -> LabError + '_ {
    move |e| LabError::Api(format!("{what}: {e}"))
}

/// Every agent pod (terminating ones too).
pub async fn pods(c: &Client) -> Result<Vec<Pod>, LabError> {
    Ok(Api::<Pod>::namespaced(c.clone(), NAMESPACE)
        .list(&ListParams::default().labels(POD_SELECTOR))
        .await
        .map_err(api("listing the agent pods"))?
        .items)
}

fn on_node<'a>(pods: &'a [Pod], node: &str) -> impl Iterator<Item = &'a Pod> + 'a {
    let node = node.to_string();
    pods.iter()
        .filter(move |p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node))
}

/// The node's live (not terminating) agent pod.
pub fn live_pod<'a>(pods: &'a [Pod], node: &str) -> Option<&'a Pod> {
    on_node(pods, node).find(|p| p.metadata.deletion_timestamp.is_none())
}

/// The agent state `lab status` shows: Ready (pod Ready by its probe and the node's network
/// up), Starting (a pod, not ready yet), Stopping, or Stopped (no pod).
pub fn agent_state(pods: &[Pod], node: Option<&Node>, name: &str) -> &'static str {
    match live_pod(pods, name) {
        Some(p) if pod_ready(p) && node.is_some_and(crate::lab::node_ready) => "Ready",
        Some(_) => "Starting",
        None if on_node(pods, name).next().is_some() => "Stopping",
        None => "Stopped",
    }
}

/// None once every node's network is up and its agent pod is Ready, else what is pending.
pub async fn pending(c: &Client, spec: &LabSpec) -> Result<Option<String>, LabError> {
    let nodes = Api::<Node>::all(c.clone())
        .list(&ListParams::default())
        .await
        .map_err(api("listing nodes"))?
        .items;
    let pods = pods(c).await?;
    for n in &spec.nodes {
        let node = nodes
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some(&n.name));
        let state = agent_state(&pods, node, &n.name);
        if state != "Ready" {
            return Ok(Some(format!("the agent of {} is {state}", n.name)));
        }
    }
    Ok(None)
}

async fn set_label(c: &Client, node: &str, value: Option<&str>) -> Result<(), LabError> {
    let mut labels = serde_json::Map::new();
    labels.insert(AGENT_LABEL.into(), json!(value));
    let patch = json!({"metadata": {"labels": labels}});
    Api::<Node>::all(c.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api(&format!("labelling node {node}")))?;
    Ok(())
}

async fn poll<F, Fut>(deadline: Instant, what: &str, mut f: F) -> Result<(), LabError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, LabError>>,
{
    loop {
        let last = match f().await {
            Ok(None) => return Ok(()),
            Ok(Some(p)) => p,
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(LabError::Timeout(format!("{what} ({last})")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes the agent off `node` (label; the DaemonSet controller deletes the pod) and waits
/// until its pod is gone.
pub async fn stop(c: &Client, node: &str) -> Result<(), LabError> {
    set_label(c, node, Some(AGENT_STOPPED)).await?;
    poll(
        Instant::now() + STOP_TIMEOUT,
        &format!("waiting for the agent pod of {node} to be gone"),
        || async {
            let pods = pods(c).await?;
            let left = on_node(&pods, node)
                .next()
                .map(|p| format!("pod {} still exists", p.name_any()));
            Ok(left)
        },
    )
    .await
}

/// Puts the agent back on `node` (removes the label) and waits until `spec`'s agents are all
/// Ready. An agent that runs already is an error.
pub async fn start(
    c: &Client,
    spec: &LabSpec,
    node: &str,
    deadline: Instant,
) -> Result<(), LabError> {
    let labelled = Api::<Node>::all(c.clone())
        .get(node)
        .await
        .map_err(api(&format!("getting node {node}")))?
        .labels()
        .get(AGENT_LABEL)
        .is_some_and(|v| v == AGENT_STOPPED);
    if !labelled && live_pod(&pods(c).await?, node).is_some() {
        return Err(LabError::Invalid(format!(
            "the agent of {node} is already running"
        )));
    }
    set_label(c, node, None).await?;
    wait_all_ready(c, spec, deadline).await
}

/// Deletes `node`'s agent pod; waits until the DaemonSet's new pod is Ready.
pub async fn restart(
    c: &Client,
    spec: &LabSpec,
    node: &str,
    deadline: Instant,
) -> Result<(), LabError> {
    let pods = pods(c).await?;
    let Some(old) = live_pod(&pods, node) else {
        return Err(LabError::Invalid(format!(
            "the agent of {node} is stopped; start it with `sarasa lab agent start {node}`"
        )));
    };
    let (name, uid) = (old.name_any(), old.uid());
    Api::<Pod>::namespaced(c.clone(), NAMESPACE)
        .delete(&name, &DeleteParams::default())
        .await
        .map_err(api(&format!("deleting pod {NAMESPACE}/{name}")))?;
    poll(
        deadline,
        &format!("waiting for a new agent pod on {node}"),
        || async {
            let pods = crate::agents::pods(c).await?;
            Ok(match live_pod(&pods, node) {
                Some(p) if p.uid() != uid && pod_ready(p) => None,
                Some(p) if p.uid() != uid => Some(format!("pod {} is not Ready", p.name_any())),
                _ => Some(format!("pod {name} not replaced yet")),
            })
        },
    )
    .await?;
    wait_all_ready(c, spec, deadline).await
}

/// Waits until every node's network is up and its agent pod is Ready.
pub async fn wait_all_ready(c: &Client, spec: &LabSpec, deadline: Instant) -> Result<(), LabError> {
    poll(
        deadline,
        "waiting for every node's agent to be ready",
        || pending(c, spec),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Backend, CniMode};

    #[test]
    fn the_overlay_sets_only_the_labs_settings_in_the_shipped_objects() {
        let spec = LabSpec::new("ovl", 2, Backend::HostGw, CniMode::Routed).expect("spec");
        let objects = objects(&spec).expect("objects");
        let shipped = crate::manifest::parse(MANIFEST_NAME, MANIFEST).expect("parses");
        // Every shipped object is applied; only the ConfigMap differs.
        for want in &shipped {
            let got = objects
                .iter()
                .find(|o| {
                    o["kind"] == want["kind"] && o["metadata"]["name"] == want["metadata"]["name"]
                })
                .expect("the shipped object is applied");
            if want["kind"] != "ConfigMap" {
                assert_eq!(got, want);
            }
        }
        let cm = objects
            .iter()
            .find(|o| o["metadata"]["name"] == CONFIG_MAP)
            .expect("configmap");
        let cfg: serde_json::Value =
            serde_norway::from_str(cm["data"]["config.yaml"].as_str().expect("text"))
                .expect("yaml");
        assert_eq!(cfg["backend"], "host-gw");
        assert_eq!(cfg["cniMode"], "routed");
        assert_eq!(cfg["clusterCIDRs"], json!(["10.244.0.0/16"]));
        assert_eq!(cfg["serviceCIDRs"], json!(["10.96.0.0/12"]));
        // Keys the lab does not set keep their shipped values.
        assert_eq!(cfg["serviceProxy"], true);
        assert_eq!(cfg["clusterDomain"], "cluster.local");
        let ep = objects
            .iter()
            .find(|o| o["metadata"]["name"] == ENDPOINT_CONFIG_MAP)
            .expect("endpoint configmap");
        assert_eq!(ep["metadata"]["namespace"], NAMESPACE);
        assert_eq!(ep["data"]["KUBERNETES_SERVICE_HOST"], "192.168.33.1");
        assert_eq!(ep["data"]["KUBERNETES_SERVICE_PORT"], "6443");
        assert_eq!(objects.len(), shipped.len() + 1);
        let pos = |kind: &str, name: &str| {
            objects
                .iter()
                .position(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .expect("object")
        };
        assert!(pos("ConfigMap", ENDPOINT_CONFIG_MAP) < pos("DaemonSet", "sarasa-agent"));
    }

    #[test]
    fn an_insecure_api_lab_points_the_agent_container_at_plain_http() {
        let args = |spec: &LabSpec| {
            let objects = objects(spec).expect("objects");
            let ds = objects
                .iter()
                .find(|o| o["kind"] == "DaemonSet")
                .expect("daemonset")
                .clone();
            let pod = &ds["spec"]["template"]["spec"];
            let of = |list: &str| -> Vec<Value> {
                pod[list]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["args"].clone())
                    .collect()
            };
            (of("containers"), of("initContainers"))
        };
        let mut spec = LabSpec::new("t", 1, Backend::Vxlan, CniMode::Bridge).expect("spec");
        let (secure, init) = args(&spec);
        assert!(!format!("{secure:?}").contains("--apiserver"), "{secure:?}");
        spec.insecure_api = true;
        assert_eq!(spec.api_url(), "http://192.168.33.1:6443");
        let (insecure, init_insecure) = args(&spec);
        for (before, after) in secure.iter().zip(&insecure) {
            let mut want = before.as_array().cloned().unwrap_or_default();
            want.push(json!("--apiserver=http://192.168.33.1:6443"));
            assert_eq!(after, &Value::Array(want));
        }
        assert_eq!(init, init_insecure, "the init container talks to no API");
    }

    #[test]
    fn the_daemonset_keeps_stopped_nodes_out_by_their_label() {
        let shipped = crate::manifest::parse(MANIFEST_NAME, MANIFEST).expect("parses");
        let ds = shipped
            .iter()
            .find(|o| o["kind"] == "DaemonSet")
            .expect("daemonset");
        let terms = &ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        assert_eq!(
            terms[0]["matchExpressions"][0],
            json!({"key": AGENT_LABEL, "operator": "NotIn", "values": [AGENT_STOPPED]})
        );
    }
}
