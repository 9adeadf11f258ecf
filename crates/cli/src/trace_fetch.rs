//! What `sarasa trace` reads from a running lab: the cluster view (the same projections the
//! agents keep, through [`sarasa_cluster::list_view`]), the fabric's Service routes, and — for
//! `-o svg` — the topology to draw the path on.

use anyhow::Result;
use sarasa_lab::{Lab, LabError};
use sarasa_trace::{PodView, World};

use crate::trace_world::{self, NodeFacts, Objects};

/// The world of `lab` as its API server and fabric hold it now; in a cluster set, with the
/// other clusters' worlds, so a packet to one of them is followed through the cable.
pub fn world(lab: &Lab, warnings: &mut Vec<String>) -> Result<World> {
    let (mut world, set) = cluster_world(lab, warnings)?;
    let Some(set) = set else {
        return Ok(world);
    };
    let Some(cs) = sarasa_lab::clusterset::set_of(&lab.spec.name, None)? else {
        return Ok(world);
    };
    let me = cs.member(&lab.spec.name);
    let mut view = sarasa_trace::ClusterSetView {
        cluster_id: me.map(|m| m.cluster_id.clone()).unwrap_or_default(),
        cable: set.cable.to_string(),
        active_gateway: sarasa_lab::clusterset::active_gateway_of(lab)?,
        remotes: Vec::new(),
    };
    for r in &set.remotes {
        let mut remote = sarasa_trace::RemoteClusterView {
            cluster_id: r.cluster_id.clone(),
            cidrs: r.cidrs(),
            gateway_wan: r.gateway_ip,
            active_gateway: None,
            world: None,
        };
        let other = cs
            .members
            .iter()
            .find(|m| m.cluster_id == r.cluster_id)
            .map(|m| Lab::open(&m.lab));
        match other {
            Some(Ok(other)) => {
                let mut theirs = Vec::new();
                match cluster_world(&other, &mut theirs) {
                    Ok((w, _)) => {
                        remote.world = Some(Box::new(w));
                        remote.active_gateway = sarasa_lab::clusterset::active_gateway_of(&other)?;
                    }
                    Err(e) => warnings.push(format!("cluster {}: {e}", r.cluster_id)),
                }
                warnings.extend(
                    theirs
                        .into_iter()
                        .map(|w| format!("cluster {}: {w}", r.cluster_id)),
                );
            }
            Some(Err(e)) => warnings.push(format!("cluster {}: {e}", r.cluster_id)),
            None => warnings.push(format!(
                "cluster {} is not a lab of set {}: traced to the cable only",
                r.cluster_id, cs.name
            )),
        }
        view.remotes.push(remote);
    }
    world.cluster_set = Some(view);
    Ok(world)
}

/// One cluster's world, and its cluster set as its agents read it.
fn cluster_world(
    lab: &Lab,
    warnings: &mut Vec<String>,
) -> Result<(World, Option<sarasa_agent::gateway::SetView>)> {
    let (view, set) = sarasa_lab::client::with_client(&lab.spec, |c| async move {
        let view = sarasa_cluster::list_view(&c)
            .await
            .map_err(|e| LabError::Api(e.to_string()))?;
        let set = cluster_set(&c).await?;
        Ok((view, set))
    })?;
    let remotes = set.as_ref().map(|s| s.ranges()).unwrap_or_default();
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
    Ok((
        trace_world::world(&lab.spec, objects, routes, warnings)?,
        set,
    ))
}

/// The lab's cluster set as its agents read it (`None` outside a set).
async fn cluster_set(c: &kube::Client) -> Result<Option<sarasa_agent::gateway::SetView>, LabError> {
    use sarasa_model::clusterset::{CONFIGMAP_NAME, CONFIGMAP_NAMESPACE};
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(c.clone(), CONFIGMAP_NAMESPACE);
    let cm = api
        .get_opt(CONFIGMAP_NAME)
        .await
        .map_err(|e| LabError::Api(e.to_string()))?;
    sarasa_agent::gateway::set_view(cm.as_ref()).map_err(|e| LabError::Invalid(e.to_string()))
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
