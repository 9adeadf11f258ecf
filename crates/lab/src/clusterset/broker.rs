//! The broker of a cluster set, as Submariner's: a Kubernetes API (sarasa's API server) in the
//! WAN namespace holding what the clusters share — a record of each cluster and the MCS
//! EndpointSlices each exports — which every member's sync reads and writes with the set's
//! token. Its store lives in `<set dir>/broker/`, so a stopped broker starts again with what
//! it held.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sarasa_netns::NetNs;

use super::state::{set_dir, wan_netns, ClusterSet, BROKER_IP, BROKER_PORT};
use crate::process::{Daemon, ProcessRecord};
use crate::LabError;

pub fn url() -> String {
    format!("http://{BROKER_IP}:{BROKER_PORT}")
}

fn pid_file(set: &str) -> PathBuf {
    set_dir(set).join("broker.pid")
}

pub fn log_file(set: &str) -> PathBuf {
    set_dir(set).join("broker.log")
}

fn sa_key(set: &str) -> PathBuf {
    set_dir(set).join("broker-sa.key")
}

/// The running broker's process, if any.
pub fn running(set: &str) -> Option<ProcessRecord> {
    ProcessRecord::load(&pid_file(set)).filter(ProcessRecord::alive)
}

/// Starts the broker (unless it runs) and waits until it accepts connections.
pub fn start(set: &str, sarasa: &std::path::Path) -> Result<(), LabError> {
    if running(set).is_some() {
        return Ok(());
    }
    if !sa_key(set).exists() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| LabError::Invalid(format!("making the broker's key: {e}")))?;
        crate::pki::write_private(&sa_key(set), key.serialize_pem().as_bytes(), 0o600)?;
    }
    let netns = PathBuf::from("/run/netns").join(wan_netns(set));
    let rec = Daemon {
        program: sarasa.to_path_buf(),
        args: vec!["clusterset".into(), "run-broker".into(), set.to_string()],
        env: super::quiet_kube_log(),
        netns: Some(&netns),
        mounts: &[],
        log: log_file(set),
    }
    .spawn()?;
    rec.save(&pid_file(set))?;
    wait_answering(set, &rec, Duration::from_secs(20))
}

fn wait_answering(set: &str, rec: &ProcessRecord, timeout: Duration) -> Result<(), LabError> {
    let ns = NetNs::open(wan_netns(set)).map_err(LabError::netns)?;
    let addr = SocketAddr::from((BROKER_IP, BROKER_PORT));
    let deadline = Instant::now() + timeout;
    loop {
        let up = ns
            .run(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
            .map_err(LabError::netns)?;
        if up {
            return Ok(());
        }
        if !rec.alive() {
            return Err(LabError::Process(format!(
                "the broker of {set} exited; see {}",
                log_file(set).display()
            )));
        }
        if Instant::now() > deadline {
            return Err(LabError::Timeout(format!(
                "the broker of {set} does not answer on {addr}; see {}",
                log_file(set).display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the broker; its store stays.
pub fn stop(set: &str) -> Result<(), LabError> {
    match ProcessRecord::load(&pid_file(set)) {
        Some(rec) => rec.stop(Duration::from_secs(5)),
        None => Ok(()),
    }
}

/// The broker process itself (`sarasa clusterset run-broker SET`, in the WAN namespace).
pub async fn run(set: &str) -> Result<(), LabError> {
    let cs = ClusterSet::open(set)?;
    let mut config = sarasa_apiserver::Config::new(set_dir(set).join("broker"));
    let addr = SocketAddr::from((BROKER_IP, BROKER_PORT));
    config.listen = vec![addr];
    config.cluster_id = format!("broker-{set}").chars().take(63).collect();
    config.authentication = Some(sarasa_apiserver::config::Authentication {
        static_tokens: vec![sarasa_apiserver::config::StaticToken {
            token: cs.broker_token.clone(),
            user: sarasa_apiserver::UserInfo {
                name: "clusterset-sync".into(),
                uid: "clusterset-sync".into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
                ..Default::default()
            },
        }],
        service_account_key_file: sa_key(set),
        issuer: sarasa_apiserver::config::DEFAULT_ISSUER.into(),
        api_audiences: vec![sarasa_apiserver::config::DEFAULT_ISSUER.into()],
        root_ca_file: None,
        anonymous: false,
    });
    config.authorization = sarasa_apiserver::authz::AuthorizationMode::Rbac;
    let server = sarasa_apiserver::ApiServer::open(config)
        .map_err(|e| LabError::Api(format!("opening the broker's store: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| LabError::Api(format!("listening on {addr}: {e}")))?;
    server
        .serve(listener)
        .await
        .map_err(|e| LabError::Api(format!("broker stopped: {e}")))
}
