//! The facts the nftables interpreter asks a node for: which addresses are its own
//! (`fib daddr type local`) and which source `masquerade` picks on each interface.

use std::net::IpAddr;

use sarasa_nft::interp::Env;
use sarasa_plan::NODE_BRIDGE;

use crate::world::{gateway, local_addresses, NodeView};

/// One node as the interpreter's environment.
pub(crate) struct NodeEnv<'a> {
    node: &'a NodeView,
    addresses: Vec<IpAddr>,
}

impl<'a> NodeEnv<'a> {
    pub(crate) fn new(node: &'a NodeView) -> Self {
        NodeEnv {
            node,
            addresses: local_addresses(node),
        }
    }

    pub(crate) fn is_local_address(&self, addr: IpAddr) -> bool {
        self.addresses.contains(&addr) || addr.is_loopback()
    }
}

impl Env for NodeEnv<'_> {
    fn is_local(&self, addr: IpAddr) -> bool {
        self.is_local_address(addr)
    }

    /// The kernel takes the outgoing interface's primary address of the packet's family.
    fn masquerade_source(&self, oifname: Option<&str>, daddr: IpAddr) -> Option<IpAddr> {
        let fabric = &self.node.plan.fabric;
        let v6 = daddr.is_ipv6();
        let pick = |addrs: Vec<IpAddr>| addrs.into_iter().find(|a| a.is_ipv6() == v6);
        match oifname {
            Some(dev) if fabric.vxlan.as_ref().is_some_and(|v| v.name == dev) => pick(
                fabric
                    .vxlan
                    .iter()
                    .flat_map(|v| v.addresses.iter().map(|a| a.addr()))
                    .collect(),
            ),
            Some(NODE_BRIDGE) => pick(
                fabric
                    .pod_cidrs
                    .iter()
                    .filter_map(|c| gateway(*c))
                    .collect(),
            ),
            _ => pick(vec![self.node.underlay_ip]),
        }
    }
}
