//! RBAC over HTTP: 403 `Status` bodies worded as kube-apiserver words them, grants through
//! Roles/ClusterRoles and bindings (namespaced, cluster-wide, subresources, resourceNames,
//! aggregation), the default roles, the access reviews `kubectl auth can-i` uses, validation
//! of RBAC objects and the escalation check. Users are set by the TEST-ONLY layer of
//! `authz_common` (authentication is tested by its own tests).

mod authz_common;

use std::time::{Duration, Instant};

use authz_common::{Server, SA_GROUPS};
use http::Method;
use serde_json::{json, Value};

const SA: &str = "system:serviceaccount:ns:sa";

fn sa() -> Option<(&'static str, &'static [&'static str])> {
    Some((SA, SA_GROUPS))
}

fn user(name: &'static str) -> Option<(&'static str, &'static [&'static str])> {
    Some((name, &["system:authenticated"]))
}

const ADMIN: Option<(&str, &[&str])> = Some(("admin", &["system:masters"]));

async fn create(s: &Server, path: &str, body: Value) {
    let (code, v) = s.call(ADMIN, Method::POST, path, Some(body)).await;
    assert_eq!(code, 201, "{path}: {v}");
}

async fn namespace(s: &Server, ns: &str) {
    create(s, "/api/v1/namespaces", json!({"metadata": {"name": ns}})).await;
}

async fn role(s: &Server, ns: &str, name: &str, rules: Value) {
    create(
        s,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
        json!({"metadata": {"name": name}, "rules": rules}),
    )
    .await;
}

async fn bind(s: &Server, ns: &str, name: &str, kind: &str, role: &str, subject: Value) {
    create(
        s,
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [subject]}),
    )
    .await;
}

fn sa_subject() -> Value {
    json!({"kind": "ServiceAccount", "name": "sa", "namespace": "ns"})
}

fn user_subject(name: &str) -> Value {
    json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

const POD: &str =
    r#"{"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}"#;

fn pod() -> Value {
    serde_json::from_str(POD).expect("pod")
}

#[tokio::test]
async fn refusals_are_403_status_with_kube_apiservers_message() {
    let s = Server::start().await;
    let (code, v) = s
        .call(
            sa(),
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(pod()),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods is forbidden: User \"system:serviceaccount:ns:sa\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\"",
            "reason": "Forbidden", "details": {"kind": "pods"}, "code": 403})
    );
    let (code, v) = s.call(sa(), Method::GET, "/api/v1/nodes", None).await;
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "nodes is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    let (code, v) = s
        .call(
            None,
            Method::GET,
            "/apis/apps/v1/namespaces/x/deployments/d",
            None,
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "deployments.apps \"d\" is forbidden: User \"system:anonymous\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"x\""
    );
    assert_eq!(
        v["details"],
        json!({"name": "d", "group": "apps", "kind": "deployments"})
    );
    let (code, v) = s.call(None, Method::GET, "/api", None).await;
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "forbidden: User \"system:anonymous\" cannot get path \"/api\""
    );
    // Nothing was stored by the refused create.
    let (code, _) = s
        .call(
            ADMIN,
            Method::GET,
            "/api/v1/namespaces/default/pods/p",
            None,
        )
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn masters_bypass_and_default_roles_serve_discovery_and_health() {
    let s = Server::start().await;
    let (code, _) = s
        .call(
            Some(("root", &["system:masters"])),
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(pod()),
        )
        .await;
    assert_eq!(code, 201);
    for path in ["/healthz", "/readyz", "/livez", "/version"] {
        assert_eq!(
            s.call(None, Method::GET, path, None).await.0,
            200,
            "anonymous {path}"
        );
    }
    for path in ["/api", "/api/v1", "/apis", "/apis/apps/v1", "/version"] {
        assert_eq!(
            s.call(sa(), Method::GET, path, None).await.0,
            200,
            "authenticated {path}"
        );
    }
    let (code, v) = s
        .call(
            ADMIN,
            Method::GET,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            None,
        )
        .await;
    assert_eq!(code, 200);
    let names: Vec<&str> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    for want in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let (_, b) = s
        .call(
            ADMIN,
            Method::GET,
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/cluster-admin",
            None,
        )
        .await;
    assert_eq!(b["subjects"][0]["name"], "system:masters");
}

