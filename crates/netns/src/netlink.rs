//! A synchronous rtnetlink client: links (veth, bridge), addresses, routes, neighbours
//! (VXLAN devices and FDB entries live in `vxlan.rs`, on the same socket).
//!
//! A [`Netlink`] is one `NETLINK_ROUTE` socket. A socket belongs to the network namespace it
//! was opened in, for its whole life, so one process can hold sockets into several namespaces
//! at once ([`Netlink::open_in`]) without any thread ever staying in a foreign namespace.
//! No async runtime: each call sends one request and reads until its ACK or `DONE`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use sarasa_model::MacAddr;

use crate::error::{Error, Result};
use crate::ns::NetNs;
use crate::vxlan::{self, VxlanInfo};

/// The main routing table (`RT_TABLE_MAIN`).
pub const TABLE_MAIN: u32 = 254;

const RECV_BUF: usize = 64 * 1024;
const DUMP_RETRIES: usize = 5;

/// A network interface as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, `vxlan`, ...), `None` for physical/loopback.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Ethernet hardware address (`None` for devices without a 6-byte one, e.g. tun).
    pub mac: Option<MacAddr>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Index of the bridge/bond this link is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: set when the peer lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// The VXLAN parameters when `kind` is `vxlan`.
    pub vxlan: Option<VxlanInfo>,
    /// `IFLA_IFALIAS` (`ip link set X alias ...`).
    pub alias: Option<String>,
}

/// A veth pair to create. The peer can be put straight into another namespace.
#[derive(Clone, Debug, Default)]
pub struct Veth {
    /// Name of the end created in this socket's namespace.
    pub name: String,
    /// Name of the other end.
    pub peer_name: String,
    /// Namespace (fd) for the peer; `None` keeps it here.
    pub peer_netns: Option<RawFd>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// MAC of this end (kernel-random when `None`).
    pub mac: Option<MacAddr>,
    /// MAC of the peer (kernel-random when `None`).
    pub peer_mac: Option<MacAddr>,
}

/// An interface address with its prefix length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Interface index.
    pub index: u32,
    /// Address and prefix, e.g. `10.244.1.5/24`.
    pub net: IpNet,
    /// Address scope.
    pub scope: Scope,
}

/// Route and address scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scope {
    /// Global (`RT_SCOPE_UNIVERSE`).
    #[default]
    Universe,
    /// Site.
    Site,
    /// On-link (`RT_SCOPE_LINK`): directly reachable, no gateway.
    Link,
    /// This host only.
    Host,
    /// Any other value.
    Other(u8),
}

impl From<RouteScope> for Scope {
    fn from(s: RouteScope) -> Self {
        match s {
            RouteScope::Universe => Scope::Universe,
            RouteScope::Site => Scope::Site,
            RouteScope::Link => Scope::Link,
            RouteScope::Host => Scope::Host,
            other => Scope::Other(u8::from(other)),
        }
    }
}

impl From<Scope> for RouteScope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Universe => RouteScope::Universe,
            Scope::Site => RouteScope::Site,
            Scope::Link => RouteScope::Link,
            Scope::Host => RouteScope::Host,
            Scope::Other(v) => RouteScope::from(v),
        }
    }
}

impl From<AddressScope> for Scope {
    fn from(s: AddressScope) -> Self {
        match s {
            AddressScope::Universe => Scope::Universe,
            AddressScope::Site => Scope::Site,
            AddressScope::Link => Scope::Link,
            AddressScope::Host => Scope::Host,
            AddressScope::Nowhere => Scope::Other(255),
            AddressScope::Other(v) => Scope::Other(v),
            _ => Scope::Other(255),
        }
    }
}

/// A unicast route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0` / `::/0` for default).
    pub dst: IpNet,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Scope; `None` picks link for device routes and universe for gateway routes.
    pub scope: Option<Scope>,
    /// `RTNH_F_ONLINK`: the gateway is on the link even without a covering prefix.
    pub onlink: bool,
    /// Routing table (default [`TABLE_MAIN`]).
    pub table: u32,
    /// Metric (`RTA_PRIORITY`).
    pub metric: Option<u32>,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    /// Routing protocol number (`proto`, e.g. 83 for sarasa): who installed the route. Set on
    /// create (`None` means `boot`, iproute2's default), matched on delete when given, and
    /// always reported by a dump.
    pub protocol: Option<u8>,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        if self.table != TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// The metric the kernel gives an IPv6 route added without one (`IP6_RT_PRIO_USER`).
