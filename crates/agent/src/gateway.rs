//! The cluster-set gateway (issue 12), Submariner's gateway engine and route agent in one
//! task. Nodes labelled `sarasa.io/gateway=true` that have a WAN link (`wan0`) are gateway
//! candidates; one of them holds the Lease `sarasa-system/sarasa-gateway` and is active. The
//! active gateway publishes its WAN address on its Node (`sarasa.io/gateway-ip`, which the
//! cluster-set sync carries to the other clusters) and terminates the cable: a VXLAN device
//! `sarasa-cable` on its WAN link with one peer per other cluster's active gateway (each
//! end's vtep address and MAC derived from its WAN address, so nothing else is exchanged), and
//! routes the other clusters' pod and Service ranges into it. Every other node routes those
//! ranges to the active gateway. The routes carry their own protocol number
//! ([`ROUTE_PROTOCOL`]), so the fabric's diff and this one never touch each other's; the other
//! clusters' ranges go to the node plan, which leaves them unmasqueraded (the source pod address
//! is kept end to end). The other clusters come from the ConfigMap the sync writes
//! ([`sarasa_model::clusterset`]).
//!
//! Not built yet: the WireGuard cable, cables for nodes behind their own VXLAN to the gateway
//! (the lab's underlay carries pod addresses, so other nodes route to the gateway directly).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use sarasa_model::clusterset::{RemoteCluster, CONFIGMAP_KEY, CONFIGMAP_NAME, CONFIGMAP_NAMESPACE};
use sarasa_model::MacAddr;
use sarasa_netns::{Netlink, Route, VxlanSpec, TABLE_MAIN};

use crate::error::{Error, Result};
use crate::netns::NetnsTarget;

pub const GATEWAY_LABEL: &str = "sarasa.io/gateway";
pub const GATEWAY_LEASE: &str = "sarasa-gateway";
pub const ANNOTATION_GATEWAY_IP: &str = "sarasa.io/gateway-ip";
pub const WAN_LINK: &str = "wan0";
pub const CABLE_DEVICE: &str = "sarasa-cable";
pub const CABLE_VNI: u32 = 4242;
pub const CABLE_PORT: u16 = 4800;
/// `proto 84`: routes to the other clusters of the set.
pub const ROUTE_PROTOCOL: u8 = 84;
const LEASE_SECONDS: i32 = 3;
const PASS: Duration = Duration::from_millis(300);
/// Outside a cluster set (no ConfigMap) a node only looks for one now and then: one read of
/// one ConfigMap per node every few seconds is all a cluster pays for the feature.
const IDLE: Duration = Duration::from_secs(5);
/// VXLAN over IPv4: outer IP, UDP, VXLAN and inner Ethernet headers.
const CABLE_OVERHEAD: u32 = 50;

/// A cable end's vtep address: 241.b.c.d for WAN address a.b.c.d (class E space, never on a
/// wire; unique per member because the WAN is one /24).
pub fn vtep_ip(wan: Ipv4Addr) -> Ipv4Addr {
    let o = wan.octets();
    Ipv4Addr::new(241, o[1], o[2], o[3])
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
}

/// What this node's part of the cluster set is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// This node is the active gateway: its WAN address and the other gateways'.
    pub cable: Option<(Ipv4Addr, Vec<Ipv4Addr>)>,
    pub routes: Vec<(IpNet, Via)>,
}

