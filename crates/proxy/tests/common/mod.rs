//! Builders for Services and EndpointSlices used by the proxy tests.
#![allow(dead_code)]

use std::net::IpAddr;

use sarasa_model::*;
use sarasa_proxy::*;

pub mod flow;

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
        // The tests' figures (spread, golden text) are for 16 shards, whatever the default.
        shards: 16,
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
        source_cluster: None,
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
    build_with(config(), services, slices)
}

pub fn build_with(
    config: ProxyConfig,
    services: &[Service],
    slices: &[EndpointSlice],
) -> ProxyState {
    let st = compile(config, node(), services, slices).unwrap();
    for t in st.tables() {
        t.validate()
            .unwrap_or_else(|e| panic!("table {}: {e}", t.name));
    }
    st
}

/// The rendered text of the one chain, in any table, whose name starts with `prefix`.
pub fn chain_text(st: &ProxyState, prefix: &str) -> String {
    let tables = st.tables();
    let found: Vec<(&str, &sarasa_nft::Chain)> = tables
        .iter()
        .flat_map(|t| t.chains.iter().map(move |(n, c)| (t.name.as_str(), n, c)))
        .filter(|(_, n, _)| n.starts_with(prefix))
        .map(|(t, _, c)| (t, c))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "chains starting with {prefix}: {:?}",
        found
            .iter()
            .map(|(t, c)| format!("{t}/{}", c.name))
            .collect::<Vec<_>>()
    );
    chain_in(found[0].1)
}

/// The rendered text of one chain of one table.
pub fn table_chain_text(table: &sarasa_nft::Table, name: &str) -> String {
    chain_in(
        table
            .chains
            .get(name)
            .unwrap_or_else(|| panic!("{}: no chain {name}", table.name)),
    )
}

fn chain_in(chain: &sarasa_nft::Chain) -> String {
    let mut t = sarasa_nft::Table::new(sarasa_nft::Family::Inet, "x");
    t.add_chain(chain.clone());
    t.render()
}

/// Names of the chains, over all tables, starting with `prefix`.
pub fn chains_with(st: &ProxyState, prefix: &str) -> Vec<String> {
    st.tables()
        .iter()
        .flat_map(|t| t.chains.keys())
        .filter(|n| n.starts_with(prefix))
        .cloned()
        .collect()
}

/// Rendered elements of one global map or set, merged over the tables holding it.
pub fn elements(st: &ProxyState, set: &str) -> String {
    let mut merged: Option<sarasa_nft::Set> = None;
    for t in st.tables() {
        if let Some(s) = t.sets.get(set) {
            match &mut merged {
                None => merged = Some(s.clone()),
                Some(m) => m.elements.extend(s.elements.clone()),
            }
        }
    }
    let mut t = sarasa_nft::Table::new(sarasa_nft::Family::Inet, "x");
    t.add_set(merged.unwrap_or_else(|| panic!("no table has set {set}")));
    let text = t.render();
    text.split("elements = ").nth(1).unwrap_or("").to_string()
}

/// Names of the tables holding at least one element of `set`.
pub fn tables_with_elements(st: &ProxyState, set: &str) -> Vec<String> {
    st.tables()
        .into_iter()
        .filter(|t| t.sets.get(set).is_some_and(|s| !s.elements.is_empty()))
        .map(|t| t.name)
        .collect()
}

/// All tables' transactions of an update appended into one (for assertions on names).
pub fn merged(u: &Update) -> sarasa_nft::Transaction {
    let mut tx = sarasa_nft::Transaction::default();
    for t in u.transactions.values() {
        tx.append(t.clone());
    }
    tx
}

/// The shard of Service `default/{name}`.
pub fn shard_of(st: &ProxyState, name: &str) -> usize {
    st.shard_of(&ServiceRef::new("default", name))
}
