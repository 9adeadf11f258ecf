//! TLS, bearer-token authentication, TokenRequest and ServiceAccount admission, through real
//! clients: kube-rs over HTTPS trusting only the test CA, a raw rustls client for ALPN, and
//! plain HTTP/1.1 requests for the 401 cases.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use sarasa_apiserver::config::{Authentication, StaticToken, TlsFiles};
use sarasa_apiserver::{ApiServer, Config, UserInfo};
use serde_json::{json, Value};

use common::eventually;

const ADMIN_TOKEN: &str = "admin-token-0123456789";

struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
}

/// A CA, a serving certificate for 127.0.0.1 and localhost, and a P-256 ServiceAccount key.
fn write_pki(dir: &std::path::Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test-ca");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    let sa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.join("sa.key"), sa.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
    }
}

struct Server {
    server: ApiServer,
    addr: SocketAddr,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

async fn start() -> Server {
    start_with(|_| {}).await
}

async fn start_with(tune: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path());
    let mut config = Config::new(dir.path().join("state"));
    config.tls = Some(TlsFiles {
        cert_file: dir.path().join("tls.crt"),
        key_file: dir.path().join("tls.key"),
    });
    config.authentication = Some(Authentication {
        static_tokens: vec![StaticToken {
            token: ADMIN_TOKEN.into(),
            user: UserInfo {
                name: "sarasa-admin".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
                ..UserInfo::default()
            },
        }],
        service_account_key_file: dir.path().join("sa.key"),
        issuer: sarasa_apiserver::config::DEFAULT_ISSUER.into(),
        api_audiences: vec![sarasa_apiserver::config::DEFAULT_ISSUER.into()],
        root_ca_file: Some(dir.path().join("ca.crt")),
        anonymous: false,
    });
    tune(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = ApiServer::open(config).unwrap();
    let s2 = server.clone();
    tokio::spawn(async move { s2.serve(listener).await });
    Server {
        server,
        addr,
        pki,
        _dir: dir,
    }
}

/// A kube client through a kubeconfig, as kubectl users configure one.
async fn client(addr: SocketAddr, ca_pem: &str, token: Option<&str>) -> Result<Client, String> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let user = match token {
        Some(t) => json!({"token": t}),
        None => json!({}),
    };
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": format!("https://{addr}"), "certificate-authority-data": ca}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
        "current-context": "x"
    });
    let kc: kube::config::Kubeconfig = serde_json::from_value(kc).map_err(|e| e.to_string())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(cfg).map_err(|e| e.to_string())
}

async fn admin(s: &Server) -> Client {
    client(s.addr, &s.pki.ca_pem, Some(ADMIN_TOKEN))
        .await
        .unwrap()
}

/// One HTTP/1.1 request over TLS; returns the status code and the body.
async fn raw(s: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tls_connect(s, &[b"http/1.1"]).await;
    let (mut stream, _) = stream;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code: u16 = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Bodies here are short and not chunked with `Connection: close` + Content-Length.
    let body = serde_json::from_str(body.trim()).unwrap_or(Value::String(body.into()));
    (code, body)
}

async fn tls_connect(
    s: &Server,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Option<Vec<u8>>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(s.pki.ca_der.clone().into()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let proto = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (stream, proto)
}

async fn default_sa(c: &Client, ns: &str) -> ServiceAccount {
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    eventually(10, "the default ServiceAccount", || {
        let sas = sas.clone();
        async move { sas.get_opt("default").await.ok().flatten() }
    })
    .await
}

async fn token_request(c: &Client, ns: &str, sa: &str, spec: Value) -> Result<Value, kube::Error> {
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"
    ))
    .header("content-type", "application/json")
    .body(
        serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}))
            .unwrap(),
    )
    .unwrap();
    c.request::<Value>(req).await
}

#[tokio::test]
async fn kube_client_over_tls_trusts_the_ca_and_the_server_offers_h2() {
    let s = start().await;
    let c = admin(&s).await;
    let ns: Api<Namespace> = Api::all(c);
    let names: Vec<String> = ns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"kube-system".to_string()), "{names:?}");
    // ALPN: h2 preferred, http/1.1 still served (exec's WebSocket upgrade needs it).
    assert_eq!(
        tls_connect(&s, &[b"h2", b"http/1.1"]).await.1.as_deref(),
        Some(&b"h2"[..])
    );
    assert_eq!(
        tls_connect(&s, &[b"http/1.1"]).await.1.as_deref(),
        Some(&b"http/1.1"[..])
    );
    // A client that does not trust the lab CA refuses the server.
    let other = tempfile::tempdir().unwrap();
    let wrong = write_pki(other.path());
    let c = client(s.addr, &wrong.ca_pem, Some(ADMIN_TOKEN))
        .await
        .unwrap();
    let r = Api::<Namespace>::all(c).list(&ListParams::default()).await;
    assert!(r.is_err(), "a foreign CA must not verify the server: {r:?}");
}

