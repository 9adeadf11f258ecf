//! Test harness: a real server on 127.0.0.1 (ephemeral port) with a temporary state directory,
//! and a kube-rs client talking to it over HTTP.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use kube::{Client, Config as KubeConfig};
use sarasa_apiserver::{ApiServer, Config};
use tokio::task::JoinHandle;

pub struct TestServer {
    pub server: ApiServer,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: Config,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::new(dir.path().join("state"));
        config.bookmark_interval = Duration::from_millis(300);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (server, handle) = run(config.clone(), listener);
        TestServer {
            server,
            addr,
            dir,
            config,
            handle: Some(handle),
        }
    }

    pub fn client(&self) -> Client {
        let url = format!("http://{}", self.addr).parse().expect("url");
        let mut cfg = KubeConfig::new(url);
        cfg.default_namespace = "default".into();
        cfg.read_timeout = Some(Duration::from_secs(30));
        Client::try_from(cfg).expect("client")
    }

    /// Stops the server (flushing its state) and starts a new one on the same state directory and port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let (server, handle) = run(self.config.clone(), listener.expect("rebind the same port"));
        self.server = server;
        self.handle = Some(handle);
    }

    pub async fn stop(&mut self) {
        self.server.shutdown();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

fn run(config: Config, listener: tokio::net::TcpListener) -> (ApiServer, JoinHandle<()>) {
    let server = ApiServer::open(config).expect("open");
    let s2 = server.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = s2.serve(listener).await {
            panic!("serve: {e}");
        }
    });
    (server, handle)
}

/// Polls `check` until it returns Some, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Status of a failed call.
pub fn status_of<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The field paths of a 422's causes.
pub fn fields(s: &kube::core::Status) -> Vec<String> {
    s.details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}
