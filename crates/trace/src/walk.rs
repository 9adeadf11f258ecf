//! The walk: a packet from its source through every node it crosses, hook by hook in the
//! kernel's order, with the routing decisions between them.
//!
//! At a node, a packet from a wire or a pod passes `prerouting` (service DNAT), the routing
//! decision on its (new) destination, then `input` (for the node itself) or `forward`
//! (NetworkPolicy) and `postrouting` (masquerade); a packet the node sends passes its routing
//! decision, `output` (service DNAT again) and `postrouting`. Routing reads the node plan: the
//! node's own addresses, its podCIDR (pods on the node bridge or their /32 routes), the routes to
//! remote podCIDRs (VXLAN device with its FDB and neighbour entries, or host-gw via the underlay),
//! the underlay subnet, and the default route via the fabric. The fabric routes the underlay,
//! the external subnet and the addresses of LoadBalancer/external IPs (as the lab's cloud load
//! balancer does); nothing else. Each node has its own conntrack: the packet arrives at the next
//! node as the first of a new connection, with no mark.
//!
//! Where numgen picks among endpoints the interpreter returns one path per candidate; the walk
//! follows each to its end.

use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_nft::interp::{HookVerdict, Packet, Ruleset};
use sarasa_nft::{Hook, Table};
use sarasa_plan::{RouteDev, NODE_BRIDGE};

use crate::env::NodeEnv;
use crate::explain::{explain, sock};
use crate::result::{Arrival, Hop, PolicyHit, ServiceHit, StopPoint, Verdict};
use crate::world::{local_addresses, NodeView, World};
use crate::TraceError;

/// A packet crosses at most this many nodes (a routing loop ends the walk).
const MAX_NODES: usize = 8;

/// One candidate path in progress.
#[derive(Debug, Clone, Default)]
pub(crate) struct Leg {
    pub hops: Vec<Hop>,
    pub policies: Vec<PolicyHit>,
    pub service: Option<ServiceHit>,
    pub endpoint: Option<(IpAddr, u16)>,
    /// The packet as each node sees it first.
    pub arrivals: Vec<Arrival>,
    /// The chain that dropped or rejected it.
    pub stop: Option<StopPoint>,
    nodes: usize,
}

/// One candidate path, ended.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    pub leg: Leg,
    pub verdict: Verdict,
    pub reason: String,
}

/// Where a routing decision sends a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// One of the node's own addresses.
    Local,
    /// A pod of this node's podCIDR, through `dev`.
    LocalPod { dev: String },
    /// A remote podCIDR over the VXLAN device.
    Vxlan {
        route: String,
        gateway: IpAddr,
        peer: String,
    },
    /// A remote podCIDR via the underlay (host-gw).
    HostGw { route: String, peer: String },
    /// Another node's VPC address: the default route to the fabric, which (as the VPC)
    /// routes the address to that node.
    Vpc { route: String, peer: String },
    /// A neighbour on the underlay.
    Underlay,
    /// Another cluster of the set, through this cluster's active gateway (at its underlay
    /// address).
    ClusterGateway { route: String, gateway: String },
    /// Another cluster of the set, into the cable (this node is the active gateway).
    Cable { route: String, cluster: String },
    /// The default route via the fabric.
    Default,
}

impl Next {
    fn summary(&self) -> String {
        match self {
            Next::Local => "one of the node's own addresses".into(),
            Next::LocalPod { dev } => format!("a pod on this node, via {dev}"),
            Next::Vxlan { peer, .. } => format!("{peer}'s podCIDR, over VXLAN"),
            Next::HostGw { peer, .. } => {
                format!("{peer}'s podCIDR, routed via its underlay address")
            }
            Next::Vpc { peer, .. } => {
                format!("{peer}'s VPC address, routed by the VPC to that node")
            }
            Next::Underlay => "on the underlay, directly".into(),
            Next::ClusterGateway { gateway, .. } => {
                format!("another cluster of the set, through the active gateway {gateway}")
            }
            Next::Cable { cluster, .. } => {
                format!("cluster {cluster}, into the cable (this node is the active gateway)")
            }
            Next::Default => "not in the cluster: default route to the fabric".into(),
        }
    }
}

fn arrival(node: &str, p: &Packet) -> Arrival {
    Arrival {
        node: node.to_string(),
        saddr: p.saddr,
        daddr: p.daddr,
        dport: p.dport,
    }
}

