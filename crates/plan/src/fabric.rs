//! The fabric part of the node plan: how this node reaches the other nodes' podCIDRs (VXLAN
//! device, FDB, neighbours, routes), the pod MTU, and egress masquerade's inputs. Pure: the
//! same peers and local facts always give the same plan; the agent diffs it against netlink.
//!
//! Nodes are not trusted blindly: a remote Node whose podCIDR overlaps this node's, another
//! accepted node's, or an underlay address, or lies outside the cluster CIDRs, or whose
//! underlay address or VTEP MAC is special or already another node's, is left out of the plan
//! and reported ([`NodeConflict`]); if it was accepted before (`last_good`), its last good
//! entries stay programmed. Nodes that keep what they had are checked first, so a newcomer can
//! never take over an incumbent's podCIDR, address or MAC.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_model::{special_address, Backend, MacAddr};

use crate::PlanError;

/// The VXLAN device name (flannel's `flannel.1`).
pub const VXLAN_DEVICE: &str = "sarasa.1";
pub const VXLAN_VNI: u32 = 1;
/// The Linux-default VXLAN port flannel uses.
pub const VXLAN_PORT: u16 = 8472;
/// The node bridge the CNI plugin creates in bridge mode.
pub const NODE_BRIDGE: &str = "sarasa0";
/// The cluster-set cable devices of a gateway node: the VXLAN cable and the userspace
/// WireGuard cable's TUN device. Their MTU is below the pods', so TCP SYNs leaving through
/// them get their MSS clamped ([`Masquerade::clamp_mss`]).
pub const CABLE_DEVICES: [&str; 2] = ["sarasa-cable", "sarasa-wg"];
/// A gateway node's WAN link: the cables' underlay, and nothing else's.
pub const WAN_LINK: &str = "wan0";
/// The VXLAN cable's UDP port.
pub const CABLE_PORT: u16 = 4800;
/// The userspace WireGuard cable's UDP port.
pub const WIREGUARD_PORT: u16 = 4500;
/// The route agent's VXLAN port (every node of a cluster set to its active gateway, over the
/// uplink).
pub const ROUTE_AGENT_PORT: u16 = 4801;

/// Facts about this node that do not come from the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    pub backend: Backend,
    pub underlay_ip: IpAddr,
    pub uplink: String,
    pub uplink_mtu: u32,
    /// The vtep MAC of this node's VXLAN device (vxlan backend).
    pub vtep_mac: Option<MacAddr>,
    pub cluster_cidrs: Vec<IpNet>,
    /// The pod and Service ranges of the other clusters of its cluster set (their global
    /// CIDRs under GlobalNet): reached through the gateway with the pod's address kept, so
    /// never masqueraded.
    pub remote_cluster_cidrs: Vec<IpNet>,
    /// Under GlobalNet: this cluster's egress address of each family. Pods' packets leaving
    /// through a cable for the other clusters are SNATed to the one of their family (on the
    /// active gateway, which has the cable).
    pub global_egress: Vec<IpAddr>,
}

/// A node as the fabric sees it (this one included), from its Node object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerNode {
    pub name: String,
    pub pod_cidrs: Vec<IpNet>,
    /// The address other nodes tunnel or route to (`sarasa.io/public-ip`, else InternalIP).
    pub underlay_ip: Option<IpAddr>,
    /// `sarasa.io/vtep-mac`.
    pub vtep_mac: Option<MacAddr>,
    /// `sarasa.io/vpc-address-limit`: how many addresses the cloud gives this node at most
    /// (vpc backend; `pod_cidrs` are then the addresses it holds, as host prefixes).
    pub vpc_address_limit: Option<u32>,
}

/// Encapsulation overhead of VXLAN: outer IP + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub fn encap_overhead(backend: Backend, underlay: IpAddr) -> u32 {
    match (backend, underlay) {
        (Backend::HostGw | Backend::Bgp | Backend::Vpc, _) => 0,
        (Backend::Vxlan, IpAddr::V4(_)) => 20 + 8 + 8 + 14,
        (Backend::Vxlan, IpAddr::V6(_)) => 40 + 8 + 8 + 14,
    }
}