#[tokio::test]
async fn requests_without_or_with_bad_credentials_get_401_status() {
    let s = start().await;
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        let (code, _) = raw(&s, path, None).await;
        assert_eq!(code, 200, "{path} is public");
    }
    for path in [
        "/api/v1/pods",
        "/api",
        "/apis",
        "/openapi/v2",
        "/api/v1/namespaces/default/pods/x/log",
    ] {
        let (code, body) = raw(&s, path, None).await;
        assert_eq!(code, 401, "{path}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], "Unauthorized");
        assert_eq!(body["code"], 401);
    }
    // A bad token is refused even where anonymous requests are not.
    let (code, body) = raw(&s, "/healthz", Some("not-a-token")).await;
    assert_eq!((code, body["reason"].as_str()), (401, Some("Unauthorized")));
    let (code, _) = raw(&s, "/api/v1/pods", Some("a.b.c")).await;
    assert_eq!(code, 401);
    let (code, _) = raw(&s, "/api/v1/pods", Some(ADMIN_TOKEN)).await;
    assert_eq!(code, 200);
    // Through kube-rs too.
    let anon = client(s.addr, &s.pki.ca_pem, None).await.unwrap();
    let st = common::status_of(Api::<Pod>::all(anon).list(&ListParams::default()).await);
    assert_eq!((st.code, st.reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test]
async fn anonymous_requests_pass_authentication_only_when_allowed_and_authorization_decides() {
    let anonymous = |mode| {
        move |c: &mut Config| {
            c.authentication.as_mut().unwrap().anonymous = true;
            c.authorization = mode;
        }
    };
    // With RBAC, system:anonymous holds nothing but the public paths: 403, not 401.
    let s = start_with(anonymous(sarasa_apiserver::authz::AuthorizationMode::Rbac)).await;
    let (code, body) = raw(&s, "/api/v1/namespaces/default/pods", None).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("system:anonymous"),
        "{body}"
    );
    // A bad token is still refused, anonymous or not.
    let (code, _) = raw(&s, "/api/v1/namespaces/default/pods", Some("nope")).await;
    assert_eq!(code, 401);
    drop(s);
    // AlwaysAllow (the lab's `--insecure-api` benchmark mode): anonymous reads and writes.
    let s = start_with(anonymous(
        sarasa_apiserver::authz::AuthorizationMode::AlwaysAllow,
    ))
    .await;
    let (code, body) = raw(&s, "/api/v1/namespaces/default/pods", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "PodList");
}

#[tokio::test]
async fn token_request_issues_tokens_that_authenticate_until_the_account_goes() {
    let s = start().await;
    let c = admin(&s).await;
    let ns: Api<Namespace> = Api::all(c.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap(),
    )
    .await
    .unwrap();
    let sa = default_sa(&c, "team").await;
    let out = token_request(&c, "team", "default", json!({}))
        .await
        .unwrap();
    assert_eq!(out["kind"], "TokenRequest");
    assert_eq!(out["spec"]["expirationSeconds"], 3600);
    assert_eq!(
        out["spec"]["audiences"],
        json!([sarasa_apiserver::config::DEFAULT_ISSUER])
    );
    let token = out["status"]["token"].as_str().unwrap().to_string();
    // Discovery names the subresource as kube-apiserver does.
    let (_, v1) = raw(&s, "/api/v1", Some(ADMIN_TOKEN)).await;
    let sub = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .cloned()
        .expect("serviceaccounts/token in discovery");
    assert_eq!(sub["kind"], "TokenRequest");
    assert_eq!(sub["group"], "authentication.k8s.io");
    assert_eq!(sub["verbs"], json!(["create"]));
    // The claims kube-apiserver puts in.
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:team:default");
    assert_eq!(claims["iss"], sarasa_apiserver::config::DEFAULT_ISSUER);
    assert_eq!(claims["kubernetes.io"]["namespace"], "team");
    assert_eq!(
        claims["kubernetes.io"]["serviceaccount"]["uid"],
        json!(sa.metadata.uid.clone().unwrap())
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    // The token works.
    let user = client(s.addr, &s.pki.ca_pem, Some(&token)).await.unwrap();
    Api::<Pod>::namespaced(user.clone(), "team")
        .list(&ListParams::default())
        .await
        .unwrap();
    // A token for another audience does not.
    let other = token_request(&c, "team", "default", json!({"audiences": ["vault"]}))
        .await
        .unwrap();
    let (code, _) = raw(&s, "/api/v1/pods", other["status"]["token"].as_str()).await;
    assert_eq!(code, 401);
    // Validation, with the field named.
    let st = common::status_of(
        token_request(&c, "team", "default", json!({"expirationSeconds": 60})).await,
    );
    assert_eq!(st.code, 422);
    assert!(
        st.message.contains("spec.expirationSeconds") && st.message.contains("10 minutes"),
        "{}",
        st.message
    );
    let st = common::status_of(token_request(&c, "team", "nobody", json!({})).await);
    assert_eq!(st.code, 404);
    // Deleting the ServiceAccount revokes its tokens; a new one of the same name does not
    // bring them back (the uid differs).
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "team");
    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    let (code, _) = raw(&s, "/api/v1/pods", Some(&token)).await;
    assert_eq!(code, 401);
    let again = default_sa(&c, "team").await;
    assert_ne!(again.metadata.uid, sa.metadata.uid);
    let (code, _) = raw(&s, "/api/v1/pods", Some(&token)).await;
    assert_eq!(code, 401, "a token of the deleted account stays revoked");
}

fn pod(name: &str, extra: Value) -> Pod {
    let mut p = json!({
        "metadata": {"name": name},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "main", "image": "busybox"}]
        }
    });
    if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(p).unwrap()
}

