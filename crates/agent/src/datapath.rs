//! apply: programs a node namespace with rtnetlink by diffing the kernel against the plan.
//! Nothing is flushed or recreated when it is already right, so an agent restart leaves
//! established traffic alone. Routes the agent installs carry their own routing protocol number
//! ([`ROUTE_PROTOCOL`]) so stale ones are found without touching anybody else's.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use crate::diff::{diff, FabricOp};
use crate::error::{Error, Result};
use crate::masquerade;
use crate::netns::{self, NetnsTarget};
use crate::plan::{
    Fabric, FdbEntry, Neighbour, NodePlan, Route, RouteDev, VxlanDevice, VXLAN_DEVICE,
};
use sarasa_model::MacAddr;

/// `proto 83` marks routes installed by sarasa (see /etc/iproute2/rt_protos for the space).
pub const ROUTE_PROTOCOL: u8 = 83;

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EADDRNOTAVAIL: i32 = 99;

/// A link as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
    pub up: bool,
    pub vxlan: Option<VxlanAttrs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanAttrs {
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    pub link: Option<u32>,
    pub learning: Option<bool>,
}

/// The node's underlay interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub address: IpAddr,
}

/// What one `program` run changed (all zero on a restart over a correct node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgramReport {
    pub vxlan_created: bool,
    pub link_changes: usize,
    pub address_changes: usize,
    pub fabric_ops: Vec<FabricOp>,
}

impl ProgramReport {
    pub fn is_noop(&self) -> bool {
        !self.vxlan_created
            && self.link_changes == 0
            && self.address_changes == 0
            && self.fabric_ops.is_empty()
    }
}

/// A connection to one node namespace.
#[derive(Clone)]
pub struct NodeDatapath {
    target: NetnsTarget,
    handle: Handle,
}

