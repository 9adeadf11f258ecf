//! Routes in the fabric namespace that one owner keeps exactly as it wants them, told apart
//! from everyone else's by a metric: the cloud load balancer's podCIDR routes and the VPC's
//! per-address routes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use sarasa_netns::{Family, Netlink, Route};

use crate::LabError;

/// Makes the calling namespace's IPv4 routes with `metric` exactly `desired` (destination →
/// next hop): removes the others, replaces the changed ones.
pub fn apply(
    nl: &mut Netlink,
    desired: &BTreeMap<Ipv4Net, Ipv4Addr>,
    metric: u32,
) -> Result<(), LabError> {
    let current: BTreeMap<Ipv4Net, Option<IpAddr>> = nl
        .routes(Some(Family::V4))
        .map_err(LabError::netns)?
        .into_iter()
        .filter(|r| r.metric == Some(metric))
        .filter_map(|r| match r.dst {
            IpNet::V4(n) => Some((n, r.gateway)),
            IpNet::V6(_) => None,
        })
        .collect();
    let route = |net: Ipv4Net, gw: Option<IpAddr>| {
        let mut r = Route::new(IpNet::V4(net)).metric(metric);
        r.gateway = gw;
        r
    };
    for (net, gw) in &current {
        if !desired.contains_key(net) {
            nl.route_del(&route(*net, *gw)).map_err(LabError::netns)?;
        }
    }
    for (net, hop) in desired {
        if current.get(net) != Some(&Some(IpAddr::V4(*hop))) {
            nl.route_replace(&route(*net, Some(IpAddr::V4(*hop))))
                .map_err(LabError::netns)?;
        }
    }
    Ok(())
}
