//! The whole node plan from objects: every table sarasa owns is in it, deltas touch only what
//! changed, and the recording applier sees exactly the deltas it is handed.

use std::net::IpAddr;
use std::path::Path;

use sarasa_model::{
    AddressType, Backend, CniMode, Endpoint, EndpointPort, EndpointSlice, MacAddr, Protocol,
    Service, ServicePort,
};
use sarasa_plan::{
    build, Applier, LocalNode, NodeInputs, PeerNode, PlanDelta, PolicyInputs, Recording,
};
use sarasa_policy::PolicyState;
use sarasa_proxy::ProxyConfig;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn local() -> LocalNode {
    LocalNode {
        name: "node-1".into(),
        backend: Backend::Vxlan,
        underlay_ip: ip("192.168.33.11"),
        uplink: "eth0".into(),
        uplink_mtu: 1500,
        vtep_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        remote_cluster_cidrs: Vec::new(),
        global_egress: Vec::new(),
    }
}

fn peers() -> Vec<PeerNode> {
    (1..=2)
        .map(|i| PeerNode {
            name: format!("node-{i}"),
            pod_cidrs: vec![format!("10.244.{i}.0/24").parse().unwrap()],
            underlay_ip: Some(ip(&format!("192.168.33.1{i}"))),
            vtep_mac: Some(MacAddr([2, 0, 0, 0, 0, i])),
            vpc_address_limit: None,
        })
        .collect()
}

fn web(cluster_ip: &str) -> (Service, EndpointSlice) {
    let svc = Service {
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            target_port: None,
        }],
        ..Service::cluster_ip("default", "web", vec![ip(cluster_ip)])
    };
    let slice = EndpointSlice {
        namespace: "default".into(),
        name: "web-1".into(),
        service_name: "web".into(),
        address_type: AddressType::Ipv4,
        source_cluster: None,
        endpoints: vec![Endpoint::ready(ip("10.244.2.5"), Some("node-2"))],
        ports: vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
    };
    (svc, slice)
}

fn inputs<'a>(
    local: &'a LocalNode,
    peers: &'a [PeerNode],
    services: &'a [Service],
    slices: &'a [EndpointSlice],
    policy: Option<PolicyInputs<'a>>,
) -> NodeInputs<'a> {
    NodeInputs {
        local,
        nodes: peers,
        node_addresses: vec![local.underlay_ip],
        services,
        endpoint_slices: slices,
        proxy: Some(ProxyConfig::default()),
        policy,
        cni_mode: CniMode::Bridge,
        ipam_data_dir: Path::new("/var/lib/sarasa/ipam"),
    }
}

#[test]
fn the_plan_holds_every_table_the_fabric_and_the_cni_config() {
    let (l, p) = (local(), peers());
    let (svc, slice) = web("10.96.0.20");
    let state = PolicyState::new();
    let policy = PolicyInputs {
        state: &state,
        log_group: 100,
    };
    let plan = build(&inputs(&l, &p, &[svc], &[slice], Some(policy))).unwrap();
    let names: Vec<String> = plan.tables.keys().map(|t| t.to_string()).collect();
    for want in [
        "inet sarasa-node",
        "inet sarasa",
        "inet sarasa-svc00",
        "inet sarasa-svc31",
        "inet sarasa-policy",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert_eq!(names.len(), 1 + 1 + 32 + 1);
    assert_eq!(plan.fabric.remote_nodes, 1);
    assert_eq!(plan.fabric.mtu, 1450);
    assert!(
        plan.cni.conflist.contains("\"mtu\": 1450"),
        "{}",
        plan.cni.conflist
    );
    for t in plan.tables.values() {
        t.validate().unwrap();
    }
    // The Service's endpoint is in some shard's DNAT rule.
    let dnat = plan
        .tables
        .values()
        .map(|t| t.render())
        .any(|text| text.contains("dnat ip to 10.244.2.5:8080"));
    assert!(dnat, "no shard DNATs to the endpoint");
}

#[test]
fn without_proxy_or_policy_only_the_masquerade_table_is_planned() {
    let (l, p) = (local(), peers());
    let mut i = inputs(&l, &p, &[], &[], None);
    i.proxy = None;
    let plan = build(&i).unwrap();
    let names: Vec<String> = plan.tables.keys().map(|t| t.to_string()).collect();
    assert_eq!(names, ["inet sarasa-node"]);
}

#[test]
fn deltas_touch_only_what_changed_and_the_recording_applier_keeps_them() {
    let (l, p) = (local(), peers());
    let (svc, slice) = web("10.96.0.20");
    let first = build(&inputs(&l, &p, &[svc], std::slice::from_ref(&slice), None)).unwrap();
    let (moved, _) = web("10.96.0.21");
    let second = build(&inputs(&l, &p, &[moved], &[slice], None)).unwrap();

    let initial = PlanDelta::between(None, &first);
    assert!(initial.fabric.is_some() && initial.cni.is_some());
    assert_eq!(
        initial.tables.len(),
        first.tables.len(),
        "every table is created"
    );
    assert!(PlanDelta::between(Some(&first), &first).is_empty());

    let change = PlanDelta::between(Some(&first), &second);
    assert!(change.fabric.is_none() && change.cni.is_none());
    let touched: Vec<String> = change.tables.iter().map(|t| t.table.to_string()).collect();
    assert!(
        touched.len() <= 2,
        "a ClusterIP change touches the main table and one shard: {touched:?}"
    );
    assert!(
        touched.iter().any(|t| t.starts_with("inet sarasa-svc")),
        "{touched:?}"
    );

    let mut no_proxy = inputs(&l, &p, &[], &[], None);
    no_proxy.proxy = None;
    let gone = PlanDelta::between(Some(&first), &build(&no_proxy).unwrap());
    let deleted = gone
        .tables
        .iter()
        .filter(|t| t.transaction.script().starts_with("delete table"))
        .count();
    assert_eq!(
        deleted, 33,
        "the proxy's tables are deleted when it is turned off"
    );

    let mut rec = Recording::default();
    let applied = rec.apply(&initial).unwrap();
    assert_eq!(applied.nft_batches, 1, "every table in one batch");
    assert_eq!(
        applied.nft_ops,
        initial
            .tables
            .iter()
            .map(|t| t.transaction.commands.len())
            .sum::<usize>()
    );
    rec.apply(&change).unwrap();
    assert_eq!(rec.applied, vec![initial, change]);
    // Its node holds nothing unless a test says so: a full diff creates the table, and a
    // table that must not exist needs nothing.
    let (id, table) = first.tables.iter().next().unwrap();
    assert_eq!(
        rec.diff_table(id, Some(table)).unwrap(),
        sarasa_nft::diff_kernel(None, table)
    );
    assert!(rec.diff_table(id, None).unwrap().is_empty());
}
