//! Talking to a lab's API server from outside it. The server listens on the underlay inside
//! the fabric namespace (where agents reach it, as on a real cluster); a caller in another
//! namespace runs its API work on a thread that has entered the fabric namespace, with its own
//! single-threaded runtime, so the caller's threads never change namespace. Every client speaks
//! TLS trusting only the lab's CA and authenticates with the lab's admin token ([`crate::pki`]).

use std::future::Future;

use kube::{Client, Config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sarasa_netns::NetNs;

use crate::spec::LabSpec;
use crate::LabError;

/// A kube client for the lab's API server (call it on a thread inside the fabric namespace).
pub fn connect(spec: &LabSpec) -> Result<Client, LabError> {
    let url = spec
        .api_url()
        .parse()
        .map_err(|e| LabError::Invalid(format!("API URL: {e}")))?;
    let pki = crate::pki::Pki::new(crate::paths::LabPaths::new(&spec.name).pki_dir());
    let mut config = Config::new(url);
    if !spec.insecure_api {
        config.root_cert = Some(ca_ders(&pki.ca_pem()?)?);
        config.auth_info.token = Some(secrecy::SecretString::from(pki.admin_token()?));
    }
    config.default_namespace = "default".into();
    config.read_timeout = None;
    Client::try_from(config).map_err(|e| LabError::Api(format!("building client: {e}")))
}

/// The DER certificates of a PEM bundle.
pub fn ca_ders(pem: &str) -> Result<Vec<Vec<u8>>, LabError> {
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| LabError::Invalid(format!("the lab CA: {e}")))?;
    if certs.is_empty() {
        return Err(LabError::Invalid(
            "the lab CA file holds no certificate".into(),
        ));
    }
    Ok(certs)
}

/// Runs `f(client)` to completion on a thread inside the lab's fabric namespace.
pub fn with_client<T, F, Fut>(spec: &LabSpec, f: F) -> Result<T, LabError>
where
    F: FnOnce(Client) -> Fut + Send,
    Fut: Future<Output = Result<T, LabError>>,
    T: Send,
{
    let fabric = NetNs::open(&spec.fabric_netns).map_err(|_| {
        LabError::NotUp(format!(
            "lab {:?} is not up (no namespace {}); run `sarasa lab up`",
            spec.name, spec.fabric_netns
        ))
    })?;
    fabric
        .run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| LabError::Process(format!("tokio runtime: {e}")))?;
            rt.block_on(async {
                let client = connect(spec)?;
                f(client).await
            })
        })
        .map_err(LabError::netns)?
}