pub const IP6_DEFAULT_METRIC: u32 = 1024;

impl Route {
    /// The metric as the kernel keeps it: none (or 0) is 0 for IPv4 and 1024 for IPv6, so a
    /// wanted route compares equal to the one a dump returns.
    pub fn effective_metric(&self) -> u32 {
        match (self.metric.unwrap_or(0), self.dst) {
            (0, IpNet::V6(_)) => IP6_DEFAULT_METRIC,
            (m, _) => m,
        }
    }

    /// A route to `dst` in the main table, without next hop yet.
    pub fn new(dst: IpNet) -> Route {
        Route {
            dst,
            gateway: None,
            oif: None,
            scope: None,
            onlink: false,
            table: TABLE_MAIN,
            metric: None,
            src: None,
            protocol: None,
        }
    }

    /// The default route of `gw`'s family.
    pub fn default_via(gw: IpAddr) -> Route {
        let dst = match gw {
            IpAddr::V4(_) => IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            IpAddr::V6(_) => IpNet::new(Ipv6Addr::UNSPECIFIED.into(), 0),
        }
        .expect("prefix 0 is valid");
        Route::new(dst).via(gw)
    }

    /// Sets the gateway.
    pub fn via(mut self, gw: IpAddr) -> Route {
        self.gateway = Some(gw);
        self
    }

    /// Sets the output interface.
    pub fn dev(mut self, index: u32) -> Route {
        self.oif = Some(index);
        self
    }

    /// Marks the gateway on-link.
    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    /// Sets the scope explicitly.
    pub fn scope(mut self, scope: Scope) -> Route {
        self.scope = Some(scope);
        self
    }

    /// Sets the table.
    pub fn table(mut self, table: u32) -> Route {
        self.table = table;
        self
    }

    /// Sets the metric.
    pub fn metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }

    /// Sets the preferred source.
    pub fn src(mut self, src: IpAddr) -> Route {
        self.src = Some(src);
        self
    }

    /// Sets the routing protocol number.
    pub fn protocol(mut self, protocol: u8) -> Route {
        self.protocol = Some(protocol);
        self
    }

    fn effective_scope(&self) -> Scope {
        self.scope
            .unwrap_or(if self.gateway.is_none() && self.oif.is_some() {
                Scope::Link
            } else {
                Scope::Universe
            })
    }
}

/// A neighbour (ARP/NDP) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Interface index.
    pub index: u32,
    /// Protocol address.
    pub ip: IpAddr,
    /// Link-layer address (absent for proxy entries, incomplete ones and non-Ethernet links).
    pub mac: Option<MacAddr>,
    /// A proxy entry (answered by proxy ARP/NDP) rather than a cache entry.
    pub proxy: bool,
    /// Permanent (static) entry.
    pub permanent: bool,
}

/// Address family filter for dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

fn af(f: Option<Family>) -> AddressFamily {
    match f {
        None => AddressFamily::Unspec,
        Some(Family::V4) => AddressFamily::Inet,
        Some(Family::V6) => AddressFamily::Inet6,
    }
}

