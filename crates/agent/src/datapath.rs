//! apply: programs a node namespace over netlink by diffing the kernel against the plan.
//! Nothing is flushed or recreated when it is already right, so an agent restart leaves
//! established traffic alone. Routes the agent installs carry their own routing protocol number
//! ([`ROUTE_PROTOCOL`]) so stale ones are found without touching anybody else's.
//!
//! The netlink client is `sarasa-netns`'s synchronous one, the same the CNI plugin uses: one
//! socket opened in the node's namespace, behind a mutex, driven from tokio's blocking pool.
//! Each public call does its whole read or write sequence in one blocking task.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;
use sarasa_netns::{Family, Link, Netlink, Scope, VxlanSpec, TABLE_MAIN};

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
/// The protocol BIRD marks the routes it installs with (`RTPROT_BIRD`): with `--backend bgp`
/// the routes to other nodes' podCIDRs are these.
pub const BIRD_ROUTE_PROTOCOL: u8 = 12;

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
    netlink: Arc<Mutex<Netlink>>,
}

/// Deletes of something already gone are success: the diff read the kernel a moment ago.
fn ignore_missing(r: sarasa_netns::Result<()>) -> sarasa_netns::Result<()> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Global-scope addresses (with prefix) on link `index`.
fn addresses(nl: &mut Netlink, index: u32) -> Result<Vec<IpNet>> {
    Ok(nl
        .addrs(Some(index), None)
        .map_err(|e| Error::netlink("dump addresses", e))?
        .into_iter()
        .filter(|a| a.scope == Scope::Universe)
        .map(|a| a.net)
        .collect())
}

fn link_by_name(nl: &mut Netlink, name: &str) -> Result<Option<Link>> {
    nl.link_by_name(name)
        .map_err(|e| Error::netlink(format!("get link {name}"), e))
}