/// Which device a route leaves through (resolved to an ifindex when applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteDev {
    Vxlan,
    Uplink,
    /// A device that is neither (only seen when reading the kernel).
    Other(u32),
}

/// A route to a remote node's podCIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: IpAddr,
    pub dev: RouteDev,
    pub onlink: bool,
}

/// A VXLAN forwarding entry: inner MAC → outer destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub dst: IpAddr,
}

/// A permanent neighbour entry on the VXLAN device: remote gateway address → remote vtep MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: MacAddr,
}

/// The cross-node entries; also what is read back from the kernel to diff against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fabric {
    pub routes: BTreeSet<Route>,
    pub fdb: BTreeSet<FdbEntry>,
    pub neighbours: BTreeSet<Neighbour>,
}

/// The VXLAN device as it must exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    pub uplink: String,
    pub mtu: u32,
    /// The network address of each local podCIDR, as a host prefix (/32, /128).
    pub addresses: BTreeSet<IpNet>,
}

/// Egress masquerade: traffic from local pods to anything outside the cluster CIDRs; and,
/// in a cluster set, MSS clamping on the cable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub pod_cidrs: Vec<IpNet>,
    pub cluster_cidrs: Vec<IpNet>,
    /// The node is in a cluster set: TCP SYNs leaving through a cable device
    /// ([`CABLE_DEVICES`]) get their MSS lowered to what the route's MTU carries
    /// (Submariner's clamp-mss-to-pmtu), so connections across the cable need no
    /// fragmentation or PMTU discovery.
    pub clamp_mss: bool,
    /// Under GlobalNet: the cluster's pods reach the other clusters' global CIDRs from its
    /// egress address (one SNAT per family).
    pub global_snat: Vec<GlobalSnat>,
    /// The tunnels whose underlay UDP conntrack skips.
    pub untracked: Vec<UntrackedTunnel>,
}

/// A tunnel's underlay UDP, which conntrack skips (`notrack` before conntrack's hook, as
/// Cilium does for its tunnel port). It carries only encapsulated packets: conntrack sees
/// those once decapsulated (and NAT and NetworkPolicy act on them there), and no rule of
/// sarasa's acts on the outer packet. Tracking it cost 6% of the request/response rate
/// through a gateway (ARCHITECTURE.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrackedTunnel {
    /// The link the tunnel's packets cross.
    pub link: String,
    /// Its UDP destination ports.
    pub ports: Vec<u16>,
    /// Received packets are addressed to this address of the node (`None`: any arriving on
    /// the link, which carries nothing else).
    pub local: Option<IpAddr>,
    /// Sent packets go to these far ends (`None`: any leaving through the link). A list, so
    /// that a hostNetwork process's packet to a ClusterIP on the same port is still tracked
    /// (and DNATed).
    pub peers: Option<Vec<IpAddr>>,
}

/// GlobalNet's egress SNAT: packets from `from` (this cluster's pod ranges) to `to` (the other
/// clusters' global CIDRs) leaving through a cable device leave from `egress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalSnat {
    pub egress: IpAddr,
    pub from: Vec<IpNet>,
    pub to: Vec<IpNet>,
}

/// The vpc backend's view of this node's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcPool {
    /// The VPC's range for pod addresses (the cluster CIDRs).
    pub subnets: Vec<IpNet>,
    /// The node's address limit, once its agent has published it.
    pub address_limit: Option<u32>,
}

/// Why a Node is left out of the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConflictReason {
    /// Its podCIDR overlaps another node's or an underlay address, or is outside the cluster.
    PodCidr,
    /// Its underlay (VTEP) address or VTEP MAC is special or another node's.
    Vtep,
}

impl ConflictReason {
    /// The Event reason (`PodCIDRConflict`, `VTEPConflict`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictReason::PodCidr => "PodCIDRConflict",
            ConflictReason::Vtep => "VTEPConflict",
        }
    }
}