pub(crate) struct Walker<'w> {
    pub world: &'w World,
    /// Each node's base chains indexed once (by position in `world.nodes`), built on first use.
    rulesets: Vec<std::cell::OnceCell<Ruleset<'w>>>,
}

impl<'w> Walker<'w> {
    pub(crate) fn new(world: &'w World) -> Self {
        Walker {
            world,
            rulesets: world
                .nodes
                .iter()
                .map(|_| std::cell::OnceCell::new())
                .collect(),
        }
    }

    fn ruleset(&self, node: &'w NodeView) -> Option<&Ruleset<'w>> {
        let i = self
            .world
            .nodes
            .iter()
            .position(|n| std::ptr::eq(n, node))?;
        Some(self.rulesets[i].get_or_init(|| Ruleset::new(&node.plan.table_refs())))
    }
    fn end(mut leg: Leg, at: &str, verdict: Verdict, reason: String) -> Vec<Ending> {
        let kind = match verdict {
            Verdict::Delivered => "deliver",
            Verdict::Dropped => "drop",
            Verdict::Rejected => "reject",
        };
        if leg.hops.last().is_none_or(|h| h.kind != kind) {
            leg.hops
                .push(Hop::new(at, kind, reason.clone(), Vec::new()));
        }
        vec![Ending {
            leg,
            verdict,
            reason,
        }]
    }

    fn node(&self, name: &str) -> Result<&'w NodeView, TraceError> {
        self.world
            .node(name)
            .ok_or_else(|| TraceError::UnknownNode(name.to_string()))
    }

    /// The routing decision at `node` for `daddr`, with the interface it leaves through.
    fn route(&self, node: &NodeView, daddr: IpAddr) -> (Next, String, Vec<String>) {
        let plan = &node.plan;
        if local_addresses(node).contains(&daddr) || daddr.is_loopback() {
            return (Next::Local, "lo".into(), vec!["local address".into()]);
        }
        if let Some(cidr) = plan.fabric.pod_cidrs.iter().find(|c| c.contains(&daddr)) {
            let dev = match plan.cni.mode {
                sarasa_model::CniMode::Bridge => NODE_BRIDGE.to_string(),
                sarasa_model::CniMode::Routed => "the pod's veth".to_string(),
            };
            let cite = match plan.cni.mode {
                sarasa_model::CniMode::Bridge => {
                    format!("route {cidr} dev {NODE_BRIDGE} (the node bridge)")
                }
                sarasa_model::CniMode::Routed => {
                    format!("route {daddr}/32 dev <pod veth> (routed mode)")
                }
            };
            return (Next::LocalPod { dev: dev.clone() }, dev, vec![cite]);
        }
        let best = plan
            .fabric
            .fabric
            .routes
            .iter()
            .filter(|r| r.dst.contains(&daddr))
            .max_by_key(|r| r.dst.prefix_len());
        if let Some(r) = best {
            let peer = self
                .world
                .nodes
                .iter()
                .find(|n| n.plan.fabric.pod_cidrs.iter().any(|c| c.contains(&daddr)))
                .map(|n| n.name.clone())
                .unwrap_or_default();
            return match r.dev {
                RouteDev::Vxlan => {
                    let dev = plan
                        .fabric
                        .vxlan
                        .as_ref()
                        .map(|v| v.name.clone())
                        .unwrap_or_else(|| sarasa_plan::VXLAN_DEVICE.into());
                    let text = format!("route {} via {} dev {dev} onlink", r.dst, r.gateway);
                    (
                        Next::Vxlan {
                            route: text.clone(),
                            gateway: r.gateway,
                            peer,
                        },
                        dev,
                        vec![text],
                    )
                }
                _ => {
                    let text = format!("route {} via {} dev {}", r.dst, r.gateway, node.uplink);
                    (
                        Next::HostGw {
                            route: text.clone(),
                            peer,
                        },
                        node.uplink.clone(),
                        vec![text],
                    )
                }
            };
        }
        if plan.fabric.vpc.is_some() {
            let peer = self.world.nodes.iter().find(|n| {
                n.name != node.name && n.plan.fabric.pod_cidrs.iter().any(|c| c.contains(&daddr))
            });
            if let Some(peer) = peer {
                let text = format!(
                    "default via {} dev {}; the VPC routes {daddr}/32 to {}",
                    self.world.fabric.address, node.uplink, peer.name
                );
                let next = Next::Vpc {
                    route: text.clone(),
                    peer: peer.name.clone(),
                };
                return (next, node.uplink.clone(), vec![text]);
            }
        }
        if let Some(next) = self.cluster_set_route(node, daddr) {
            return next;
        }
        if self.world.fabric.underlay.contains(&daddr) {
            let text = format!(
                "route {} dev {} (underlay, on-link)",
                self.world.fabric.underlay, node.uplink
            );
            return (Next::Underlay, node.uplink.clone(), vec![text]);
        }
        let text = format!(
            "default via {} dev {}",
            self.world.fabric.address, node.uplink
        );
        (Next::Default, node.uplink.clone(), vec![text])
    }

