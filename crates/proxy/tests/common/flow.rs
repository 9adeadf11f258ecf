//! A new connection's first packet through one node, hook by hook, with the general
//! interpreter over the proxy's tables: prerouting then forward or input then postrouting for
//! a packet that arrives, output then postrouting for one the node sends. Every numgen path
//! is followed into the next hook.

use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_nft::interp::{Env, HookVerdict, Packet, Ruleset};
use sarasa_nft::{Hook, Table};
use sarasa_proxy::ProxyState;

/// A node's addresses, and the source masquerade picks per destination prefix.
pub struct NodeAddrs {
    pub local: Vec<IpAddr>,
    /// (destination prefix, source), first match wins.
    pub sources: Vec<(IpNet, IpAddr)>,
}

impl Env for NodeAddrs {
    fn is_local(&self, addr: IpAddr) -> bool {
        addr.is_loopback() || self.local.contains(&addr)
    }
    fn masquerade_source(&self, _oifname: Option<&str>, daddr: IpAddr) -> Option<IpAddr> {
        self.sources
            .iter()
            .find(|(net, _)| net.contains(&daddr))
            .map(|(_, src)| *src)
    }
}

/// One way the connection's first packet goes through the node.
#[derive(Debug, Clone)]
pub struct Flow {
    pub verdict: HookVerdict,
    /// (address, port) DNAT sent it to.
    pub dnat: Option<(IpAddr, u16)>,
    /// The packet as it leaves (or where it stopped).
    pub packet: Packet,
}

/// Every way `packet` (a new connection's first packet; `from_node`: sent by the node itself)
/// goes through the node's proxy tables.
pub fn through_node(
    st: &ProxyState,
    env: &NodeAddrs,
    packet: Packet,
    from_node: bool,
) -> Vec<Flow> {
    let tables = st.tables();
    let refs: Vec<&Table> = tables.iter().collect();
    let rs = Ruleset::new(&refs);
    let first = if from_node {
        Hook::Output
    } else {
        Hook::Prerouting
    };
    let mut out = Vec::new();
    for p in rs.run_hook(first, &packet, env).expect("interpreter") {
        let dnat = p
            .dnat()
            .map(|(a, port)| (a, port.unwrap_or(p.packet.dport)));
        let mut flows = vec![(p.verdict, p.packet)];
        let mut hooks = Vec::new();
        if !from_node {
            hooks.push(if env.is_local(flows[0].1.daddr) {
                Hook::Input
            } else {
                Hook::Forward
            });
        }
        if hooks != [Hook::Input] {
            hooks.push(Hook::Postrouting);
        }
        for hook in hooks {
            flows = flows
                .into_iter()
                .flat_map(|(v, pkt)| match v {
                    HookVerdict::Accept => rs
                        .run_hook(hook, &pkt, env)
                        .expect("interpreter")
                        .into_iter()
                        .map(|p| (p.verdict, p.packet))
                        .collect(),
                    _ => vec![(v, pkt)],
                })
                .collect();
        }
        out.extend(flows.into_iter().map(|(verdict, packet)| Flow {
            verdict,
            dnat,
            packet,
        }));
    }
    out
}
