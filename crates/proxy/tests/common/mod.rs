//! Builders for Services and EndpointSlices used by the proxy tests.
#![allow(dead_code)]

use std::net::IpAddr;

use sarasa_model::*;
use sarasa_proxy::*;

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn node() -> NodeInfo {
    NodeInfo {
        name: "node-1".into(),
        addresses: vec![ip("192.168.33.11")],
        pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
    }
}

pub fn config() -> ProxyConfig {
    ProxyConfig {
        service_cidrs: vec![
            "10.96.0.0/12".parse().unwrap(),
            "fd00:96::/112".parse().unwrap(),
        ],
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/56".parse().unwrap(),
        ],
        ..ProxyConfig::default()
    }
}

pub fn port(name: &str, protocol: Protocol, port: u16) -> ServicePort {
    ServicePort {
        name: name.into(),
        protocol,
        port,
        node_port: None,
        target_port: None,
    }
}

pub fn svc(name: &str, cluster_ip: &str, ports: Vec<ServicePort>) -> Service {
    Service {
        ports,
        ..Service::cluster_ip("default", name, vec![ip(cluster_ip)])
    }
}

/// A slice with one port per `(name, protocol, port)` and endpoints `(ip, node)`.
pub fn slice(
    service: &str,
    name: &str,
    ports: &[(&str, Protocol, u16)],
    endpoints: &[(&str, &str)],
) -> EndpointSlice {
    let first = endpoints.first().map(|e| ip(e.0));
    EndpointSlice {
        namespace: "default".into(),
        name: name.into(),
        service_name: service.into(),
        address_type: if first.is_some_and(|i| i.is_ipv6()) {
            AddressType::Ipv6
        } else {
            AddressType::Ipv4
        },
        endpoints: endpoints
            .iter()
            .map(|(a, n)| Endpoint::ready(ip(a), Some(n)))
            .collect(),
        ports: ports
            .iter()
            .map(|(n, p, port)| EndpointPort {
                name: n.to_string(),
                protocol: *p,
                port: *port,
            })
            .collect(),
    }
}

pub fn build(services: &[Service], slices: &[EndpointSlice]) -> ProxyState {
    let st = compile(config(), node(), services, slices).unwrap();
    st.table().validate().unwrap();
    st
}

/// The rendered text of one chain whose name starts with `prefix`.
pub fn chain_text(st: &ProxyState, prefix: &str) -> String {
    let table = st.table();
    let names: Vec<&String> = table
        .chains
        .keys()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert_eq!(names.len(), 1, "chains starting with {prefix}: {names:?}");
    let mut t = sarasa_nft::Table::new(sarasa_nft::Family::Inet, "x");
    t.add_chain(table.chains[names[0]].clone());
    t.render()
}

pub fn chains_with(st: &ProxyState, prefix: &str) -> Vec<String> {
    st.table()
        .chains
        .keys()
        .filter(|n| n.starts_with(prefix))
        .cloned()
        .collect()
}

/// Rendered elements of one global map or set.
pub fn elements(st: &ProxyState, set: &str) -> String {
    let mut t = sarasa_nft::Table::new(sarasa_nft::Family::Inet, "x");
    t.add_set(st.table().sets[set].clone());
    let text = t.render();
    text.split("elements = ").nth(1).unwrap_or("").to_string()
}