    /// The routes the cluster-set gateway task keeps (`proto 84`): another cluster's range
    /// into the cable on the active gateway, to the active gateway elsewhere.
    fn cluster_set_route(
        &self,
        node: &NodeView,
        daddr: IpAddr,
    ) -> Option<(Next, String, Vec<String>)> {
        let set = self.world.cluster_set.as_ref()?;
        let remote = self.world.remote_cluster(daddr)?;
        let cidr = remote.cidrs.iter().find(|c| c.contains(&daddr))?;
        let gateway = set.active_gateway.as_ref()?;
        if *gateway == node.name {
            let dev = if set.cable == "vxlan" {
                "sarasa-cable"
            } else {
                "sarasa-wg"
            };
            let text = format!(
                "route {cidr} dev {dev} proto 84 (cluster {})",
                remote.cluster_id
            );
            return Some((
                Next::Cable {
                    route: text.clone(),
                    cluster: remote.cluster_id.clone(),
                },
                dev.to_string(),
                vec![text],
            ));
        }
        let gw = self.world.node(gateway)?;
        // The route agent's VXLAN to the gateway (IPv4 underlays), as the gateway task
        // builds it: vtep 240.b.c.d of underlay a.b.c.d.
        let (dev, text) = match gw.underlay_ip {
            IpAddr::V4(u) => {
                let o = u.octets();
                (
                    "sarasa-gw".to_string(),
                    format!(
                        "route {cidr} via 240.{}.{}.{} dev sarasa-gw onlink proto 84 (the active gateway {gateway}, over the route agent's VXLAN)",
                        o[1], o[2], o[3]
                    ),
                )
            }
            IpAddr::V6(_) => (
                node.uplink.clone(),
                format!(
                    "route {cidr} via {} dev {} proto 84 (the active gateway {gateway})",
                    gw.underlay_ip, node.uplink
                ),
            ),
        };
        Some((
            Next::ClusterGateway {
                route: text.clone(),
                gateway: gateway.clone(),
            },
            dev,
            vec![text],
        ))
    }

    /// Through the cable to another cluster's active gateway; the walk goes on in that
    /// cluster when its world is known (its hops named `<cluster>/<node>`).
    fn cross_cable(
        &self,
        node: &NodeView,
        pkt: Packet,
        mut leg: Leg,
        route: &str,
    ) -> Result<Vec<Ending>, TraceError> {
        let at = node.name.as_str();
        let set = self.world.cluster_set.as_ref();
        let Some(remote) = self.world.remote_cluster(pkt.daddr) else {
            return Ok(Self::end(
                leg,
                at,
                Verdict::Dropped,
                format!("{route}: no cluster of the set holds {}", pkt.daddr),
            ));
        };
        let cable = set.map(|s| s.cable.as_str()).unwrap_or("wireguard");
        let how = if cable == "vxlan" {
            "VXLAN VNI 4242, UDP port 4800, unencrypted"
        } else {
            "WireGuard, UDP port 4500, encrypted"
        };
        let far = remote
            .gateway_wan
            .map(|w| w.to_string())
            .unwrap_or_else(|| "(no gateway yet)".into());
        leg.hops.push(Hop::new(
            at,
            "cable",
            format!(
                "into the {cable} cable to cluster {}'s gateway {far} ({how}), from {}",
                remote.cluster_id, pkt.saddr
            ),
            vec![route.to_string()],
        ));
        let (Some(world), Some(gateway)) = (&remote.world, &remote.active_gateway) else {
            let reason = format!(
                "left through the cable to cluster {} (its side is not traced: its lab could not be read)",
                remote.cluster_id
            );
            return Ok(Self::end(leg, at, Verdict::Delivered, reason));
        };
        let mut pkt = pkt;
        pkt.mark = 0;
        pkt.ct = sarasa_nft::interp::CtState::New;
        pkt.ct_dnat = false;
        let from = leg.hops.len();
        let arrivals = leg.arrivals.len();
        let dev = if cable == "vxlan" {
            "sarasa-cable"
        } else {
            "sarasa-wg"
        };
        let mut endings = Walker::new(world).arrive_at_node(gateway, pkt, dev, leg)?;
        // The other cluster's nodes have the same names as ours: name them by cluster.
        let prefix = |name: &mut String| {
            if !name.starts_with("pod ") {
                *name = format!("{}/{name}", remote.cluster_id);
            } else {
                *name = format!("pod {}/{}", remote.cluster_id, &name[4..]);
            }
        };
        for e in &mut endings {
            for h in e.leg.hops.iter_mut().skip(from) {
                prefix(&mut h.at);
            }
            for a in e.leg.arrivals.iter_mut().skip(arrivals) {
                prefix(&mut a.node);
            }
            if let Some(st) = e.leg.stop.as_mut() {
                if world.node(&st.node).is_some() {
                    prefix(&mut st.node);
                }
            }
        }
        Ok(endings)
    }

