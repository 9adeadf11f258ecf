//! The machine's `kubectl auth can-i` (and `--list`) against a server with RBAC on: its
//! SelfSubjectAccessReview and SelfSubjectRulesReview, as kubectl sends and reads them. The
//! requests are a ServiceAccount's, set by the TEST-ONLY layer of `authz_common` (kubectl sends
//! no credentials here; authentication is tested by its own tests). Skipped, saying so, when
//! kubectl is not installed.

mod authz_common;

use std::process::Command;

use authz_common::Server;
use http::Method;
use sarasa_apiserver::UserInfo;
use serde_json::json;

fn kubectl(s: &Server, args: &[&str]) -> Option<(bool, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("config");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").expect("kubeconfig");
    let server = format!("http://{}", s.addr);
    let out = match Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--server", &server])
        .args(args)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: kubectl not runnable: {e}");
            return None;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_answers_from_rbac() {
    let sa = UserInfo {
        name: "system:serviceaccount:a:robot".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:authenticated".into(),
        ],
        ..UserInfo::default()
    };
    let s = Server::start_as(Some(sa)).await;
    let admin = Some(("admin", &["system:masters"][..]));
    let (code, _) = s
        .call(
            admin,
            Method::POST,
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": "a"}})),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _) = s
        .call(admin, Method::POST, "/apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings",
            Some(json!({"metadata": {"name": "robot-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "a"}]})))
        .await;
    assert_eq!(code, 201);
    let s = std::sync::Arc::new(s);
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || {
        let s = s2;
        let Some((ok, out)) = kubectl(&s, &["auth", "can-i", "list", "pods", "-n", "a"]) else {
            return;
        };
        assert!(ok, "{out}");
        assert_eq!(out.trim(), "yes");
        let (ok, out) =
            kubectl(&s, &["auth", "can-i", "create", "pods", "-n", "a"]).expect("kubectl");
        assert!(!ok, "{out}");
        assert_eq!(out.trim(), "no");
        let (ok, out) =
            kubectl(&s, &["auth", "can-i", "list", "pods", "-n", "b"]).expect("kubectl");
        assert!(!ok && out.trim() == "no", "{out}");
        let (ok, out) = kubectl(&s, &["auth", "can-i", "get", "/version"]).expect("kubectl");
        assert!(ok && out.trim() == "yes", "{out}");
        let (ok, out) = kubectl(&s, &["auth", "can-i", "--list", "-n", "a"]).expect("kubectl");
        assert!(ok, "{out}");
        let pods_line = out
            .lines()
            .find(|l| l.starts_with("pods "))
            .unwrap_or_else(|| panic!("no pods line in:\n{out}"));
        assert!(pods_line.contains("[get list watch]"), "{pods_line}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io")),
            "{out}"
        );
        assert!(
            !out.lines().any(|l| l.starts_with("secrets ")),
            "view does not read secrets:\n{out}"
        );
    })
    .await
    .expect("kubectl checks");
}
