//! What this node announces for Services over BGP, as MetalLB's BGP mode does: the
//! LoadBalancer ingress addresses and external IPs of every Service, from every node — or,
//! with `externalTrafficPolicy: Local`, only from nodes holding a ready endpoint, so the
//! router spreads the address over exactly those nodes (ECMP) and the client's address
//! survives. The node's service proxy then accepts the address in nftables as before.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use sarasa_model::{EndpointSlice, Service, ServiceRef, TrafficPolicy};

/// The host prefixes `node` announces, of the family `v4`.
pub fn announcements<'a>(
    services: impl Iterator<Item = &'a Service>,
    slices: impl Iterator<Item = &'a EndpointSlice> + Clone,
    node: &str,
    v4: bool,
) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    for svc in services {
        let addrs: Vec<IpAddr> = svc
            .load_balancer_ips
            .iter()
            .chain(&svc.external_ips)
            .filter(|a| a.is_ipv4() == v4)
            .copied()
            .collect();
        if addrs.is_empty() {
            continue;
        }
        if svc.external_traffic_policy == TrafficPolicy::Local
            && !has_ready_endpoint(&svc.key(), slices.clone(), node)
        {
            continue;
        }
        out.extend(addrs.into_iter().map(IpNet::from));
    }
    out
}

fn has_ready_endpoint<'a>(
    svc: &ServiceRef,
    mut slices: impl Iterator<Item = &'a EndpointSlice>,
    node: &str,
) -> bool {
    slices.any(|s| {
        s.service() == *svc
            && s.endpoints
                .iter()
                .any(|e| e.conditions.ready && e.node_name.as_deref() == Some(node))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_model::{AddressType, Endpoint, ServiceType};

    fn svc(name: &str, lb: &[&str], external: &[&str], local: bool) -> Service {
        let mut s = Service::cluster_ip("default", name, vec!["10.96.0.9".parse().unwrap()]);
        s.type_ = ServiceType::LoadBalancer;
        s.load_balancer_ips = lb.iter().map(|a| a.parse().unwrap()).collect();
        s.external_ips = external.iter().map(|a| a.parse().unwrap()).collect();
        if local {
            s.external_traffic_policy = TrafficPolicy::Local;
        }
        s
    }

    fn slice(service: &str, node: &str, ready: bool) -> EndpointSlice {
        let mut e = Endpoint::ready("10.244.1.5".parse().unwrap(), Some(node));
        e.conditions.ready = ready;
        EndpointSlice {
            namespace: "default".into(),
            name: format!("{service}-x"),
            service_name: service.into(),
            address_type: AddressType::Ipv4,
            source_cluster: None,
            endpoints: vec![e],
            ports: Vec::new(),
        }
    }

    fn nets(v: &[&str]) -> BTreeSet<IpNet> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn cluster_policy_is_announced_from_every_node_local_only_where_endpoints_are() {
        let services = [
            svc("c", &["198.51.100.1"], &["192.0.2.7"], false),
            svc("l", &["198.51.100.2"], &[], true),
            svc("none", &[], &[], false),
        ];
        let slices = [slice("l", "node-2", true), slice("c", "node-1", true)];
        let on = |node| announcements(services.iter(), slices.iter(), node, true);
        assert_eq!(on("node-1"), nets(&["198.51.100.1/32", "192.0.2.7/32"]));
        assert_eq!(
            on("node-2"),
            nets(&["198.51.100.1/32", "192.0.2.7/32", "198.51.100.2/32"])
        );
    }

    #[test]
    fn not_ready_endpoints_and_other_families_announce_nothing() {
        let services = [svc("l", &["198.51.100.2", "2001:db8::2"], &[], true)];
        let slices = [slice("l", "node-2", false)];
        assert!(announcements(services.iter(), slices.iter(), "node-2", true).is_empty());
        let ready = [slice("l", "node-2", true)];
        assert_eq!(
            announcements(services.iter(), ready.iter(), "node-2", false),
            nets(&["2001:db8::2/128"])
        );
    }
}
