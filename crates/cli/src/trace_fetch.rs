//! What `sarasa trace` reads from a running lab: the cluster view (the same projections the
//! agents keep, through [`sarasa_cluster::list_view`]), the fabric's Service routes, and — for
//! `-o svg` — the topology to draw the path on.

use anyhow::Result;
use sarasa_lab::{Lab, LabError};
use sarasa_trace::{PodView, World};

use crate::trace_world::{self, NodeFacts, Objects};

/// The world of `lab` as its API server and fabric hold it now.
pub fn world(lab: &Lab, warnings: &mut Vec<String>) -> Result<World> {
    let (view, remotes) = sarasa_lab::client::with_client(&lab.spec, |c| async move {
        let view = sarasa_cluster::list_view(&c)
            .await
            .map_err(|e| LabError::Api(e.to_string()))?;
        let remotes = remote_clusters(&c).await?;
        Ok((view, remotes))
    })?;
    for r in &view.rejected {
        warnings.push(format!("left out (as the agents do): {r}"));
    }
    let policy = view.policy_state();
    let objects = Objects {
        nodes: view
            .nodes
            .values()
            .map(|n| NodeFacts {
                name: n.name.clone(),
                pod_cidrs: n.pod_cidrs.clone(),
                underlay_ip: n.public_ip,
                internal_ip: n.internal_ip,
                vtep_mac: n.vtep_mac,
                vpc_address_limit: n.vpc_address_limit,
            })
            .collect(),
        pods: view
            .pods
            .values()
            .filter(|p| !p.terminating)
            .map(|p| PodView {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                node: p.node_name.clone(),
                ips: p.pod_ips.clone(),
                host_network: p.host_network,
            })
            .collect(),
        services: view.services.values().map(|s| (**s).clone()).collect(),
        endpoint_slices: view
            .endpoint_slices
            .values()
            .map(|s| (**s).clone())
            .collect(),
        policy,
        remote_cluster_cidrs: remotes.remote,
        global_egress: remotes.global_egress,
    };
    let routes = trace_world::service_routes(&lab.spec)?;
    trace_world::world(&lab.spec, objects, routes, warnings)
}

/// What the node plans take from the lab's cluster set, as the agents read it (nothing outside
/// a set).
async fn remote_clusters(c: &kube::Client) -> Result<sarasa_agent::gateway::SetRanges, LabError> {
    use sarasa_model::clusterset::{CONFIGMAP_NAME, CONFIGMAP_NAMESPACE};
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(c.clone(), CONFIGMAP_NAMESPACE);
    let cm = api
        .get_opt(CONFIGMAP_NAME)
        .await
        .map_err(|e| LabError::Api(e.to_string()))?;
    Ok(sarasa_agent::gateway::set_view(cm.as_ref())
        .map_err(|e| LabError::Invalid(e.to_string()))?
        .map(|v| v.ranges())
        .unwrap_or_default())
}

/// The SVG of the lab's topology with `result`'s path drawn on it.
pub fn svg(
    lab: &Lab,
    query: &sarasa_trace::Query,
    result: &sarasa_trace::TraceResult,
) -> Result<String> {
    let objects = crate::topology::list_objects(lab)?;
    let topology = crate::topology::topology(&lab.spec, &objects);
    let destination = match &query.to {
        sarasa_trace::Destination::Pod { namespace, name } => {
            Some(sarasa_viz::ElementId::Pod(format!("{namespace}/{name}")))
        }
        sarasa_trace::Destination::Service { namespace, name } => Some(
            sarasa_viz::ElementId::Service(format!("{namespace}/{name}")),
        ),
        sarasa_trace::Destination::Node(n) => Some(sarasa_viz::ElementId::Node(n.clone())),
        sarasa_trace::Destination::Ip(_) => None,
    };
    let legs = crate::trace_svg::legs(result, crate::trace_svg::heading(result, destination));
    Ok(sarasa_viz::render_svg(&topology, &legs))
}