    /// The source address a node picks for a packet it sends to `daddr`.
    fn source_address(&self, node: &NodeView, daddr: IpAddr) -> IpAddr {
        let v6 = daddr.is_ipv6();
        let fabric = &node.plan.fabric;
        let family = |a: &IpAddr| a.is_ipv6() == v6;
        let (next, _, _) = self.route(node, daddr);
        let picked = match next {
            Next::Local => Some(daddr),
            Next::LocalPod { .. } if node.plan.cni.mode == sarasa_model::CniMode::Bridge => fabric
                .pod_cidrs
                .iter()
                .filter_map(|c| crate::world::gateway(*c))
                .find(family),
            Next::Vxlan { .. } => fabric
                .vxlan
                .iter()
                .flat_map(|v| v.addresses.iter().map(IpNet::addr))
                .find(family),
            _ => None,
        };
        picked.unwrap_or(node.underlay_ip)
    }

    fn tables(node: &NodeView) -> Vec<&Table> {
        node.plan.table_refs()
    }

    /// Runs one hook and explains each resulting path; returns the paths that go on.
    fn hook(
        &self,
        node: &'w NodeView,
        hook: Hook,
        pkt: &Packet,
        leg: &Leg,
        endings: &mut Vec<Ending>,
    ) -> Result<Vec<(Packet, Leg)>, TraceError> {
        let tables = Self::tables(node);
        let env = NodeEnv::new(node);
        let ruleset = self
            .ruleset(node)
            .ok_or_else(|| TraceError::UnknownNode(node.name.clone()))?;
        let paths = ruleset
            .run_hook(hook, pkt, &env)
            .map_err(|e| TraceError::Interpreter {
                node: node.name.clone(),
                message: e.to_string(),
            })?;
        let mut out = Vec::new();
        for path in paths {
            let mut leg = leg.clone();
            let ex = explain(self.world, &node.name, hook, &tables, &path);
            leg.hops.extend(ex.hops);
            leg.policies.extend(ex.policies);
            if ex.service.is_some() && leg.service.is_none() {
                leg.service = ex.service;
            }
            if let Some((addr, port)) = path.dnat() {
                if leg.endpoint.is_none() {
                    leg.endpoint = Some((addr, port.unwrap_or(pkt.dport)));
                }
            }
            if path.verdict != HookVerdict::Accept {
                leg.stop = path.deciding_step().map(|st| StopPoint {
                    node: node.name.clone(),
                    table: st.table.clone(),
                    chain: st.chain.clone(),
                });
            }
            match path.verdict {
                HookVerdict::Accept => out.push((path.packet, leg)),
                HookVerdict::Drop => {
                    let reason = ex.refusal.unwrap_or_else(|| "dropped".into());
                    endings.extend(Self::end(leg, &node.name, Verdict::Dropped, reason));
                }
                HookVerdict::Reject(_) => {
                    let reason = ex.refusal.unwrap_or_else(|| "rejected".into());
                    endings.extend(Self::end(leg, &node.name, Verdict::Rejected, reason));
                }
            }
        }
        Ok(out)
    }

