//! deploy/rbac.yaml on a server with RBAC on: the requests sarasa-agent and sarasa-dns make
//! (the kinds they list and watch, the Node and Lease writes of the agent) are allowed for their
//! ServiceAccounts, and writes the roles do not grant are refused with 403. Users are set by the
//! TEST-ONLY layer of `authz_common`. crates/agent/tests/rbac.rs runs the agent's own code.

mod authz_common;

use authz_common::Server;
use http::Method;
use serde_json::json;

const MANIFEST: &str = include_str!("../../../deploy/rbac.yaml");

const AGENT: Option<(&str, &[&str])> = Some((
    "system:serviceaccount:sarasa-system:sarasa-agent",
    &[
        "system:serviceaccounts",
        "system:serviceaccounts:sarasa-system",
        "system:authenticated",
    ],
));
const DNS: Option<(&str, &[&str])> = Some((
    "system:serviceaccount:kube-system:sarasa-dns",
    &[
        "system:serviceaccounts",
        "system:serviceaccounts:kube-system",
        "system:authenticated",
    ],
));
const ADMIN: Option<(&str, &[&str])> = Some(("admin", &["system:masters"]));

const WATCHED_BY_AGENT: &[&str] = &[
    "/api/v1/nodes",
    "/api/v1/pods",
    "/api/v1/namespaces",
    "/api/v1/services",
    "/apis/discovery.k8s.io/v1/endpointslices",
    "/apis/networking.k8s.io/v1/networkpolicies",
];

