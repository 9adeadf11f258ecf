//! Bridge mode: a node bridge (default `sarasa0`) holding each range's gateway address, like
//! cni0; host veths are its ports. The bridge is shared by all pods and never removed here.

use ipnet::IpNet;
use sarasa_netns::{Link, Netlink};

use crate::error::CniError;

/// Makes sure the bridge exists, is up and holds the gateway addresses; returns its index.
/// Safe against concurrent ADDs racing to create it.
pub fn ensure(
    node: &mut Netlink,
    name: &str,
    mtu: u32,
    gateways: &[IpNet],
) -> Result<u32, CniError> {
    let br = match node.link_by_name(name)? {
        Some(l) => l,
        None => {
            match node.add_bridge(name, Some(mtu)) {
                Ok(()) => {
                    // A fixed MAC keeps the gateway's neighbour entry in pods valid when ports
                    // come and go (a bridge otherwise takes its lowest port's MAC).
                    let br = node.link(name)?;
                    if let Some(mac) = gateway_mac(gateways) {
                        node.set_mac(br.index, mac)?;
                    }
                }
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(e.into()),
            }
            node.link(name)?
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(CniError::plumbing(format!(
            "{name} exists but is a {} device, not a bridge",
            br.kind.as_deref().unwrap_or("physical")
        )));
    }
    if !br.up {
        node.set_up(br.index)?;
    }
    // One round trip per gateway (EEXIST is the common answer); a dump of all addresses
    // would grow with the number of pods.
    for gw in gateways {
        match node.addr_add(br.index, *gw) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(br.index)
}

/// Enslaves the host veth (hairpin on, as the reference bridge plugin's `hairpinMode` does for
/// Kubernetes: a pod reaching itself through its Service gets the frame back on its own port)
/// and brings it up.
pub fn attach(node: &mut Netlink, host: &Link, bridge_index: u32) -> Result<(), CniError> {
    node.set_master(host.index, bridge_index)?;
    node.set_hairpin(host.index, true)?;
    node.set_up(host.index)?;
    Ok(())
}

fn gateway_mac(gateways: &[IpNet]) -> Option<sarasa_model::MacAddr> {
    gateways.iter().find_map(|g| match g.addr() {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(sarasa_model::MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]]))
        }
        std::net::IpAddr::V6(_) => None,
    })
}