/// A remote Node refused by [`compile_trusted`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeConflict {
    pub node: String,
    pub reason: ConflictReason,
    /// What conflicts with what, for the Event and the log line.
    pub message: String,
    /// The node's previously accepted entries stay programmed.
    pub kept_last_good: bool,
}

/// The fabric part of a node's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricPlan {
    pub pod_cidrs: Vec<IpNet>,
    /// MTU for pod interfaces (CNI config) and the VXLAN device.
    pub mtu: u32,
    pub ipv6: bool,
    pub vxlan: Option<VxlanDevice>,
    pub fabric: Fabric,
    /// The remote podCIDRs' routes come from BGP (BIRD writes them, protocol bird), not from
    /// the agent: `fabric.routes` is what BGP should deliver.
    pub routes_by_bgp: bool,
    pub masquerade: Masquerade,
    /// Remote nodes that are programmed (have a podCIDR and what the backend needs).
    pub remote_nodes: usize,
    /// Remote nodes refused for a conflict, by name.
    pub refused: Vec<NodeConflict>,
    /// With the vpc backend: the VPC's pod range and this node's limit (`pod_cidrs` are the
    /// addresses the cloud assigned the node, as host prefixes).
    pub vpc: Option<VpcPool>,
    /// The remote nodes as programmed (a refused node's last good state): the `last_good` of
    /// the next [`compile_trusted`].
    pub accepted: BTreeMap<String, PeerNode>,
}

/// What accepted nodes (and this one) hold: nobody else may take it. Ordered maps, so each
/// check is a few lookups and one range scan, not a pass over every node (a plan of 5,000
/// nodes stays in milliseconds; see ARCHITECTURE.md).
#[derive(Default)]
struct Claims {
    /// podCIDRs (truncated) by network address then prefix.
    cidrs: BTreeMap<IpNet, String>,
    underlays: BTreeMap<IpAddr, String>,
    macs: BTreeMap<MacAddr, String>,
}

/// Every prefix of `addr` from /0 to `/len` (the claimed CIDRs that could contain it).
fn supernets(addr: IpAddr, len: u8) -> impl Iterator<Item = IpNet> {
    (0..=len).filter_map(move |l| IpNet::new(addr, l).ok().map(|n| n.trunc()))
}

/// The smallest and largest key of a network's span in an ordered map of networks.
fn span(c: &IpNet) -> (IpNet, IpNet) {
    let max = if c.addr().is_ipv4() { 32 } else { 128 };
    // Prefix lengths 0 and the family's maximum are always valid.
    let lo = IpNet::new(c.network(), 0).unwrap_or(*c);
    let hi = IpNet::new(c.broadcast(), max).unwrap_or(*c);
    (lo, hi)
}

impl Claims {
    fn add(&mut self, node: &PeerNode, underlay: IpAddr, mac: Option<MacAddr>) {
        for c in &node.pod_cidrs {
            self.cidrs.insert(c.trunc(), node.name.clone());
        }
        self.underlays.insert(underlay, node.name.clone());
        if let Some(m) = mac {
            self.macs.insert(m, node.name.clone());
        }
    }

    /// A claimed podCIDR that overlaps `c`.
    fn overlapping(&self, c: &IpNet) -> Option<(&IpNet, &String)> {
        let max = if c.addr().is_ipv4() { 32 } else { 128 };
        let (lo, hi) = span(c);
        // One inside `c` (its network address is in c's span) ...
        self.cidrs
            .range(lo..=hi)
            .find(|(o, _)| c.contains(&o.network()) && o.addr().is_ipv4() == c.addr().is_ipv4())
            // ... or one containing c.
            .or_else(|| {
                supernets(c.network(), c.prefix_len().min(max))
                    .find_map(|s| self.cidrs.get_key_value(&s))
            })
    }

