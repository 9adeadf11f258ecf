//! The WAN between a cluster set's sites: the namespace `sarasa-wan-<SET>` with one bridge,
//! where the broker listens, and one veth per member lab from its fabric namespace (the site's
//! router, `wan0`) to a port of the bridge. Only namespaces this module or the lab made are
//! touched.
//!
//! The WAN's impairments ([`WanLink`]): loss is the nftables table `bridge sarasa-wan`, whose
//! forward chain drops a frame crossing the bridge between two ports with the set's
//! probability (`numgen random mod 10000 < N drop`, written over netlink); delay is the set's
//! delay line ([`super::delay_line`]), which holds each IPv4 packet crossing the bridge once.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use sarasa_model::MacAddr;
use sarasa_netns::{NetNs, Netlink, Veth};
use sarasa_nft::{
    Backend, Chain, ChainType, Expr, Family, Hook, NetlinkBackend, NetlinkTableBackend, Policy,
    Rule, Table, Transaction, Value, Verdict,
};

use super::state::{wan_netns, Member, WanLink, BROKER_IP};
use crate::spec::LabSpec;
use crate::LabError;

const BRIDGE: &str = "wan";
/// The site router's end of its WAN link, in the lab's fabric namespace.
pub const SITE_LINK: &str = "wan0";
const PREFIX: u8 = 24;
/// The WAN bridge's own address (locally administered): the broker's MAC, fixed.
const BRIDGE_MAC: MacAddr = MacAddr([0x02, 0x5a, 0x57, 0x41, 0x4e, 0x01]);

fn net(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::new(ip, PREFIX).expect("constant prefix"))
}

/// Creates the WAN namespace and its bridge (holding the broker's address), unless it exists.
pub fn ensure(set: &str) -> Result<(), LabError> {
    let name = wan_netns(set);
    if NetNs::exists(&name) {
        return Ok(());
    }
    let ns = NetNs::create(&name).map_err(LabError::netns)?;
    let build = || -> Result<(), LabError> {
        let mut nl = Netlink::open_in(&ns).map_err(LabError::netns)?;
        crate::topology::lo_up(&mut nl)?;
        nl.add_bridge(BRIDGE, None).map_err(LabError::netns)?;
        let br = nl.link(BRIDGE).map_err(LabError::netns)?;
        // A bridge without an address of its own takes its lowest port's, so the broker's MAC
        // would change as labs join and leave, and the sites' ARP caches would point at a MAC
        // nobody answers to (seen: a sync that could not reach the broker for 40 s after
        // another lab left).
        nl.set_mac(br.index, BRIDGE_MAC).map_err(LabError::netns)?;
        nl.addr_add(br.index, net(BROKER_IP))
            .map_err(LabError::netns)?;
        nl.set_up(br.index).map_err(LabError::netns)
    };
    build().inspect_err(|_| {
        let _ = NetNs::delete(&name);
    })
}

/// Connects a lab's fabric namespace to the WAN at the member's address.
pub fn attach(set: &str, spec: &LabSpec, m: &Member) -> Result<(), LabError> {
    plug(set, &spec.fabric_netns, &m.wan_port, m.wan_ip).map_err(|e| match e {
        LabError::Netns(_) if !NetNs::exists(&spec.fabric_netns) => {
            LabError::NotUp(format!("lab {:?} is not up", spec.name))
        }
        e => e,
    })
}

/// Gives a namespace (a site router, a gateway node) a link `wan0` on the WAN at `ip`,
/// through port `port` of the WAN bridge.
pub fn plug(set: &str, netns: &str, port: &str, ip: Ipv4Addr) -> Result<(), LabError> {
    let wan = NetNs::open(wan_netns(set)).map_err(LabError::netns)?;
    let host = NetNs::open(netns).map_err(LabError::netns)?;
    let mut w = Netlink::open_in(&wan).map_err(LabError::netns)?;
    w.add_veth(&Veth {
        name: port.to_string(),
        peer_name: SITE_LINK.into(),
        peer_netns: Some(host.fd()),
        mtu: None,
        mac: None,
        peer_mac: None,
    })
    .map_err(LabError::netns)?;
    let done = (|| -> Result<(), LabError> {
        let p = w.link(port).map_err(LabError::netns)?;
        let br = w.link(BRIDGE).map_err(LabError::netns)?;
        w.set_master(p.index, br.index).map_err(LabError::netns)?;
        w.set_up(p.index).map_err(LabError::netns)?;
        let mut h = Netlink::open_in(&host).map_err(LabError::netns)?;
        let link = h.link(SITE_LINK).map_err(LabError::netns)?;
        h.addr_add(link.index, net(ip)).map_err(LabError::netns)?;
        h.set_up(link.index).map_err(LabError::netns)
    })();
    if done.is_err() {
        let _ = w.delete_link_by_name(port);
    }
    done
}