/// The desired state from the other clusters and who the active gateway is.
pub fn desired(
    remotes: &[RemoteCluster],
    me_active: Option<Ipv4Addr>,
    active_underlay: Option<IpAddr>,
) -> Desired {
    let mut d = Desired::default();
    if let Some(wan) = me_active {
        let peers: BTreeSet<Ipv4Addr> = remotes
            .iter()
            .filter_map(|r| match r.gateway_ip {
                Some(IpAddr::V4(g)) => Some(g),
                _ => None,
            })
            .collect();
        d.cable = Some((wan, peers.into_iter().collect()));
        for r in remotes {
            if let Some(IpAddr::V4(g)) = r.gateway_ip {
                d.routes
                    .extend(r.cidrs().into_iter().map(|c| (c, Via::Cable(g))));
            }
        }
    } else if let Some(gw) = active_underlay {
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

/// Makes the kernel match `d`: the cable device, its peers, and the routes with
/// [`ROUTE_PROTOCOL`].
fn apply(nl: &mut Netlink, d: &Desired) -> Result<()> {
    let existing = nl.link_by_name(CABLE_DEVICE).map_err(nl_err("get cable"))?;
    let cable_index = match &d.cable {
        None => {
            if let Some(l) = existing {
                nl.delete_link(l.index).map_err(nl_err("delete cable"))?;
            }
            None
        }
        Some((wan, peers)) => {
            let Some((_, wan_index, wan_mtu)) = wan_address(nl)? else {
                return Err(Error::Config("active gateway without a WAN link".into()));
            };
            let mac = vtep_mac(*wan);
            let link = match existing {
                Some(l) if l.mac == Some(mac) => l,
                other => {
                    if let Some(l) = other {
                        nl.delete_link(l.index).map_err(nl_err("delete cable"))?;
                    }
                    nl.add_vxlan(&VxlanSpec {
                        name: CABLE_DEVICE.into(),
                        vni: CABLE_VNI,
                        port: CABLE_PORT,
                        local: IpAddr::V4(*wan),
                        uplink: wan_index,
                        mtu: Some(wan_mtu - CABLE_OVERHEAD),
                        mac: Some(mac),
                        up: true,
                    })
                    .map_err(nl_err("add cable"))?;
                    nl.link_by_name(CABLE_DEVICE)
                        .map_err(nl_err("get cable"))?
                        .ok_or_else(|| Error::Config("cable device vanished".into()))?
                }
            };
            let vtep = IpNet::V4(Ipv4Net::new(vtep_ip(*wan), 8).expect("constant prefix"));
            let have = nl
                .addrs(Some(link.index), None)
                .map_err(nl_err("dump cable addresses"))?;
            if !have.iter().any(|a| a.net == vtep) {
                nl.addr_add(link.index, vtep)
                    .map_err(nl_err("address cable"))?;
            }
            if !link.up {
                nl.set_up(link.index).map_err(nl_err("cable up"))?;
            }
            for f in nl.fdbs(link.index).map_err(nl_err("dump cable fdb"))? {
                let keep = matches!(f.dst, Some(IpAddr::V4(d)) if peers.contains(&d) && f.mac == vtep_mac(d));
                if !keep && f.dst.is_some() {
                    if let Some(dst) = f.dst {
                        let _ = nl.fdb_del(link.index, f.mac, dst);
                    }
                }
            }
            for p in peers {
                nl.fdb_replace(link.index, vtep_mac(*p), IpAddr::V4(*p))
                    .map_err(nl_err("cable fdb"))?;
                nl.neigh_add(link.index, IpAddr::V4(vtep_ip(*p)), vtep_mac(*p))
                    .map_err(nl_err("cable neighbour"))?;
            }
            Some(link.index)
        }
    };
    let want: Vec<Route> = d
        .routes
        .iter()
        .filter_map(|(dst, via)| {
            let mut r = match via {
                Via::Cable(g) => Route {
                    gateway: Some(IpAddr::V4(vtep_ip(*g))),
                    oif: cable_index,
                    onlink: true,
                    ..Route::default_via(IpAddr::V4(vtep_ip(*g)))
                },
                Via::Gateway(g) => Route::default_via(*g),
            };
            if matches!(via, Via::Cable(_)) && cable_index.is_none() {
                return None;
            }
            r.dst = *dst;
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
    for h in &have {
        let wanted = want.iter().any(|w| {
            w.dst == h.dst && w.gateway == h.gateway && (w.oif.is_none() || w.oif == h.oif)
        });
        if !wanted {
            match nl.route_del(h) {
                Err(e) if !e.is_not_found() => return Err(Error::netlink("delete route", e)),
                _ => {}
            }
        }
    }
    for w in &want {
        let present = have.iter().any(|h| {
            w.dst == h.dst && w.gateway == h.gateway && (w.oif.is_none() || w.oif == h.oif)
        });
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
    /// The other clusters' ranges, for the node plan (never masqueraded).
    pub remote_cidrs: tokio::sync::watch::Sender<Vec<IpNet>>,
}

impl Gateway {
    pub fn new(
        client: kube::Client,
        node: &str,
        target: NetnsTarget,
        remote_cidrs: tokio::sync::watch::Sender<Vec<IpNet>>,
    ) -> Self {
        Gateway {
            node: node.to_string(),
            nodes: Api::all(client.clone()),
            leases: Api::namespaced(client.clone(), CONFIGMAP_NAMESPACE),
            config_maps: Api::namespaced(client, CONFIGMAP_NAMESPACE),
            target,
            remote_cidrs,
        }
    }

    pub async fn run(self) {
        let mut failing: Option<String> = None;
        loop {
            let in_set = match self.pass().await {
                Ok(in_set) => {
                    if failing.take().is_some() {
                        tracing::info!("cluster-set gateway: working again");
                    }
                    in_set
                }
                Err(e) => {
                    let text = e.to_string();
                    if failing.as_deref() != Some(&text) {
                        tracing::warn!(error = %text, "cluster-set gateway");
                        failing = Some(text);
                    }
                    true
                }
            };
            tokio::time::sleep(if in_set { PASS } else { IDLE }).await;
        }
    }

    /// The other clusters of the set; `None` outside a set (no ConfigMap).
    pub async fn remotes(&self) -> Result<Option<Vec<RemoteCluster>>> {
        let Some(cm) = self
            .config_maps
            .get_opt(CONFIGMAP_NAME)
            .await
            .map_err(|e| Error::kube("get the cluster set ConfigMap", e))?
        else {
            return Ok(None);
        };
        let Some(text) = cm.data.and_then(|d| d.get(CONFIGMAP_KEY).cloned()) else {
            return Ok(Some(Vec::new()));
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Config(format!(
                "{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} {CONFIGMAP_KEY}: {e}"
            ))
        })
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

    /// Takes or renews the Lease when this node is a candidate; returns the holder while its
    /// Lease is current.
    pub async fn elect(&self, candidate: bool) -> Result<Option<String>> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let fresh = |l: &Lease| {
            let spec = l.spec.as_ref();
            let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
            let secs = spec
                .and_then(|s| s.lease_duration_seconds)
                .unwrap_or(LEASE_SECONDS);
            renewed
                .is_some_and(|t| now.as_millisecond() - t.as_millisecond() < i64::from(secs) * 1000)
        };
        let current = self
            .leases
            .get_opt(GATEWAY_LEASE)
            .await
            .map_err(|e| Error::kube("get the gateway Lease", e))?;
        let holder = |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.clone());
        let mine = current
            .as_ref()
            .is_some_and(|l| holder(l).as_deref() == Some(&self.node));
        let take = candidate && current.as_ref().is_none_or(|l| mine || !fresh(l));
        if !take {
            return Ok(current.filter(|l| fresh(l)).and_then(|l| holder(&l)));
        }
        let transitions = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        let mut lease = Lease::default();
        lease.metadata.name = Some(GATEWAY_LEASE.into());
        lease.metadata.namespace = Some(CONFIGMAP_NAMESPACE.into());
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.node.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            acquire_time: if mine {
                current
                    .as_ref()
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            lease_transitions: Some(if mine { transitions } else { transitions + 1 }),
            ..Default::default()
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
            Ok(_) => {
                if !mine {
                    tracing::info!(node = %self.node, "active cluster-set gateway");
                }
                Ok(Some(self.node.clone()))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => Err(Error::kube("write the gateway Lease", e)),
        }
    }

    /// One pass; whether this cluster is in a set.
    async fn pass(&self) -> Result<bool> {
        let Some(remotes) = self.remotes().await? else {
            // Not (or no longer) in a set: nothing of it stays on the node.
            self.program(Desired::default()).await?;
            self.publish_remote_cidrs(Vec::new());
            return Ok(false);
        };
        let me = self
            .nodes
            .get(&self.node)
            .await
            .map_err(|e| Error::kube("get node", e))?;
        let labelled = me
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(GATEWAY_LABEL))
            .is_some_and(|v| v == "true");
        let wan = if labelled { self.wan().await? } else { None };
        let holder = self.elect(wan.is_some()).await?;
        let active = holder.as_deref() == Some(&self.node);
        if let (true, Some((ip, _, _))) = (active, wan) {
            let published = me
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_GATEWAY_IP))
                .cloned();
            if published.as_deref() != Some(&ip.to_string()) {
                let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_GATEWAY_IP: ip.to_string()}}});
                self.nodes
                    .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| Error::kube("publish the gateway address", e))?;
            }
        }
        let active_underlay = match (&holder, active) {
            (Some(h), false) => self
                .nodes
                .get_opt(h)
                .await
                .map_err(|e| Error::kube("get the gateway node", e))?
                .and_then(|n| n.status?.addresses)
                .and_then(|a| {
                    a.into_iter()
                        .find(|a| a.type_ == "InternalIP")
                        .and_then(|a| a.address.parse().ok())
                }),
            _ => None,
        };
        let want = desired(
            &remotes,
            if active { wan.map(|w| w.0) } else { None },
            active_underlay,
        );
        self.program(want).await?;
        self.publish_remote_cidrs(remotes.iter().flat_map(|r| r.cidrs()).collect());
        Ok(true)
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
    fn publish_remote_cidrs(&self, cidrs: Vec<IpNet>) {
        self.remote_cidrs.send_if_modified(|c| {
            let changed = *c != cidrs;
            if changed {
                *c = cidrs;
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(id: &str, pods: &str, svcs: &str, gw: Option<&str>) -> RemoteCluster {
        RemoteCluster {
            cluster_id: id.into(),
            pod_cidr: pods.parse().unwrap(),
            service_cidr: svcs.parse().unwrap(),
            gateway_ip: gw.map(|g| g.parse().unwrap()),
            gateway_node: None,
        }
    }

    #[test]
    fn the_active_gateway_cables_and_the_others_route_to_it() {
        let remotes = [
            remote(
                "east",
                "10.245.0.0/16",
                "10.112.0.0/16",
                Some("172.30.0.100"),
            ),
            remote("north", "10.246.0.0/16", "10.113.0.0/16", None),
        ];
        let wan: Ipv4Addr = "172.30.0.101".parse().unwrap();
        let d = desired(&remotes, Some(wan), None);
        let peer: Ipv4Addr = "172.30.0.100".parse().unwrap();
        assert_eq!(d.cable, Some((wan, vec![peer])));
        assert_eq!(
            d.routes,
            [
                ("10.245.0.0/16".parse().unwrap(), Via::Cable(peer)),
                ("10.112.0.0/16".parse().unwrap(), Via::Cable(peer)),
            ],
            "a cluster without a gateway yet has no route"
        );
        let gw: IpAddr = "192.168.33.11".parse().unwrap();
        let d = desired(&remotes, None, Some(gw));
        assert_eq!(d.cable, None);
        assert_eq!(d.routes.len(), 4);
        assert!(d.routes.iter().all(|(_, v)| *v == Via::Gateway(gw)));
        assert_eq!(desired(&remotes, None, None), Desired::default());
    }

    #[test]
    fn vtep_addresses_and_macs_follow_the_wan_address() {
        let wan: Ipv4Addr = "172.30.0.101".parse().unwrap();
        assert_eq!(vtep_ip(wan), "241.30.0.101".parse::<Ipv4Addr>().unwrap());
        assert_eq!(vtep_mac(wan).0, [0x02, 0x5a, 172, 30, 0, 101]);
    }
}