    /// Why `node` (reaching it at `underlay`, with `mac` on vxlan) may not be programmed.
    fn check(
        &self,
        node: &PeerNode,
        underlay: IpAddr,
        mac: Option<MacAddr>,
        cluster_cidrs: &[IpNet],
    ) -> Result<(), (ConflictReason, String)> {
        use ConflictReason::{PodCidr, Vtep};
        for c in &node.pod_cidrs {
            let c = c.trunc();
            let family: Vec<&IpNet> = cluster_cidrs
                .iter()
                .filter(|k| k.addr().is_ipv4() == c.addr().is_ipv4())
                .collect();
            if !family.is_empty() && !family.iter().any(|k| k.trunc().contains(&c)) {
                return Err((PodCidr, format!("podCIDR {c} is outside the cluster CIDRs")));
            }
            if let Some((o, owner)) = self.overlapping(&c) {
                return Err((
                    PodCidr,
                    format!("podCIDR {c} overlaps podCIDR {o} of node {owner}"),
                ));
            }
            let covered = if c.contains(&underlay) {
                Some((&underlay, &node.name))
            } else {
                self.underlays
                    .range(c.network()..=c.broadcast())
                    .find(|(u, _)| c.contains(*u))
            };
            if let Some((u, owner)) = covered {
                return Err((
                    PodCidr,
                    format!("podCIDR {c} covers the underlay address {u} of node {owner}"),
                ));
            }
        }
        if let Some(kind) = special_address(underlay) {
            return Err((Vtep, format!("underlay address {underlay} is {kind}")));
        }
        if let Some(owner) = self.underlays.get(&underlay) {
            return Err((
                Vtep,
                format!("underlay address {underlay} is node {owner}'s"),
            ));
        }
        let host = if underlay.is_ipv4() { 32 } else { 128 };
        if let Some((c, owner)) =
            supernets(underlay, host).find_map(|s| self.cidrs.get_key_value(&s))
        {
            return Err((
                Vtep,
                format!("underlay address {underlay} is inside podCIDR {c} of node {owner}"),
            ));
        }
        if let Some(m) = mac {
            if !m.is_unicast() {
                return Err((Vtep, format!("VTEP MAC {m} is not a unicast address")));
            }
            if let Some(owner) = self.macs.get(&m) {
                return Err((Vtep, format!("VTEP MAC {m} is node {owner}'s")));
            }
        }
        Ok(())
    }
}

/// The fabric plan of `local` among `nodes` (which may include `local` itself), with no
/// history: see [`compile_trusted`].
pub fn compile(nodes: &[PeerNode], local: &LocalNode) -> Result<FabricPlan, PlanError> {
    compile_trusted(nodes, local, &BTreeMap::new())
}