#[tokio::test]
async fn pods_get_their_service_account_and_the_token_volume() {
    let s = start().await;
    let c = admin(&s).await;
    default_sa(&c, "default").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let p = pods
        .create(&PostParams::default(), &pod("a", json!({})))
        .await
        .unwrap();
    let spec = p.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let vols = spec.volumes.unwrap();
    assert_eq!(vols.len(), 1);
    let v = serde_json::to_value(&vols[0]).unwrap();
    let name = v["name"].as_str().unwrap();
    assert!(
        name.starts_with("kube-api-access-") && name.len() == 21,
        "{name}"
    );
    let sources = &v["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(sources[1]["configMap"]["items"][0]["key"], "ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let m = c.volume_mounts.as_ref().unwrap();
        assert_eq!(m[0].name, name);
        assert_eq!(
            m[0].mount_path,
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
        assert_eq!(m[0].read_only, Some(true));
    }
    // Opting out on the pod, or on the ServiceAccount.
    let p = pods
        .create(
            &PostParams::default(),
            &pod("b", json!({"automountServiceAccountToken": false})),
        )
        .await
        .unwrap();
    assert!(p.spec.unwrap().volumes.unwrap_or_default().is_empty());
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let p = pods
        .create(
            &PostParams::default(),
            &pod("c", json!({"serviceAccountName": "quiet"})),
        )
        .await
        .unwrap();
    assert!(p.spec.unwrap().volumes.unwrap_or_default().is_empty());
    // A ServiceAccount that does not exist is refused.
    let st = common::status_of(
        pods.create(
            &PostParams::default(),
            &pod("d", json!({"serviceAccountName": "ghost"})),
        )
        .await,
    );
    assert_eq!(st.code, 403);
    assert!(st.message.contains("ghost"), "{}", st.message);
}

#[tokio::test]
async fn bound_tokens_die_with_their_pod_and_the_root_ca_is_published() {
    let s = start().await;
    let c = admin(&s).await;
    default_sa(&c, "default").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let p = pods
        .create(&PostParams::default(), &pod("bound", json!({})))
        .await
        .unwrap();
    let uid = p.metadata.uid.unwrap();
    let st = common::status_of(
        token_request(
            &c,
            "default",
            "default",
            json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "bound", "uid": "wrong"}}),
        )
        .await,
    );
    assert_eq!(st.code, 409);
    let out = token_request(
        &c,
        "default",
        "default",
        json!({"expirationSeconds": 3607, "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "bound", "uid": uid}}),
    )
    .await
    .unwrap();
    assert_eq!(out["spec"]["boundObjectRef"]["uid"], json!(uid));
    let token = out["status"]["token"].as_str().unwrap().to_string();
    let (code, _) = raw(&s, "/api/v1/pods", Some(&token)).await;
    assert_eq!(code, 200);
    pods.delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually(10, "the bound pod's token to be refused", || {
        let s = &s;
        let token = token.clone();
        async move { (raw(s, "/api/v1/pods", Some(&token)).await.0 == 401).then_some(()) }
    })
    .await;
    // kube-root-ca.crt carries the CA in every namespace and comes back when deleted.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-system");
    let get_ca = || {
        let cms = cms.clone();
        async move {
            cms.get_opt("kube-root-ca.crt")
                .await
                .ok()
                .flatten()
                .and_then(|cm| cm.data?.get("ca.crt").cloned())
        }
    };
    let ca = eventually(10, "kube-root-ca.crt", get_ca).await;
    assert_eq!(ca, s.pki.ca_pem);
    cms.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    let ca = eventually(10, "kube-root-ca.crt again", get_ca).await;
    assert_eq!(ca, s.pki.ca_pem);
}
