//! The cluster-set gateway (issue 12), Submariner's gateway engine and route agent in one
//! task. Nodes labelled `sarasa.io/gateway=true` that have a WAN link (`wan0`) are gateway
//! candidates; one of them holds the Lease `sarasa-system/sarasa-gateway` and is active. The
//! active gateway publishes its WAN address and WireGuard public key on its Node
//! (`sarasa.io/gateway-ip`, `sarasa.io/gateway-public-key`, which the cluster-set sync carries
//! to the other clusters) and terminates the cable to every other cluster's active gateway,
//! of the set's kind:
//! - `wireguard` (the default): the userspace WireGuard of [`crate::wireguard`], a TUN device
//!   `sarasa-wg` and one encrypted peer per other gateway;
//! - `vxlan`: a VXLAN device `sarasa-cable` on its WAN link with one peer per other gateway
//!   (each end's vtep address and MAC derived from its WAN address, so nothing else is
//!   exchanged).
//!
//! Either device carries the vtep address 241.b.c.d (for status probes), and the gateway routes
//! the other clusters' pod and Service ranges into it. Every other node routes those
//! ranges to the active gateway. The routes carry their own protocol number
//! ([`ROUTE_PROTOCOL`]), so the fabric's diff and this one never touch each other's; the other
//! clusters' ranges go to the node plan, which leaves them unmasqueraded (the source pod address
//! is kept end to end). The other clusters come from the ConfigMap the sync writes
//! ([`sarasa_model::clusterset`]).
//!
//! Every node of a set also has the route agent's VXLAN (`sarasa-gw`, Submariner's
//! `vx-submariner`), which the nodes that are not the active gateway reach it through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use sarasa_model::clusterset::{
    CableKind, RemoteCluster, CONFIGMAP_CABLE_KEY, CONFIGMAP_GLOBAL_KEY, CONFIGMAP_KEY,
    CONFIGMAP_NAME, CONFIGMAP_NAMESPACE,
};
use sarasa_model::MacAddr;
use sarasa_netns::{Netlink, Route, VxlanSpec, TABLE_MAIN};

use crate::error::{Error, Result};
use crate::netns::NetnsTarget;
use crate::wireguard;

pub const GATEWAY_LABEL: &str = "sarasa.io/gateway";
pub const GATEWAY_LEASE: &str = "sarasa-gateway";
pub const ANNOTATION_GATEWAY_IP: &str = "sarasa.io/gateway-ip";
pub const ANNOTATION_GATEWAY_KEY: &str = "sarasa.io/gateway-public-key";
pub use sarasa_plan::{CABLE_PORT, ROUTE_AGENT_PORT, WAN_LINK};
pub const CABLE_DEVICE: &str = "sarasa-cable";
pub const CABLE_VNI: u32 = 4242;
/// `proto 84`: routes to the other clusters of the set.
pub const ROUTE_PROTOCOL: u8 = 84;
/// The route agent's VXLAN (Submariner's `vx-submariner`): every node of a set has it; the
/// nodes that are not the active gateway send the other clusters' traffic through it to the
/// gateway, so that traffic crosses the underlay as the underlay's own (a cloud network that
/// checks source and destination addresses carries it).
pub const ROUTE_AGENT_DEVICE: &str = "sarasa-gw";
pub const ROUTE_AGENT_VNI: u32 = 4243;
const LEASE_SECONDS: i32 = 3;
/// How often the active gateway renews the Lease (a third of its duration).
const RENEW: Duration = Duration::from_secs(1);
/// After a failed pass, the next one.
const RETRY: Duration = Duration::from_millis(300);
/// A pass now and then even when nothing was watched to change (the kernel side may have).
const RESYNC: Duration = Duration::from_secs(30);
/// VXLAN over IPv4: outer IP, UDP, VXLAN and inner Ethernet headers.
const CABLE_OVERHEAD: u32 = 50;

/// A cable end's vtep address: 241.b.c.d for WAN address a.b.c.d (class E space, never on a
/// wire; unique per member because the WAN is one /24).
pub fn vtep_ip(wan: Ipv4Addr) -> Ipv4Addr {
    let o = wan.octets();
    Ipv4Addr::new(241, o[1], o[2], o[3])
}

/// A node's route-agent vtep address: 240.b.c.d for underlay address a.b.c.d (as Submariner
/// derives it; nothing is exchanged).
pub fn route_agent_ip(underlay: Ipv4Addr) -> Ipv4Addr {
    let o = underlay.octets();
    Ipv4Addr::new(240, o[1], o[2], o[3])
}

/// The IPv6 twin of a vtep address (a cable end's or a route agent's), for the routes of a
/// dual-stack cluster's IPv6 ranges through the same VXLAN device: the IPv4 vtep in the low
/// 32 bits of fd00:24::/96 (unique local, on no wire).
pub fn vtep_ip6(vtep: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(VTEP6_PREFIX) | u128::from(u32::from(vtep)))
}

const VTEP6_PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x24, 0, 0, 0, 0, 0, 0);
const VTEP6_PREFIX_LEN: u8 = 96;

/// The next hop of a route to `dst` at the vtep `vtep`: itself, or its IPv6 twin for an IPv6
/// destination.
fn vtep_hop(dst: &IpNet, vtep: Ipv4Addr) -> IpAddr {
    match dst {
        IpNet::V4(_) => IpAddr::V4(vtep),
        IpNet::V6(_) => IpAddr::V6(vtep_ip6(vtep)),
    }
}

/// A node's route-agent vtep MAC: the underlay address in the low four bytes.
pub fn route_agent_mac(underlay: Ipv4Addr) -> MacAddr {
    let o = underlay.octets();
    MacAddr([0x02, 0x5b, o[0], o[1], o[2], o[3]])
}