/// The fabric plan of `local` among `nodes`; `last_good` is the previous plan's
/// [`FabricPlan::accepted`]: nodes unchanged since are checked first, then the others in the
/// order of `nodes` (of two nodes claiming the same thing, the earlier wins), and a node
/// refused now keeps its entries from there.
pub fn compile_trusted(
    nodes: &[PeerNode],
    local: &LocalNode,
    last_good: &BTreeMap<String, PeerNode>,
) -> Result<FabricPlan, PlanError> {
    let me = nodes
        .iter()
        .find(|n| n.name == local.name)
        .ok_or_else(|| PlanError::NoNode(local.name.clone()))?;
    if me.pod_cidrs.is_empty() {
        return Err(PlanError::NoPodCidr(local.name.clone()));
    }
    let pod_cidrs: Vec<IpNet> = me.pod_cidrs.iter().map(|c| c.trunc()).collect();
    let overhead = encap_overhead(local.backend, local.underlay_ip);
    let mtu = local
        .uplink_mtu
        .checked_sub(overhead)
        .filter(|m| *m >= 1280 || (*m >= 576 && pod_cidrs.iter().all(|c| c.addr().is_ipv4())))
        .ok_or(PlanError::MtuTooSmall {
            uplink_mtu: local.uplink_mtu,
            backend: local.backend.as_str(),
        })?;
    let ipv6 = pod_cidrs.iter().any(|c| c.addr().is_ipv6());

    let mut claims = Claims::default();
    let local_mac = match local.backend {
        Backend::Vxlan => local.vtep_mac,
        Backend::HostGw | Backend::Bgp | Backend::Vpc => None,
    };
    claims.add(me, local.underlay_ip, local_mac);
    // What each remote node needs to be programmed at all; a node without it is incomplete
    // (not yet published), not a conflict.
    let usable = |node: &PeerNode| -> Option<(IpAddr, Option<MacAddr>)> {
        if node.name == local.name || node.pod_cidrs.is_empty() {
            return None;
        }
        let underlay = node.underlay_ip?;
        match local.backend {
            Backend::Vxlan => {
                let mac = node.vtep_mac?;
                (underlay.is_ipv4() == local.underlay_ip.is_ipv4()).then_some((underlay, Some(mac)))
            }
            Backend::HostGw | Backend::Bgp | Backend::Vpc => Some((underlay, None)),
        }
    };
    // Incumbents (unchanged since the last plan) first, then the others in the order given
    // (the agent gives the oldest Node first: first come, first served).
    let mut order: Vec<&PeerNode> = nodes.iter().collect();
    order.sort_by_key(|n| last_good.get(&n.name) != Some(*n));
    let mut accepted: BTreeMap<String, PeerNode> = BTreeMap::new();
    let mut refused = Vec::new();
    for node in order {
        let Some((underlay, mac)) = usable(node) else {
            continue;
        };
        let Err((reason, message)) = claims.check(node, underlay, mac, &local.cluster_cidrs) else {
            claims.add(node, underlay, mac);
            accepted.insert(node.name.clone(), node.clone());
            continue;
        };
        let prev = last_good
            .get(&node.name)
            .filter(|p| *p != node)
            .and_then(|p| usable(p).map(|(u, m)| (p, u, m)))
            .filter(|(p, u, m)| claims.check(p, *u, *m, &local.cluster_cidrs).is_ok());
        if let Some((p, u, m)) = prev {
            claims.add(p, u, m);
            accepted.insert(p.name.clone(), p.clone());
        }
        refused.push(NodeConflict {
            node: node.name.clone(),
            reason,
            message,
            kept_last_good: prev.is_some(),
        });
    }
    refused.sort();

    let mut fabric = Fabric::default();
    let mut remote_nodes = 0;
    for node in accepted.values() {
        let Some((underlay, mac)) = usable(node) else {
            continue;
        };
        match local.backend {
            Backend::Vxlan => {
                let Some(mac) = mac else {
                    continue;
                };
                fabric.fdb.insert(FdbEntry { mac, dst: underlay });
                for cidr in &node.pod_cidrs {
                    let cidr = cidr.trunc();
                    let gateway = cidr.network();
                    fabric.neighbours.insert(Neighbour { ip: gateway, mac });
                    fabric.routes.insert(Route {
                        dst: cidr,
                        gateway,
                        dev: RouteDev::Vxlan,
                        onlink: true,
                    });
                }
            }
            // With bgp these are the routes BGP is to deliver: BIRD installs them (protocol
            // bird); the agent only checks them (`lab check`) and trace explains them.
            Backend::HostGw | Backend::Bgp => {
                for cidr in &node.pod_cidrs {
                    let cidr = cidr.trunc();
                    if cidr.addr().is_ipv4() != underlay.is_ipv4() {
                        continue;
                    }
                    fabric.routes.insert(Route {
                        dst: cidr,
                        gateway: underlay,
                        dev: RouteDev::Uplink,
                        onlink: false,
                    });
                }
            }
            // The VPC routes every pod address to its node: nothing to write on this one.
            Backend::Vpc => {}
        }
        remote_nodes += 1;
    }

    let vxlan = match local.backend {
        Backend::HostGw | Backend::Bgp | Backend::Vpc => None,
        Backend::Vxlan => {
            if local.vtep_mac.is_none() {
                return Err(PlanError::NoVtepMac);
            }
            Some(VxlanDevice {
                name: VXLAN_DEVICE.into(),
                vni: VXLAN_VNI,
                port: VXLAN_PORT,
                local: local.underlay_ip,
                uplink: local.uplink.clone(),
                mtu,
                addresses: pod_cidrs.iter().map(|c| IpNet::from(c.network())).collect(),
            })
        }
    };

    let untracked = untracked_tunnels(local, &accepted);
    let cluster_cidrs: Vec<IpNet> = local.cluster_cidrs.iter().map(|c| c.trunc()).collect();
    Ok(FabricPlan {
        masquerade: Masquerade {
            // With vpc the node's addresses come and go with its warm pool; every pod address
            // is inside the cluster CIDRs (the VPC's pod range), so the rule does not change.
            pod_cidrs: if local.backend == Backend::Vpc {
                cluster_cidrs.clone()
            } else {
                pod_cidrs.clone()
            },
            cluster_cidrs: cluster_cidrs
                .iter()
                .chain(&local.remote_cluster_cidrs)
                .map(|c| c.trunc())
                .collect(),
            clamp_mss: !local.remote_cluster_cidrs.is_empty(),
            global_snat: local
                .global_egress
                .iter()
                .filter(|_| !local.remote_cluster_cidrs.is_empty())
                .map(|&egress| GlobalSnat {
                    egress,
                    from: cluster_cidrs.clone(),
                    to: local
                        .remote_cluster_cidrs
                        .iter()
                        .map(|c| c.trunc())
                        .collect(),
                })
                .collect(),
            untracked,
        },
        pod_cidrs,
        mtu,
        ipv6,
        vxlan,
        fabric,
        routes_by_bgp: local.backend == Backend::Bgp,
        remote_nodes,
        refused,
        accepted,
        vpc: (local.backend == Backend::Vpc).then(|| VpcPool {
            subnets: local.cluster_cidrs.iter().map(|c| c.trunc()).collect(),
            address_limit: me.vpc_address_limit,
        }),
    })
}

