//! `sarasa trace`: explains what the network does with a packet, from the node plans the agents
//! program ([`sarasa_plan::NodePlan`]), so what it explains is what the kernel does.
//!
//! The packet is walked hop by hop ([`walk`](crate::walk)): its source namespace and interface,
//! every node it crosses — each hook through one general nftables interpreter
//! ([`sarasa_nft::interp`]) over all of sarasa's tables in kernel order, the routing decision
//! over the plan's routes, FDB and neighbours — and the fabric between nodes. Each step names
//! its decision (which Service and port, every candidate endpoint and how one is chosen, DNAT,
//! the NetworkPolicy rule that allowed or the policies that isolate and deny, the route and
//! next hop, the VXLAN encapsulation, masquerade, delivery, drop or reject with the reason) and
//! cites the kernel object behind it (table, chain and rule, route, FDB entry).
//!
//! Pure: the CLI builds the [`World`] from the API server and the lab; tests build it directly.

mod env;
mod explain;
mod query;
mod result;
mod walk;
mod world;

use std::collections::BTreeSet;

use sarasa_nft::interp::Packet;

pub use query::{parse_destination, parse_port, parse_source, Destination, Proto, Query, Source};
pub use result::{
    Arrival, EndpointOutcome, Hop, PathSummary, PolicyHit, RuleRef, ServiceHit, StopPoint,
    TraceResult, Verdict,
};
pub use world::{
    gateway, local_addresses, ClusterSetView, ExternalView, FabricView, NodeView, PodView,
    RemoteClusterView, World,
};

use explain::sock;
use query::Start;
use walk::{Ending, Leg, Walker};

/// The source port of traced packets (any ephemeral port: no rule sarasa writes matches on it).
pub const SOURCE_PORT: u16 = 40000;

/// Why a trace could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("unknown pod {0}")]
    UnknownPod(String),
    #[error("unknown Service {0}")]
    UnknownService(String),
    #[error("unknown node {0}")]
    UnknownNode(String),
    #[error("{0}")]
    BadInput(String),
    #[error("node {node}: {message}")]
    Interpreter { node: String, message: String },
}

fn describe_source(q: &Query) -> String {
    match &q.from {
        Source::Pod { namespace, name } => format!("pod {namespace}/{name}"),
        Source::Node(n) => format!("node/{n}"),
        Source::External => "external".into(),
    }
}

fn describe_destination(q: &Query) -> String {
    match &q.to {
        Destination::Pod { namespace, name } => format!("pod {namespace}/{name}"),
        Destination::Service { namespace, name } => format!("svc/{name}.{namespace}"),
        Destination::Ip(ip) => ip.to_string(),
        Destination::Node(n) => format!("node/{n}"),
    }
}