/// A cable end's vtep MAC: locally administered, the WAN address in the low four bytes.
pub fn vtep_mac(wan: Ipv4Addr) -> MacAddr {
    let o = wan.octets();
    MacAddr([0x02, 0x5a, o[0], o[1], o[2], o[3]])
}

/// Where a remote range is routed from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Into the cable, to the other cluster's gateway with this WAN address.
    Cable(Ipv4Addr),
    /// To this cluster's active gateway, at its underlay address.
    Gateway(IpAddr),
    /// On the active gateway, behind its cable ([`FALLBACK_METRIC`]): to another gateway
    /// candidate. The WireGuard cable lives in the agent's process, so when that agent stops,
    /// the device and the routes through it go, and this node's own pods reach the other
    /// clusters through the candidate that takes over.
    Fallback(IpAddr),
}

/// The metric of [`Via::Fallback`] routes. The cable's have none, so they win while it
/// exists: the kernel's default is 0 for IPv4 and 1024 for IPv6, both below it.
pub const FALLBACK_METRIC: u32 = 2048;

/// The far end of a cable: another cluster's active gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarEnd {
    pub wan: Ipv4Addr,
    /// Its WireGuard public key (wireguard cables only).
    pub public_key: Option<[u8; 32]>,
    /// What it may send and receive: its cluster's ranges and its vtep address.
    pub allowed: Vec<IpNet>,
}

/// This node's cable when it is the active gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CableEnd {
    pub kind: CableKind,
    pub wan: Ipv4Addr,
    pub peers: Vec<FarEnd>,
}

/// What this node's part of the cluster set is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// This node is the active gateway: its cable.
    pub cable: Option<CableEnd>,
    pub routes: Vec<(IpNet, Via)>,
    /// The route agent's VXLAN on this node (in a set, with an IPv4 underlay).
    pub route_agent: Option<RouteAgent>,
}

/// This node's end of the route agent's VXLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAgent {
    /// This node's underlay address and uplink.
    pub local: Ipv4Addr,
    pub uplink: String,
    /// The active gateway's underlay address, when it is another node.
    pub gateway: Option<Ipv4Addr>,
}

/// The other clusters and the set's cable kind, as the ConfigMap says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetView {
    pub cable: CableKind,
    pub remotes: Vec<RemoteCluster>,
    /// Under GlobalNet, this cluster's global CIDRs (IPv4 first).
    pub global_cidrs: Vec<IpNet>,
}

/// What the node plan takes from the cluster set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetRanges {
    /// The other clusters' ranges (their global CIDRs under GlobalNet).
    pub remote: Vec<IpNet>,
    /// Under GlobalNet, this cluster's egress address of each family.
    pub global_egress: Vec<IpAddr>,
}

impl SetView {
    pub fn ranges(&self) -> SetRanges {
        SetRanges {
            remote: self.remotes.iter().flat_map(|r| r.cidrs()).collect(),
            global_egress: self
                .global_cidrs
                .iter()
                .filter_map(|g| sarasa_model::clusterset::global_egress_ip(*g))
                .collect(),
        }
    }
}

/// The other cluster's gateway, when it can be cabled to: it has a WAN address (and, for
/// WireGuard, a public key that parses; a bad one is reported and the cluster left out).
fn far_end(r: &RemoteCluster, kind: CableKind) -> Option<FarEnd> {
    let Some(IpAddr::V4(wan)) = r.gateway_ip else {
        return None;
    };
    let public_key = match kind {
        CableKind::Vxlan => None,
        CableKind::Wireguard => {
            let text = r.gateway_public_key.as_deref()?;
            match wireguard::parse_public_key(
                text,
                &format!("cluster {}'s gateway key", r.cluster_id),
            ) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster-set gateway");
                    return None;
                }
            }
        }
    };
    let vtep = IpNet::V4(Ipv4Net::new(vtep_ip(wan), 32).expect("constant prefix"));
    Some(FarEnd {
        wan,
        public_key,
        allowed: r.cidrs().into_iter().chain([vtep]).collect(),
    })
}

/// Who this node routes the other clusters through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// This node is the active gateway, with this WAN address; `standby` is another gateway
    /// candidate's underlay address, if there is one (`standby_v6` its IPv6 one, in a
    /// dual-stack cluster: the fallback of the IPv6 ranges).
    Active {
        wan: Ipv4Addr,
        standby: Option<IpAddr>,
        standby_v6: Option<IpAddr>,
    },
    /// Another node is, at this underlay address.
    Behind(IpAddr),
    /// No gateway is active.
    #[default]
    None,
}

/// The desired state from the other clusters and this node's role.
pub fn desired(set: &SetView, role: Role) -> Desired {
    let remotes = &set.remotes;
    let mut d = Desired::default();
    if let Role::Active {
        wan,
        standby,
        standby_v6,
    } = role
    {
        let mut peers: Vec<FarEnd> = Vec::new();
        for r in remotes {
            let Some(end) = far_end(r, set.cable) else {
                continue;
            };
            for c in r.cidrs() {
                d.routes.push((c, Via::Cable(end.wan)));
                let fallback = if c.addr().is_ipv4() {
                    standby
                } else {
                    standby_v6
                };
                if let Some(s) = fallback {
                    d.routes.push((c, Via::Fallback(s)));
                }
            }
            if !peers.iter().any(|p| p.wan == end.wan) {
                peers.push(end);
            }
        }
        peers.sort_by_key(|p| p.wan);
        d.cable = Some(CableEnd {
            kind: set.cable,
            wan,
            peers,
        });
    } else if let Role::Behind(gw) = role {
        for r in remotes {
            d.routes
                .extend(r.cidrs().into_iter().map(|c| (c, Via::Gateway(gw))));
        }
    }
    d
}

fn nl_err(op: &str) -> impl FnOnce(sarasa_netns::Error) -> Error + '_ {
    move |e| Error::netlink(op, e)
}