/// This node's tunnels: the in-cluster VXLAN (vxlan backend) and, in a cluster set, the route
/// agent's VXLAN over the uplink, to and from the other nodes; the cables over the WAN link.
fn untracked_tunnels(
    local: &LocalNode,
    accepted: &BTreeMap<String, PeerNode>,
) -> Vec<UntrackedTunnel> {
    let in_set = !local.remote_cluster_cidrs.is_empty();
    let mut ports = Vec::new();
    if local.backend == Backend::Vxlan {
        ports.push(VXLAN_PORT);
    }
    if in_set {
        ports.push(ROUTE_AGENT_PORT);
    }
    ports.sort_unstable();
    let mut out = Vec::new();
    if !ports.is_empty() {
        let peers: BTreeSet<IpAddr> = accepted
            .values()
            .filter_map(|n| n.underlay_ip)
            .filter(|ip| ip.is_ipv4() == local.underlay_ip.is_ipv4())
            .collect();
        out.push(UntrackedTunnel {
            link: local.uplink.clone(),
            ports,
            local: Some(local.underlay_ip),
            peers: Some(peers.into_iter().collect()),
        });
    }
    if in_set {
        out.push(UntrackedTunnel {
            link: WAN_LINK.into(),
            ports: vec![WIREGUARD_PORT, CABLE_PORT],
            local: None,
            peers: None,
        });
    }
    out
}

