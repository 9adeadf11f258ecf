//! Lab end to end: the API over TLS with tokens, as a pod and a user see it. The machine's
//! `kubectl` (through `sarasa lab kubeconfig`: lab CA + admin token) and `curl` check that
//! requests without or with bad credentials get 401; a pod gets the ServiceAccount token, the
//! CA and its namespace mounted at /var/run/secrets/kubernetes.io/serviceaccount, lists pods
//! in-cluster through the `kubernetes` Service with them, and is refused without the token;
//! the token dies with the pod. The pod's configMap, secret, emptyDir, hostPath and downwardAPI
//! volumes show up where its volumeMounts say, with their modes, read-only where they must be.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::TestLab;

const KUBECTL: &str = "/usr/bin/kubectl";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

struct Kubectl {
    config: String,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("kubectl")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl exec vols -- sh -c SCRIPT`: (exit success, stdout, stderr).
    fn sh(&self, script: &str) -> (bool, String, String) {
        let out = self.run(&["exec", "vols", "--", "sh", "-c", script]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `curl` from the machine to the published API: (HTTP code, body).
fn curl(ca: &Path, url: &str, token: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .arg(url);
    if let Some(t) = token {
        c.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = c.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app-conf}
data: {a.conf: "alpha=1\n", b.conf: "beta=2\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {app: vols, tier: back}
spec:
  containers:
  - name: main
    image: sarasa
    volumeMounts:
    - {name: conf, mountPath: /etc/sarasa-test/conf}
    - {name: conf, mountPath: /etc/sarasa-test/one.conf, subPath: a.conf}
    - {name: creds, mountPath: /etc/sarasa-test/creds}
    - {name: scratch, mountPath: /tmp/sarasa-test-scratch}
    - {name: host, mountPath: /srv/sarasa-test}
    - {name: meta, mountPath: /etc/sarasa-test/meta}
  volumes:
  - name: conf
    configMap:
      name: app-conf
      defaultMode: 0400
      items: [{key: a.conf, path: a.conf}]
  - name: creds
    secret: {secretName: creds}
  - name: scratch
    emptyDir: {}
  - name: host
    hostPath: {path: /srv/data, type: DirectoryOrCreate}
  - name: meta
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
"#;

/// Removes the mount points the test pod's volumeMounts made on the machine (containers share
/// its filesystem), also when the test fails.
struct MountPoints;

impl Drop for MountPoints {
    fn drop(&mut self) {
        for d in [
            "/etc/sarasa-test",
            "/srv/sarasa-test",
            "/tmp/sarasa-test-scratch",
        ] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
fn tokens_tls_and_volumes_in_a_lab() {
    let _mount_points = MountPoints;
    let lab = TestLab::up(&["--nodes", "1"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let printed = lab.ok(&["lab", "kubeconfig"]);
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, &printed).expect("write");
    let k = Kubectl {
        config: config.display().to_string(),
    };
    let server = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server")
        .to_string();
    assert!(server.starts_with("https://127.0.0.1:"), "{server}");
    let paths = sarasa_lab::paths::LabPaths::new(&lab.name);
    let ca = paths.pki_dir().join("ca.crt");

    // No token, a bad token: 401 Status; the admin token: served. Health is public.
    let (code, body) = curl(&ca, &format!("{server}/api/v1/pods"), None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
    assert_eq!(
        curl(&ca, &format!("{server}/api/v1/pods"), Some("nope")).0,
        401
    );
    assert_eq!(curl(&ca, &format!("{server}/healthz"), None).0, 200);
    let admin = std::fs::read_to_string(paths.pki_dir().join("admin.token")).expect("token");
    assert_eq!(
        curl(&ca, &format!("{server}/api/v1/pods"), Some(admin.trim())).0,
        200
    );
    // kubectl without credentials is refused too.
    let mut anon: serde_norway::Value = serde_norway::from_str(&printed).expect("yaml");
    // (kubectl would prompt for a password without any credentials; a wrong token it sends.)
    anon["users"][0]["user"]["token"] = "wrong".into();
    let anon = serde_norway::to_string(&anon).expect("yaml");
    let anon_cfg = dir.path().join("anon");
    std::fs::write(&anon_cfg, anon).expect("write");
    let out = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&anon_cfg)
        .args(["get", "pods"])
        .output()
        .expect("kubectl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // `kubectl create token` (a protobuf TokenRequest) gets a token that authenticates: RBAC
    // refuses the `default` ServiceAccount until a binding grants it `view` in its namespace.
    let made = k.ok(&["create", "token", "default", "--duration=10m"]);
    let pods_url = format!("{server}/api/v1/namespaces/default/pods");
    let (code, body) = curl(&ca, &pods_url, Some(made.trim()));
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status");
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"system:serviceaccount:default:default\" cannot list \
         resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    k.ok(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ]);
    assert_eq!(curl(&ca, &pods_url, Some(made.trim())).0, 200);

    // Every namespace gets its default ServiceAccount and the CA.
    let cm = k.ok(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert_eq!(cm, std::fs::read_to_string(&ca).expect("ca"));

    let manifest = dir.path().join("vols.yaml");
    std::fs::write(&manifest, MANIFEST).expect("write");
    k.ok(&["apply", "-f", manifest.to_str().expect("utf8")]);
    k.ok(&["wait", "--for=condition=Ready", "pod/vols", "--timeout=90s"]);
    let sa = k.ok(&[
        "get",
        "pod",
        "vols",
        "-o",
        "jsonpath={.spec.serviceAccountName}",
    ]);
    assert_eq!(sa, "default");

    // The ServiceAccount volume.
    let (ok, ns, err) = k.sh(&format!("cat {SA_DIR}/namespace"));
    assert!(ok, "{err}");
    assert_eq!(ns, "default");
    let (ok, pod_ca, _) = k.sh(&format!("cat {SA_DIR}/ca.crt"));
    assert!(ok);
    assert_eq!(pod_ca, std::fs::read_to_string(&ca).expect("ca"));
    let (ok, token, _) = k.sh(&format!("cat {SA_DIR}/token"));
    assert!(ok && token.split('.').count() == 3, "{token}");
    let (ok, _, _) = k.sh(&format!("touch {SA_DIR}/x"));
    assert!(!ok, "the token volume is read-only");

    // In-cluster: the kubernetes Service, the mounted CA and token.
    let list = format!(
        "curl -s -w '\\n%{{http_code}}' --cacert {SA_DIR}/ca.crt \
         https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/default/pods"
    );
    let (ok, out, err) = k.sh(&format!(
        "{list} -H \"Authorization: Bearer $(cat {SA_DIR}/token)\""
    ));
    assert!(ok, "{err}");
    assert!(
        out.ends_with("200") && out.contains("\"name\":\"vols\""),
        "{out}"
    );
    let (_, out, _) = k.sh(&list);
    assert!(
        out.ends_with("401") && out.contains("Unauthorized"),
        "{out}"
    );

    // The other volumes.
    let (ok, out, err) = k.sh(
        "cat /etc/sarasa-test/conf/a.conf /etc/sarasa-test/one.conf; \
         ls /etc/sarasa-test/conf; stat -c %a /etc/sarasa-test/conf/a.conf; \
         cat /etc/sarasa-test/creds/password; echo; cat /etc/sarasa-test/meta/name; echo; \
         cat /etc/sarasa-test/meta/labels",
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "alpha=1\nalpha=1\na.conf\n400\ns3cret\nvols\napp=\"vols\"\ntier=\"back\""
    );
    let (ok, _, _) = k.sh("touch /etc/sarasa-test/conf/new");
    assert!(!ok, "configMap volumes are read-only");
    let (ok, out, err) =
        k.sh("echo hi > /tmp/sarasa-test-scratch/f && cat /tmp/sarasa-test-scratch/f && echo host > /srv/sarasa-test/f");
    assert!(ok, "{err}");
    assert_eq!(out, "hi\n");
    let node = sarasa_lab::Lab::open(&lab.name).expect("lab").spec.nodes[0]
        .name
        .clone();
    let on_node = paths.node_dir(&node).join("root/srv/data/f");
    assert_eq!(
        std::fs::read_to_string(&on_node).expect("hostPath file on the node"),
        "host\n"
    );

    // The pod's token dies with the pod.
    k.ok(&["delete", "pod", "vols", "--grace-period=0", "--force"]);
    let refused = lab.eventually(Duration::from_secs(30), || {
        (curl(&ca, &format!("{server}/api/v1/pods"), Some(&token)).0 == 401).then_some(())
    });
    assert!(refused.is_some(), "a deleted pod's token must be refused");
}