fn af_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// One rtnetlink socket, bound to the namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish()
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn current() -> Result<Netlink> {
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| Error::os("open netlink socket", e))?;
        let kernel = SocketAddr::new(0, 0);
        socket
            .bind_auto()
            .map_err(|e| Error::os("bind netlink socket", e))?;
        socket
            .connect(&kernel)
            .map_err(|e| Error::os("connect netlink socket", e))?;
        // Extended ACKs make the kernel explain EINVALs; ignored if unsupported.
        let _ = socket.set_ext_ack(true);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Opens a socket inside `ns` (from a short-lived thread; the caller does not move).
    pub fn open_in(ns: &NetNs) -> Result<Netlink> {
        ns.run(Netlink::current)?
    }

    // ---- links ------------------------------------------------------------------------------

    /// The link called `name`, or `None`.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(msg, name)
    }

    /// The link with index `index`, or `None`.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(msg, &format!("#{index}"))
    }

    fn get_link(&mut self, msg: LinkMessage, what: &str) -> Result<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0, || {
            format!("get link {what}")
        }) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Like [`link_by_name`](Self::link_by_name) but a missing link is an `ENODEV` error.
    pub fn link(&mut self, name: &str) -> Result<Link> {
        self.link_by_name(name)?.ok_or_else(|| {
            Error::os(
                format!("link {name}"),
                io::Error::from_raw_os_error(libc::ENODEV),
            )
        })
    }

    /// All links in this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let msgs = self.dump(RouteNetlinkMessage::GetLink(msg), || "dump links".into())?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
                _ => None,
            })
            .collect())
    }

    /// Creates a veth pair (`EEXIST` if `name` exists here, or `peer_name` in the peer's
    /// namespace). Both ends start down.
    pub fn add_veth(&mut self, veth: &Veth) -> Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(veth.peer_name.clone()));
        if let Some(mtu) = veth.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = veth.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(fd) = veth.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(veth.name.clone()));
        if let Some(mtu) = veth.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = veth.mac {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("add veth {} <-> {}", veth.name, veth.peer_name),
        )
    }

    /// Creates a bridge (`EEXIST` if the name is taken). Starts down.
    pub fn add_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<()> {
        self.add_simple(name, InfoKind::Bridge, mtu)
    }

    fn add_simple(&mut self, name: &str, kind: InfoKind, mtu: Option<u32>) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        let what = format!("add {kind} {name}");
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || what,
        )
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut msg = link_msg(index);
        msg.header.flags |= LinkFlags::Up;
        msg.header.change_mask |= LinkFlags::Up;
        self.set_link(msg, || format!("set link #{index} up"))
    }

    /// Sets a link down.
    pub fn set_down(&mut self, index: u32) -> Result<()> {
        let mut msg = link_msg(index);
        msg.header.flags.remove(LinkFlags::Up);
        msg.header.change_mask |= LinkFlags::Up;
        self.set_link(msg, || format!("set link #{index} down"))
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(msg, || format!("set link #{index} mtu {mtu}"))
    }

    /// Enslaves the link to `master` (a bridge's index); `0` releases it (`nomaster`).
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Controller(master));
        self.set_link(msg, || format!("set link #{index} master #{master}"))
    }

    /// Sets hairpin mode on a bridge port (`ip link set X type bridge_slave hairpin on`): lets
    /// a frame leave through the port it came in on, which a pod reaching itself through a
    /// Service (DNAT back to its own address) needs.
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        self.ack(RouteNetlinkMessage::NewLink(msg), 0, || {
            format!("set hairpin {on} on link #{index}")
        })
    }

    /// Moves the link into the namespace open at `netns_fd`.
    pub fn set_netns(&mut self, index: u32, netns_fd: RawFd) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::NetNsFd(netns_fd));
        self.set_link(msg, || format!("set link #{index} netns"))
    }

    /// Sets the link's alias (`ip link set X alias A`; at most 255 bytes).
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.set_link(msg, || format!("set link #{index} alias"))
    }

    /// Renames the link (it must be down).
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.set_link(msg, || format!("rename link #{index} to {name}"))
    }

    /// Sets the hardware address.
    pub fn set_mac(&mut self, index: u32, mac: MacAddr) -> Result<()> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        self.set_link(msg, || format!("set link #{index} address {mac}"))
    }

    fn set_link(&mut self, msg: LinkMessage, what: impl FnOnce() -> String) -> Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(msg), 0, what)
    }

    /// Deletes a link (a veth deletes its peer too). `ENODEV` if absent.
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        self.ack(RouteNetlinkMessage::DelLink(link_msg(index)), 0, || {
            format!("delete link #{index}")
        })
    }

    /// Deletes the link called `name`; `Ok(false)` if there was none.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.ack(RouteNetlinkMessage::DelLink(msg), 0, || {
            format!("delete link {name}")
        }) {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    // ---- addresses --------------------------------------------------------------------------

    /// Adds an address (`EEXIST` if present). IPv6 addresses skip duplicate address
    /// detection: sarasa's addresses are allocated, not autoconfigured, and DAD would keep
    /// them unusable for a second or more.
    pub fn addr_add(&mut self, index: u32, net: IpNet) -> Result<()> {
        let msg = addr_msg(index, net, true);
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("add address {net} on #{index}"),
        )
    }

    /// Removes an address (`EADDRNOTAVAIL` if absent).
    pub fn addr_del(&mut self, index: u32, net: IpNet) -> Result<()> {
        let msg = addr_msg(index, net, false);
        self.ack(RouteNetlinkMessage::DelAddress(msg), 0, || {
            format!("delete address {net} on #{index}")
        })
    }

    /// Addresses of one link (`Some(index)`) or all links, optionally of one family.
    pub fn addrs(&mut self, index: Option<u32>, family: Option<Family>) -> Result<Vec<Address>> {
        let mut msg = AddressMessage::default();
        msg.header.family = af(family);
        let msgs = self.dump(RouteNetlinkMessage::GetAddress(msg), || {
            "dump addresses".into()
        })?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if index.is_some_and(|i| i != a.header.index) {
                continue;
            }
            let mut ip = None;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(l) => ip = Some(*l),
                    AddressAttribute::Address(l) if ip.is_none() => ip = Some(*l),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                if let Ok(net) = IpNet::new(ip, a.header.prefix_len) {
                    out.push(Address {
                        index: a.header.index,
                        net,
                        scope: a.header.scope.into(),
                    });
                }
            }
        }
        Ok(out)
    }

    // ---- routes -----------------------------------------------------------------------------

    /// Adds a route (`EEXIST` if the same destination/metric exists).
    pub fn route_add(&mut self, route: &Route) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewRoute(route_msg(route, true)),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("add route {route}"),
        )
    }

    /// Adds or replaces a route.
    pub fn route_replace(&mut self, route: &Route) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewRoute(route_msg(route, true)),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("replace route {route}"),
        )
    }

    /// Deletes a route (`ESRCH` if absent). Fields left `None` match anything.
    pub fn route_del(&mut self, route: &Route) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::DelRoute(route_msg(route, false)),
            0,
            || format!("delete route {route}"),
        )
    }

    /// Unicast routes of the main table, optionally of one family.
    pub fn routes(&mut self, family: Option<Family>) -> Result<Vec<Route>> {
        self.routes_in_table(family, TABLE_MAIN)
    }

    /// Unicast routes of `table`.
    pub fn routes_in_table(&mut self, family: Option<Family>, table: u32) -> Result<Vec<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = af(family);
        let msgs = self.dump(RouteNetlinkMessage::GetRoute(msg), || "dump routes".into())?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.kind != RouteType::Unicast || r.header.flags.contains(RouteFlags::Cloned) {
                continue;
            }
            if let Some(route) = parse_route(&r) {
                if route.table == table {
                    out.push(route);
                }
            }
        }
        Ok(out)
    }

    // ---- neighbours -------------------------------------------------------------------------

    /// Adds or replaces a permanent neighbour entry (`ip neigh replace IP lladdr MAC dev X`).
    pub fn neigh_add(&mut self, index: u32, ip: IpAddr, mac: MacAddr) -> Result<()> {
        let mut msg = neigh_msg(index, ip, false);
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        self.ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add neighbour {ip} on #{index}"),
        )
    }

    /// Deletes a neighbour entry (`ENOENT` if absent).
    pub fn neigh_del(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::DelNeighbour(neigh_msg(index, ip, false)),
            0,
            || format!("delete neighbour {ip} on #{index}"),
        )
    }

    /// Adds a proxy entry (`ip neigh add proxy IP dev X`): with `proxy_ndp` (or `proxy_arp`
    /// for v4 when per-entry proxying is wanted) the link answers for `ip`.
    pub fn neigh_add_proxy(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        let mut msg = neigh_msg(index, ip, true);
        msg.header.state = NeighbourState::Permanent;
        self.ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("add proxy neighbour {ip} on #{index}"),
        )
    }

    /// Deletes a proxy entry.
    pub fn neigh_del_proxy(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::DelNeighbour(neigh_msg(index, ip, true)),
            0,
            || format!("delete proxy neighbour {ip} on #{index}"),
        )
    }

    /// Neighbour entries (`proxy` selects the proxy table instead of the cache).
    pub fn neighs(&mut self, family: Option<Family>, proxy: bool) -> Result<Vec<Neighbour>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = af(family);
        if proxy {
            msg.header.flags = NeighbourFlags::Proxy;
        }
        let msgs = self.dump(RouteNetlinkMessage::GetNeighbour(msg), || {
            "dump neighbours".into()
        })?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            // An unfiltered dump also walks the bridge family's FDB; those are not neighbours.
            if !matches!(n.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(IpAddr::V6(*v6))
                    }
                    NeighbourAttribute::LinkLayerAddress(m) => mac = MacAddr::from_bytes(m),
                    _ => {}
                }
            }
            let is_proxy = n.header.flags.contains(NeighbourFlags::Proxy);
            if is_proxy != proxy {
                continue;
            }
            if let Some(ip) = ip {
                out.push(Neighbour {
                    index: n.header.ifindex,
                    ip,
                    mac,
                    proxy: is_proxy,
                    permanent: n.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }

    // ---- raw protocol -----------------------------------------------------------------------

    /// Sends `msg` with `NLM_F_ACK` plus `flags`, and waits for the ACK.
    pub fn ack(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        self.request(msg, flags | NLM_F_ACK, what).map(|_| ())
    }

    /// Sends a dump request and collects every answer; retries when the kernel flags the dump
    /// as interrupted by a concurrent change.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        what: impl Fn() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_RETRIES {
            match self.request_inner(msg.clone(), NLM_F_DUMP, &what) {
                Ok((msgs, false)) => return Ok(msgs),
                Ok((_, true)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::os(what(), io::Error::from_raw_os_error(libc::EINTR)))
    }

    /// Sends one request and reads until its ACK, error or `DONE`; returns the messages read.
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.request_inner(msg, flags, what).map(|(m, _)| m)
    }

    fn request_inner(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl FnOnce() -> String,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool)> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        if let Err(e) = self.socket.send(&out, 0) {
            return Err(Error::os(what(), e));
        }

        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let wants_ack = flags & NLM_F_ACK == NLM_F_ACK;
        let mut result = Vec::new();
        let mut interrupted = false;
        loop {
            let n = loop {
                match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::os(what(), e)),
                }
            };
            if n > self.buf.len() {
                return Err(Error::Protocol(format!(
                    "netlink datagram of {n} bytes exceeds the {} byte buffer",
                    self.buf.len()
                )));
            }
            let mut off = 0;
            while off < n {
                let parsed: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&self.buf[off..n])
                        .map_err(|e| Error::Protocol(format!("decode: {e}")))?;
                let len = parsed.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if parsed.header.sequence_number != seq {
                    // A stale answer to an earlier request (e.g. after an error); skip it.
                    continue;
                }
                if parsed.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match parsed.payload {
                    NetlinkPayload::Done(_) => return Ok((result, interrupted)),
                    NetlinkPayload::Error(e) => {
                        if e.code.is_some() {
                            return Err(Error::os(what(), e.to_io()));
                        }
                        return Ok((result, interrupted));
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        result.push(m);
                        if !is_dump && !wants_ack {
                            return Ok((result, interrupted));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn link_msg(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

fn parse_link(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        mac: None,
        up: l.header.flags.contains(LinkFlags::Up),
        master: None,
        peer_index: None,
        link_netnsid: None,
        vxlan: None,
        alias: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(m) => link.mac = MacAddr::from_bytes(m),
            LinkAttribute::Controller(m) => link.master = Some(*m),
            LinkAttribute::Link(p) => link.peer_index = Some(*p),
            LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
            LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
                link.vxlan = vxlan::parse_info(infos);
            }
            _ => {}
        }
    }
    link
}

fn addr_msg(index: u32, net: IpNet, create: bool) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = net.prefix_len();
    match net {
        IpNet::V4(v4) => {
            msg.header.family = AddressFamily::Inet;
            msg.attributes
                .push(AddressAttribute::Local(IpAddr::V4(v4.addr())));
            msg.attributes
                .push(AddressAttribute::Address(IpAddr::V4(v4.addr())));
            if create && v4.prefix_len() < 31 {
                msg.attributes
                    .push(AddressAttribute::Broadcast(v4.broadcast()));
            }
        }
        IpNet::V6(v6) => {
            msg.header.family = AddressFamily::Inet6;
            msg.attributes
                .push(AddressAttribute::Address(IpAddr::V6(v6.addr())));
            if create {
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
    }
    msg
}

fn route_msg(route: &Route, create: bool) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let family = af_of(&route.dst.addr());
    msg.header.address_family = family;
    msg.header.destination_prefix_length = route.dst.prefix_len();
    msg.header.table = if route.table < 256 {
        route.table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    if let Some(p) = route.protocol {
        msg.header.protocol = RouteProtocol::from(p);
    }
    if create {
        if route.protocol.is_none() {
            msg.header.protocol = RouteProtocol::Boot;
        }
        msg.header.scope = route.effective_scope().into();
        msg.header.kind = RouteType::Unicast;
    } else {
        // A delete matches on what is given; NoWhere scope means "any scope".
        msg.header.scope = route
            .scope
            .map(RouteScope::from)
            .unwrap_or(RouteScope::NoWhere);
        msg.header.kind = RouteType::Unicast;
    }
    if route.onlink {
        msg.header.flags |= RouteFlags::Onlink;
    }
    msg.attributes.push(RouteAttribute::Table(route.table));
    if route.dst.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                route.dst.network(),
            )));
    }
    if let Some(gw) = route.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(m) = route.metric {
        msg.attributes.push(RouteAttribute::Priority(m));
    }
    if let Some(src) = route.src {
        msg.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    msg
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn parse_route(r: &RouteMessage) -> Option<Route> {
    let unspecified: IpAddr = match r.header.address_family {
        AddressFamily::Inet => Ipv4Addr::UNSPECIFIED.into(),
        AddressFamily::Inet6 => Ipv6Addr::UNSPECIFIED.into(),
        _ => return None,
    };
    let mut dst_addr = unspecified;
    let mut route = Route::new(IpNet::new(unspecified, 0).ok()?);
    route.table = r.header.table as u32;
    route.scope = Some(r.header.scope.into());
    route.onlink = r.header.flags.contains(RouteFlags::Onlink);
    route.protocol = Some(u8::from(r.header.protocol));
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => dst_addr = route_addr(d)?,
            RouteAttribute::Gateway(g) => route.gateway = route_addr(g),
            RouteAttribute::Oif(o) => route.oif = Some(*o),
            RouteAttribute::Priority(p) => route.metric = Some(*p),
            RouteAttribute::PrefSource(s) => route.src = route_addr(s),
            RouteAttribute::Table(t) => route.table = *t,
            _ => {}
        }
    }
    route.dst = IpNet::new(dst_addr, r.header.destination_prefix_length).ok()?;
    Some(route)
}

