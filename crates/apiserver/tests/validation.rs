//! Bad input is rejected with 422 Invalid naming the field, and stores nothing; other objects
//! stay as they were.

mod common;

use common::{fields, status_of, TestServer};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

/// Creates `obj` through the raw typed API and returns the 422's fields and message.
async fn rejected<K>(api: &Api<K>, obj: Value) -> (Vec<String>, String)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(obj).expect("typed");
    let s = status_of(api.create(&PostParams::default(), &typed).await);
    assert_eq!(
        (s.code, s.reason.as_str()),
        (422, "Invalid"),
        "{}",
        s.message
    );
    (fields(&s), s.message.clone())
}

fn pod_with_port(port: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [port]}]}})
}

#[tokio::test]
async fn pods_and_metadata() {
    let ts = TestServer::start().await;
    let pods: Api<Pod> = Api::namespaced(ts.client(), "default");
    let (f, m) = rejected(&pods, pod_with_port(json!({"containerPort": 70000}))).await;
    assert_eq!(f, ["spec.containers[0].ports[0].containerPort"]);
    assert!(m.contains("must be between 1 and 65535, inclusive"), "{m}");
    let (f, _) = rejected(&pods, pod_with_port(json!({"containerPort": 0}))).await;
    assert_eq!(f, ["spec.containers[0].ports[0].containerPort"]);
    let (f, m) = rejected(
        &pods,
        pod_with_port(json!({"containerPort": 80, "protocol": "ICMP"})),
    )
    .await;
    assert_eq!(f, ["spec.containers[0].ports[0].protocol"]);
    assert!(m.contains("Unsupported value: \"ICMP\""), "{m}");
    let (f, _) = rejected(
        &pods,
        json!({"metadata": {"name": "Bad"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    assert_eq!(f, ["metadata.name"]);
    let (f, _) = rejected(
        &pods,
        json!({"metadata": {"name": "p", "labels": {"bad key": "v", "k": "-bad-"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    assert_eq!(f, ["metadata.labels", "metadata.labels"]);
    let (f, _) = rejected(
        &pods,
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
    )
    .await;
    assert_eq!(f, ["spec.containers[0].image"]);
    assert!(pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    // Wrong JSON types are 400 BadRequest.
    let raw = ts.client();
    let req = http::Request::post("/api/v1/namespaces/default/pods")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"},
            "spec": {"containers": "nope"}}),
            )
            .unwrap(),
        )
        .unwrap();
    let r = raw.request::<Pod>(req).await;
    assert_eq!(status_of(r).code, 400);
}

fn deployment(selector: Value, labels: Value) -> Value {
    json!({"metadata": {"name": "d"}, "spec": {"replicas": 1, "selector": selector,
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
}

#[tokio::test]
async fn deployments() {
    let ts = TestServer::start().await;
    let deps: Api<Deployment> = Api::namespaced(ts.client(), "default");
    let (f, m) = rejected(
        &deps,
        deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"})),
    )
    .await;
    assert_eq!(f, ["spec.template.metadata.labels"]);
    assert!(
        m.contains("`selector` does not match template `labels`"),
        "{m}"
    );
    let (f, _) = rejected(
        &deps,
        deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "Near", "values": ["a"]}]}),
            json!({"app": "a"}),
        ),
    )
    .await;
    assert_eq!(f, ["spec.selector.matchExpressions[0].operator"]);
    let (f, _) = rejected(
        &deps,
        deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "In"}]}),
            json!({"app": "a"}),
        ),
    )
    .await;
    assert_eq!(f, ["spec.selector.matchExpressions[0].values"]);
    // The selector is immutable.
    let ok: Deployment = serde_json::from_value(deployment(
        json!({"matchLabels": {"app": "a"}}),
        json!({"app": "a", "x": "y"}),
    ))
    .unwrap();
    deps.create(&PostParams::default(), &ok).await.unwrap();
    let s = status_of(
        deps.patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"x": "y"}}}})),
        )
        .await,
    );
    assert_eq!(fields(&s), ["spec.selector"]);
}

