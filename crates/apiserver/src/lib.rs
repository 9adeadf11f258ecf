//! The lab control plane: a Kubernetes API subset server with storage and controllers.
//!
//! It serves the REST paths and JSON of kube-apiserver for the kinds the lab uses (Namespaces,
//! Nodes, Pods, Services, EndpointSlices, NetworkPolicies, Deployments, Leases, Events), with
//! list/watch/CRUD/patch, validation with kube-apiserver's field paths, a global resourceVersion,
//! crash-safe persistence, and the controllers the lab needs (podCIDRs, scheduling, Deployment
//! replicas, ClusterIP/NodePort/LoadBalancer allocation, EndpointSlices, garbage collection).
//! `pods/log` and `pods/exec` (WebSocket, `v5.channel.k8s.io`) are served through a
//! [`PodRuntime`] given with [`ApiServer::with_runtime`] — the lab's pod runner.
//!
//! ```no_run
//! # async fn run() -> Result<(), sarasa_apiserver::Error> {
//! let server = sarasa_apiserver::ApiServer::open(sarasa_apiserver::Config::new("/var/lib/sarasa/default/api"))?;
//! let listener = tokio::net::TcpListener::bind("192.168.33.1:6443").await.map_err(sarasa_apiserver::Error::Serve)?;
//! server.serve(listener).await
//! # }
//! ```

pub mod admission;
pub mod alloc;
pub mod authn;
pub mod authz;
pub mod config;
pub mod controllers;
pub mod error;
pub mod http;
/// The Multi-Cluster Services kinds the server stores.
pub use sarasa_model::mcs;
pub mod meta;
pub mod metrics;
pub mod proto;
pub mod quota;
pub mod remotecommand;
pub mod resources;
pub mod runtime;
pub mod selector;
pub mod store;
pub mod tls;
pub mod user;
pub mod validate;

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
pub use error::{ApiError, Error};
pub use runtime::PodRuntime;
use store::{Store, WriteOpts};
pub use user::UserInfo;

/// Namespaces that always exist.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "sarasa-system"];

/// A running (or ready to run) control plane. Cheap to clone; clones share one store.
#[derive(Clone)]
pub struct ApiServer {
    store: Arc<Store>,
    controllers: Arc<Mutex<Option<Vec<JoinHandle<()>>>>>,
    stop: watch::Sender<bool>,
    runtime: Option<Arc<dyn PodRuntime>>,
    authz: Arc<authz::Authorizer>,
    authn: Option<Arc<authn::Authenticator>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics: Arc<metrics::Metrics>,
}

impl ApiServer {
    /// Loads the persisted objects of `config.state_dir` (creating it) and makes sure the system
    /// namespaces and the `kubernetes` Service exist. Spawns nothing.
    pub fn open(config: Config) -> Result<ApiServer, Error> {
        validate_config(&config)?;
        let authn = match &config.authentication {
            Some(a) => {
                if let Some(p) = &a.root_ca_file {
                    std::fs::read_to_string(p)
                        .map_err(|e| Error::Config(format!("root CA file {}: {e}", p.display())))?;
                }
                Some(Arc::new(authn::Authenticator::new(a)?))
            }
            None => None,
        };
        let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
        let store = Store::open(Arc::new(config))?;
        bootstrap(&store);
        let mode = store.config.authorization;
        if mode == authz::AuthorizationMode::Rbac {
            authz::bootstrap::ensure(&store);
        }
        let authz = authz::Authorizer::new(store.clone(), mode);
        let (stop, _) = watch::channel(false);
        Ok(ApiServer {
            store,
            controllers: Arc::new(Mutex::new(None)),
            stop,
            runtime: None,
            authz,
            authn,
            tls,
            metrics: Arc::default(),
        })
    }

    /// Serves `pods/log` and `pods/exec` of the pods `runtime` runs.
    pub fn with_runtime(mut self, runtime: Arc<dyn PodRuntime>) -> ApiServer {
        self.runtime = Some(runtime);
        self
    }

    /// The token authenticator (when [`Config::authentication`] is set): issues tokens for
    /// in-process callers such as the lab's control plane.
    pub fn authenticator(&self) -> Option<&Arc<authn::Authenticator>> {
        self.authn.as_ref()
    }

    /// The store (for in-process inspection and tests).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Starts the controllers (once; later calls do nothing). `serve` calls this.
    pub fn start_controllers(&self) {
        let mut c = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        if c.is_none() && !self.store.is_closed() {
            let mut handles = controllers::spawn_all(self.store.clone(), self.metrics.clone());
            let authz = self.authz.clone();
            handles.push(controllers::spawn(
                self.store.clone(),
                self.metrics.clone(),
                move || authz.updater(),
            ));
            *c = Some(handles);
        }
    }

    /// The HTTP router (for embedding into another server).
    pub fn router(&self) -> axum::Router {
        http::router_with_metrics(
            self.store.clone(),
            self.runtime.clone(),
            self.authz.clone(),
            self.authn.clone(),
            self.metrics.clone(),
        )
    }