#[tokio::test]
async fn a_namespaced_binding_grants_its_rules_in_that_namespace_only() {
    let s = Server::start().await;
    namespace(&s, "a").await;
    namespace(&s, "b").await;
    role(&s, "a", "pod-reader", json!([
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get"]},
    ]))
    .await;
    role(
        &s,
        "b",
        "pod-reader",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
    )
    .await;
    bind(&s, "a", "sa-reads", "Role", "pod-reader", sa_subject()).await;
    let get = |path: &'static str| async { s.call(sa(), Method::GET, path, None).await.0 };
    assert_eq!(get("/api/v1/namespaces/a/pods").await, 200);
    assert_eq!(
        get("/api/v1/namespaces/b/pods").await,
        403,
        "other namespace"
    );
    assert_eq!(get("/api/v1/pods").await, 403, "all namespaces");
    assert_eq!(
        get("/api/v1/namespaces/a/pods?watch=true").await,
        403,
        "watch is its own verb"
    );
    assert_eq!(get("/api/v1/namespaces/a/services").await, 403);
    assert_eq!(
        get("/api/v1/namespaces/a/configmaps/cfg").await,
        404,
        "allowed, absent"
    );
    assert_eq!(
        get("/api/v1/namespaces/a/configmaps/other").await,
        403,
        "resourceNames"
    );
    let (code, v) = s
        .call(sa(), Method::GET, "/api/v1/namespaces/a/pods/p/log", None)
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "pods \"p\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"a\""
    );
    let (code, _) = s
        .call(sa(), Method::POST, "/api/v1/namespaces/a/pods", Some(pod()))
        .await;
    assert_eq!(code, 403);
    // The ServiceAccount's group works as a subject too.
    bind(&s, "b", "all-sas", "Role", "pod-reader",
        json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:serviceaccounts"})).await;
    assert_eq!(get("/api/v1/namespaces/b/pods").await, 200);
}

#[tokio::test]
async fn grants_and_revocations_follow_the_stored_bindings() {
    let s = Server::start().await;
    let path = "/api/v1/namespaces/default/services";
    assert_eq!(s.call(sa(), Method::GET, path, None).await.0, 403);
    bind(
        &s,
        "default",
        "sa-view",
        "ClusterRole",
        "view",
        sa_subject(),
    )
    .await;
    // Visible to the very next request.
    assert_eq!(s.call(sa(), Method::GET, path, None).await.0, 200);
    let (code, _) = s
        .call(
            ADMIN,
            Method::DELETE,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/sa-view",
            None,
        )
        .await;
    assert_eq!(code, 200);
    // The index catches up through the store's watch (a controller), within a bounded time.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if s.call(sa(), Method::GET, path, None).await.0 == 403 {
            break;
        }
        assert!(Instant::now() < deadline, "revocation not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn view_edit_and_admin_are_aggregated_and_nested() {
    let s = Server::start().await;
    namespace(&s, "a").await;
    bind(&s, "a", "v", "ClusterRole", "view", user_subject("viewer")).await;
    bind(&s, "a", "e", "ClusterRole", "edit", user_subject("editor")).await;
    bind(&s, "a", "ad", "ClusterRole", "admin", user_subject("owner")).await;
    let pods = "/api/v1/namespaces/a/pods";
    let roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles";
    assert_eq!(s.call(user("viewer"), Method::GET, pods, None).await.0, 200);
    assert_eq!(
        s.call(
            user("viewer"),
            Method::GET,
            "/apis/apps/v1/namespaces/a/deployments",
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        s.call(user("viewer"), Method::POST, pods, Some(pod()))
            .await
            .0,
        403
    );
    assert_eq!(
        s.call(
            user("viewer"),
            Method::GET,
            "/api/v1/namespaces/a/secrets",
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        s.call(user("editor"), Method::GET, pods, None).await.0,
        200,
        "edit includes view"
    );
    assert_eq!(
        s.call(user("editor"), Method::POST, pods, Some(pod()))
            .await
            .0,
        201
    );
    assert_eq!(
        s.call(user("editor"), Method::GET, roles, None).await.0,
        403
    );
    assert_eq!(
        s.call(user("owner"), Method::GET, roles, None).await.0,
        200,
        "admin includes rbac"
    );
    assert_eq!(
        s.call(
            user("owner"),
            Method::DELETE,
            "/api/v1/namespaces/a/pods/p",
            None
        )
        .await
        .0,
        200
    );
    // A role of ours aggregated into view reaches every viewer.
    create(&s, "/apis/rbac.authorization.k8s.io/v1/clusterroles", json!({
        "metadata": {"name": "leases-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list"]}]})).await;
    assert_eq!(
        s.call(
            user("viewer"),
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/a/leases",
            None
        )
        .await
        .0,
        200
    );
}