fn svc(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn services() {
    let ts = TestServer::start().await;
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    let good: Service = serde_json::from_value(svc(
        "good",
        json!({"type": "NodePort", "clusterIP": "10.96.0.50",
        "selector": {"app": "a"}, "ports": [{"port": 80, "nodePort": 30080}]}),
    ))
    .unwrap();
    svcs.create(&PostParams::default(), &good).await.unwrap();
    let before = serde_json::to_value(
        Api::<Service>::all(ts.client())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();

    let cases: Vec<(Value, Vec<&str>, &str)> = vec![
        (
            json!({"ports": [{"port": 0, "targetPort": 80}]}),
            vec!["spec.ports[0].port"],
            "must be between 1 and 65535",
        ),
        (
            json!({"ports": [{"port": 80, "protocol": "FOO"}]}),
            vec!["spec.ports[0].protocol"],
            "Unsupported value: \"FOO\"",
        ),
        (
            json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}),
            vec!["spec.ports[1].name"],
            "Duplicate value: \"a\"",
        ),
        (
            json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}),
            vec!["spec.ports[1]"],
            "Duplicate value: \"80/TCP\"",
        ),
        (
            json!({"ports": [{"port": 80}, {"port": 81}]}),
            vec!["spec.ports[0].name", "spec.ports[1].name"],
            "Required value",
        ),
        (json!({"ports": []}), vec!["spec.ports"], "Required value"),
        (
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}),
            vec!["spec.ports[0].nodePort"],
            "not in the valid range",
        ),
        (
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
            vec!["spec.ports[0].nodePort"],
            "provided port is already allocated",
        ),
        (
            json!({"ports": [{"port": 80, "nodePort": 30081}]}),
            vec!["spec.ports[0].nodePort"],
            "may not be used when `type` is 'ClusterIP'",
        ),
        (
            json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}),
            vec!["spec.clusterIPs"],
            "is not in the valid range",
        ),
        (
            json!({"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}),
            vec!["spec.clusterIPs"],
            "provided IP is already allocated",
        ),
        (
            json!({"clusterIP": "not-an-ip", "ports": [{"port": 80}]}),
            vec!["spec.clusterIPs[0]"],
            "must be a valid IP address",
        ),
        (
            json!({"ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
            vec!["spec.ipFamilies[0]"],
            "not configured on this cluster",
        ),
        (
            json!({"ipFamilies": ["IPv5"], "ports": [{"port": 80}]}),
            vec!["spec.ipFamilies[0]"],
            "Unsupported value",
        ),
        (
            json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}),
            vec!["spec.ipFamilyPolicy"],
            "not configured for dual-stack",
        ),
        (
            json!({"ipFamilyPolicy": "Sometimes", "ports": [{"port": 80}]}),
            vec!["spec.ipFamilyPolicy"],
            "Unsupported value",
        ),
        (
            json!({"type": "ExternalName", "externalName": "example.com", "clusterIP": "10.96.0.77"}),
            vec!["spec.clusterIPs"],
            "may not be set for ExternalName",
        ),
        (
            json!({"type": "ExternalName"}),
            vec!["spec.externalName"],
            "Required value",
        ),
        (
            json!({"type": "ExternalName", "externalName": "Not_A_Name"}),
            vec!["spec.externalName"],
            "RFC 1123",
        ),
        (
            json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}),
            vec!["spec.clusterIPs[0]"],
            "may not be set to 'None'",
        ),
        (
            json!({"selector": {"bad key": "x"}, "ports": [{"port": 80}]}),
            vec!["spec.selector"],
            "name part must consist",
        ),
        (
            json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
            vec!["spec.externalTrafficPolicy"],
            "may only be set when",
        ),
        (
            json!({"type": "Magic", "ports": [{"port": 80}]}),
            vec!["spec.type"],
            "Unsupported value",
        ),
        (
            json!({"ports": [{"port": 80, "targetPort": "Not-A-Name!"}]}),
            vec!["spec.ports[0].targetPort"],
            "alpha-numeric",
        ),
        (
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}, "ports": [{"port": 80}]}),
            vec!["spec.sessionAffinityConfig.clientIP.timeoutSeconds"],
            "must be greater than 0",
        ),
        (
            json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["1.2.3.0/33"], "ports": [{"port": 80}]}),
            vec!["spec.loadBalancerSourceRanges[0]"],
            "valid CIDR",
        ),
        (
            json!({"externalIPs": ["1.2.3"], "ports": [{"port": 80}]}),
            vec!["spec.externalIPs[0]"],
            "valid IP",
        ),
    ];
    for (i, (spec, want_fields, want_msg)) in cases.into_iter().enumerate() {
        let (f, m) = rejected(&svcs, svc(&format!("bad{i}"), spec.clone())).await;
        assert_eq!(f, want_fields, "case {i}: {spec}");
        assert!(m.contains(want_msg), "case {i}: {m}");
    }
    // A bad service name (DNS-1035: must start with a letter).
    let (f, _) = rejected(&svcs, svc("1abc", json!({"ports": [{"port": 80}]}))).await;
    assert_eq!(f, ["metadata.name"]);
    // Updating the ClusterIP is rejected.
    let s = status_of(
        svcs.patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"clusterIP": "10.96.0.51", "clusterIPs": ["10.96.0.51"]}}),
            ),
        )
        .await,
    );
    assert_eq!(fields(&s), ["spec.clusterIPs[0]"]);

    // Nothing else changed.
    let after = serde_json::to_value(
        Api::<Service>::all(ts.client())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    )
    .unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn dual_stack_services_and_nodes() {
    let ts = TestServer::start_with(|c| {
        c.service_cidrs.push("fd00:10:96::/112".parse().unwrap());
        c.cluster_cidrs.push("fd00:10:244::/56".parse().unwrap());
    })
    .await;
    let svcs: Api<Service> = Api::namespaced(ts.client(), "default");
    let mk =
        |name: &str, spec: Value| -> Service { serde_json::from_value(svc(name, spec)).unwrap() };
    let s = svcs
        .create(
            &PostParams::default(),
            &mk(
                "dual",
                json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .unwrap();
    let spec = s.spec.unwrap();
    assert_eq!(spec.ip_families.unwrap(), ["IPv4", "IPv6"]);
    let ips = spec.cluster_ips.unwrap();
    assert!(
        ips[0].starts_with("10.96.") && ips[1].starts_with("fd00:10:96::"),
        "{ips:?}"
    );
    let s = svcs
        .create(
            &PostParams::default(),
            &mk(
                "v6",
                json!({"ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
            ),
        )
        .await
        .unwrap();
    assert!(s
        .spec
        .unwrap()
        .cluster_ip
        .unwrap()
        .starts_with("fd00:10:96::"));
    let (f, m) = rejected(&svcs, svc("single2", json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80}]}))).await;
    assert_eq!(f, ["spec.ipFamilyPolicy"]);
    assert!(
        m.contains("must be RequireDualStack or PreferDualStack"),
        "{m}"
    );
    let (f, _) = rejected(&svcs, svc("dupfam", json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv4"], "ports": [{"port": 80}]}))).await;
    assert_eq!(f, ["spec.ipFamilies[1]"]);
    let (f, m) = rejected(
        &svcs,
        svc(
            "mism",
            json!({"ipFamilies": ["IPv6"], "clusterIP": "10.96.0.9", "ports": [{"port": 80}]}),
        ),
    )
    .await;
    assert_eq!(f, ["spec.clusterIPs[0]"]);
    assert!(m.contains("expected an IPv6 value"), "{m}");

    // Nodes get a podCIDR of each family.
    let nodes: Api<Node> = Api::all(ts.client());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let n = common::eventually(15, "podCIDRs", || {
        let nodes = nodes.clone();
        async move {
            nodes
                .get("n1")
                .await
                .ok()
                .filter(|n| n.spec.as_ref().and_then(|s| s.pod_cidrs.as_ref()).is_some())
        }
    })
    .await;
    let cidrs = n.spec.unwrap().pod_cidrs.unwrap();
    assert_eq!(cidrs, ["10.244.0.0/24", "fd00:10:244::/64"]);
}

fn netpol(spec: Value) -> Value {
    json!({"metadata": {"name": "np"}, "spec": spec})
}

#[tokio::test]
async fn network_policies() {
    let ts = TestServer::start().await;
    let nps: Api<NetworkPolicy> = Api::namespaced(ts.client(), "default");
    let good: NetworkPolicy =
        serde_json::from_value(json!({"metadata": {"name": "keep"}, "spec": {"podSelector": {}}}))
            .unwrap();
    let good = nps.create(&PostParams::default(), &good).await.unwrap();
    assert_eq!(
        good.spec.as_ref().unwrap().policy_types.as_ref().unwrap(),
        &["Ingress"]
    );
    let cases: Vec<(Value, Vec<&str>, &str)> = vec![
        (
            json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}),
            vec!["spec.podSelector.matchExpressions[0].operator"],
            "not a valid selector operator",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
            vec!["spec.ingress[0].from[0].ipBlock.cidr"],
            "valid CIDR",
        ),
        (
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]}),
            vec!["spec.egress[0].to[0].ipBlock.except[0]"],
            "must be a strict subset of `cidr`",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
            vec!["spec.ingress[0].ports[0].endPort"],
            "must be greater than or equal to `port`",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 80}]}]}),
            vec!["spec.ingress[0].ports[0].endPort"],
            "may not be specified when `port` is non-numeric",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]}),
            vec!["spec.ingress[0].ports[0].protocol"],
            "Unsupported value: \"ICMP\"",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
            vec!["spec.ingress[0].from[0]"],
            "may not specify more than 1 peer type",
        ),
        (
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"bad key": "x"}}}]}]}),
            vec!["spec.ingress[0].from[0].namespaceSelector.matchLabels"],
            "name part",
        ),
        (
            json!({"podSelector": {}, "policyTypes": ["Sideways"]}),
            vec!["spec.policyTypes[0]"],
            "Unsupported value",
        ),
    ];
    for (i, (spec, want_fields, want_msg)) in cases.into_iter().enumerate() {
        let (f, m) = rejected(&nps, netpol(spec.clone())).await;
        assert_eq!(f, want_fields, "case {i}: {spec}");
        assert!(m.contains(want_msg), "case {i}: {m}");
    }
    // The good policy is untouched.
    let now = nps.get("keep").await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        good.metadata.resource_version
    );
    assert_eq!(
        nps.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test]
async fn namespace_name_label_is_forced() {
    let ts = TestServer::start().await;
    let client: Client = ts.client();
    let nss: Api<Namespace> = Api::all(client);
    let ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "other"}}}),
    )
    .unwrap();
    let ns = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(
        ns.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        "team-a"
    );
    let ns = nss
        .patch(
            "team-a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"kubernetes.io/metadata.name": null, "x": "y"}}}),
            ),
        )
        .await
        .unwrap();
    let labels = ns.metadata.labels.unwrap();
    assert_eq!(labels["kubernetes.io/metadata.name"], "team-a");
    assert_eq!(labels["x"], "y");
    let def = nss.get("default").await.unwrap();
    assert_eq!(
        def.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        "default"
    );
}
