//! Authentication: who a request comes from, from its bearer token, as kube-apiserver's token
//! authenticators decide it — static tokens (`--token-auth-file`) and ServiceAccount JWTs (signed
//! by this server, still naming a live ServiceAccount and, when bound, a live pod with the same
//! uid). The middleware puts the [`UserInfo`] into the request's extensions for authorization;
//! a request without credentials is anonymous and only reaches the public health and version
//! paths, a request with bad credentials gets 401 everywhere.

pub mod admission;
pub mod jwt;
pub mod tokenrequest;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Authentication;
use crate::error::{ApiError, Error};
use crate::meta;
use crate::resources::{PODS, SERVICEACCOUNTS};
use crate::store::Store;
use crate::user::UserInfo;
use jwt::{Claims, Signer};

/// Paths anonymous requests may read (the `system:public-info-viewer` ClusterRole's).
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

/// Group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Group of every ServiceAccount.
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";

/// Verifies bearer tokens and issues ServiceAccount tokens.
pub struct Authenticator {
    /// SHA-256 of each static token → its user (the tokens themselves are not kept).
    static_tokens: HashMap<Vec<u8>, UserInfo>,
    signer: Signer,
    pub issuer: String,
    pub audiences: Vec<String>,
    anonymous: bool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish()
    }
}

fn digest(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Unix seconds now.
pub fn now() -> i64 {
    meta::now_secs()
}

/// Reads the first private key of a PEM file as PKCS#8 DER.
fn read_pkcs8(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    match PrivateKeyDer::from_pem_file(path) {
        Ok(PrivateKeyDer::Pkcs8(k)) => Ok(k.secret_pkcs8_der().to_vec()),
        Ok(_) => Err(Error::Config(format!(
            "service account key {}: not a PKCS#8 key",
            path.display()
        ))),
        Err(e) => Err(Error::Config(format!(
            "service account key {}: {e}",
            path.display()
        ))),
    }
}

impl Authenticator {
    pub fn new(c: &Authentication) -> Result<Authenticator, Error> {
        if c.api_audiences.is_empty() {
            return Err(Error::Config("api_audiences must not be empty".into()));
        }
        let der = read_pkcs8(&c.service_account_key_file)?;
        let signer = Signer::from_pkcs8(&der).map_err(|e| {
            Error::Config(format!(
                "service account key {}: {e}",
                c.service_account_key_file.display()
            ))
        })?;
        let mut static_tokens = HashMap::new();
        for t in &c.static_tokens {
            if t.token.is_empty() || t.user.name.is_empty() {
                return Err(Error::Config(
                    "static tokens need a token and a user name".into(),
                ));
            }
            static_tokens.insert(digest(&t.token), t.user.clone());
        }
        Ok(Authenticator {
            static_tokens,
            signer,
            issuer: c.issuer.clone(),
            audiences: c.api_audiences.clone(),
            anonymous: c.anonymous,
        })
    }

    /// Signs a token with these claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        self.signer
            .sign(claims)
            .map_err(|e| ApiError::internal(format!("signing the token: {e}")))
    }

    /// The user a bearer token stands for, or why it stands for none.
    pub fn authenticate(&self, store: &Store, token: &str) -> Result<UserInfo, String> {
        if let Some(u) = self.static_tokens.get(&digest(token)) {
            return Ok(u.clone());
        }
        let claims = self
            .signer
            .verify(token, &self.issuer, &self.audiences, now())
            .map_err(|e| e.to_string())?;
        service_account_user(store, &claims)
    }
}

/// Checks that what a token names still exists with the same uid (a deleted and re-created
/// ServiceAccount or pod revokes the tokens of the old one) and builds its user.
fn service_account_user(store: &Store, c: &Claims) -> Result<UserInfo, String> {
    let k = &c.kubernetes;
    let ns = &k.namespace;
    let sa = &k.serviceaccount;
    if c.sub != format!("system:serviceaccount:{ns}:{}", sa.name) {
        return Err("token subject does not match its service account".into());
    }
    let live = store
        .get(SERVICEACCOUNTS, ns, &sa.name)
        .map_err(|_| format!("service account {ns}/{} has been deleted", sa.name))?;
    if meta::uid(&live) != sa.uid {
        return Err(format!(
            "service account UID ({}) does not match claim ({})",
            meta::uid(&live),
            sa.uid
        ));
    }
    let mut extra = BTreeMap::new();
    if let Some(pod) = &k.pod {
        let live = store
            .get(PODS, ns, &pod.name)
            .map_err(|_| format!("pod {ns}/{} has been deleted", pod.name))?;
        if meta::uid(&live) != pod.uid {
            return Err(format!(
                "pod UID ({}) does not match claim ({})",
                meta::uid(&live),
                pod.uid
            ));
        }
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![pod.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![pod.uid.clone()],
        );
    }
    extra.insert(
        "authentication.kubernetes.io/credential-id".into(),
        vec![format!("JTI={}", c.jti)],
    );
    Ok(UserInfo {
        name: c.sub.clone(),
        uid: sa.uid.clone(),
        groups: vec![
            SERVICE_ACCOUNTS.into(),
            format!("{SERVICE_ACCOUNTS}:{ns}"),
            AUTHENTICATED.into(),
        ],
        extra,
    })
}

/// State of the authentication middleware.
#[derive(Clone)]
pub struct AuthnState {
    pub store: Arc<Store>,
    pub authn: Arc<Authenticator>,
}

fn is_public(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    PUBLIC_PATHS
        .iter()
        .any(|pub_path| p == *pub_path || p.starts_with(&format!("{pub_path}/")))
}

/// The bearer token of a request: `Authorization: Bearer <t>`, or for WebSocket clients that
/// cannot set headers the `base64url.bearer.authorization.k8s.io.<t>` subprotocol.
fn bearer(req: &Request) -> Option<Result<String, ()>> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| ());
        return Some(v.and_then(|v| {
            let (scheme, t) = v.trim().split_once(' ').ok_or(())?;
            let t = t.trim();
            if scheme.eq_ignore_ascii_case("bearer") && !t.is_empty() {
                Ok(t.to_string())
            } else {
                Err(())
            }
        }));
    }
    use base64::Engine;
    let protocols = req.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL);
    for v in protocols.iter().filter_map(|v| v.to_str().ok()) {
        for p in v.split(',').map(str::trim) {
            if let Some(enc) = p.strip_prefix("base64url.bearer.authorization.k8s.io.") {
                let t = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(enc.trim_end_matches('='))
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                return Some(t.ok_or(()));
            }
        }
    }
    None
}

/// The middleware: authenticates, puts the [`UserInfo`] into the extensions, or answers 401.
pub async fn middleware(State(s): State<AuthnState>, mut req: Request, next: Next) -> Response {
    let user = match bearer(&req) {
        None if s.authn.anonymous || is_public(req.uri().path()) => UserInfo::anonymous(),
        None => return unauthorized(),
        Some(Err(())) => return unauthorized(),
        Some(Ok(token)) => match s.authn.authenticate(&s.store, &token) {
            Ok(u) => u,
            Err(why) => {
                tracing::debug!("authentication failed: {why}");
                return unauthorized();
            }
        },
    };
    req.extensions_mut().insert(user);
    next.run(req).await
}

fn unauthorized() -> Response {
    crate::http::status::error(&ApiError::unauthorized())
}