#[tokio::test]
async fn the_agent_may_do_what_it_does_and_nothing_else() {
    let s = Server::start().await;
    s.apply_yaml(MANIFEST).await;
    for path in WATCHED_BY_AGENT {
        assert_eq!(
            s.call(AGENT, Method::GET, path, None).await.0,
            200,
            "list {path}"
        );
        let (code, _) = s
            .call(
                AGENT,
                Method::GET,
                &format!("{path}?watch=true&timeoutSeconds=1"),
                None,
            )
            .await;
        assert_eq!(code, 200, "watch {path}");
    }
    // Registration, annotations, conditions.
    let node = json!({"metadata": {"name": "n1"}});
    let (code, v) = s
        .call(AGENT, Method::POST, "/api/v1/nodes", Some(node))
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(
        s.call(AGENT, Method::GET, "/api/v1/nodes/n1", None).await.0,
        200
    );
    let patch = json!({"metadata": {"annotations": {"sarasa.io/vtep-mac": "02:00:00:00:00:01"}}});
    assert_eq!(
        s.call(AGENT, Method::PATCH, "/api/v1/nodes/n1", Some(patch))
            .await
            .0,
        200
    );
    let status = json!({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}]}});
    assert_eq!(
        s.call(
            AGENT,
            Method::PATCH,
            "/api/v1/nodes/n1/status",
            Some(status)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.call(AGENT, Method::GET, "/api/v1/namespaces/sarasa-system", None)
            .await
            .0,
        200
    );
    // The Lease: created, then renewed with a merge patch, in sarasa-system only.
    let leases = "/apis/coordination.k8s.io/v1/namespaces/sarasa-system/leases";
    let lease = json!({"metadata": {"name": "agent-n1"}, "spec": {"holderIdentity": "n1"}});
    assert_eq!(
        s.call(AGENT, Method::POST, leases, Some(lease.clone()))
            .await
            .0,
        201
    );
    let renew = json!({"spec": {"renewTime": "2026-01-01T00:00:00.000000Z"}});
    assert_eq!(
        s.call(
            AGENT,
            Method::PATCH,
            &format!("{leases}/agent-n1"),
            Some(renew)
        )
        .await
        .0,
        200
    );
    // A Warning Event on a Node it refuses to program.
    let event = json!({"metadata": {"name": "n1.1", "namespace": "default"},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
        "reason": "PodCIDRConflict", "message": "m", "type": "Warning"});
    assert_eq!(
        s.call(
            AGENT,
            Method::POST,
            "/api/v1/namespaces/default/events",
            Some(event)
        )
        .await
        .0,
        201
    );
    // Refused: writes the role does not grant.
    let refused = [
        (Method::POST, "/api/v1/namespaces/default/pods", Some(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})),
         "pods is forbidden: User \"system:serviceaccount:sarasa-system:sarasa-agent\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""),
        (Method::DELETE, "/api/v1/namespaces/default/services/kubernetes", None,
         "services \"kubernetes\" is forbidden: User \"system:serviceaccount:sarasa-system:sarasa-agent\" cannot delete resource \"services\" in API group \"\" in the namespace \"default\""),
        (Method::DELETE, "/api/v1/nodes/n1", None,
         "nodes \"n1\" is forbidden: User \"system:serviceaccount:sarasa-system:sarasa-agent\" cannot delete resource \"nodes\" in API group \"\" at the cluster scope"),
        (Method::PUT, "/api/v1/nodes/n1", Some(json!({"metadata": {"name": "n1"}})),
         "nodes \"n1\" is forbidden: User \"system:serviceaccount:sarasa-system:sarasa-agent\" cannot update resource \"nodes\" in API group \"\" at the cluster scope"),
        (Method::POST, "/apis/coordination.k8s.io/v1/namespaces/default/leases", Some(lease),
         "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:sarasa-system:sarasa-agent\" cannot create resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"default\""),
        (Method::POST, "/api/v1/namespaces", Some(json!({"metadata": {"name": "x"}})),
         "namespaces is forbidden: User \"system:serviceaccount:sarasa-system:sarasa-agent\" cannot create resource \"namespaces\" in API group \"\" at the cluster scope"),
        (Method::GET, "/api/v1/namespaces/kube-system/secrets", None,
         "secrets is forbidden: User \"system:serviceaccount:sarasa-system:sarasa-agent\" cannot list resource \"secrets\" in API group \"\" in the namespace \"kube-system\""),
        (Method::PATCH, "/api/v1/namespaces/default/services/kubernetes/status", Some(json!({"status": {}})),
         "services \"kubernetes\" is forbidden: User \"system:serviceaccount:sarasa-system:sarasa-agent\" cannot patch resource \"services/status\" in API group \"\" in the namespace \"default\""),
    ];
    for (method, path, body, message) in refused {
        let (code, v) = s.call(AGENT, method.clone(), path, body).await;
        assert_eq!(code, 403, "{method} {path}: {v}");
        assert_eq!(v["message"], message);
    }
    assert_eq!(
        s.call(ADMIN, Method::GET, "/api/v1/nodes/n1", None).await.0,
        200,
        "n1 still there"
    );
}

#[tokio::test]
async fn the_dns_server_only_reads_what_it_serves() {
    let s = Server::start().await;
    s.apply_yaml(MANIFEST).await;
    for path in [
        "/api/v1/services",
        "/api/v1/pods",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        assert_eq!(
            s.call(DNS, Method::GET, path, None).await.0,
            200,
            "list {path}"
        );
        let (code, _) = s
            .call(
                DNS,
                Method::GET,
                &format!("{path}?watch=1&timeoutSeconds=1"),
                None,
            )
            .await;
        assert_eq!(code, 200, "watch {path}");
    }
    for (method, path) in [
        (Method::GET, "/api/v1/nodes"),
        (
            Method::GET,
            "/api/v1/namespaces/default/services/kubernetes",
        ),
        (Method::GET, "/api/v1/namespaces/kube-system/secrets"),
        (
            Method::DELETE,
            "/api/v1/namespaces/default/services/kubernetes",
        ),
        (Method::POST, "/api/v1/namespaces/default/services"),
    ] {
        assert_eq!(
            s.call(DNS, method.clone(), path, Some(json!({}))).await.0,
            403,
            "{method} {path}"
        );
    }
}