fn discover_uplink(nl: &mut Netlink, name: Option<&str>, exclude: &[IpNet]) -> Result<Uplink> {
    let links = nl.links().map_err(|e| Error::netlink("dump links", e))?;
    let chosen = match name {
        Some(n) => links
            .iter()
            .find(|l| l.name == n)
            .ok_or_else(|| Error::Uplink(format!("interface {n:?} (--uplink) does not exist")))?
            .clone(),
        None => {
            let default_oif = nl
                .routes(Some(Family::V4))
                .map_err(|e| Error::netlink("dump routes", e))?
                .iter()
                .filter(|r| r.dst.prefix_len() == 0 && r.table == TABLE_MAIN)
                .find_map(|r| r.oif);
            match default_oif.and_then(|i| links.iter().find(|l| l.index == i)) {
                Some(l) => l.clone(),
                None => {
                    let mut candidates = Vec::new();
                    for l in links.iter().filter(|l| l.up && l.name != "lo") {
                        // Pod-side addresses (the CNI's gateways, link-local proxy-ARP
                        // gateways) never make an interface the underlay.
                        if addresses(nl, l.index)?.iter().any(|a| {
                            a.addr().is_ipv4()
                                && !a.addr().is_loopback()
                                && !matches!(a.addr(), IpAddr::V4(v4) if v4.is_link_local())
                                && !exclude.iter().any(|c| c.contains(&a.addr()))
                        }) {
                            candidates.push(l.clone());
                        }
                    }
                    candidates.retain(|l| l.vxlan.is_none() && l.name != crate::plan::NODE_BRIDGE);
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
    let addrs = addresses(nl, chosen.index)?;
    let address = addrs
        .iter()
        .find(|a| a.addr().is_ipv4())
        .or_else(|| addrs.first())
        .map(|a| a.addr())
        .ok_or_else(|| Error::Uplink(format!("interface {} has no global address", chosen.name)))?;
    Ok(Uplink {
        name: chosen.name,
        index: chosen.index,
        mtu: chosen.mtu,
        address,
    })
}

/// Makes sure the VXLAN device exists as specified (creating it with `mac` when given, so the
/// vtep MAC survives a device recreation) and returns it. An existing device with the right
/// VNI, port, local address and uplink is kept as is (only MTU/up are adjusted).
fn ensure_vxlan(
    nl: &mut Netlink,
    dev: &VxlanDevice,
    uplink_index: u32,
    mac: Option<MacAddr>,
    report: &mut ProgramReport,
) -> Result<Link> {
    if let Some(cur) = link_by_name(nl, &dev.name)? {
        let ok = cur.vxlan.as_ref().is_some_and(|v| {
            v.vni == Some(dev.vni)
                && v.port == Some(dev.port)
                && v.local == Some(dev.local)
                && v.uplink == Some(uplink_index)
                && v.learning != Some(true)
        });
        if ok {
            if cur.mtu != dev.mtu || !cur.up {
                nl.set_mtu(cur.index, dev.mtu)
                    .and_then(|()| nl.set_up(cur.index))
                    .map_err(|e| Error::netlink(format!("set {} mtu/up", dev.name), e))?;
                report.link_changes += 1;
            }
            return link_by_name(nl, &dev.name)?
                .ok_or_else(|| Error::Uplink(format!("{} vanished", dev.name)));
        }
        tracing::warn!(device = %dev.name, "VXLAN device has wrong parameters; recreating");
        nl.delete_link(cur.index)
            .map_err(|e| Error::netlink(format!("delete {}", dev.name), e))?;
    }
    let spec = VxlanSpec {
        name: dev.name.clone(),
        vni: dev.vni,
        port: dev.port,
        local: dev.local,
        uplink: uplink_index,
        mtu: Some(dev.mtu),
        mac,
        up: true,
    };
    nl.add_vxlan(&spec)
        .map_err(|e| Error::netlink(format!("create {}", dev.name), e))?;
    report.vxlan_created = true;
    link_by_name(nl, &dev.name)?
        .ok_or_else(|| Error::Uplink(format!("{} missing after creation", dev.name)))
}

/// Sets exactly `want` as the global addresses of link `index` (adds missing, removes others).
fn sync_addresses(
    nl: &mut Netlink,
    index: u32,
    want: &BTreeSet<IpNet>,
    report: &mut ProgramReport,
) -> Result<()> {
    let have: BTreeSet<IpNet> = addresses(nl, index)?.into_iter().collect();
    for a in want.difference(&have) {
        nl.addr_add(index, *a)
            .map_err(|e| Error::netlink(format!("add address {a}"), e))?;
        report.address_changes += 1;
    }
    for a in have.difference(want) {
        ignore_missing(nl.addr_del(index, *a))
            .map_err(|e| Error::netlink(format!("delete address {a}"), e))?;
        report.address_changes += 1;
    }
    Ok(())
}

/// Reads what the agent owns in the kernel: routes with [`ROUTE_PROTOCOL`] in the main table,
/// and permanent FDB/neighbour entries on the VXLAN device.
pub fn read_fabric(
    nl: &mut Netlink,
    vxlan_index: Option<u32>,
    uplink_index: u32,
) -> Result<Fabric> {
    read_fabric_of(nl, vxlan_index, uplink_index, ROUTE_PROTOCOL)
}

/// [`read_fabric`] with the routes of `route_protocol` (e.g. [`BIRD_ROUTE_PROTOCOL`]).
pub fn read_fabric_of(
    nl: &mut Netlink,
    vxlan_index: Option<u32>,
    uplink_index: u32,
    route_protocol: u8,
) -> Result<Fabric> {
    let mut fabric = Fabric::default();
    for family in [Family::V4, Family::V6] {
        let routes = nl
            .routes(Some(family))
            .map_err(|e| Error::netlink("dump routes", e))?;
        for r in routes {
            if r.protocol != Some(route_protocol) || r.table != TABLE_MAIN {
                continue;
            }
            let (Some(gateway), Some(oif)) = (r.gateway, r.oif) else {
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
                dst: r.dst,
                gateway,
                dev,
                onlink: r.onlink,
            });
        }
    }
    let Some(vx) = vxlan_index else {
        return Ok(fabric);
    };
    let neighbours = nl
        .neighs(None, false)
        .map_err(|e| Error::netlink("dump neighbours", e))?;
    for n in neighbours.iter().filter(|n| n.index == vx && n.permanent) {
        if let Some(mac) = n.mac {
            fabric.neighbours.insert(Neighbour { ip: n.ip, mac });
        }
    }
    let fdb = nl.fdbs(vx).map_err(|e| Error::netlink("dump fdb", e))?;
    for e in fdb.iter().filter(|e| e.permanent) {
        if let Some(dst) = e.dst {
            fabric.fdb.insert(FdbEntry { mac: e.mac, dst });
        }
    }
    Ok(fabric)
}

/// The metric of the agent's own routes with the BGP backend: BIRD's (metric 32) win while
/// BGP delivers them; the agent's carry the traffic when BGP has taken its routes away (a
/// peer that refused the session ends graceful restart), so routes are kept.
pub const BGP_FALLBACK_METRIC: u32 = 1024;

/// The kernel route for a plan route: main table, universe scope, [`ROUTE_PROTOCOL`], and
/// `metric` when given.
fn kernel_route(
    route: &Route,
    vxlan_index: Option<u32>,
    uplink_index: u32,
    metric: Option<u32>,
) -> Result<sarasa_netns::Route> {
    let oif = match route.dev {
        RouteDev::Vxlan => vxlan_index
            .ok_or_else(|| Error::Uplink("route via VXLAN device but it does not exist".into()))?,
        RouteDev::Uplink => uplink_index,
        RouteDev::Other(i) => i,
    };
    let mut r = sarasa_netns::Route::new(route.dst)
        .via(route.gateway)
        .dev(oif)
        .scope(Scope::Universe)
        .table(TABLE_MAIN)
        .protocol(ROUTE_PROTOCOL);
    r.onlink = route.onlink;
    r.metric = metric;
    Ok(r)
}

/// Deletes the agent's routes (main table, [`ROUTE_PROTOCOL`]) whose metric is not `metric`
/// (none given: the kernel's default, 0 for IPv4 and 1024 for IPv6); returns how many.
fn drop_other_metrics(nl: &mut Netlink, metric: Option<u32>) -> Result<usize> {
    let mut dropped = 0;
    for (family, default) in [
        (Family::V4, 0),
        (Family::V6, sarasa_netns::IP6_DEFAULT_METRIC),
    ] {
        let metric = metric.unwrap_or(default);
        let routes = nl
            .routes(Some(family))
            .map_err(|e| Error::netlink("dump routes", e))?;
        for r in routes {
            let ours = r.protocol == Some(ROUTE_PROTOCOL) && r.table == TABLE_MAIN;
            if !ours || r.effective_metric() == metric {
                continue;
            }
            ignore_missing(nl.route_del(&r)).map_err(|e| Error::netlink("delete route", e))?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Executes fabric operations in order.
fn apply_ops(
    nl: &mut Netlink,
    ops: &[FabricOp],
    vxlan_index: Option<u32>,
    uplink_index: u32,
    metric: Option<u32>,
) -> Result<()> {
    for op in ops {
        let res = match op {
            FabricOp::AddFdb(e) => {
                let vx = vxlan_index
                    .ok_or_else(|| Error::Uplink("FDB entry without VXLAN device".into()))?;
                nl.fdb_replace(vx, e.mac, e.dst)
            }
            FabricOp::DelFdb(e) => {
                let Some(vx) = vxlan_index else { continue };
                ignore_missing(nl.fdb_del(vx, e.mac, e.dst))
            }
            FabricOp::AddNeighbour(n) | FabricOp::ReplaceNeighbour(n) => {
                let vx = vxlan_index
                    .ok_or_else(|| Error::Uplink("neighbour without VXLAN device".into()))?;
                nl.neigh_add(vx, n.ip, n.mac)
            }
            FabricOp::DelNeighbour(n) => {
                let Some(vx) = vxlan_index else { continue };
                ignore_missing(nl.neigh_del(vx, n.ip))
            }
            // Written with NLM_F_REPLACE: a route to the same destination that is not ours
            // (another protocol, left behind) is taken over instead of failing every reconcile
            // with EEXIST. Which destinations are ours to take is decided by the plan, which
            // refuses podCIDRs that overlap the underlay or another node's.
            FabricOp::AddRoute(r) | FabricOp::ReplaceRoute(r) => {
                nl.route_replace(&kernel_route(r, vxlan_index, uplink_index, metric)?)
            }
            FabricOp::DelRoute(r) => {
                ignore_missing(nl.route_del(&kernel_route(r, vxlan_index, uplink_index, metric)?))
            }
        };
        res.map_err(|e| Error::netlink(format!("{op:?}"), e))?;
    }
    Ok(())
}

/// Turns on IP forwarding in the calling thread's namespace (and IPv6 forwarding when `ipv6`).
fn enable_forwarding(ipv6: bool) -> Result<()> {
    let mut keys = vec!["net/ipv4/ip_forward"];
    if ipv6 {
        keys.push("net/ipv6/conf/all/forwarding");
    }
    for key in keys {
        let path = format!("/proc/sys/{key}");
        let sysctl = |source| Error::Sysctl {
            key: key.replace('/', "."),
            source,
        };
        let cur = std::fs::read_to_string(&path).map_err(sysctl)?;
        if cur.trim() != "1" {
            std::fs::write(&path, "1").map_err(sysctl)?;
        }
    }
    Ok(())
}

/// The netlink part of [`NodeDatapath::program`]: device, addresses, fabric diff.
fn program_links(
    nl: &mut Netlink,
    plan: &NodePlan,
    uplink_index: u32,
    vtep_mac: Option<MacAddr>,
    report: &mut ProgramReport,
) -> Result<()> {
    let vxlan_index = match &plan.vxlan {
        Some(dev) => {
            let link = ensure_vxlan(nl, dev, uplink_index, vtep_mac, report)?;
            sync_addresses(nl, link.index, &dev.addresses, report)?;
            Some(link.index)
        }
        None => {
            if let Some(stale) = link_by_name(nl, VXLAN_DEVICE)? {
                if stale.vxlan.is_some() {
                    nl.delete_link(stale.index)
                        .map_err(|e| Error::netlink(format!("delete stale {VXLAN_DEVICE}"), e))?;
                    report.link_changes += 1;
                }
            }
            None
        }
    };
    // With BGP, BIRD's routes carry the traffic; the agent's, the same routes with a worse
    // metric, stand behind them.
    let metric = plan.routes_by_bgp.then_some(BGP_FALLBACK_METRIC);
    // Routes of ours with another metric (a node switched between host-gw and bgp) would
    // stand in front of BIRD's, or behind nothing: they go, and the diff writes them anew.
    report.link_changes += drop_other_metrics(nl, metric)?;
    let current = read_fabric(nl, vxlan_index, uplink_index)?;
    let ops = diff(&plan.fabric, &current);
    apply_ops(nl, &ops, vxlan_index, uplink_index, metric)?;
    report.fabric_ops = ops;
    Ok(())
}

impl NodeDatapath {
    /// Connects to the target namespace; refuses the machine's root namespace unless
    /// `allow_host_netns`.
    pub async fn connect(target: NetnsTarget, allow_host_netns: bool) -> Result<Self> {
        netns::guard(&target, allow_host_netns)?;
        let netlink = netns::run_in(&target, || {
            Netlink::current().map_err(|e| Error::netlink("open socket", e))
        })
        .await?;
        Ok(NodeDatapath {
            target,
            netlink: Arc::new(Mutex::new(netlink)),
        })
    }

    pub fn target(&self) -> &NetnsTarget {
        &self.target
    }

    /// Runs `f` with the socket on tokio's blocking pool (netlink calls block on the kernel).
    async fn with_netlink<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Netlink) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let netlink = Arc::clone(&self.netlink);
        tokio::task::spawn_blocking(move || {
            // A panic mid-request leaves at most a stale answer, which the client skips by
            // sequence number: the socket stays usable.
            let mut nl = netlink.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut nl)
        })
        .await
        .map_err(|e| Error::Config(format!("netlink task failed: {e}")))?
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        self.with_netlink(|nl| nl.links().map_err(|e| Error::netlink("dump links", e)))
            .await
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let name = name.to_string();
        self.with_netlink(move |nl| link_by_name(nl, &name)).await
    }

    /// Addresses (with prefix) on a link, global scope only.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        self.with_netlink(move |nl| addresses(nl, index)).await
    }

    /// Finds the underlay interface: `name` if given, else the default route's device, else the
    /// only up interface with a global IPv4 address outside `exclude` (the cluster CIDRs). Its
    /// first global IPv4 (else IPv6) address is the node's underlay address.
    pub async fn discover_uplink(&self, name: Option<&str>, exclude: &[IpNet]) -> Result<Uplink> {
        let name = name.map(str::to_string);
        let exclude = exclude.to_vec();
        self.with_netlink(move |nl| discover_uplink(nl, name.as_deref(), &exclude))
            .await
    }

    /// Makes sure the VXLAN device exists as specified (see [`ensure_vxlan`]) and returns it.
    pub async fn ensure_vxlan(
        &self,
        dev: &VxlanDevice,
        uplink_index: u32,
        mac: Option<MacAddr>,
        report: &mut ProgramReport,
    ) -> Result<Link> {
        let dev = dev.clone();
        let (link, r) = self
            .with_netlink(move |nl| {
                let mut r = ProgramReport::default();
                ensure_vxlan(nl, &dev, uplink_index, mac, &mut r).map(|l| (l, r))
            })
            .await?;
        report.vxlan_created |= r.vxlan_created;
        report.link_changes += r.link_changes;
        Ok(link)
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
        let want = want.clone();
        let changes = self
            .with_netlink(move |nl| {
                let mut r = ProgramReport::default();
                sync_addresses(nl, index, &want, &mut r).map(|()| r.address_changes)
            })
            .await?;
        report.address_changes += changes;
        Ok(())
    }

    /// Reads what the agent owns in the kernel: routes with [`ROUTE_PROTOCOL`] in the main
    /// table, and permanent FDB/neighbour entries on the VXLAN device.
    /// The gateway of the main table's default route of `address`'s family.
    pub async fn default_gateway(&self, ipv4: bool) -> Result<Option<IpAddr>> {
        self.with_netlink(move |nl| {
            let family = if ipv4 { Family::V4 } else { Family::V6 };
            let routes = nl
                .routes(Some(family))
                .map_err(|e| Error::netlink("dump routes", e))?;
            Ok(routes
                .into_iter()
                .filter(|r| r.table == TABLE_MAIN && r.dst.prefix_len() == 0)
                .find_map(|r| r.gateway))
        })
        .await
    }

    pub async fn read_fabric(&self, vxlan_index: Option<u32>, uplink_index: u32) -> Result<Fabric> {
        self.with_netlink(move |nl| read_fabric(nl, vxlan_index, uplink_index))
            .await
    }

    /// Executes fabric operations in order.
    pub async fn apply_ops(
        &self,
        ops: &[FabricOp],
        vxlan_index: Option<u32>,
        uplink_index: u32,
    ) -> Result<()> {
        let ops = ops.to_vec();
        self.with_netlink(move |nl| apply_ops(nl, &ops, vxlan_index, uplink_index, None))
            .await
    }

    /// Turns on IP forwarding in this namespace (and IPv6 forwarding when `ipv6`).
    pub async fn enable_forwarding(&self, ipv6: bool) -> Result<()> {
        netns::run_in(&self.target, move || enable_forwarding(ipv6)).await
    }

    /// The fabric part of a plan, for a caller that may block (the applier, on tokio's
    /// blocking pool): forwarding, the VXLAN device and its addresses, the fabric diff. Not
    /// the masquerade table: the applier commits it with the other tables.
    pub fn program_fabric_blocking(
        &self,
        plan: &NodePlan,
        uplink_index: u32,
        vtep_mac: Option<MacAddr>,
    ) -> Result<ProgramReport> {
        let ipv6 = plan.ipv6;
        netns::run_in_sync(&self.target, move || enable_forwarding(ipv6))?;
        let mut nl = self.netlink.lock().unwrap_or_else(PoisonError::into_inner);
        let mut report = ProgramReport::default();
        program_links(&mut nl, plan, uplink_index, vtep_mac, &mut report)?;
        Ok(report)
    }

    /// Programs the whole plan: forwarding, the VXLAN device and its addresses, the fabric
    /// diff, and masquerade. `vtep_mac` is used only when the device must be created.
    pub async fn program(
        &self,
        plan: &NodePlan,
        uplink: &Uplink,
        vtep_mac: Option<MacAddr>,
    ) -> Result<ProgramReport> {
        self.enable_forwarding(plan.ipv6).await?;
        let links_plan = plan.clone();
        let uplink_index = uplink.index;
        let report = self
            .with_netlink(move |nl| {
                let mut report = ProgramReport::default();
                program_links(nl, &links_plan, uplink_index, vtep_mac, &mut report).map(|()| report)
            })
            .await?;
        masquerade::apply(&self.target, &plan.masquerade).await?;
        Ok(report)
    }
}