/// This node's WAN address, if it has a WAN link that is up (a node whose uplink is cut stops
/// renewing the Lease, and the standby takes over).
fn wan_address(nl: &mut Netlink) -> Result<Option<(Ipv4Addr, u32, u32)>> {
    let Some(link) = nl.link_by_name(WAN_LINK).map_err(nl_err("get wan0"))? else {
        return Ok(None);
    };
    if !link.up {
        return Ok(None);
    }
    let addr = nl
        .addrs(Some(link.index), None)
        .map_err(nl_err("dump wan0 addresses"))?
        .into_iter()
        .find_map(|a| match a.net.addr() {
            IpAddr::V4(v4) => Some(v4),
            _ => None,
        });
    Ok(addr.map(|a| (a, link.index, link.mtu)))
}

/// A VXLAN device of the gateway task (the cable, the route agent's): recreated when its MAC
/// is not `spec`'s, given `vtep` (a /8) and brought up; its FDB and neighbours are then the
/// `peers` (underlay address, vtep address, MAC) and nothing else. Returns its index.
fn ensure_vxlan(
    nl: &mut Netlink,
    spec: &VxlanSpec,
    vtep: Ipv4Addr,
    peers: &[(Ipv4Addr, Ipv4Addr, MacAddr)],
) -> Result<u32> {
    let name = spec.name.as_str();
    let link = match nl
        .link_by_name(name)
        .map_err(nl_err("get a VXLAN device"))?
    {
        Some(l) if l.mac == spec.mac => l,
        other => {
            if let Some(l) = other {
                nl.delete_link(l.index)
                    .map_err(nl_err("delete a VXLAN device"))?;
            }
            nl.add_vxlan(spec).map_err(nl_err("add a VXLAN device"))?;
            nl.link_by_name(name)
                .map_err(nl_err("get a VXLAN device"))?
                .ok_or_else(|| Error::Config(format!("{name} vanished")))?
        }
    };
    address_and_up(nl, &link, vtep, None)?;
    for f in nl.fdbs(link.index).map_err(nl_err("dump a VXLAN fdb"))? {
        let keep = matches!(f.dst, Some(IpAddr::V4(d)) if peers.iter().any(|(u, _, m)| *u == d && *m == f.mac));
        if let (false, Some(dst)) = (keep, f.dst) {
            let _ = nl.fdb_del(link.index, f.mac, dst);
        }
    }
    for (underlay, peer_vtep, mac) in peers {
        nl.fdb_replace(link.index, *mac, IpAddr::V4(*underlay))
            .map_err(nl_err("VXLAN fdb"))?;
        nl.neigh_add(link.index, IpAddr::V4(*peer_vtep), *mac)
            .map_err(nl_err("VXLAN neighbour"))?;
        nl.neigh_add(link.index, IpAddr::V6(vtep_ip6(*peer_vtep)), *mac)
            .map_err(nl_err("VXLAN neighbour"))?;
    }
    Ok(link.index)
}

/// The VXLAN cable: the device on the WAN link, its vtep address, and one fdb entry and
/// neighbour per far end. Returns its index.
fn vxlan_device(nl: &mut Netlink, end: &CableEnd, wan_index: u32, wan_mtu: u32) -> Result<u32> {
    let spec = VxlanSpec {
        name: CABLE_DEVICE.into(),
        vni: CABLE_VNI,
        port: CABLE_PORT,
        local: IpAddr::V4(end.wan),
        uplink: wan_index,
        mtu: Some(wan_mtu - CABLE_OVERHEAD),
        mac: Some(vtep_mac(end.wan)),
        up: true,
    };
    let peers: Vec<_> = end
        .peers
        .iter()
        .map(|p| (p.wan, vtep_ip(p.wan), vtep_mac(p.wan)))
        .collect();
    ensure_vxlan(nl, &spec, vtep_ip(end.wan), &peers)
}

/// The route agent's VXLAN device as `want` says (removed with `None`); its index. Its
/// one peer is the active gateway, when that is another node.
fn route_agent_device(nl: &mut Netlink, want: Option<&RouteAgent>) -> Result<Option<u32>> {
    let Some(want) = want else {
        nl.delete_link_by_name(ROUTE_AGENT_DEVICE)
            .map_err(nl_err("delete the route agent's device"))?;
        return Ok(None);
    };
    let uplink = nl
        .link_by_name(&want.uplink)
        .map_err(nl_err("get the uplink"))?
        .ok_or_else(|| Error::Config(format!("uplink {} is gone", want.uplink)))?;
    let spec = VxlanSpec {
        name: ROUTE_AGENT_DEVICE.into(),
        vni: ROUTE_AGENT_VNI,
        port: ROUTE_AGENT_PORT,
        local: IpAddr::V4(want.local),
        uplink: uplink.index,
        mtu: Some(uplink.mtu - CABLE_OVERHEAD),
        mac: Some(route_agent_mac(want.local)),
        up: true,
    };
    let peers: Vec<_> = want
        .gateway
        .iter()
        .map(|g| (*g, route_agent_ip(*g), route_agent_mac(*g)))
        .collect();
    ensure_vxlan(nl, &spec, route_agent_ip(want.local), &peers).map(Some)
}

/// Gives a device its vtep address (a /8) and the address's IPv6 twin (and MTU), and brings
/// it up.
fn address_and_up(
    nl: &mut Netlink,
    link: &sarasa_netns::Link,
    vtep: Ipv4Addr,
    mtu: Option<u32>,
) -> Result<()> {
    let v4 = IpNet::V4(Ipv4Net::new(vtep, 8).expect("constant prefix"));
    let v6 = IpNet::V6(Ipv6Net::new(vtep_ip6(vtep), VTEP6_PREFIX_LEN).expect("constant prefix"));
    let have = nl
        .addrs(Some(link.index), None)
        .map_err(nl_err("dump cable addresses"))?;
    for net in [v4, v6] {
        if !have.iter().any(|a| a.net == net) {
            nl.addr_add(link.index, net)
                .map_err(nl_err("address cable"))?;
        }
    }
    if let Some(mtu) = mtu.filter(|m| *m != link.mtu) {
        nl.set_mtu(link.index, mtu).map_err(nl_err("cable MTU"))?;
    }
    if !link.up {
        nl.set_up(link.index).map_err(nl_err("cable up"))?;
    }
    Ok(())
}