    /// A packet the node itself sends.
    pub(crate) fn sent_by_node(
        &self,
        name: &str,
        pkt: Packet,
        mut leg: Leg,
    ) -> Result<Vec<Ending>, TraceError> {
        let node = self.node(name)?;
        leg.nodes += 1;
        leg.arrivals.push(arrival(&node.name, &pkt));
        let (_, dev, cites) = self.route(node, pkt.daddr);
        leg.hops.push(Hop::new(
            &node.name,
            "source",
            format!(
                "node {} sends from {} (routing picks dev {dev})",
                node.name, pkt.saddr
            ),
            cites,
        ));
        let mut endings = Vec::new();
        let mut out = pkt.clone();
        out.oifname = Some(dev);
        for (pkt, leg) in self.hook(node, Hook::Output, &out, &leg, &mut endings)? {
            let (next, dev, cites) = self.route(node, pkt.daddr);
            if pkt.daddr != out.daddr {
                let mut leg = leg;
                leg.hops.push(Hop::new(
                    &node.name,
                    "route",
                    format!("rerouted after DNAT: {}", next.summary()),
                    cites.clone(),
                ));
                endings.extend(self.after_routing(node, pkt, leg, next, dev, true)?);
            } else {
                endings.extend(self.after_routing(node, pkt, leg, next, dev, true)?);
            }
        }
        Ok(endings)
    }

    /// A packet arriving at a node from a pod or a wire, through `iif`.
    pub(crate) fn arrive_at_node(
        &self,
        name: &str,
        mut pkt: Packet,
        iif: &str,
        mut leg: Leg,
    ) -> Result<Vec<Ending>, TraceError> {
        let node = self.node(name)?;
        leg.nodes += 1;
        if leg.nodes > MAX_NODES {
            return Ok(Self::end(
                leg,
                name,
                Verdict::Dropped,
                "routing loop: the packet crossed too many nodes".into(),
            ));
        }
        pkt.iifname = Some(iif.to_string());
        pkt.oifname = None;
        leg.arrivals.push(arrival(name, &pkt));
        let mut endings = Vec::new();
        for (pkt, mut leg) in self.hook(node, Hook::Prerouting, &pkt, &leg, &mut endings)? {
            let (next, dev, cites) = self.route(node, pkt.daddr);
            leg.hops.push(Hop::new(
                &node.name,
                "route",
                format!(
                    "routing decision for {}: {}",
                    self.world.describe(pkt.daddr),
                    next.summary()
                ),
                cites,
            ));
            endings.extend(self.after_routing(node, pkt, leg, next, dev, false)?);
        }
        Ok(endings)
    }

    /// After the routing decision: input for the node, else forward (for packets not sent by
    /// the node) and postrouting, then out of the interface.
    fn after_routing(
        &self,
        node: &'w NodeView,
        mut pkt: Packet,
        leg: Leg,
        next: Next,
        dev: String,
        local_origin: bool,
    ) -> Result<Vec<Ending>, TraceError> {
        let mut endings = Vec::new();
        if next == Next::Local {
            for (pkt, leg) in self.hook(node, Hook::Input, &pkt, &leg, &mut endings)? {
                let reason = format!(
                    "delivered to node {} itself ({})",
                    node.name,
                    sock(pkt.daddr, pkt.dport)
                );
                endings.extend(Self::end(leg, &node.name, Verdict::Delivered, reason));
            }
            return Ok(endings);
        }
        pkt.oifname = Some(dev);
        let forwarded = if local_origin {
            vec![(pkt, leg)]
        } else {
            self.hook(node, Hook::Forward, &pkt, &leg, &mut endings)?
        };
        for (pkt, leg) in forwarded {
            for (pkt, leg) in self.hook(node, Hook::Postrouting, &pkt, &leg, &mut endings)? {
                endings.extend(self.egress(node, pkt, leg, next.clone())?);
            }
        }
        Ok(endings)
    }