fn neigh_msg(index: u32, ip: IpAddr, proxy: bool) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = af_of(&ip);
    msg.header.ifindex = index;
    if proxy {
        msg.header.flags = NeighbourFlags::Proxy;
    }
    msg.attributes
        .push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scope_follows_next_hop() {
        let dev = Route::new("10.0.0.0/24".parse().unwrap()).dev(3);
        assert_eq!(dev.effective_scope(), Scope::Link);
        let gw = Route::default_via("10.0.0.1".parse().unwrap()).dev(3);
        assert_eq!(gw.effective_scope(), Scope::Universe);
        assert_eq!(gw.dst.to_string(), "0.0.0.0/0");
    }

    #[test]
    fn route_message_round_trip() {
        let r = Route::default_via("fe80::1".parse().unwrap())
            .dev(7)
            .onlink()
            .metric(100)
            .protocol(83);
        let msg = route_msg(&r, true);
        let back = parse_route(&msg).unwrap();
        assert_eq!(back.dst, r.dst);
        assert_eq!(back.gateway, r.gateway);
        assert_eq!(back.oif, Some(7));
        assert!(back.onlink);
        assert_eq!(back.metric, Some(100));
        assert_eq!(back.table, TABLE_MAIN);
        assert_eq!(back.protocol, Some(83));
        // Without a protocol, creation says `boot` (as iproute2 does) and a delete matches any.
        let plain = Route::new("10.0.0.0/24".parse().unwrap()).dev(3);
        assert_eq!(
            parse_route(&route_msg(&plain, true)).unwrap().protocol,
            Some(3)
        );
        assert_eq!(
            parse_route(&route_msg(&plain, false)).unwrap().protocol,
            Some(0)
        );
    }
}
