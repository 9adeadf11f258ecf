//! Server configuration: address ranges the control plane hands out, where state lives.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// Configuration of one control plane instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory holding the persisted objects (created if missing).
    pub state_dir: PathBuf,
    /// Cluster (pod) CIDRs: the first is the primary family; at most one per family.
    pub cluster_cidrs: Vec<IpNet>,
    /// Give every Node a podCIDR (kube-controller-manager's `--allocate-node-cidrs`, on by
    /// default); off, the network plugin allocates (sarasa's agent does, see its `podcidr`).
    pub allocate_node_cidrs: bool,
    /// Prefix length of the podCIDR given to each node, IPv4.
    pub node_cidr_mask_v4: u8,
    /// Prefix length of the podCIDR given to each node, IPv6.
    pub node_cidr_mask_v6: u8,
    /// Service CIDRs: the first is the primary family; at most one per family.
    pub service_cidrs: Vec<IpNet>,
    /// Inclusive NodePort range.
    pub node_port_range: (u16, u16),
    /// Pools LoadBalancer Services take their `status.loadBalancer.ingress` addresses from.
    pub load_balancer_pools: Vec<IpNet>,
    /// Address (and port) where the API is reachable from pods and nodes; when set, the `kubernetes`
    /// Service in `default` gets an EndpointSlice pointing there.
    pub advertise_address: Option<SocketAddr>,
    /// TCP addresses [`crate::ApiServer::run`] listens on (the lab: 192.168.33.1:6443 inside its
    /// fabric namespace).
    pub listen: Vec<SocketAddr>,
    /// Unix socket [`crate::ApiServer::run`] also listens on (replaced if it exists).
    pub unix_socket: Option<PathBuf>,
    /// How many past changes a watch may resume from before it gets 410 Expired.
    pub watch_history: usize,
    /// How long Events are kept (kube-apiserver's --event-ttl, 1 h).
    pub event_ttl: Duration,
    /// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// How requests are authorized (off by default; the lab turns RBAC on).
    pub authorization: crate::authz::AuthorizationMode,
    /// Serve HTTPS with this certificate (kube-apiserver's `--tls-cert-file`/`--tls-private-key-file`);
    /// `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Bearer-token authentication, ServiceAccount tokens and their admission; `None`: every
    /// request is served without identity (the library's default).
    pub authentication: Option<Authentication>,
}

/// PEM files of the serving certificate.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, SEC1 or PKCS#1).
    pub key_file: PathBuf,
}

/// How requests are authenticated (kube-apiserver's `--token-auth-file`,
/// `--service-account-*` and `--api-audiences` flags, and the ServiceAccount admission plugin and
/// controllers that come with them).
#[derive(Debug, Clone)]
pub struct Authentication {
    /// Static bearer tokens and the users they stand for (the lab's admin token).
    pub static_tokens: Vec<StaticToken>,
    /// ECDSA P-256 private key (PKCS#8 PEM) that signs and verifies ServiceAccount tokens
    /// (ES256), as `--service-account-signing-key-file`.
    pub service_account_key_file: PathBuf,
    /// `iss` of issued tokens and the only issuer accepted.
    pub issuer: String,
    /// Audiences the API accepts; the first is the default of a TokenRequest.
    pub api_audiences: Vec<String>,
    /// PEM CA bundle published in every namespace as ConfigMap `kube-root-ca.crt` (`ca.crt`),
    /// as kube-controller-manager's `--root-ca-file`; `None`: nothing is published.
    pub root_ca_file: Option<PathBuf>,
}

/// One `--token-auth-file` line.
#[derive(Debug, Clone)]
pub struct StaticToken {
    pub token: String,
    pub user: crate::UserInfo,
}

/// The issuer and audience kube-apiserver uses by default (`https://kubernetes.default.svc.<domain>`).
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

impl Config {
    /// Defaults of the lab (kubeadm's): pods 10.244.0.0/16 as /24 per node, services 10.96.0.0/12,
    /// NodePorts 30000-32767, LoadBalancer pool 198.51.100.0/24.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Config {
            state_dir: state_dir.into(),
            cluster_cidrs: vec![parse_net("10.244.0.0/16")],
            allocate_node_cidrs: true,
            node_cidr_mask_v4: 24,
            node_cidr_mask_v6: 64,
            service_cidrs: vec![parse_net("10.96.0.0/12")],
            node_port_range: (30000, 32767),
            load_balancer_pools: vec![parse_net("198.51.100.0/24")],
            advertise_address: None,
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 6443))],
            unix_socket: None,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(30),
            event_ttl: Duration::from_secs(3600),
            authorization: crate::authz::AuthorizationMode::AlwaysAllow,
            tls: None,
            authentication: None,
        }
    }

    /// The service CIDR of one family, if configured.
    pub fn service_cidr(&self, v6: bool) -> Option<IpNet> {
        self.service_cidrs
            .iter()
            .copied()
            .find(|n| matches!(n, IpNet::V6(_)) == v6)
    }

    /// The cluster CIDR of one family, if configured.
    pub fn cluster_cidr(&self, v6: bool) -> Option<IpNet> {
        self.cluster_cidrs
            .iter()
            .copied()
            .find(|n| matches!(n, IpNet::V6(_)) == v6)
    }

    /// Whether Services can be dual-stack (one service CIDR of each family).
    pub fn dual_stack_services(&self) -> bool {
        self.service_cidr(false).is_some() && self.service_cidr(true).is_some()
    }

    /// The primary service family: "IPv4" or "IPv6".
    pub fn primary_service_family(&self) -> &'static str {
        match self.service_cidrs.first() {
            Some(IpNet::V6(_)) => "IPv6",
            _ => "IPv4",
        }
    }
}

fn parse_net(s: &str) -> IpNet {
    // Constant literals above; parsing cannot fail.
    s.parse().unwrap_or(IpNet::V4(Default::default()))
}
