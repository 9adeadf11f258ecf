//! The Multi-Cluster Services API's kinds (`multicluster.x-k8s.io/v1alpha1`) as the machine's
//! real `kubectl` sees them: discovered with their short names, applied, listed with the CRDs'
//! printer columns, their `/status` written apart from their spec, and a bad ServiceImport
//! refused naming each field, as a CRD's schema would. kubectl must be installed
//! (scripts/install-deps.sh installs it).

mod common;

use std::process::Command;

use common::TestServer;

fn kubectl(s: &TestServer, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("config");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").expect("kubeconfig");
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--server", &format!("http://{}", s.addr)])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl is installed (scripts/install-deps.sh)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("kubectl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const OBJECTS: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{port: 80}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {name: web, namespace: default}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: manual, namespace: default}
spec:
  type: ClusterSetIP
  ips: [242.1.255.253]
  ports:
  - {name: http, port: 80}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceImport
metadata: {name: db, namespace: default}
spec:
  type: Headless
  ports: [{port: 5432}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_serves_serviceexports_and_serviceimports() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || {
        let s = &*s2;
        let (ok, out) = kubectl(
            s,
            &["api-resources", "--api-group=multicluster.x-k8s.io"],
            None,
        );
        assert!(ok, "{out}");
        for row in [
            ("serviceexports", "svcex,svcexport", "ServiceExport"),
            ("serviceimports", "svcim,svcimport", "ServiceImport"),
        ] {
            assert!(
                out.lines().any(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    w.first() == Some(&row.0)
                        && w.contains(&row.1)
                        && w.contains(&"multicluster.x-k8s.io/v1alpha1")
                        && w.contains(&"true")
                        && w.last() == Some(&row.2)
                }),
                "{row:?} not in:\n{out}"
            );
        }

        // Plain `kubectl apply` validates against the server's OpenAPI document.
        let (ok, out) = kubectl(s, &["apply", "-f", "-"], Some(OBJECTS));
        assert!(ok, "{out}");
        assert!(
            out.contains("serviceexport.multicluster.x-k8s.io/web created")
                && out.contains("serviceimport.multicluster.x-k8s.io/manual created"),
            "{out}"
        );
        let (ok, out) = kubectl(s, &["get", "svcim"], None);
        assert!(ok, "{out}");
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["NAME", "TYPE", "IP", "AGE"], "{out}");
        assert!(
            rows.iter()
                .any(|r| r[..3] == ["manual", "ClusterSetIP", "[\"242.1.255.253\"]"]),
            "{out}"
        );
        assert!(
            rows.iter().any(|r| r[..3] == ["db", "Headless", "<none>"]),
            "{out}"
        );
        let (ok, out) = kubectl(s, &["get", "serviceexports", "-o", "name"], None);
        assert!(ok, "{out}");
        assert_eq!(out.trim(), "serviceexport.multicluster.x-k8s.io/web");

        // Defaults, as the CRD and a Service's port have them.
        let (ok, out) = kubectl(
            s,
            &[
                "get",
                "serviceimport",
                "db",
                "-o",
                "jsonpath={.spec.ports[0].protocol} {.spec.sessionAffinity}",
            ],
            None,
        );
        assert!(ok, "{out}");
        assert_eq!(out, "TCP None");

        // The status subresource: what the MCS controller writes, the spec left alone.
        let (ok, out) = kubectl(
            s,
            &[
                "patch",
                "serviceimport",
                "manual",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"clusters":[{"cluster":"west"}]},"spec":{"type":"Headless"}}"#,
            ],
            None,
        );
        assert!(ok, "{out}");
        let (_, out) = kubectl(
            s,
            &[
                "get",
                "serviceimport",
                "manual",
                "-o",
                "jsonpath={.status.clusters[0].cluster} {.spec.type}",
            ],
            None,
        );
        assert_eq!(out, "west ClusterSetIP");

        // A bad ServiceImport names every field at fault; a ServiceExport is named after a
        // Service, so its name is a DNS-1035 label.
        let bad = "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n\
                   metadata: {name: bad, namespace: default}\n\
                   spec:\n  type: LoadBalancer\n  ips: [not-an-ip]\n  ports: [{port: 70000}]\n";
        let (ok, out) = kubectl(s, &["apply", "-f", "-"], Some(bad));
        assert!(!ok, "{out}");
        for field in ["spec.type", "spec.ips[0]", "spec.ports[0].port"] {
            assert!(out.contains(field), "{field} not named:\n{out}");
        }
        // `ports` is required (it may be empty), as in the CRD.
        let bad = "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n\
                   metadata: {name: noports, namespace: default}\nspec:\n  type: Headless\n";
        let (ok, out) = kubectl(s, &["apply", "-f", "-"], Some(bad));
        assert!(!ok && out.contains("spec.ports: Required value"), "{out}");
        let bad = "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n\
                   metadata: {name: 1web, namespace: default}\n";
        let (ok, out) = kubectl(s, &["apply", "-f", "-"], Some(bad));
        assert!(!ok && out.contains("metadata.name"), "{out}");

        let (ok, out) = kubectl(s, &["delete", "svcex", "web"], None);
        assert!(ok, "{out}");
        let (_, out) = kubectl(s, &["get", "svcex"], None);
        assert_eq!(out.trim(), "No resources found in default namespace.");
    })
    .await
    .expect("kubectl checks");
}