/// Makes the kernel match `d`: the cable device (the WireGuard one is opened by the agent's
/// process, [`wireguard::Cable`]; here it gets its address, MTU and routes), its peers, and the
/// routes with [`ROUTE_PROTOCOL`].
fn apply(nl: &mut Netlink, d: &Desired) -> Result<()> {
    let vxlan_wanted = matches!(&d.cable, Some(c) if c.kind == CableKind::Vxlan);
    if !vxlan_wanted {
        if let Some(l) = nl.link_by_name(CABLE_DEVICE).map_err(nl_err("get cable"))? {
            nl.delete_link(l.index).map_err(nl_err("delete cable"))?;
        }
    }
    let cable_index = match &d.cable {
        None => None,
        Some(end) => {
            let Some((_, wan_index, wan_mtu)) = wan_address(nl)? else {
                return Err(Error::Config("active gateway without a WAN link".into()));
            };
            Some(match end.kind {
                CableKind::Vxlan => vxlan_device(nl, end, wan_index, wan_mtu)?,
                CableKind::Wireguard => {
                    let link = nl
                        .link_by_name(wireguard::DEVICE)
                        .map_err(nl_err("get the WireGuard device"))?
                        .ok_or_else(|| {
                            Error::Config(format!("{} is not open", wireguard::DEVICE))
                        })?;
                    address_and_up(
                        nl,
                        &link,
                        vtep_ip(end.wan),
                        Some(wan_mtu - wireguard::OVERHEAD),
                    )?;
                    link.index
                }
            })
        }
    };
    let route_agent_index = route_agent_device(nl, d.route_agent.as_ref())?;
    let wireguard = matches!(&d.cable, Some(c) if c.kind == CableKind::Wireguard);
    let want: Vec<Route> = d
        .routes
        .iter()
        .filter_map(|(dst, via)| {
            let mut r = match (via, cable_index) {
                // WireGuard picks the peer by destination: a device route.
                (Via::Cable(_), Some(dev)) if wireguard => Route::new(*dst).dev(dev),
                (Via::Cable(g), Some(dev)) => Route::new(*dst)
                    .via(vtep_hop(dst, vtep_ip(*g)))
                    .dev(dev)
                    .onlink(),
                (Via::Cable(_), None) => return None,
                // Through the route agent's VXLAN to the gateway, else straight over the
                // underlay (an IPv6 underlay).
                (Via::Gateway(g), _) => match (g, route_agent_index) {
                    (IpAddr::V4(g4), Some(dev)) => Route::new(*dst)
                        .via(vtep_hop(dst, route_agent_ip(*g4)))
                        .dev(dev)
                        .onlink(),
                    _ if g.is_ipv4() != dst.addr().is_ipv4() => return None,
                    _ => Route::new(*dst).via(*g),
                },
                // The candidate's underlay address is IPv4: an IPv6 range has no fallback
                // (the gateway node's own pods wait for the new gateway's cable).
                (Via::Fallback(g), _) if g.is_ipv4() != dst.addr().is_ipv4() => return None,
                (Via::Fallback(g), _) => Route {
                    metric: Some(FALLBACK_METRIC),
                    ..Route::new(*dst).via(*g)
                },
            };
            r.protocol = Some(ROUTE_PROTOCOL);
            Some(r)
        })
        .collect();
    let have: Vec<Route> = nl
        .routes(None)
        .map_err(nl_err("dump routes"))?
        .into_iter()
        .filter(|r| r.protocol == Some(ROUTE_PROTOCOL) && r.table == TABLE_MAIN)
        .collect();
    let same = |w: &Route, h: &Route| {
        w.dst == h.dst
            && w.gateway == h.gateway
            && (w.oif.is_none() || w.oif == h.oif)
            && w.effective_metric() == h.effective_metric()
    };
    for h in &have {
        let wanted = want.iter().any(|w| same(w, h));
        if !wanted {
            match nl.route_del(h) {
                Err(e) if !e.is_not_found() => return Err(Error::netlink("delete route", e)),
                _ => {}
            }
        }
    }
    for w in &want {
        let present = have.iter().any(|h| same(w, h));
        if !present {
            nl.route_replace(w)
                .map_err(nl_err("route to another cluster"))?;
        }
    }
    Ok(())
}

/// The gateway task of one node.
pub struct Gateway {
    pub node: String,
    pub nodes: Api<Node>,
    pub leases: Api<Lease>,
    pub config_maps: Api<ConfigMap>,
    pub target: NetnsTarget,
    /// The other clusters' ranges (never masqueraded) and the GlobalNet egress address, for
    /// the node plan.
    pub remote_cidrs: tokio::sync::watch::Sender<SetRanges>,
    /// This gateway's WireGuard keys, made when the agent starts.
    keypair: wireguard::Keypair,
    /// The WireGuard cable while this node is the active gateway of a `wireguard` set.
    wireguard: Option<wireguard::Cable>,
    /// When this node last wrote the Lease as its holder.
    renewed: Option<Instant>,
    /// This node's underlay address and uplink, for the route agent's VXLAN.
    underlay: Option<(IpAddr, String)>,
    /// Notified when the agent shuts down: the holder gives its Lease up and the task ends.
    handover: Option<Arc<tokio::sync::Notify>>,
}