    /// Out of the node's interface towards `next`.
    fn egress(
        &self,
        node: &'w NodeView,
        pkt: Packet,
        mut leg: Leg,
        next: Next,
    ) -> Result<Vec<Ending>, TraceError> {
        let at = node.name.as_str();
        let reset = |mut p: Packet| {
            p.mark = 0;
            p.ct = sarasa_nft::interp::CtState::New;
            p.ct_dnat = false;
            p.oifname = None;
            p
        };
        match next {
            Next::Local => Ok(Self::end(
                leg,
                at,
                Verdict::Delivered,
                format!("delivered to node {at}"),
            )),
            Next::LocalPod { dev } => match self.world.pod_by_ip(pkt.daddr) {
                Some(pod) if pod.node.as_deref() == Some(at) => {
                    let reason = format!(
                        "delivered to pod {} ({}) via {dev}",
                        pod.key(),
                        sock(pkt.daddr, pkt.dport)
                    );
                    Ok(Self::end(
                        leg,
                        &format!("pod {}", pod.key()),
                        Verdict::Delivered,
                        reason,
                    ))
                }
                _ => Ok(Self::end(
                    leg,
                    at,
                    Verdict::Dropped,
                    format!(
                        "no pod on {at} holds {} (neighbour resolution on {dev} fails)",
                        pkt.daddr
                    ),
                )),
            },
            Next::Vxlan {
                route,
                gateway,
                peer,
            } => {
                let fabric = &node.plan.fabric;
                let mac = fabric
                    .fabric
                    .neighbours
                    .iter()
                    .find(|n| n.ip == gateway)
                    .map(|n| n.mac);
                let remote = mac.and_then(|m| fabric.fabric.fdb.iter().find(|f| f.mac == m));
                let (Some(mac), Some(fdb)) = (mac, remote) else {
                    return Ok(Self::end(
                        leg,
                        at,
                        Verdict::Dropped,
                        format!("{route}: no neighbour/FDB entry for {gateway}"),
                    ));
                };
                let vni = fabric
                    .vxlan
                    .as_ref()
                    .map(|v| v.vni)
                    .unwrap_or(sarasa_plan::VXLAN_VNI);
                let port = fabric
                    .vxlan
                    .as_ref()
                    .map(|v| v.port)
                    .unwrap_or(sarasa_plan::VXLAN_PORT);
                let Some(peer_node) = self.world.node_by_underlay(fdb.dst) else {
                    return Ok(Self::end(
                        leg,
                        at,
                        Verdict::Dropped,
                        format!("VXLAN peer {} is no node", fdb.dst),
                    ));
                };
                leg.hops.push(Hop::new(
                    at,
                    "encap",
                    format!(
                        "VXLAN VNI {vni}: inner frame to vtep {mac}, outer UDP {} → {}:{port} ({})",
                        node.underlay_ip, fdb.dst, peer_node.name
                    ),
                    vec![
                        format!(
                            "neigh {gateway} lladdr {mac} dev {}",
                            sarasa_plan::VXLAN_DEVICE
                        ),
                        format!(
                            "fdb {mac} dst {} dev {}",
                            fdb.dst,
                            sarasa_plan::VXLAN_DEVICE
                        ),
                    ],
                ));
                let _ = peer;
                let dev = peer_node
                    .plan
                    .fabric
                    .vxlan
                    .as_ref()
                    .map(|v| v.name.clone())
                    .unwrap_or_else(|| sarasa_plan::VXLAN_DEVICE.into());
                self.arrive_at_node(&peer_node.name.clone(), reset(pkt), &dev, leg)
            }
            Next::HostGw { route, peer } | Next::Vpc { route, peer } => {
                let how = if node.plan.fabric.vpc.is_some() {
                    "vpc"
                } else {
                    "host-gw"
                };
                leg.hops.push(Hop::new(
                    at,
                    "route",
                    format!("{how}: {route} (no encapsulation)"),
                    vec![route.clone()],
                ));
                let Some(peer_node) = self.world.node(&peer) else {
                    return Ok(Self::end(
                        leg,
                        at,
                        Verdict::Dropped,
                        format!("{route}: the gateway is no node"),
                    ));
                };
                let uplink = peer_node.uplink.clone();
                self.arrive_at_node(&peer, reset(pkt), &uplink, leg)
            }
            Next::Underlay => self.on_underlay(pkt.daddr, reset(pkt), leg, at),
            Next::ClusterGateway { route, gateway } => {
                leg.hops.push(Hop::new(
                    at,
                    "route",
                    format!("to the cluster set's active gateway: {route}"),
                    vec![route.clone()],
                ));
                let Some(gw) = self.world.node(&gateway) else {
                    return Ok(Self::end(
                        leg,
                        at,
                        Verdict::Dropped,
                        format!("{route}: the gateway is no node"),
                    ));
                };
                let iif = if gw.underlay_ip.is_ipv4() {
                    leg.hops.push(Hop::new(
                        at,
                        "encap",
                        format!(
                            "route agent's VXLAN VNI 4243: outer UDP {} → {}:4801 ({gateway})",
                            node.underlay_ip, gw.underlay_ip
                        ),
                        Vec::new(),
                    ));
                    "sarasa-gw".to_string()
                } else {
                    gw.uplink.clone()
                };
                self.arrive_at_node(&gateway, reset(pkt), &iif, leg)
            }
            Next::Cable { route, .. } => self.cross_cable(node, pkt, leg, &route),
            Next::Default => {
                leg.hops.push(Hop::new(
                    at,
                    "route",
                    format!(
                        "leaves {} towards the fabric ({}) from {}",
                        node.uplink, self.world.fabric.address, pkt.saddr
                    ),
                    Vec::new(),
                ));
                self.fabric(reset(pkt), leg)
            }
        }
    }