impl FabricPlan {
    /// The node's CNI conflist for this plan.
    pub fn conflist(&self, mode: sarasa_model::CniMode, ipam_data_dir: &std::path::Path) -> String {
        match &self.vpc {
            Some(vpc) => crate::cni::render_vpc(&self.pod_cidrs, vpc, self.mtu, ipam_data_dir),
            None => crate::cni::render(&self.pod_cidrs, mode, self.mtu, ipam_data_dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    fn peer(name: &str, cidr: Option<&str>, ip: &str, vtep: Option<MacAddr>) -> PeerNode {
        PeerNode {
            name: name.into(),
            pod_cidrs: cidr.map(|c| c.parse().unwrap()).into_iter().collect(),
            underlay_ip: Some(ip.parse().unwrap()),
            vtep_mac: vtep,
            vpc_address_limit: None,
        }
    }

    fn local(backend: Backend) -> LocalNode {
        LocalNode {
            name: "n1".into(),
            backend,
            underlay_ip: "192.168.33.11".parse().unwrap(),
            uplink: "eth0".into(),
            uplink_mtu: 1500,
            vtep_mac: Some(mac(1)),
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            remote_cluster_cidrs: Vec::new(),
            global_egress: Vec::new(),
        }
    }

    fn three() -> Vec<PeerNode> {
        vec![
            peer("n1", Some("10.244.1.0/24"), "192.168.33.11", Some(mac(1))),
            peer("n2", Some("10.244.2.0/24"), "192.168.33.12", Some(mac(2))),
            peer("n3", Some("10.244.3.0/24"), "192.168.33.13", Some(mac(3))),
        ]
    }

    #[test]
    fn vxlan_is_flannels_layout() {
        let plan = compile(&three(), &local(Backend::Vxlan)).unwrap();
        assert_eq!(plan.mtu, 1450);
        assert_eq!(plan.remote_nodes, 2);
        let route = plan.fabric.routes.iter().next().unwrap();
        assert_eq!(route.dst.to_string(), "10.244.2.0/24");
        assert_eq!(route.gateway.to_string(), "10.244.2.0");
        assert!(route.onlink && route.dev == RouteDev::Vxlan);
        assert!(plan.fabric.fdb.contains(&FdbEntry {
            mac: mac(3),
            dst: "192.168.33.13".parse().unwrap()
        }));
        assert_eq!(
            plan.vxlan
                .unwrap()
                .addresses
                .iter()
                .next()
                .unwrap()
                .to_string(),
            "10.244.1.0/32"
        );
    }

    #[test]
    fn host_gw_routes_via_underlay_and_errors_name_the_node() {
        let plan = compile(&three(), &local(Backend::HostGw)).unwrap();
        assert!(plan.vxlan.is_none() && plan.fabric.fdb.is_empty());
        let gws: Vec<String> = plan
            .fabric
            .routes
            .iter()
            .map(|r| r.gateway.to_string())
            .collect();
        assert_eq!(gws, ["192.168.33.12", "192.168.33.13"]);
        let no_cidr = [peer("n1", None, "192.168.33.11", None)];
        assert_eq!(
            compile(&no_cidr, &local(Backend::HostGw)),
            Err(PlanError::NoPodCidr("n1".into()))
        );
        assert_eq!(
            compile(&[], &local(Backend::HostGw)),
            Err(PlanError::NoNode("n1".into()))
        );
    }

    fn routes(plan: &FabricPlan) -> Vec<(String, String)> {
        plan.fabric
            .routes
            .iter()
            .map(|r| (r.dst.to_string(), r.gateway.to_string()))
            .collect()
    }

    #[test]
    fn forged_node_cannot_take_another_nodes_pod_cidr() {
        let mut nodes = three();
        // Listed after n2 (younger), and refused either way once n2 is an incumbent.
        nodes.insert(
            0,
            peer(
                "a-forged",
                Some("10.244.2.0/24"),
                "192.168.33.66",
                Some(mac(66)),
            ),
        );
        let first = compile(&three(), &local(Backend::Vxlan)).unwrap();
        let plan = compile_trusted(&nodes, &local(Backend::Vxlan), &first.accepted).unwrap();
        assert_eq!(plan.fabric, first.fabric, "n2 keeps its podCIDR");
        assert_eq!(plan.refused.len(), 1);
        let c = &plan.refused[0];
        assert_eq!(
            (c.node.as_str(), c.reason.as_str()),
            ("a-forged", "PodCIDRConflict")
        );
        assert!(c.message.contains("node n2"), "{}", c.message);
        // Nor this node's own podCIDR, nor a supernet of it, without any history.
        for cidr in ["10.244.1.0/24", "10.244.0.0/16", "10.244.1.0/25"] {
            let mut nodes = three();
            nodes.push(peer("x", Some(cidr), "192.168.33.66", Some(mac(66))));
            let plan = compile(&nodes, &local(Backend::Vxlan)).unwrap();
            assert_eq!(plan.fabric, first.fabric, "{cidr}");
            assert_eq!(plan.refused[0].reason, ConflictReason::PodCidr, "{cidr}");
        }
    }

    #[test]
    fn pod_cidr_over_the_underlay_or_outside_the_cluster_is_refused() {
        let local = LocalNode {
            cluster_cidrs: vec![
                "10.244.0.0/16".parse().unwrap(),
                "192.168.0.0/16".parse().unwrap(),
            ],
            ..local(Backend::HostGw)
        };
        for cidr in ["192.168.33.0/24", "172.16.0.0/24", "0.0.0.0/0"] {
            let mut nodes = three();
            nodes.push(peer("x", Some(cidr), "192.168.33.66", None));
            let plan = compile(&nodes, &local).unwrap();
            assert_eq!(plan.remote_nodes, 2, "{cidr}");
            assert_eq!(plan.refused[0].reason, ConflictReason::PodCidr, "{cidr}");
        }
    }

    #[test]
    fn zero_duplicate_or_multicast_vtep_and_special_underlay_are_refused() {
        let cases = [
            ("10.244.4.0/24", "192.168.33.14", MacAddr([0; 6])),
            ("10.244.4.0/24", "192.168.33.14", MacAddr([0xff; 6])),
            ("10.244.4.0/24", "192.168.33.14", mac(2)),
            ("10.244.4.0/24", "192.168.33.14", mac(1)),
            ("10.244.4.0/24", "192.168.33.12", mac(4)),
            ("10.244.4.0/24", "192.168.33.11", mac(4)),
            ("10.244.4.0/24", "127.0.0.1", mac(4)),
            ("10.244.4.0/24", "10.244.2.7", mac(4)),
        ];
        let good = compile(&three(), &local(Backend::Vxlan)).unwrap();
        for (cidr, ip, m) in cases {
            let mut nodes = three();
            nodes.push(peer("n4", Some(cidr), ip, Some(m)));
            let plan = compile(&nodes, &local(Backend::Vxlan)).unwrap();
            assert_eq!(plan.fabric, good.fabric, "{ip} {m}");
            assert_eq!(plan.refused.len(), 1, "{ip} {m}");
            assert_eq!(plan.refused[0].reason, ConflictReason::Vtep, "{ip} {m}");
        }
        // A fine n4 is programmed.
        let mut nodes = three();
        nodes.push(peer(
            "n4",
            Some("10.244.4.0/24"),
            "192.168.33.14",
            Some(mac(4)),
        ));
        let plan = compile(&nodes, &local(Backend::Vxlan)).unwrap();
        assert!(plan.refused.is_empty());
        assert_eq!(plan.remote_nodes, 3);
    }

    #[test]
    fn a_node_turning_bad_keeps_its_last_good_entries() {
        let first = compile(&three(), &local(Backend::Vxlan)).unwrap();
        let mut nodes = three();
        nodes[2].vtep_mac = Some(mac(2)); // n3 now claims n2's MAC
        let plan = compile_trusted(&nodes, &local(Backend::Vxlan), &first.accepted).unwrap();
        assert_eq!(plan.fabric, first.fabric);
        assert!(plan.refused[0].kept_last_good);
        assert_eq!(
            plan.accepted, first.accepted,
            "the last good state carries on"
        );
        // Without history it is simply left out.
        let plan = compile(&nodes, &local(Backend::Vxlan)).unwrap();
        assert_eq!(
            routes(&plan),
            [("10.244.2.0/24".into(), "10.244.2.0".into())]
        );
        assert!(!plan.refused[0].kept_last_good);
    }
}