/// What the gateway watches: the cluster set's ConfigMap, the gateway Lease and the gateway
/// candidates' Nodes, each one watch kept in a store; any event wakes the task.
struct Views {
    config_map: Store<ConfigMap>,
    lease: Store<Lease>,
    candidates: Store<Node>,
    changed: Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Views {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One watch into a store, waking `changed` on every event.
fn watch_into<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<tokio::sync::Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let task = tokio::spawn(async move {
        let events = reflector::reflector(writer, watcher(api, config).default_backoff());
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "cluster-set gateway watch");
            }
            changed.notify_one();
        }
    });
    (store, task)
}

/// A Node's (first) InternalIP.
fn internal_ip(n: &Node) -> Option<IpAddr> {
    internal_ips(n).into_iter().next()
}

/// A Node's InternalIPs (a dual-stack node has one of each family).
fn internal_ips(n: &Node) -> Vec<IpAddr> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// The Lease's holder while it is current, and when it runs out.
fn current_holder(lease: Option<&Lease>) -> Option<(String, Instant)> {
    let spec = lease?.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let secs = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS);
    let now = k8s_openapi::jiff::Timestamp::now();
    let left = i64::from(secs) * 1000 - (now.as_millisecond() - renewed.as_millisecond());
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    (left > 0).then(|| (holder, Instant::now() + Duration::from_millis(left as u64)))
}