/// Traces `query` through `world`.
pub fn trace(world: &World, query: &Query) -> Result<TraceResult, TraceError> {
    let (start, target) = query.resolve(world)?;
    let walker = Walker::new(world);
    let proto = query.proto.l4();
    let mut leg = Leg::default();
    let endings = match &start {
        Start::Pod { key, node, ip } => {
            let mut pkt = Packet::new(*ip, target.ip, proto, SOURCE_PORT, target.port);
            pkt.iifname = None;
            let at = format!("pod {key}");
            if target.ip == *ip {
                leg.hops.push(Hop::new(
                    &at,
                    "source",
                    format!("{} sends to its own address", key),
                    vec![],
                ));
                vec![Ending {
                    leg,
                    verdict: Verdict::Delivered,
                    reason: format!(
                        "delivered inside pod {key} (loopback; it never leaves the pod)"
                    ),
                }]
            } else {
                let node_view = world
                    .node(node)
                    .ok_or_else(|| TraceError::UnknownNode(node.clone()))?;
                let (iif, how) = match node_view.plan.cni.mode {
                    sarasa_model::CniMode::Bridge => (
                        sarasa_plan::NODE_BRIDGE.to_string(),
                        format!(
                            "default route via {} (the node bridge {})",
                            node_view
                                .plan
                                .fabric
                                .pod_cidrs
                                .iter()
                                .find(|c| c.addr().is_ipv6() == ip.is_ipv6())
                                .and_then(|c| gateway(*c))
                                .map(|g| g.to_string())
                                .unwrap_or_default(),
                            sarasa_plan::NODE_BRIDGE
                        ),
                    ),
                    sarasa_model::CniMode::Routed => (
                        "the pod's veth".to_string(),
                        "default route via 169.254.1.1 (proxy ARP on the host veth)".to_string(),
                    ),
                };
                leg.hops.push(Hop::new(
                    &at,
                    "source",
                    format!(
                        "{} → {} leaves eth0 of pod {key}; {how}; arrives on {node}",
                        sock(*ip, SOURCE_PORT),
                        sock(target.ip, target.port)
                    ),
                    vec![],
                ));
                walker.arrive_at_node(node, pkt, &iif, leg)?
            }
        }
        Start::Node { node } => {
            let saddr = walker.source_for_node(node, target.ip)?;
            let pkt = Packet::new(saddr, target.ip, proto, SOURCE_PORT, target.port);
            walker.sent_by_node(node, pkt, leg)?
        }
        Start::External { ip } => {
            let name = world
                .fabric
                .external
                .as_ref()
                .map(|e| e.name.clone())
                .unwrap_or_else(|| "external".into());
            let pkt = Packet::new(*ip, target.ip, proto, SOURCE_PORT, target.port);
            leg.hops.push(Hop::new(
                &name,
                "source",
                format!(
                    "{} → {} leaves the external host via its default route to the fabric",
                    sock(*ip, SOURCE_PORT),
                    sock(target.ip, target.port)
                ),
                vec![],
            ));
            walker.fabric(pkt, leg)?
        }
    };
    Ok(summarise(world, query, target.port, endings))
}

/// The verdict over every candidate: delivered when every candidate is; otherwise the first
/// candidate that is not (a Service that loses some connections does not deliver).
fn summarise(world: &World, query: &Query, port: u16, endings: Vec<Ending>) -> TraceResult {
    let lead = endings
        .iter()
        .find(|e| e.verdict != Verdict::Delivered)
        .or(endings.first());
    let (verdict, reason, hops, service) = match lead {
        Some(e) => (
            e.verdict,
            e.reason.clone(),
            e.leg.hops.clone(),
            e.leg.service.clone(),
        ),
        None => (Verdict::Dropped, "no path".into(), Vec::new(), None),
    };
    let mut seen = BTreeSet::new();
    let mut endpoint_outcomes = Vec::new();
    for e in &endings {
        if let Some((ip, p)) = e.leg.endpoint {
            let text = sock(ip, p);
            if seen.insert(text.clone()) {
                endpoint_outcomes.push(EndpointOutcome {
                    endpoint: text,
                    pod: world.pod_by_ip(ip).map(|p| p.key()),
                    verdict: e.verdict,
                    reason: e.reason.clone(),
                });
            }
        }
    }
    endpoint_outcomes.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    let mut policies: Vec<PolicyHit> = Vec::new();
    for e in &endings {
        for p in &e.leg.policies {
            if !policies.contains(p) {
                policies.push(p.clone());
            }
        }
    }
    let service = service.or_else(|| endings.iter().find_map(|e| e.leg.service.clone()));
    let paths = endings
        .iter()
        .map(|e| {
            let mut nodes: Vec<String> = Vec::new();
            for a in &e.leg.arrivals {
                if nodes.last() != Some(&a.node) {
                    nodes.push(a.node.clone());
                }
            }
            PathSummary {
                endpoint: e.leg.endpoint.map(|(ip, p)| sock(ip, p)),
                verdict: e.verdict,
                nodes,
                arrivals: e.leg.arrivals.clone(),
                stop: e.leg.stop.clone(),
            }
        })
        .collect();
    TraceResult {
        from: describe_source(query),
        to: describe_destination(query),
        protocol: query.proto.as_str().into(),
        port,
        verdict,
        reason,
        hops,
        service,
        endpoints: endpoint_outcomes
            .iter()
            .map(|e| e.endpoint.clone())
            .collect(),
        endpoint_outcomes,
        policies: {
            let mut names: Vec<String> = policies.iter().map(|p| p.policy.clone()).collect();
            names.dedup();
            names.sort();
            names.dedup();
            names
        },
        policy_decisions: policies,
        paths,
    }
}