    /// The server's counters (controller restarts, refused requests), also at `/metrics`.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        &self.metrics
    }

    /// The authorizer (for in-process checks and tests).
    pub fn authorizer(&self) -> &Arc<authz::Authorizer> {
        &self.authz
    }

    /// Serves the API on a TCP listener (HTTPS when [`Config::tls`] is set) until
    /// [`ApiServer::shutdown`], within [`config::Limits`].
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> Result<(), Error> {
        self.start_controllers();
        let stop = self.stop.subscribe();
        let header_timeout = self.store.config.limits.header_read_timeout;
        match &self.tls {
            Some(tls) => {
                let listener = tls::TlsListener::new(listener, tls.clone())?;
                http::serve::serve(listener, self.router(), header_timeout, stop).await
            }
            None => http::serve::serve(listener, self.router(), header_timeout, stop).await,
        }
        Ok(())
    }

    /// Serves the API on a Unix socket until [`ApiServer::shutdown`].
    pub async fn serve_unix(&self, listener: tokio::net::UnixListener) -> Result<(), Error> {
        self.start_controllers();
        let stop = self.stop.subscribe();
        let header_timeout = self.store.config.limits.header_read_timeout;
        http::serve::serve(listener, self.router(), header_timeout, stop).await;
        Ok(())
    }

    /// Binds every configured address (`Config::listen`, `Config::unix_socket`) and serves on all
    /// of them until [`ApiServer::shutdown`].
    pub async fn run(&self) -> Result<(), Error> {
        let mut tasks = tokio::task::JoinSet::new();
        for addr in &self.store.config.listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(Error::Serve)?;
            let s = self.clone();
            tasks.spawn(async move { s.serve(l).await });
        }
        if let Some(path) = &self.store.config.unix_socket {
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path).map_err(Error::Serve)?;
            let s = self.clone();
            tasks.spawn(async move { s.serve_unix(l).await });
        }
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Err(e)) => {
                    self.shutdown();
                    return Err(e);
                }
                Err(e) => {
                    self.shutdown();
                    return Err(Error::Serve(std::io::Error::other(e)));
                }
                Ok(Ok(())) => {}
            }
        }
        Ok(())
    }

    /// Stops controllers, ends watches, flushes and closes the state; `serve` returns once open
    /// requests finish. The state directory can then be opened again.
    pub fn shutdown(&self) {
        if let Some(handles) = self
            .controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            for h in handles {
                h.abort();
            }
        }
        self.store.close();
        let _ = self.stop.send(true);
    }
}

fn validate_config(c: &Config) -> Result<(), Error> {
    if c.cluster_cidrs.is_empty() || c.service_cidrs.is_empty() {
        return Err(Error::Config(
            "cluster and service CIDRs must not be empty".into(),
        ));
    }
    if !is_dns_label(&c.cluster_id) {
        return Err(Error::Config(format!(
            "cluster id {:?}: must be a DNS label (1-63 lowercase letters, digits or '-', starting and ending with a letter or digit)",
            c.cluster_id
        )));
    }
    for list in [&c.cluster_cidrs, &c.service_cidrs] {
        if list.len() > 2
            || (list.len() == 2 && list[0].addr().is_ipv4() == list[1].addr().is_ipv4())
        {
            return Err(Error::Config("at most one CIDR per IP family".into()));
        }
    }
    let (lo, hi) = c.node_port_range;
    if lo == 0 || lo > hi {
        return Err(Error::Config(format!("bad NodePort range {lo}-{hi}")));
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// System namespaces, the `kubernetes` Service and its EndpointSlice.
fn bootstrap(store: &Store) {
    let opts = WriteOpts::internal();
    for ns in SYSTEM_NAMESPACES {
        if store.get(resources::NAMESPACES, "", ns).is_err() {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Err(e) = store.create(resources::NAMESPACES, "", obj, opts) {
                tracing::warn!("creating namespace {ns}: {e}");
            }
        }
    }
    let Some(first) = store.config.service_cidrs.first().copied() else {
        return;
    };
    let Some(ip) = first.hosts().next() else {
        return;
    };
    if store
        .get(resources::SERVICES, "default", "kubernetes")
        .is_err()
    {
        let target = store.config.advertise_address.map_or(6443, |a| a.port());
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": ip.to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": target}]}
        });
        if let Err(e) = store.create(resources::SERVICES, "default", svc, opts) {
            tracing::warn!("creating the kubernetes Service: {e}");
        }
    }
    if let Some(addr) = store.config.advertise_address {
        let family = if addr.is_ipv6() { "IPv6" } else { "IPv4" };
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": family,
            "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": addr.port(), "protocol": "TCP"}]
        });
        let r = match store.get(resources::ENDPOINTSLICES, "default", "kubernetes") {
            Ok(_) => store
                .update(
                    resources::ENDPOINTSLICES,
                    "default",
                    "kubernetes",
                    slice,
                    store::Sub::Main,
                    opts,
                )
                .map(|_| ()),
            Err(_) => store
                .create(resources::ENDPOINTSLICES, "default", slice, opts)
                .map(|_| ()),
        };
        if let Err(e) = r {
            tracing::warn!("writing the kubernetes EndpointSlice: {e}");
        }
    }
}
