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
    /// This cluster's id in a cluster set (MCS `multicluster.kubernetes.io/source-cluster`;
    /// KEP-2149's `cluster.clusterset.k8s.io`): a DNS label.
    pub cluster_id: String,

    /// CIDRs `spec.externalIPs` must lie in (as the DenyServiceExternalIPs admission plugin
    /// and the externalip-webhook restrict them); `Some(vec![])` refuses every externalIP,
    /// `None` allows any address that is not special or the cluster's own (see
    /// [`crate::validate::addresses`]).
    pub external_ip_cidrs: Option<Vec<IpNet>>,
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
    /// Backoff before a controller that panicked restarts: the first delay and the cap it
    /// doubles up to (reset after a run longer than the cap).
    pub controller_restart_backoff: (Duration, Duration),
    /// Limits protecting the server from oversized, slow and too many requests and objects.
    pub limits: Limits,
}

/// Limits protecting the server and the cluster from oversized, slow, too many and too big
/// requests (kube-apiserver's `--max-requests-inflight`, `--max-mutating-requests-inflight`,
/// `--request-timeout`, its 3 MiB object limit and 32 s header timeout) and from objects that
/// ask for unbounded work (ResourceQuota's object counts, a bound on `replicas`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (413 above it). kube-apiserver: 3 MiB.
    pub max_body_bytes: usize,
    /// A connection that has not sent a request's whole header within this is closed.
    /// kube-apiserver: 32 s.
    pub header_read_timeout: Duration,
    /// A request whose body has not fully arrived within this gets 408 and its connection is
    /// closed. kube-apiserver's `--request-timeout`: 60 s.
    pub body_read_timeout: Duration,
    /// Non-mutating requests (GET, not watches or streams) served at once; more get 429 with
    /// Retry-After. kube-apiserver: 400.
    pub max_requests_inflight: usize,
    /// Mutating requests (POST, PUT, PATCH, DELETE) served at once. kube-apiserver: 200.
    pub max_mutating_requests_inflight: usize,
    /// The longest watch: a larger `timeoutSeconds` is capped to it, and a watch without one
    /// ends after a random time between half of it and it (kube: `--min-request-timeout` 1800 s,
    /// times 1 to 2).
    pub max_watch_timeout: Duration,
    /// Upper bound of `spec.replicas` of a workload (Deployment, the scale subresource).
    pub max_replicas: i64,
    /// Objects of a kind (by plural resource name, e.g. "pods") one namespace may hold; a
    /// create over it gets 403 "exceeded quota" as a ResourceQuota's `count/<resource>` would
    /// answer. Kinds not listed are unbounded.
    pub object_quotas: std::collections::BTreeMap<String, usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 3 << 20,
            header_read_timeout: Duration::from_secs(32),
            body_read_timeout: Duration::from_secs(60),
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            max_watch_timeout: Duration::from_secs(3600),
            max_replicas: 1000,
            object_quotas: Default::default(),
        }
    }
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
    /// A request without credentials passes as `system:anonymous` (group
    /// `system:unauthenticated`) and authorization decides, as `--anonymous-auth=true`;
    /// `false`: it reaches only the public health and version paths and gets 401 elsewhere.
    pub anonymous: bool,
}

/// One `--token-auth-file` line.
#[derive(Debug, Clone)]
pub struct StaticToken {
    pub token: String,
    pub user: crate::UserInfo,
}

/// The issuer and audience kube-apiserver uses by default (`https://kubernetes.default.svc.<domain>`).
/// The cluster id of a server not told one.
pub const DEFAULT_CLUSTER_ID: &str = "cluster";

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
            cluster_id: DEFAULT_CLUSTER_ID.into(),

            external_ip_cidrs: None,
            advertise_address: None,
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 6443))],
            unix_socket: None,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(30),
            event_ttl: Duration::from_secs(3600),
            authorization: crate::authz::AuthorizationMode::AlwaysAllow,
            tls: None,
            authentication: None,
            controller_restart_backoff: (Duration::from_millis(500), Duration::from_secs(60)),
            limits: Limits::default(),
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
