//! VXLAN devices and their forwarding database (FDB): what a node needs to reach pods behind
//! other nodes' vteps. Kept apart from `netlink.rs` (links, addresses, routes, neighbours) so
//! each file has one job; both drive the same [`Netlink`] socket.
//!
//! FDB entries are bridge-family (`AF_BRIDGE`) neighbour messages on the VXLAN device with
//! `NTF_SELF`: "frames for this MAC go to this remote vtep", the `bridge fdb ... dst` of iproute2.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use sarasa_model::MacAddr;

use crate::error::Result;
use crate::netlink::Netlink;

/// A VXLAN device to create (`ip link add NAME type vxlan id VNI dstport PORT local IP dev
/// UPLINK nolearning`). Learning is always off: remote vteps are programmed, never learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Device name, e.g. `sarasa.vxlan`.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port (4789 is the IANA port).
    pub port: u16,
    /// Local underlay address the encapsulated packets leave from.
    pub local: IpAddr,
    /// Index of the underlay link (`dev`).
    pub uplink: u32,
    /// MTU (kernel default when `None`).
    pub mtu: Option<u32>,
    /// The vtep MAC (kernel-random when `None`); pinned so a recreated device keeps the MAC
    /// other nodes already have in their FDBs.
    pub mac: Option<MacAddr>,
    /// Bring the device up on creation.
    pub up: bool,
}

/// The VXLAN parameters of an existing device, as read from its link info. A field is `None`
/// when the kernel did not report it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanInfo {
    /// VXLAN network identifier.
    pub vni: Option<u32>,
    /// UDP destination port.
    pub port: Option<u16>,
    /// Local underlay address.
    pub local: Option<IpAddr>,
    /// Index of the underlay link.
    pub uplink: Option<u32>,
    /// Whether the device learns remote MACs from received frames.
    pub learning: Option<bool>,
}

/// One FDB entry of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fdb {
    /// Index of the device (the VXLAN device).
    pub index: u32,
    /// Destination MAC (a remote vtep's MAC).
    pub mac: MacAddr,
    /// Remote vtep underlay address (`None` for local or plain bridge entries).
    pub dst: Option<IpAddr>,
    /// Permanent (static) entry rather than learned.
    pub permanent: bool,
}

/// Reads the VXLAN attributes of a link's `IFLA_LINKINFO`; `None` unless its kind is vxlan.
pub(crate) fn parse_info(infos: &[LinkInfo]) -> Option<VxlanInfo> {
    if !infos
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)))
    {
        return None;
    }
    let mut v = VxlanInfo::default();
    for i in infos {
        let LinkInfo::Data(InfoData::Vxlan(data)) = i else {
            continue;
        };
        for d in data {
            match d {
                InfoVxlan::Id(id) => v.vni = Some(*id),
                InfoVxlan::Port(p) => v.port = Some(*p),
                InfoVxlan::Local(a) => v.local = Some(IpAddr::V4(*a)),
                InfoVxlan::Local6(a) => v.local = Some(IpAddr::V6(*a)),
                InfoVxlan::Link(l) => v.uplink = Some(*l),
                InfoVxlan::Learning(l) => v.learning = Some(*l),
                _ => {}
            }
        }
    }
    Some(v)
}

fn vxlan_msg(spec: &VxlanSpec) -> LinkMessage {
    let mut data = vec![
        InfoVxlan::Id(spec.vni),
        InfoVxlan::Port(spec.port),
        InfoVxlan::Link(spec.uplink),
        InfoVxlan::Learning(false),
    ];
    data.push(match spec.local {
        IpAddr::V4(a) => InfoVxlan::Local(a),
        IpAddr::V6(a) => InfoVxlan::Local6(a),
    });
    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::IfName(spec.name.clone()));
    if let Some(mtu) = spec.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.mac {
        msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if spec.up {
        msg.header.flags |= LinkFlags::Up;
        msg.header.change_mask |= LinkFlags::Up;
    }
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(data)),
    ]));
    msg
}

fn fdb_msg(index: u32, mac: MacAddr, dst: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(match dst {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    msg
}

/// Bridge-family messages carry the remote as raw bytes (the parser cannot know the family).
fn fdb_dst(a: &NeighbourAddress) -> Option<IpAddr> {
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

impl Netlink {
    /// Creates a VXLAN device (`EEXIST` if the name is taken).
    pub fn add_vxlan(&mut self, spec: &VxlanSpec) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewLink(vxlan_msg(spec)),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("add vxlan {} vni {}", spec.name, spec.vni),
        )
    }

    /// Adds or replaces the permanent FDB entry `mac -> dst` on device `index`
    /// (`bridge fdb replace MAC dev X dst IP self permanent`).
    pub fn fdb_replace(&mut self, index: u32, mac: MacAddr, dst: IpAddr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewNeighbour(fdb_msg(index, mac, dst)),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("replace fdb {mac} dst {dst} on #{index}"),
        )
    }

    /// Deletes the FDB entry `mac -> dst` on device `index` (`ENOENT` if absent).
    pub fn fdb_del(&mut self, index: u32, mac: MacAddr, dst: IpAddr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::DelNeighbour(fdb_msg(index, mac, dst)),
            0,
            || format!("delete fdb {mac} dst {dst} on #{index}"),
        )
    }

    /// The FDB entries of device `index` (entries without a 6-byte MAC are skipped).
    pub fn fdbs(&mut self, index: u32) -> Result<Vec<Fdb>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        let msgs = self.dump(RouteNetlinkMessage::GetNeighbour(msg), || {
            format!("dump fdb of #{index}")
        })?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                continue;
            };
            if n.header.ifindex != index || n.header.family != AddressFamily::Bridge {
                continue;
            }
            let mut mac = None;
            let mut dst = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_bytes(l),
                    NeighbourAttribute::Destination(d) => dst = fdb_dst(d),
                    _ => {}
                }
            }
            if let Some(mac) = mac {
                out.push(Fdb {
                    index,
                    mac,
                    dst,
                    permanent: n.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vxlan_spec_round_trips_through_link_info() {
        let spec = VxlanSpec {
            name: "vx0".into(),
            vni: 42,
            port: 4789,
            local: "192.168.33.11".parse().unwrap(),
            uplink: 3,
            mtu: Some(1450),
            mac: Some(MacAddr([0x0a, 0x58, 0, 0, 0, 1])),
            up: true,
        };
        let msg = vxlan_msg(&spec);
        let infos = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            parse_info(&infos),
            Some(VxlanInfo {
                vni: Some(42),
                port: Some(4789),
                local: Some(spec.local),
                uplink: Some(3),
                learning: Some(false),
            })
        );
        assert!(msg.header.flags.contains(LinkFlags::Up));
        assert_eq!(parse_info(&[LinkInfo::Kind(InfoKind::Veth)]), None);
    }

    #[test]
    fn fdb_destination_from_raw_bytes() {
        assert_eq!(
            fdb_dst(&NeighbourAddress::Other(vec![192, 168, 33, 12])),
            Some("192.168.33.12".parse().unwrap())
        );
        assert_eq!(fdb_dst(&NeighbourAddress::Other(vec![1, 2])), None);
    }
}