fn ignore_missing(
    r: std::result::Result<(), rtnetlink::Error>,
) -> std::result::Result<(), rtnetlink::Error> {
    match r {
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code
                .is_some_and(|c| [-ENOENT, -ESRCH, -EADDRNOTAVAIL].contains(&c.get())) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn link_state(msg: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        vxlan: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => s.name = n.clone(),
            LinkAttribute::Mtu(m) => s.mtu = *m,
            LinkAttribute::Address(a) => s.mac = MacAddr::from_bytes(a),
            LinkAttribute::LinkInfo(infos) => {
                let is_vxlan = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
                if is_vxlan {
                    let mut v = VxlanAttrs::default();
                    for i in infos {
                        if let LinkInfo::Data(InfoData::Vxlan(data)) = i {
                            for d in data {
                                match d {
                                    InfoVxlan::Id(id) => v.vni = Some(*id),
                                    InfoVxlan::Port(p) => v.port = Some(*p),
                                    InfoVxlan::Local(a) => v.local = Some(IpAddr::V4(*a)),
                                    InfoVxlan::Local6(a) => v.local = Some(IpAddr::V6(*a)),
                                    InfoVxlan::Link(l) => v.link = Some(*l),
                                    InfoVxlan::Learning(l) => v.learning = Some(*l),
                                    _ => {}
                                }
                            }
                        }
                    }
                    s.vxlan = Some(v);
                }
            }
            _ => {}
        }
    }
    s
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Bridge-family (FDB) messages carry the remote as raw bytes.
fn neighbour_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn to_route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

impl NodeDatapath {
    /// Connects to the target namespace; refuses the machine's root namespace unless
    /// `allow_host_netns`.
    pub async fn connect(target: NetnsTarget, allow_host_netns: bool) -> Result<Self> {
        netns::guard(&target, allow_host_netns)?;
        let handle = netns::netlink_handle(&target).await?;
        Ok(NodeDatapath { target, handle })
    }

    pub fn target(&self) -> &NetnsTarget {
        &self.target
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub async fn links(&self) -> Result<Vec<LinkState>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("dump links", e))?;
        Ok(msgs.iter().map(link_state).collect())
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkState>> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    /// Addresses (with prefix) on a link, global scope only.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("dump addresses", e))?;
        let mut out = Vec::new();
        for m in msgs.iter().filter(|m| m.header.index == index) {
            if m.header.scope != AddressScope::Universe {
                continue;
            }
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = addr.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                if let Ok(net) = IpNet::new(ip, m.header.prefix_len) {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    /// Finds the underlay interface: `name` if given, else the default route's device, else the
    /// only up interface with a global IPv4 address outside `exclude` (the cluster CIDRs). Its
    /// first global IPv4 (else IPv6) address is the node's underlay address.
    pub async fn discover_uplink(&self, name: Option<&str>, exclude: &[IpNet]) -> Result<Uplink> {
        let links = self.links().await?;
        let chosen = match name {
            Some(n) => links
                .iter()
                .find(|l| l.name == n)
                .ok_or_else(|| Error::Uplink(format!("interface {n:?} (--uplink) does not exist")))?
                .clone(),
            None => {
                let default_oif = self.default_route_oif().await?;
                match default_oif.and_then(|i| links.iter().find(|l| l.index == i)) {
                    Some(l) => l.clone(),
                    None => {
                        let mut candidates = Vec::new();
                        for l in links.iter().filter(|l| l.up && l.name != "lo") {
                            // Pod-side addresses (the CNI's gateways, link-local proxy-ARP
                            // gateways) never make an interface the underlay.
                            if self.addresses(l.index).await?.iter().any(|a| {
                                a.addr().is_ipv4()
                                    && !a.addr().is_loopback()
                                    && !matches!(a.addr(), IpAddr::V4(v4) if v4.is_link_local())
                                    && !exclude.iter().any(|c| c.contains(&a.addr()))
                            }) {
                                candidates.push(l.clone());
                            }
                        }
                        candidates
                            .retain(|l| l.vxlan.is_none() && l.name != crate::plan::NODE_BRIDGE);
                        match candidates.as_slice() {
                            [one] => one.clone(),
                            [] => return Err(Error::Uplink("no default route and no interface with a global IPv4 address; pass --uplink".into())),
                            many => return Err(Error::Uplink(format!(
                                "no default route and several candidate interfaces ({}); pass --uplink",
                                many.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
                            ))),
                        }
                    }
                }
            }
        };
        let addrs = self.addresses(chosen.index).await?;
        let address = addrs
            .iter()
            .find(|a| a.addr().is_ipv4())
            .or_else(|| addrs.first())
            .map(|a| a.addr())
            .ok_or_else(|| {
                Error::Uplink(format!("interface {} has no global address", chosen.name))
            })?;
        Ok(Uplink {
            name: chosen.name,
            index: chosen.index,
            mtu: chosen.mtu,
            address,
        })
    }

    async fn default_route_oif(&self) -> Result<Option<u32>> {
        let routes = self.dump_routes(AddressFamily::Inet).await?;
        Ok(routes
            .iter()
            .filter(|r| {
                r.header.destination_prefix_length == 0
                    && r.header.table == RouteHeader::RT_TABLE_MAIN
            })
            .find_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            }))
    }

    async fn dump_routes(&self, family: AddressFamily) -> Result<Vec<RouteMessage>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        self.handle
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("dump routes", e))
    }

    /// Makes sure the VXLAN device exists as specified (creating it with `mac` when given, so
    /// the vtep MAC survives a device recreation) and returns its state. An existing device with
    /// the right VNI, port, local address and uplink is kept as is (only MTU/up are adjusted).
    pub async fn ensure_vxlan(
        &self,
        dev: &VxlanDevice,
        uplink_index: u32,
        mac: Option<MacAddr>,
        report: &mut ProgramReport,
    ) -> Result<LinkState> {
        if let Some(cur) = self.link_by_name(&dev.name).await? {
            let ok = cur.vxlan.as_ref().is_some_and(|v| {
                v.vni == Some(dev.vni)
                    && v.port == Some(dev.port)
                    && v.local == Some(dev.local)
                    && v.link == Some(uplink_index)
                    && v.learning != Some(true)
            });
            if ok {
                if cur.mtu != dev.mtu || !cur.up {
                    let msg = LinkUnspec::new_with_index(cur.index)
                        .mtu(dev.mtu)
                        .up()
                        .build();
                    self.handle
                        .link()
                        .set(msg)
                        .execute()
                        .await
                        .map_err(|e| Error::netlink(format!("set {} mtu/up", dev.name), e))?;
                    report.link_changes += 1;
                }
                return self
                    .link_by_name(&dev.name)
                    .await?
                    .ok_or_else(|| Error::Uplink(format!("{} vanished", dev.name)));
            }
            tracing::warn!(device = %dev.name, "VXLAN device has wrong parameters; recreating");
            self.handle
                .link()
                .del(cur.index)
                .execute()
                .await
                .map_err(|e| Error::netlink(format!("delete {}", dev.name), e))?;
        }
        let mut b = LinkVxlan::new(&dev.name, dev.vni)
            .dev(uplink_index)
            .port(dev.port)
            .learning(false)
            .mtu(dev.mtu)
            .up();
        b = match dev.local {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        if let Some(m) = mac {
            b = b.address(m.0.to_vec());
        }
        self.handle
            .link()
            .add(b.build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("create {}", dev.name), e))?;
        report.vxlan_created = true;
        self.link_by_name(&dev.name)
            .await?
            .ok_or_else(|| Error::Uplink(format!("{} missing after creation", dev.name)))
    }

    /// Makes sure this node's VXLAN device exists (before the podCIDR is known, so the vtep MAC
    /// can be published early) and returns its MAC. `mac_hint` (e.g. the MAC already published
    /// on the Node) is used only when the device has to be created.
    pub async fn ensure_vtep(&self, uplink: &Uplink, mac_hint: Option<MacAddr>) -> Result<MacAddr> {
        let overhead = crate::plan::encap_overhead(crate::config::Backend::Vxlan, uplink.address);
        let dev = VxlanDevice {
            name: VXLAN_DEVICE.into(),
            vni: crate::plan::VXLAN_VNI,
            port: crate::plan::VXLAN_PORT,
            local: uplink.address,
            uplink: uplink.name.clone(),
            mtu: uplink.mtu.saturating_sub(overhead),
            addresses: BTreeSet::new(),
        };
        let link = self
            .ensure_vxlan(&dev, uplink.index, mac_hint, &mut ProgramReport::default())
            .await?;
        link.mac
            .ok_or_else(|| Error::Uplink(format!("{VXLAN_DEVICE} has no MAC address")))
    }

    /// Sets exactly `want` as the addresses of link `index` (adds missing, removes others).
    pub async fn sync_addresses(
        &self,
        index: u32,
        want: &BTreeSet<IpNet>,
        report: &mut ProgramReport,
    ) -> Result<()> {
        let have: BTreeSet<IpNet> = self.addresses(index).await?.into_iter().collect();
        for a in want.difference(&have) {
            self.handle
                .address()
                .add(index, a.addr(), a.prefix_len())
                .execute()
                .await
                .map_err(|e| Error::netlink(format!("add address {a}"), e))?;
            report.address_changes += 1;
        }
        for a in have.difference(want) {
            let msgs: Vec<AddressMessage> = self
                .handle
                .address()
                .get()
                .set_link_index_filter(index)
                .set_address_filter(a.addr())
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::netlink("dump addresses", e))?;
            for m in msgs {
                ignore_missing(self.handle.address().del(m).execute().await)
                    .map_err(|e| Error::netlink(format!("delete address {a}"), e))?;
            }
            report.address_changes += 1;
        }
        Ok(())
    }

    /// Reads what the agent owns in the kernel: routes with [`ROUTE_PROTOCOL`] in the main
    /// table, and permanent FDB/neighbour entries on the VXLAN device.
    pub async fn read_fabric(&self, vxlan_index: Option<u32>, uplink_index: u32) -> Result<Fabric> {
        let mut fabric = Fabric::default();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            for r in self.dump_routes(family).await? {
                if r.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
                    || r.header.table != RouteHeader::RT_TABLE_MAIN
                {
                    continue;
                }
                let mut dst = None;
                let mut gateway = None;
                let mut oif = None;
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(d) => dst = route_addr(d),
                        RouteAttribute::Gateway(g) => gateway = route_addr(g),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                let (Some(dst), Some(gateway), Some(oif)) = (dst, gateway, oif) else {
                    continue;
                };
                let Ok(dst) = IpNet::new(dst, r.header.destination_prefix_length) else {
                    continue;
                };
                let dev = if Some(oif) == vxlan_index {
                    RouteDev::Vxlan
                } else if oif == uplink_index {
                    RouteDev::Uplink
                } else {
                    RouteDev::Other(oif)
                };
                fabric.routes.insert(Route {
                    dst,
                    gateway,
                    dev,
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                });
            }
        }
        let Some(vx) = vxlan_index else {
            return Ok(fabric);
        };
        let neighbours: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("dump neighbours", e))?;
        for n in neighbours.iter().filter(|n| {
            n.header.ifindex == vx
                && n.header.state == NeighbourState::Permanent
                && matches!(n.header.family, AddressFamily::Inet | AddressFamily::Inet6)
        }) {
            let mut ip = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(a) => ip = neighbour_ip(a),
                    NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_bytes(l),
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                fabric.neighbours.insert(Neighbour { ip, mac });
            }
        }
        let fdb: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("dump fdb", e))?;
        for n in fdb
            .iter()
            .filter(|n| n.header.ifindex == vx && n.header.state == NeighbourState::Permanent)
        {
            let mut dst = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(a) => dst = neighbour_ip(a),
                    NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_bytes(l),
                    _ => {}
                }
            }
            if let (Some(dst), Some(mac)) = (dst, mac) {
                fabric.fdb.insert(FdbEntry { mac, dst });
            }
        }
        Ok(fabric)
    }

    fn route_message(
        route: &Route,
        vxlan_index: Option<u32>,
        uplink_index: u32,
    ) -> Result<RouteMessage> {
        let oif = match route.dev {
            RouteDev::Vxlan => vxlan_index.ok_or_else(|| {
                Error::Uplink("route via VXLAN device but it does not exist".into())
            })?,
            RouteDev::Uplink => uplink_index,
            RouteDev::Other(i) => i,
        };
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(route.dst.addr());
        msg.header.destination_prefix_length = route.dst.prefix_len();
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Other(ROUTE_PROTOCOL);
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        if route.onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        msg.attributes
            .push(RouteAttribute::Destination(to_route_addr(route.dst.addr())));
        msg.attributes
            .push(RouteAttribute::Gateway(to_route_addr(route.gateway)));
        msg.attributes.push(RouteAttribute::Oif(oif));
        Ok(msg)
    }

    /// Executes fabric operations in order.
    pub async fn apply_ops(
        &self,
        ops: &[FabricOp],
        vxlan_index: Option<u32>,
        uplink_index: u32,
    ) -> Result<()> {
        for op in ops {
            let ctx = format!("{op:?}");
            let res = match op {
                FabricOp::AddFdb(e) => {
                    let vx = vxlan_index
                        .ok_or_else(|| Error::Uplink("FDB entry without VXLAN device".into()))?;
                    self.handle
                        .neighbours()
                        .add_bridge(vx, &e.mac.0)
                        .flags(NeighbourFlags::Own)
                        .destination(e.dst)
                        .replace()
                        .execute()
                        .await
                }
                FabricOp::DelFdb(e) => {
                    let Some(vx) = vxlan_index else { continue };
                    let mut msg = NeighbourMessage::default();
                    msg.header.family = AddressFamily::Bridge;
                    msg.header.ifindex = vx;
                    msg.header.state = NeighbourState::Permanent;
                    msg.header.flags = NeighbourFlags::Own;
                    msg.attributes
                        .push(NeighbourAttribute::LinkLayerAddress(e.mac.0.to_vec()));
                    msg.attributes
                        .push(NeighbourAttribute::Destination(match e.dst {
                            IpAddr::V4(a) => NeighbourAddress::Inet(a),
                            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
                        }));
                    ignore_missing(self.handle.neighbours().del(msg).execute().await)
                }
                FabricOp::AddNeighbour(n) | FabricOp::ReplaceNeighbour(n) => {
                    let vx = vxlan_index
                        .ok_or_else(|| Error::Uplink("neighbour without VXLAN device".into()))?;
                    self.handle
                        .neighbours()
                        .add(vx, n.ip)
                        .link_layer_address(&n.mac.0)
                        .state(NeighbourState::Permanent)
                        .replace()
                        .execute()
                        .await
                }
                FabricOp::DelNeighbour(n) => {
                    let Some(vx) = vxlan_index else { continue };
                    let mut msg = NeighbourMessage::default();
                    msg.header.family = family_of(n.ip);
                    msg.header.ifindex = vx;
                    msg.attributes
                        .push(NeighbourAttribute::Destination(match n.ip {
                            IpAddr::V4(a) => NeighbourAddress::Inet(a),
                            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
                        }));
                    ignore_missing(self.handle.neighbours().del(msg).execute().await)
                }
                FabricOp::AddRoute(r) => {
                    let msg = Self::route_message(r, vxlan_index, uplink_index)?;
                    self.handle.route().add(msg).execute().await
                }
                FabricOp::ReplaceRoute(r) => {
                    let msg = Self::route_message(r, vxlan_index, uplink_index)?;
                    self.handle.route().add(msg).replace().execute().await
                }
                FabricOp::DelRoute(r) => {
                    let msg = Self::route_message(r, vxlan_index, uplink_index)?;
                    ignore_missing(self.handle.route().del(msg).execute().await)
                }
            };
            res.map_err(|e| Error::netlink(ctx, e))?;
        }
        Ok(())
    }

    /// Turns on IP forwarding in this namespace (and IPv6 forwarding when `ipv6`).
    pub async fn enable_forwarding(&self, ipv6: bool) -> Result<()> {
        netns::run_in(&self.target, move || {
            let mut keys = vec!["net/ipv4/ip_forward"];
            if ipv6 {
                keys.push("net/ipv6/conf/all/forwarding");
            }
            for key in keys {
                let path = format!("/proc/sys/{key}");
                let cur = std::fs::read_to_string(&path).map_err(|source| Error::Sysctl {
                    key: key.replace('/', "."),
                    source,
                })?;
                if cur.trim() != "1" {
                    std::fs::write(&path, "1").map_err(|source| Error::Sysctl {
                        key: key.replace('/', "."),
                        source,
                    })?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Programs the whole plan: forwarding, the VXLAN device and its addresses, the fabric
    /// diff, and masquerade. `vtep_mac` is used only when the device must be created.
    pub async fn program(
        &self,
        plan: &NodePlan,
        uplink: &Uplink,
        vtep_mac: Option<MacAddr>,
    ) -> Result<ProgramReport> {
        let mut report = ProgramReport::default();
        self.enable_forwarding(plan.ipv6).await?;
        let vxlan_index = match &plan.vxlan {
            Some(dev) => {
                let link = self
                    .ensure_vxlan(dev, uplink.index, vtep_mac, &mut report)
                    .await?;
                self.sync_addresses(link.index, &dev.addresses, &mut report)
                    .await?;
                Some(link.index)
            }
            None => {
                if let Some(stale) = self.link_by_name(VXLAN_DEVICE).await? {
                    if stale.vxlan.is_some() {
                        self.handle
                            .link()
                            .del(stale.index)
                            .execute()
                            .await
                            .map_err(|e| {
                                Error::netlink(format!("delete stale {VXLAN_DEVICE}"), e)
                            })?;
                        report.link_changes += 1;
                    }
                }
                None
            }
        };
        let current = self.read_fabric(vxlan_index, uplink.index).await?;
        let ops = diff(&plan.fabric, &current);
        self.apply_ops(&ops, vxlan_index, uplink.index).await?;
        report.fabric_ops = ops;
        masquerade::apply(&self.target, &plan.masquerade).await?;
        Ok(report)
    }
}