    /// A neighbour on the underlay: a node, or the fabric itself.
    fn on_underlay(
        &self,
        daddr: IpAddr,
        pkt: Packet,
        leg: Leg,
        at: &str,
    ) -> Result<Vec<Ending>, TraceError> {
        if let Some(n) = self.world.node_by_underlay(daddr) {
            let uplink = n.uplink.clone();
            let name = n.name.clone();
            return self.arrive_at_node(&name, pkt, &uplink, leg);
        }
        if daddr == self.world.fabric.address {
            let reason = format!(
                "delivered to the {} ({})",
                self.world.fabric.name,
                sock(daddr, pkt.dport)
            );
            return Ok(Self::end(
                leg,
                &self.world.fabric.name,
                Verdict::Delivered,
                reason,
            ));
        }
        Ok(Self::end(
            leg,
            at,
            Verdict::Dropped,
            format!("no host on the underlay answers for {daddr}"),
        ))
    }

    /// The fabric routes what reaches it.
    pub(crate) fn fabric(&self, pkt: Packet, mut leg: Leg) -> Result<Vec<Ending>, TraceError> {
        let f = &self.world.fabric;
        let at = f.name.clone();
        let daddr = pkt.daddr;
        if f.underlay.contains(&daddr) {
            leg.hops.push(Hop::new(
                &at,
                "route",
                format!("{daddr} is on the underlay {}", f.underlay),
                vec![format!("route {} dev underlay", f.underlay)],
            ));
            return self.on_underlay(daddr, pkt, leg, &at);
        }
        if let Some(ext) = f.external.as_ref().filter(|e| e.subnet.contains(&daddr)) {
            if ext.ip == daddr {
                let reason = format!("delivered to {} ({})", ext.name, sock(daddr, pkt.dport));
                return Ok(Self::end(leg, &ext.name, Verdict::Delivered, reason));
            }
            return Ok(Self::end(
                leg,
                &at,
                Verdict::Dropped,
                format!("no host on {} holds {daddr}", ext.subnet),
            ));
        }
        if let Some(via) = f.service_routes.get(&daddr) {
            let Some(n) = self.world.node_by_underlay(*via) else {
                return Ok(Self::end(
                    leg,
                    &at,
                    Verdict::Dropped,
                    format!("route {daddr} via {via}: no node there"),
                ));
            };
            leg.hops.push(Hop::new(
                &at,
                "route",
                format!(
                    "the cloud load balancer routes {daddr} to {} ({via})",
                    n.name
                ),
                vec![format!("route {daddr}/32 via {via} (fabric)")],
            ));
            let (name, uplink) = (n.name.clone(), n.uplink.clone());
            return self.arrive_at_node(&name, pkt, &uplink, leg);
        }
        Ok(Self::end(
            leg,
            &at,
            Verdict::Dropped,
            format!("the fabric has no route to {daddr} (pod and ClusterIP addresses are not routed outside the cluster)"),
        ))
    }

    /// Where the first packet starts.
    pub(crate) fn source_for_node(&self, name: &str, daddr: IpAddr) -> Result<IpAddr, TraceError> {
        Ok(self.source_address(self.node(name)?, daddr))
    }
}