/// Removes WAN port `port` (its far end goes with the veth); nothing to do when the WAN is
/// gone.
pub fn unplug(set: &str, port: &str) -> Result<(), LabError> {
    let Ok(wan) = NetNs::open(wan_netns(set)) else {
        return Ok(());
    };
    let mut w = Netlink::open_in(&wan).map_err(LabError::netns)?;
    w.delete_link_by_name(port)
        .map(|_| ())
        .map_err(LabError::netns)
}

/// Disconnects a lab's site router and gateways.
pub fn detach(set: &str, m: &Member) -> Result<(), LabError> {
    unplug(set, &m.wan_port)?;
    for g in &m.gateways {
        unplug(set, &g.wan_port)?;
    }
    Ok(())
}

/// Removes the WAN namespace (and every link in it).
pub fn destroy(set: &str) -> Result<(), LabError> {
    let name = wan_netns(set);
    if !NetNs::exists(&name) {
        return Ok(());
    }
    NetNs::delete(&name).map_err(LabError::netns)
}

/// The WAN ports of a member: its site router's and its gateways'.
pub fn ports(m: &Member) -> Vec<&str> {
    std::iter::once(m.wan_port.as_str())
        .chain(m.gateways.iter().map(|g| g.wan_port.as_str()))
        .collect()
}

/// The table that drops frames crossing the WAN bridge.
pub const LOSS_TABLE: &str = "sarasa-wan";
/// `numgen` draws below this; the loss in hundredths of a percent is the bound under it.
const LOSS_SCALE: u32 = 10_000;

/// The loss table for `loss_bp` hundredths of a percent (not 0): the bridge's forward hook, at
/// the bridge family's filter priority, drops a frame between ports when a draw from 10000 is
/// below it (every frame at 100%: nft refuses a bound at the modulus).
pub fn loss_table(loss_bp: u32) -> Table {
    let wan = WanLink {
        delay_us: 0,
        loss_bp,
    };
    let rule = if loss_bp >= LOSS_SCALE {
        Rule::new()
    } else {
        Rule::new().lt(
            Expr::NumgenRandom(LOSS_SCALE),
            Expr::Value(Value::Num(loss_bp)),
        )
    };
    let mut t = Table::new(Family::Bridge, LOSS_TABLE);
    t.add_chain(
        Chain::base(
            "forward",
            ChainType::Filter,
            Hook::Forward,
            -200,
            Policy::Accept,
        )
        .rule(
            rule.verdict(Verdict::Drop)
                .comment(format!("wan loss {}", wan.loss_text())),
        ),
    );
    t
}

/// Programs the WAN's loss: the table as [`loss_table`] makes it, or no table at 0.
pub fn set_loss(set: &str, loss_bp: u32) -> Result<(), LabError> {
    let path = Path::new(sarasa_netns::NETNS_RUN_DIR).join(wan_netns(set));
    let err = |e: sarasa_nft::NftError| LabError::Process(format!("WAN loss of {set}: {e}"));
    let mut nl = NetlinkBackend::in_netns(&path).map_err(err)?;
    if loss_bp == 0 {
        if nl
            .list_table(Family::Bridge, LOSS_TABLE)
            .map_err(err)?
            .is_some()
        {
            nl.apply_to(
                Family::Bridge,
                LOSS_TABLE,
                &Transaction::delete_table(Family::Bridge, LOSS_TABLE),
            )
            .map_err(err)?;
        }
        return Ok(());
    }
    let mut b = NetlinkTableBackend {
        inner: nl,
        family: Family::Bridge,
        table: LOSS_TABLE.into(),
    };
    b.reconcile(&loss_table(loss_bp)).map(|_| ()).map_err(err)
}
