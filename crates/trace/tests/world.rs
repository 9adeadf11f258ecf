//! Trace over a three-node world built from the same compilers the agents run (no root, no
//! lab): verdicts, endpoints, policies and the hops that explain them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use sarasa_model::{
    AddressType, Backend, CniMode, Endpoint, EndpointPort, EndpointSlice, MacAddr, Protocol,
    Service, ServicePort, ServiceType,
};
use sarasa_plan::{build, LocalNode, NodeInputs, PeerNode, PolicyInputs};
use sarasa_policy::{
    LabelSelector, NetworkPolicy, Peer, PolicyNamespace, PolicyPod, PolicyPort, PolicyRule,
    PolicyState, PortRef,
};
use sarasa_proxy::ProxyConfig;
use sarasa_trace::{
    parse_destination, parse_source, trace, ExternalView, FabricView, NodeView, PodView, Proto,
    Query, TraceError, Verdict, World,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const PODS: [(&str, &str, usize, &str); 4] = [
    ("x", "a", 1, "10.244.1.10"),
    ("x", "b", 1, "10.244.1.11"),
    ("x", "c", 2, "10.244.2.10"),
    ("y", "d", 3, "10.244.3.10"),
];

fn policy_state() -> PolicyState {
    let mut st = PolicyState::new();
    st.apply_namespace(PolicyNamespace::new("x", Default::default()));
    st.apply_namespace(PolicyNamespace::new("y", Default::default()));
    for (ns, name, node, addr) in PODS {
        st.apply_pod(PolicyPod {
            namespace: ns.into(),
            name: name.into(),
            labels: labels(&[("pod", name)]),
            ips: vec![ip(addr)],
            ports: vec![],
            node: Some(format!("node-{node}")),
        });
    }
    for n in 1..=3 {
        st.apply_node(format!("node-{n}"), vec![ip(&format!("192.168.33.1{n}"))]);
    }
    let select = |pod: &str| LabelSelector {
        match_labels: labels(&[("pod", pod)]),
        ..LabelSelector::default()
    };
    st.apply_policy(NetworkPolicy {
        namespace: "x".into(),
        name: "deny-b".into(),
        pod_selector: select("b"),
        policy_types: vec![sarasa_policy::Direction::Ingress],
        ingress: vec![],
        egress: vec![],
    })
    .unwrap();
    st.apply_policy(NetworkPolicy {
        namespace: "x".into(),
        name: "c-from-a".into(),
        pod_selector: select("c"),
        policy_types: vec![sarasa_policy::Direction::Ingress],
        ingress: vec![PolicyRule {
            peers: vec![Peer::Pods {
                pod_selector: Some(select("a")),
                namespace_selector: None,
            }],
            ports: vec![PolicyPort {
                protocol: sarasa_policy::Protocol::Tcp,
                port: Some(PortRef::Number(8080)),
                end_port: None,
            }],
        }],
        egress: vec![],
    })
    .unwrap();
    st
}

fn services() -> (Vec<Service>, Vec<EndpointSlice>) {
    let port = ServicePort {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        node_port: Some(30080),
        target_port: None,
    };
    let web = Service {
        ports: vec![port.clone()],
        type_: ServiceType::NodePort,
        ..Service::cluster_ip("x", "web", vec![ip("10.96.0.10")])
    };
    let empty = Service {
        ports: vec![ServicePort {
            node_port: None,
            ..port
        }],
        ..Service::cluster_ip("x", "empty", vec![ip("10.96.0.11")])
    };
    let slice = EndpointSlice {
        namespace: "x".into(),
        name: "web-1".into(),
        service_name: "web".into(),
        address_type: AddressType::Ipv4,
        source_cluster: None,
        endpoints: vec![
            Endpoint::ready(ip("10.244.2.10"), Some("node-2")),
            Endpoint::ready(ip("10.244.3.10"), Some("node-3")),
        ],
        ports: vec![EndpointPort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
    };
    (vec![web, empty], vec![slice])
}

fn world() -> World {
    let peers: Vec<PeerNode> = (1..=3u8)
        .map(|i| PeerNode {
            name: format!("node-{i}"),
            pod_cidrs: vec![format!("10.244.{i}.0/24").parse().unwrap()],
            underlay_ip: Some(ip(&format!("192.168.33.1{i}"))),
            vtep_mac: Some(MacAddr([2, 0, 0, 0, 0, i])),
            vpc_address_limit: None,
        })
        .collect();
    let (svcs, slices) = services();
    let policy = policy_state();
    let nodes = peers
        .iter()
        .map(|p| {
            let local = LocalNode {
                name: p.name.clone(),
                backend: Backend::Vxlan,
                underlay_ip: p.underlay_ip.unwrap(),
                uplink: "eth0".into(),
                uplink_mtu: 1500,
                vtep_mac: p.vtep_mac,
                cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
                remote_cluster_cidrs: Vec::new(),
                global_egress: Vec::new(),
            };
            let plan = build(&NodeInputs {
                local: &local,
                nodes: &peers,
                node_addresses: vec![local.underlay_ip],
                services: &svcs,
                endpoint_slices: &slices,
                proxy: Some(ProxyConfig::default()),
                policy: Some(PolicyInputs {
                    state: &policy,
                    log_group: 100,
                }),
                cni_mode: CniMode::Bridge,
                ipam_data_dir: Path::new("/tmp/ipam"),
            })
            .unwrap();
            NodeView {
                name: p.name.clone(),
                underlay_ip: local.underlay_ip,
                uplink: "eth0".into(),
                plan,
            }
        })
        .collect();
    World {
        nodes,
        pods: PODS
            .iter()
            .map(|(ns, name, node, addr)| PodView {
                namespace: ns.to_string(),
                name: name.to_string(),
                node: Some(format!("node-{node}")),
                ips: vec![ip(addr)],
                host_network: false,
            })
            .collect(),
        services: svcs.into_iter().map(Arc::new).collect(),
        fabric: FabricView {
            name: "fabric".into(),
            underlay: "192.168.33.0/24".parse().unwrap(),
            address: ip("192.168.33.1"),
            external: Some(ExternalView {
                name: "external".into(),
                ip: ip("203.0.113.10"),
                subnet: "203.0.113.0/24".parse().unwrap(),
            }),
            service_routes: BTreeMap::new(),
        },
        policy,
        cluster_set: None,
    }
}

fn q(from: &str, to: &str, port: Option<u16>) -> Query {
    Query {
        from: parse_source(from, "x").unwrap(),
        to: parse_destination(to, "x").unwrap(),
        port,
        proto: Proto::Tcp,
    }
}

#[test]
fn same_node_pod_denied_by_ingress_policy_names_it() {
    let w = world();
    let r = trace(&w, &q("a", "b", Some(80))).unwrap();
    assert_eq!(r.verdict, Verdict::Dropped, "{}", r.render_text());
    assert!(
        r.policy_decisions
            .iter()
            .any(|p| p.policy == "x/deny-b" && p.effect == "denied" && p.direction == "ingress"),
        "{:?}",
        r.policy_decisions
    );
    assert!(r.reason.contains("x/deny-b"), "{}", r.reason);
    assert_eq!(r.policies, ["x/deny-b"]);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["policies"], serde_json::json!(["x/deny-b"]));
    assert_eq!(json["verdict"], "dropped");
    let last = r.hops.last().unwrap();
    assert!(
        last.cites
            .iter()
            .any(|c| c.contains("sarasa-policy") && c.contains("ing_x_b")),
        "{last:?}"
    );
}

#[test]
fn cross_node_pod_is_encapsulated_and_allowed_by_the_named_rule() {
    let w = world();
    let r = trace(&w, &q("a", "c", Some(8080))).unwrap();
    assert_eq!(r.verdict, Verdict::Delivered, "{}", r.render_text());
    let encap = r
        .hops
        .iter()
        .find(|h| h.kind == "encap")
        .expect("a VXLAN hop");
    assert!(
        encap.text.contains("VNI 1") && encap.text.contains("192.168.33.12"),
        "{encap:?}"
    );
    assert!(
        encap
            .cites
            .iter()
            .any(|c| c.starts_with("fdb 02:00:00:00:00:02 dst 192.168.33.12")),
        "{encap:?}"
    );
    assert!(
        r.policy_decisions.iter().any(|p| p.policy == "x/c-from-a"
            && p.effect == "allowed"
            && p.node == "node-2"
            && p.rule.as_deref() == Some("spec.ingress[0]")),
        "{:?}",
        r.policy_decisions
    );
    assert_eq!(r.hops.last().unwrap().at, "pod x/c");
    // b is not allowed to c.
    let r = trace(&w, &q("b", "c", Some(8080))).unwrap();
    assert_eq!(r.verdict, Verdict::Dropped, "{}", r.render_text());
}

#[test]
fn service_lists_every_endpoint_and_follows_each() {
    let w = world();
    let r = trace(&w, &q("a", "svc/web", None)).unwrap();
    assert_eq!(r.port, 80);
    assert_eq!(
        r.endpoints,
        ["10.244.2.10:8080", "10.244.3.10:8080"],
        "{}",
        r.render_text()
    );
    assert_eq!(r.verdict, Verdict::Delivered, "{}", r.render_text());
    assert_eq!(r.service.as_ref().unwrap().service, "x/web");
    assert!(
        r.hops.iter().any(|h| h.kind == "dnat"),
        "{}",
        r.render_text()
    );
    // From b, endpoint c refuses: not every candidate delivers.
    let r = trace(&w, &q("b", "svc/web", None)).unwrap();
    assert_eq!(r.verdict, Verdict::Dropped, "{}", r.render_text());
    let by_ep: BTreeMap<_, _> = r
        .endpoint_outcomes
        .iter()
        .map(|e| (e.endpoint.as_str(), e.verdict))
        .collect();
    assert_eq!(by_ep["10.244.2.10:8080"], Verdict::Dropped);
    assert_eq!(by_ep["10.244.3.10:8080"], Verdict::Delivered);
}

#[test]
fn service_without_endpoints_is_rejected() {
    let w = world();
    let r = trace(&w, &q("a", "svc/empty", None)).unwrap();
    assert_eq!(r.verdict, Verdict::Rejected, "{}", r.render_text());
    assert!(r.reason.contains("no ready endpoints"), "{}", r.reason);
    assert!(r.endpoints.is_empty());
}

#[test]
fn node_and_external_reach_the_service_with_masquerade() {
    let w = world();
    let r = trace(&w, &q("node/node-1", "svc/web", None)).unwrap();
    assert_eq!(r.endpoints.len(), 2, "{}", r.render_text());
    assert!(
        r.hops.iter().any(|h| h.kind == "snat"),
        "{}",
        r.render_text()
    );
    let r = trace(&w, &q("external", "node/node-1", Some(30080))).unwrap();
    assert_eq!(
        r.endpoints,
        ["10.244.2.10:8080", "10.244.3.10:8080"],
        "{}",
        r.render_text()
    );
    let by_ep: BTreeMap<_, _> = r
        .endpoint_outcomes
        .iter()
        .map(|e| (e.endpoint.as_str(), e.verdict))
        .collect();
    assert_eq!(
        by_ep["10.244.3.10:8080"],
        Verdict::Delivered,
        "{}",
        r.render_text()
    );
    assert_eq!(
        by_ep["10.244.2.10:8080"],
        Verdict::Dropped,
        "c only allows pod a: {}",
        r.render_text()
    );
}

#[test]
fn pod_addresses_are_not_routed_from_outside_and_bad_names_are_errors() {
    let w = world();
    let r = trace(&w, &q("external", "10.244.2.10", Some(8080))).unwrap();
    assert_eq!(r.verdict, Verdict::Dropped);
    assert!(r.reason.contains("fabric has no route"), "{}", r.reason);
    let r = trace(&w, &q("a", "203.0.113.10", Some(80))).unwrap();
    assert_eq!(r.verdict, Verdict::Delivered, "{}", r.render_text());
    assert!(
        r.hops
            .iter()
            .any(|h| h.kind == "snat" && h.text.contains("192.168.33.11")),
        "{}",
        r.render_text()
    );
    assert_eq!(
        trace(&w, &q("zz", "b", Some(1))).unwrap_err(),
        TraceError::UnknownPod("x/zz".into())
    );
    assert_eq!(
        trace(&w, &q("a", "svc/nope", None)).unwrap_err(),
        TraceError::UnknownService("x/nope".into())
    );
    assert_eq!(
        trace(&w, &q("node/n9", "b", Some(1))).unwrap_err(),
        TraceError::UnknownNode("n9".into())
    );
    assert!(
        matches!(trace(&w, &q("a", "b", None)), Err(TraceError::BadInput(m)) if m.contains("--port"))
    );
}