async fn ssar(s: &Server, who: Option<(&str, &[&str])>, attrs: Value) -> Value {
    let (code, v) = s
        .call(who, Method::POST, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": attrs})))
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["kind"], "SelfSubjectAccessReview");
    v["status"].clone()
}

#[tokio::test]
async fn access_reviews_answer_can_i_and_list() {
    let s = Server::start().await;
    namespace(&s, "a").await;
    role(&s, "a", "r", json!([{"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["get", "update"]}])).await;
    bind(&s, "a", "b", "Role", "r", sa_subject()).await;
    let yes = ssar(&s, sa(), json!({"resourceAttributes": {"namespace": "a", "verb": "update", "group": "apps", "resource": "deployments", "subresource": "scale"}})).await;
    assert_eq!(yes["allowed"], true);
    let no = ssar(&s, sa(), json!({"resourceAttributes": {"namespace": "b", "verb": "update", "group": "apps", "resource": "deployments"}})).await;
    assert_eq!(no["allowed"], false);
    let url = ssar(
        &s,
        sa(),
        json!({"nonResourceAttributes": {"path": "/version", "verb": "get"}}),
    )
    .await;
    assert_eq!(url["allowed"], true);
    let admin = ssar(
        &s,
        ADMIN,
        json!({"resourceAttributes": {"verb": "delete", "resource": "nodes"}}),
    )
    .await;
    assert_eq!(admin["allowed"], true);
    // Anonymous users may not even ask (system:basic-user is for authenticated users).
    let (code, _) = s
        .call(
            None,
            Method::POST,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some(json!({"spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}}})),
        )
        .await;
    assert_eq!(code, 403);
    let (code, v) = s
        .call(
            sa(),
            Method::POST,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some(json!({"spec": {}})),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    let (code, v) = s
        .call(sa(), Method::POST, "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            Some(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "a"}})))
        .await;
    assert_eq!(code, 201);
    let rules = v["status"]["resourceRules"].as_array().expect("rules");
    assert!(rules.contains(&json!({"verbs": ["get", "update"], "apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"]})), "{v}");
    assert!(
        rules
            .iter()
            .any(|r| r["resources"][0] == "selfsubjectaccessreviews"),
        "{v}"
    );
    let urls = v["status"]["nonResourceRules"].as_array().expect("urls");
    assert!(urls.iter().any(|r| r["nonResourceURLs"]
        .as_array()
        .is_some_and(|u| u.contains(&json!("/version")))));
    assert_eq!(v["status"]["incomplete"], false);
}

#[tokio::test]
async fn rbac_objects_are_validated() {
    let s = Server::start().await;
    role(
        &s,
        "default",
        "r",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    )
    .await;
    bind(&s, "default", "b", "Role", "r", sa_subject()).await;
    let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/b";
    let (code, v) = s
        .call(
            ADMIN,
            Method::PATCH,
            path,
            Some(json!({"roleRef": {"kind": "ClusterRole", "name": "view"}})),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(
        v["message"],
        "RoleBinding \"b\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"view\"}: cannot change roleRef"
    );
    let (code, v) = s
        .call(ADMIN, Method::POST, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            Some(json!({"metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "Robot", "name": "r"}]})))
        .await;
    assert_eq!(code, 422);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("subjects[0].kind: Unsupported value: \"Robot\""),
        "{v}"
    );
    let (code, v) = s
        .call(ADMIN, Method::POST, "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            Some(json!({"metadata": {"name": "bad"}, "rules": [{"resources": ["pods"], "verbs": ["get"]}]})))
        .await;
    assert_eq!(code, 422);
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("rules[0].apiGroups: Required value"),
        "{v}"
    );
}

#[tokio::test]
async fn roles_and_bindings_cannot_grant_more_than_their_author_holds() {
    let s = Server::start().await;
    namespace(&s, "a").await;
    role(&s, "a", "rbac-manager", json!([
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["create", "update", "patch", "get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    ]))
    .await;
    bind(&s, "a", "mgr", "Role", "rbac-manager", user_subject("mgr")).await;
    let roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles";
    let bindings = "/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings";
    let mgr = user("mgr");
    let (code, v) = s
        .call(
            mgr,
            Method::POST,
            roles,
            Some(json!({"metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})),
        )
        .await;
    assert_eq!(code, 201, "within its own rules: {v}");
    let (code, v) = s
        .call(
            mgr,
            Method::POST,
            roles,
            Some(json!({"metadata": {"name": "deleter"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]}]})),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "roles.rbac.authorization.k8s.io \"deleter\" is forbidden: user \"mgr\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}"
    );
    assert_eq!(
        s.call(ADMIN, Method::GET, &format!("{roles}/deleter"), None)
            .await
            .0,
        404
    );
    // A patch is judged on the role it would produce.
    let (code, _) = s
        .call(
            mgr,
            Method::PATCH,
            &format!("{roles}/reader"),
            Some(json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}]})),
        )
        .await;
    assert_eq!(code, 403);
    let (_, stored) = s
        .call(ADMIN, Method::GET, &format!("{roles}/reader"), None)
        .await;
    assert_eq!(stored["rules"][0]["verbs"], json!(["get"]));
    // Binding a role it holds every rule of: allowed; binding admin: refused.
    let (code, v) = s
        .call(
            mgr,
            Method::POST,
            bindings,
            Some(json!({"metadata": {"name": "r"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [user_subject("friend")]})),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let admin_binding = json!({"metadata": {"name": "adm"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [user_subject("friend")]});
    let (code, v) = s
        .call(mgr, Method::POST, bindings, Some(admin_binding.clone()))
        .await;
    assert_eq!(code, 403);
    assert!(v["message"].as_str().unwrap_or("").starts_with(
        "rolebindings.rbac.authorization.k8s.io \"adm\" is forbidden: user \"mgr\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:"), "{v}");
    // The `bind` verb on that role, and `escalate` on roles, lift the check.
    role(&s, "a", "binder", json!([
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "resourceNames": ["admin"], "verbs": ["bind"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]},
    ]))
    .await;
    bind(&s, "a", "mgr-binder", "Role", "binder", user_subject("mgr")).await;
    assert_eq!(
        s.call(mgr, Method::POST, bindings, Some(admin_binding))
            .await
            .0,
        201
    );
    let (code, _) = s
        .call(
            mgr,
            Method::POST,
            roles,
            Some(json!({"metadata": {"name": "deleter"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}]})),
        )
        .await;
    assert_eq!(code, 201);
    // A dry run is checked and stores nothing.
    let (code, _) = s
        .call(
            user("friend"),
            Method::POST,
            &format!("{roles}?dryRun=All"),
            Some(json!({"metadata": {"name": "x"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})),
        )
        .await;
    assert_eq!(code, 201, "friend holds admin in a now");
    assert_eq!(
        s.call(ADMIN, Method::GET, &format!("{roles}/x"), None)
            .await
            .0,
        404
    );
}