/// The set's view from its ConfigMap; `None` outside a set (no ConfigMap). Trace reads it
/// alike, so its node plans are the agents'.
pub fn set_view(cm: Option<&ConfigMap>) -> Result<Option<SetView>> {
    let Some(cm) = cm else {
        return Ok(None);
    };
    let empty = Default::default();
    let data = cm.data.as_ref().unwrap_or(&empty);
    let bad = |key: &str, e: String| {
        Error::Config(format!("{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} {key}: {e}"))
    };
    let cable = match data.get(CONFIGMAP_CABLE_KEY) {
        Some(text) => text.parse().map_err(|e| bad(CONFIGMAP_CABLE_KEY, e))?,
        None => CableKind::default(),
    };
    let remotes = match data.get(CONFIGMAP_KEY) {
        Some(text) => serde_json::from_str(text).map_err(|e| bad(CONFIGMAP_KEY, e.to_string()))?,
        None => Vec::new(),
    };
    let global_cidrs = data
        .get(CONFIGMAP_GLOBAL_KEY)
        .into_iter()
        .flat_map(|text| text.split(','))
        .map(|text| {
            text.trim()
                .parse::<IpNet>()
                .map_err(|e| bad(CONFIGMAP_GLOBAL_KEY, format!("{text:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(SetView {
        cable,
        remotes,
        global_cidrs,
    }))
}

impl Gateway {
    pub fn new(
        client: kube::Client,
        node: &str,
        target: NetnsTarget,
        remote_cidrs: tokio::sync::watch::Sender<SetRanges>,
    ) -> Self {
        Gateway {
            node: node.to_string(),
            nodes: Api::all(client.clone()),
            leases: Api::namespaced(client.clone(), CONFIGMAP_NAMESPACE),
            config_maps: Api::namespaced(client, CONFIGMAP_NAMESPACE),
            target,
            remote_cidrs,
            keypair: wireguard::Keypair::generate(),
            wireguard: None,
            renewed: None,
            underlay: None,
            handover: None,
        }
    }

    /// What tells the task the agent shuts down ([`crate::AgentHandle::shut_down`]).
    pub fn with_handover(mut self, handover: Arc<tokio::sync::Notify>) -> Self {
        self.handover = Some(handover);
        self
    }

    /// The node's underlay address and uplink: the other nodes then reach the active gateway
    /// over the route agent's VXLAN rather than by routing pod addresses on the underlay.
    pub fn with_underlay(mut self, address: IpAddr, uplink: &str) -> Self {
        self.underlay = Some((address, uplink.to_string()));
        self
    }

    /// Starts the watches; passes when they see a change, when the Lease needs renewing or runs
    /// out, and every [`RESYNC`].
    pub async fn run(mut self) {
        let changed = Arc::new(tokio::sync::Notify::new());
        let by_name =
            |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        let (config_map, t1) = watch_into(
            self.config_maps.clone(),
            by_name(CONFIGMAP_NAME),
            changed.clone(),
        );
        let (lease, t2) = watch_into(self.leases.clone(), by_name(GATEWAY_LEASE), changed.clone());
        let (candidates, t3) = watch_into(
            self.nodes.clone(),
            watcher::Config::default().labels(&format!("{GATEWAY_LABEL}=true")),
            changed.clone(),
        );
        let views = Views {
            config_map,
            lease,
            candidates,
            changed,
            tasks: vec![t1, t2, t3],
        };
        // Nothing is decided on a store that has not listed yet: an empty one would read as
        // "not in a set" and take the node's routes away.
        for ready in [
            views.config_map.wait_until_ready().await,
            views.lease.wait_until_ready().await,
            views.candidates.wait_until_ready().await,
        ] {
            if ready.is_err() {
                tracing::warn!("cluster-set gateway: a watch ended before it listed");
                return;
            }
        }
        let mut failing: Option<String> = None;
        loop {
            let wait = match self.pass(&views).await {
                Ok(wait) => {
                    if failing.take().is_some() {
                        tracing::info!("cluster-set gateway: working again");
                    }
                    wait
                }
                Err(e) => {
                    let text = e.to_string();
                    if failing.as_deref() != Some(&text) {
                        tracing::warn!(error = %text, "cluster-set gateway");
                        failing = Some(text);
                    }
                    RETRY
                }
            };
            let handover = self.handover.clone().unwrap_or_default();
            tokio::select! {
                _ = views.changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = handover.notified() => {
                    self.hand_over().await;
                    return;
                }
            }
        }
    }

    /// The agent shuts down: a holder of the Lease gives it up, so the standby takes over on
    /// the watch event rather than when the Lease runs out.
    async fn hand_over(&mut self) {
        if self.renewed.is_none() {
            return;
        }
        match self.elect(false).await {
            Ok(_) => {
                tracing::info!(node = %self.node, "shutting down: cluster-set gateway handed over")
            }
            Err(e) => {
                tracing::warn!(error = %e, "shutting down: the gateway Lease stays until it runs out")
            }
        }
    }

    /// The other clusters of the set and its cable kind; `None` outside a set (no ConfigMap).
    pub async fn remotes(&self) -> Result<Option<SetView>> {
        let cm = self
            .config_maps
            .get_opt(CONFIGMAP_NAME)
            .await
            .map_err(|e| Error::kube("get the cluster set ConfigMap", e))?;
        set_view(cm.as_ref())
    }

    async fn wan(&self) -> Result<Option<(Ipv4Addr, u32, u32)>> {
        let target = self.target.clone();
        tokio::task::spawn_blocking(move || {
            crate::netns::run_in_sync(&target, || {
                let mut nl = Netlink::current().map_err(nl_err("open socket"))?;
                wan_address(&mut nl)
            })
        })
        .await
        .map_err(|e| Error::Config(format!("blocking task failed: {e}")))?
    }

    /// For a candidate: takes the Lease when it is free or has run out, renews it when this
    /// node holds it; for a node that holds it and is no longer a candidate (its WAN link is
    /// down): gives it up, so the standby takes over at once. Returns the current holder.
    pub async fn elect(&self, candidate: bool) -> Result<Option<String>> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let current = self
            .leases
            .get_opt(GATEWAY_LEASE)
            .await
            .map_err(|e| Error::kube("get the gateway Lease", e))?;
        let holder = current_holder(current.as_ref()).map(|(h, _)| h);
        let mine = holder.as_deref() == Some(&self.node);
        let take = candidate && (mine || holder.is_none());
        let give_up = mine && !candidate;
        if !take && !give_up {
            return Ok(holder);
        }
        let spec = current
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let mut lease = Lease::default();
        lease.metadata.name = Some(GATEWAY_LEASE.into());
        lease.metadata.namespace = Some(CONFIGMAP_NAMESPACE.into());
        lease.spec = Some(if take {
            LeaseSpec {
                holder_identity: Some(self.node.clone()),
                lease_duration_seconds: Some(LEASE_SECONDS),
                renew_time: Some(MicroTime(now)),
                acquire_time: if mine {
                    spec.acquire_time.clone()
                } else {
                    Some(MicroTime(now))
                },
                lease_transitions: Some(if mine { transitions } else { transitions + 1 }),
                ..Default::default()
            }
        } else {
            // Given up: no holder.
            LeaseSpec {
                lease_duration_seconds: Some(LEASE_SECONDS),
                lease_transitions: Some(transitions),
                ..Default::default()
            }
        });
        let r = match current {
            Some(c) => {
                // The resourceVersion makes the takeover a compare-and-swap: two candidates
                // that saw the same expired Lease cannot both win.
                lease.metadata.resource_version = c.metadata.resource_version;
                self.leases
                    .replace(GATEWAY_LEASE, &PostParams::default(), &lease)
                    .await
            }
            None => self.leases.create(&PostParams::default(), &lease).await,
        };
        match r {
            Ok(_) if take => {
                if !mine {
                    tracing::info!(node = %self.node, "active cluster-set gateway");
                }
                Ok(Some(self.node.clone()))
            }
            Ok(_) => {
                tracing::info!(node = %self.node, "no WAN link: cluster-set gateway given up");
                Ok(None)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(Error::kube("write the gateway Lease", e)),
        }
    }

    /// One pass; how long until the next one at the latest.
    async fn pass(&mut self, views: &Views) -> Result<Duration> {
        let Some(set) = set_view(
            views
                .config_map
                .get(&ObjectRef::new(CONFIGMAP_NAME).within(CONFIGMAP_NAMESPACE))
                .as_deref(),
        )?
        else {
            // Not (or no longer) in a set: nothing of it stays on the node.
            self.close_wireguard().await;
            self.program(Desired::default()).await?;
            self.publish_ranges(SetRanges::default());
            return Ok(RESYNC);
        };
        let candidate_node = |name: &str| views.candidates.get(&ObjectRef::new(name));
        // The candidates' store holds only labelled Nodes.
        let me = candidate_node(&self.node);
        let wan = if me.is_some() {
            self.wan().await?
        } else {
            None
        };
        let stored = current_holder(
            views
                .lease
                .get(&ObjectRef::new(GATEWAY_LEASE).within(CONFIGMAP_NAMESPACE))
                .as_deref(),
        );
        let stored_mine = stored.as_ref().is_some_and(|(h, _)| *h == self.node);
        // Lease writes: a candidate with no current holder takes it; the holder renews every
        // RENEW (not on every event, its own renewals among them) or gives it up without a
        // WAN link. Everyone else reads the watched copy.
        let due = self.renewed.is_none_or(|t| t.elapsed() >= RENEW);
        let holder = match (&stored, wan.is_some()) {
            (None, true) => self.elect(true).await?,
            (Some(_), true) if stored_mine && due => self.elect(true).await?,
            (Some(_), false) if stored_mine => self.elect(false).await?,
            (s, _) => s.as_ref().map(|(h, _)| h.clone()),
        };
        let active = holder.as_deref() == Some(&self.node);
        if active && (!stored_mine || due) {
            self.renewed = Some(Instant::now());
        }
        if let (true, Some((ip, _, _)), Some(me)) = (active, wan, &me) {
            let annotations = me.metadata.annotations.clone().unwrap_or_default();
            let key = self.keypair.public_base64();
            if annotations.get(ANNOTATION_GATEWAY_IP) != Some(&ip.to_string())
                || annotations.get(ANNOTATION_GATEWAY_KEY) != Some(&key)
            {
                let patch = serde_json::json!({"metadata": {"annotations": {
                    ANNOTATION_GATEWAY_IP: ip.to_string(),
                    ANNOTATION_GATEWAY_KEY: key,
                }}});
                self.nodes
                    .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| Error::kube("publish the gateway address", e))?;
            }
        }
        let role = match (&holder, active, wan) {
            (_, true, Some((wan, _, _))) => {
                // The standby: the other candidate with the lowest (first) InternalIP.
                let standby = views
                    .candidates
                    .state()
                    .iter()
                    .filter(|n| n.metadata.name.as_deref() != Some(&self.node))
                    .map(|n| internal_ips(n))
                    .filter(|ips| !ips.is_empty())
                    .min();
                let of = |v4: bool| {
                    standby
                        .as_ref()
                        .and_then(|ips| ips.iter().find(|ip| ip.is_ipv4() == v4).copied())
                };
                Role::Active {
                    wan,
                    standby: of(true),
                    standby_v6: of(false),
                }
            }
            (Some(h), false, _) => candidate_node(h)
                .as_deref()
                .and_then(internal_ip)
                .map_or(Role::None, Role::Behind),
            _ => Role::None,
        };
        let mut want = desired(&set, role);
        if let Some((IpAddr::V4(local), uplink)) = &self.underlay {
            want.route_agent = Some(RouteAgent {
                local: *local,
                uplink: uplink.clone(),
                gateway: match role {
                    Role::Behind(IpAddr::V4(g)) => Some(g),
                    _ => None,
                },
            });
        }
        self.wireguard_cable(&want).await?;
        self.program(want).await?;
        self.publish_ranges(set.ranges());
        // Next: the holder renews; a candidate also checks its WAN link; everyone wakes when
        // the current Lease runs out (a watch event comes first when someone renews or takes
        // it).
        let mut wait = RESYNC;
        if me.is_some() {
            wait = wait.min(RENEW);
        }
        if let (Some((_, until)), false) = (&stored, active) {
            wait = wait
                .min(until.saturating_duration_since(Instant::now()) + Duration::from_millis(20));
        }
        Ok(wait)
    }

    /// Closes the WireGuard cable, if open, and waits until its device is gone.
    async fn close_wireguard(&mut self) {
        if let Some(cable) = self.wireguard.take() {
            cable.close().await;
        }
    }

    /// Opens, re-peers or closes the userspace WireGuard cable to match `want`.
    async fn wireguard_cable(&mut self, want: &Desired) -> Result<()> {
        let Some(end) = want
            .cable
            .as_ref()
            .filter(|c| c.kind == CableKind::Wireguard)
        else {
            self.close_wireguard().await;
            return Ok(());
        };
        if self.wireguard.as_ref().map(|c| c.local()) != Some(end.wan) {
            // Closed first: the new one binds the same device name and port.
            self.close_wireguard().await;
            self.wireguard = Some(wireguard::Cable::start(
                &self.target,
                &self.keypair,
                end.wan,
            )?);
        }
        let specs: Vec<wireguard::PeerSpec> = end
            .peers
            .iter()
            .filter_map(|p| {
                Some(wireguard::PeerSpec {
                    public_key: p.public_key?,
                    endpoint: std::net::SocketAddrV4::new(p.wan, wireguard::PORT),
                    allowed: p.allowed.clone(),
                })
            })
            .collect();
        if let Some(cable) = &self.wireguard {
            if cable.peers() != specs {
                cable.set_peers(&specs);
            }
        }
        Ok(())
    }

    /// Makes the node's namespace match `want` (on the blocking pool).
    async fn program(&self, want: Desired) -> Result<()> {
        let target = self.target.clone();
        tokio::task::spawn_blocking(move || {
            crate::netns::run_in_sync(&target, || {
                let mut nl = Netlink::current().map_err(nl_err("open socket"))?;
                apply(&mut nl, &want)
            })
        })
        .await
        .map_err(|e| Error::Config(format!("blocking task failed: {e}")))?
    }

    /// Hands the other clusters' ranges to the node plan when they changed.
    fn publish_ranges(&self, ranges: SetRanges) {
        self.remote_cidrs.send_if_modified(|c| {
            let changed = *c != ranges;
            if changed {
                *c = ranges;
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(
        id: &str,
        pods: &str,
        svcs: &str,
        gw: Option<&str>,
        key: Option<&str>,
    ) -> RemoteCluster {
        RemoteCluster {
            cluster_id: id.into(),
            pod_cidr: pods.parse().unwrap(),
            service_cidr: svcs.parse().unwrap(),
            pod_cidr_v6: None,
            service_cidr_v6: None,
            gateway_ip: gw.map(|g| g.parse().unwrap()),
            gateway_node: None,
            gateway_public_key: key.map(str::to_string),
            global_cidr: None,
            global_cidr_v6: None,
        }
    }

    fn set(cable: CableKind, remotes: Vec<RemoteCluster>) -> SetView {
        SetView {
            cable,
            remotes,
            global_cidrs: Vec::new(),
        }
    }

    #[test]
    fn the_active_gateway_cables_and_the_others_route_to_it() {
        let remotes = vec![
            remote(
                "east",
                "10.245.0.0/16",
                "10.112.0.0/16",
                Some("172.30.0.100"),
                None,
            ),
            remote("north", "10.246.0.0/16", "10.113.0.0/16", None, None),
        ];
        let wan: Ipv4Addr = "172.30.0.101".parse().unwrap();
        let active = Role::Active {
            wan,
            standby: None,
            standby_v6: None,
        };
        let d = desired(&set(CableKind::Vxlan, remotes.clone()), active);
        let peer: Ipv4Addr = "172.30.0.100".parse().unwrap();
        let cable = d.cable.expect("a cable");
        assert_eq!((cable.kind, cable.wan), (CableKind::Vxlan, wan));
        assert_eq!(cable.peers.len(), 1);
        assert_eq!(cable.peers[0].wan, peer);
        assert_eq!(
            cable.peers[0].allowed,
            ["10.245.0.0/16", "10.112.0.0/16", "241.30.0.100/32"]
                .map(|c| c.parse::<IpNet>().unwrap())
        );
        assert_eq!(
            d.routes,
            [
                ("10.245.0.0/16".parse().unwrap(), Via::Cable(peer)),
                ("10.112.0.0/16".parse().unwrap(), Via::Cable(peer)),
            ],
            "a cluster without a gateway yet has no route"
        );
        let gw: IpAddr = "192.168.33.11".parse().unwrap();
        let d = desired(&set(CableKind::Vxlan, remotes.clone()), Role::Behind(gw));
        assert_eq!(d.cable, None);
        assert_eq!(d.routes.len(), 4);
        assert!(d.routes.iter().all(|(_, v)| *v == Via::Gateway(gw)));
        assert_eq!(
            desired(&set(CableKind::Vxlan, remotes.clone()), Role::None),
            Desired::default()
        );
        // With a standby candidate, each cable route has a fallback to it.
        let standby: IpAddr = "192.168.33.12".parse().unwrap();
        let d = desired(
            &set(CableKind::Vxlan, remotes),
            Role::Active {
                wan,
                standby: Some(standby),
                standby_v6: None,
            },
        );
        assert_eq!(
            d.routes[..2],
            [
                ("10.245.0.0/16".parse().unwrap(), Via::Cable(peer)),
                ("10.245.0.0/16".parse().unwrap(), Via::Fallback(standby)),
            ]
        );
    }

    #[test]
    fn a_dual_stack_clusters_ipv6_ranges_route_like_its_ipv4_ones() {
        let mut east = remote(
            "east",
            "10.245.0.0/16",
            "10.112.0.0/16",
            Some("172.30.0.13"),
            None,
        );
        east.pod_cidr_v6 = Some("fd00:10:245::/56".parse().unwrap());
        east.service_cidr_v6 = Some("fd00:10:112::/112".parse().unwrap());
        let peer: Ipv4Addr = "172.30.0.13".parse().unwrap();
        let wan: Ipv4Addr = "172.30.0.11".parse().unwrap();
        let (standby, standby_v6): (IpAddr, IpAddr) = (
            "192.168.33.12".parse().unwrap(),
            "fd00:33::c".parse().unwrap(),
        );
        let d = desired(
            &set(CableKind::Vxlan, vec![east]),
            Role::Active {
                wan,
                standby: Some(standby),
                standby_v6: Some(standby_v6),
            },
        );
        let pods6: IpNet = "fd00:10:245::/56".parse().unwrap();
        assert!(
            d.routes.contains(&(pods6, Via::Cable(peer))),
            "{:?}",
            d.routes
        );
        assert!(
            d.routes.contains(&(pods6, Via::Fallback(standby_v6))),
            "an IPv6 range falls back to the candidate's IPv6 address: {:?}",
            d.routes
        );
        assert!(!d.routes.contains(&(pods6, Via::Fallback(standby))));
        // Through a VXLAN device an IPv6 range's next hop is the vtep's IPv6 twin.
        let vtep = vtep_ip(peer);
        assert_eq!(vtep_hop(&pods6, vtep), IpAddr::V6(vtep_ip6(vtep)));
        assert_eq!(vtep_ip6(vtep).to_string(), "fd00:24::f11e:d");
        let pods4: IpNet = "10.245.0.0/16".parse().unwrap();
        assert_eq!(vtep_hop(&pods4, vtep), IpAddr::V4(vtep));
        // The kernel keeps an IPv6 route without a metric at 1024: still below the fallback's,
        // and equal to what was asked (no delete-and-add on every pass).
        let cable6 = Route::new(pods6);
        assert_eq!(cable6.effective_metric(), 1024);
        assert_eq!(cable6.clone().metric(1024).effective_metric(), 1024);
        assert!(cable6.effective_metric() < FALLBACK_METRIC);
        assert_eq!(Route::new(pods4).effective_metric(), 0);
    }

    #[test]
    fn a_wireguard_cable_needs_the_far_end_key() {
        let key = wireguard::Keypair::generate().public_base64();
        let remotes = vec![
            remote(
                "east",
                "10.245.0.0/16",
                "10.112.0.0/16",
                Some("172.30.0.100"),
                Some(&key),
            ),
            remote(
                "north",
                "10.246.0.0/16",
                "10.113.0.0/16",
                Some("172.30.0.102"),
                None,
            ),
            remote(
                "south",
                "10.247.0.0/16",
                "10.114.0.0/16",
                Some("172.30.0.103"),
                Some("bad"),
            ),
        ];
        let wan: Ipv4Addr = "172.30.0.101".parse().unwrap();
        let d = desired(
            &set(CableKind::Wireguard, remotes),
            Role::Active {
                wan,
                standby: None,
                standby_v6: None,
            },
        );
        let cable = d.cable.expect("a cable");
        assert_eq!(cable.kind, CableKind::Wireguard);
        assert_eq!(cable.peers.len(), 1, "{:?}", cable.peers);
        assert_eq!(
            cable.peers[0].public_key,
            Some(wireguard::parse_public_key(&key, "k").unwrap())
        );
        assert_eq!(d.routes.len(), 2, "only east is reachable: {:?}", d.routes);
    }

    #[test]
    fn vtep_addresses_and_macs_follow_the_wan_address() {
        let wan: Ipv4Addr = "172.30.0.101".parse().unwrap();
        assert_eq!(vtep_ip(wan), "241.30.0.101".parse::<Ipv4Addr>().unwrap());
        assert_eq!(vtep_mac(wan).0, [0x02, 0x5a, 172, 30, 0, 101]);
    }
}
