//! Objects that would hijack the network are refused by the real API server with 422 Invalid
//! naming the field, and store nothing: a Node taking another's podCIDR or the underlay, a
//! zero or multicast VTEP MAC, a public-ip that is not the node's; Service externalIPs, a
//! LoadBalancer status and EndpointSlice addresses on loopback, link-local, a node's or the API
//! server's address (issue 14: an externalIP of 192.168.33.1 port 6443 redirected API traffic).

mod common;

use common::{fields, status_of, TestServer};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn typed<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("typed")
}

/// The 422's fields and message.
fn invalid<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (Vec<String>, String) {
    let s = status_of(r);
    assert_eq!(
        (s.code, s.reason.as_str()),
        (422, "Invalid"),
        "{}",
        s.message
    );
    (fields(&s), s.message.clone())
}

fn node(name: &str, cidr: &str, ip: &str, mac: &str) -> Node {
    typed(json!({
        "metadata": {"name": name, "annotations": {"sarasa.io/public-ip": ip, "sarasa.io/vtep-mac": mac}},
        "spec": {"podCIDR": cidr},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
    }))
}

fn lab_like(c: &mut sarasa_apiserver::Config) {
    c.advertise_address = Some("192.168.33.1:6443".parse().unwrap());
}

#[tokio::test]
async fn forged_nodes_are_refused() {
    let ts = TestServer::start_with(lab_like).await;
    let nodes: Api<Node> = Api::all(ts.client());
    let pp = PostParams::default();
    nodes
        .create(
            &pp,
            &node("n1", "10.244.1.0/24", "192.168.33.11", "02:00:00:00:00:01"),
        )
        .await
        .expect("a well-formed node");

    // Another node's podCIDR, a supernet of it, the underlay, outside the cluster CIDR.
    for cidr in [
        "10.244.1.0/24",
        "10.244.0.0/16",
        "192.168.33.0/24",
        "0.0.0.0/0",
    ] {
        let (f, m) = invalid(
            nodes
                .create(
                    &pp,
                    &node("evil", cidr, "192.168.33.66", "02:00:00:00:00:66"),
                )
                .await,
        );
        assert_eq!(f, ["spec.podCIDRs[0]"], "{cidr}: {m}");
    }
    let (_, m) = invalid(
        nodes
            .create(
                &pp,
                &node(
                    "evil",
                    "10.244.1.0/24",
                    "192.168.33.66",
                    "02:00:00:00:00:66",
                ),
            )
            .await,
    );
    assert!(
        m.contains("overlaps podCIDR 10.244.1.0/24 of node n1"),
        "{m}"
    );

    // Identity annotations: the all-zero MAC (VXLAN's flood entry), broadcast, a public-ip that
    // is not one of the node's addresses (the API server's), loopback.
    for (key, value) in [
        ("sarasa.io/vtep-mac", "00:00:00:00:00:00"),
        ("sarasa.io/vtep-mac", "ff:ff:ff:ff:ff:ff"),
        ("sarasa.io/public-ip", "192.168.33.1"),
        ("sarasa.io/public-ip", "127.0.0.1"),
    ] {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        let (f, m) = invalid(
            nodes
                .patch("n1", &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        );
        assert_eq!(f, [format!("metadata.annotations[{key}]")], "{value}: {m}");
    }
    // Nothing stored.
    assert!(nodes.get_opt("evil").await.unwrap().is_none());
    let n1 = nodes.get("n1").await.unwrap();
    let ann = n1.metadata.annotations.unwrap();
    assert_eq!(ann["sarasa.io/vtep-mac"], "02:00:00:00:00:01");
    assert_eq!(ann["sarasa.io/public-ip"], "192.168.33.11");
}

fn svc(name: &str, spec: Value) -> Service {
    typed(json!({"metadata": {"name": name}, "spec": spec}))
}

#[tokio::test]
async fn service_and_endpoint_addresses_cannot_hijack_traffic() {
    let ts = TestServer::start_with(lab_like).await;
    let nodes: Api<Node> = Api::all(ts.client());
    let pp = PostParams::default();
    nodes
        .create(
            &pp,
            &node("n1", "10.244.1.0/24", "192.168.33.11", "02:00:00:00:00:01"),
        )
        .await
        .unwrap();
    let svcs: Api<Service> = Api::default_namespaced(ts.client());
    // The attack, and the other special addresses.
    for (ip, why) in [
        ("192.168.33.1", "may not be the API server's address"),
        ("192.168.33.11", "may not be node n1's address"),
        ("10.244.1.0", "may not be node n1's address"),
        ("127.0.0.1", "may not be a loopback address"),
        ("169.254.169.254", "may not be a link-local address"),
        ("224.0.0.1", "may not be a multicast address"),
        ("0.0.0.0", "may not be a unspecified address"),
    ] {
        let s = svc(
            "hijack",
            json!({"externalIPs": [ip], "ports": [{"port": 6443}]}),
        );
        let (f, m) = invalid(svcs.create(&pp, &s).await);
        assert_eq!(f, ["spec.externalIPs[0]"], "{ip}: {m}");
        assert!(m.contains(why), "{ip}: {m}");
    }
    assert!(svcs.get_opt("hijack").await.unwrap().is_none());
    // An ordinary address is fine (no allow-list configured).
    svcs.create(
        &pp,
        &svc(
            "ext",
            json!({"externalIPs": ["203.0.113.50"], "ports": [{"port": 80}]}),
        ),
    )
    .await
    .expect("an ordinary externalIP");

    // Only the LoadBalancer controller writes status.loadBalancer.
    svcs.create(
        &pp,
        &svc(
            "lb",
            json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
        ),
    )
    .await
    .unwrap();
    let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.168.33.1"}]}}});
    let (f, _) = invalid(
        svcs.patch_status("lb", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(f, ["status.loadBalancer"]);
    let lb = common::eventually(15, "LoadBalancer ingress", || {
        let svcs = svcs.clone();
        async move {
            let s = svcs.get("lb").await.ok()?;
            s.status?.load_balancer?.ingress?.first()?.ip.clone()
        }
    })
    .await;
    assert!(lb.starts_with("198.51.100."), "{lb}");

    // EndpointSlices: a user's (here posing as the kubernetes Service's) may not point at the
    // API server, a node, loopback or link-local. The server's own `kubernetes` slice does.
    let slices: Api<EndpointSlice> = Api::default_namespaced(ts.client());
    let own = slices.get("kubernetes").await.unwrap();
    assert_eq!(own.endpoints.unwrap()[0].addresses, ["192.168.33.1"]);
    for ip in [
        "192.168.33.1",
        "192.168.33.11",
        "127.0.0.1",
        "169.254.169.254",
    ] {
        let es: EndpointSlice = typed(json!({
            "metadata": {"name": "evil", "labels": {"kubernetes.io/service-name": "ext"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.1.5", ip]}],
            "ports": [{"port": 6443, "protocol": "TCP"}]
        }));
        let (f, m) = invalid(slices.create(&pp, &es).await);
        assert_eq!(f, ["endpoints[0].addresses[1]"], "{ip}: {m}");
    }
    assert!(slices.get_opt("evil").await.unwrap().is_none());
}

#[tokio::test]
async fn external_ips_only_from_the_allow_list() {
    let ts = TestServer::start_with(|c| {
        lab_like(c);
        c.external_ip_cidrs = Some(vec!["192.0.2.0/24".parse().unwrap()]);
    })
    .await;
    let svcs: Api<Service> = Api::default_namespaced(ts.client());
    let pp = PostParams::default();
    svcs.create(
        &pp,
        &svc(
            "ok",
            json!({"externalIPs": ["192.0.2.50"], "ports": [{"port": 80}]}),
        ),
    )
    .await
    .expect("inside the allow-list");
    let (f, m) = invalid(
        svcs.create(
            &pp,
            &svc(
                "out",
                json!({"externalIPs": ["203.0.113.50"], "ports": [{"port": 80}]}),
            ),
        )
        .await,
    );
    assert_eq!(f, ["spec.externalIPs[0]"]);
    assert!(
        m.contains("must be within the allowed externalIP CIDRs 192.0.2.0/24"),
        "{m}"
    );
    // Updating the stored Service (same externalIP) still works.
    let patch = json!({"metadata": {"labels": {"x": "y"}}});
    svcs.patch("ok", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("an unchanged externalIP is not re-checked");
}

/// A client allowed to write pods/status cannot give a pod a node's or the API server's
/// address (which the EndpointSlice controller would hand every proxy); a pod address is
/// fine, and a host-network pod reports its node's address as the kubelet does.
#[tokio::test]
async fn pod_status_cannot_claim_cluster_addresses() {
    use k8s_openapi::api::core::v1::Pod;
    let ts = TestServer::start_with(lab_like).await;
    let nodes: Api<Node> = Api::all(ts.client());
    let pp = PostParams::default();
    nodes
        .create(
            &pp,
            &node("n1", "10.244.1.0/24", "192.168.33.11", "02:00:00:00:00:01"),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::default_namespaced(ts.client());
    let pod = |name: &str, host: bool| -> Pod {
        typed(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": "n1", "hostNetwork": host, "containers": [{"name": "c", "image": "x"}]}
        }))
    };
    pods.create(&pp, &pod("p", false)).await.unwrap();
    for (ip, why) in [
        ("192.168.33.1", "may not be the API server's address"),
        ("192.168.33.11", "may not be node n1's address"),
        ("127.0.0.1", "may not be a loopback address"),
    ] {
        let patch = json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}});
        let (f, m) = invalid(
            pods.patch_status("p", &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        );
        assert_eq!(f, ["status.podIP", "status.podIPs[0].ip"], "{ip}: {m}");
        assert!(m.contains(why), "{ip}: {m}");
    }
    let ok = json!({"status": {"podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}]}});
    pods.patch_status("p", &PatchParams::default(), &Patch::Merge(&ok))
        .await
        .expect("a pod address");
    pods.create(&pp, &pod("h", true)).await.unwrap();
    let node_ip =
        json!({"status": {"podIP": "192.168.33.11", "podIPs": [{"ip": "192.168.33.11"}]}});
    pods.patch_status("h", &PatchParams::default(), &Patch::Merge(&node_ip))
        .await
        .expect("a host-network pod has its node's address");
}
