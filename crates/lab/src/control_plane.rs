//! The control-plane process of a lab (`sarasa lab control-plane`, started by `lab up` inside
//! the fabric namespace): the API server on the underlay address (with the pod runner as its
//! container runtime for `pods/log` and `pods/exec`), the pod runner, and the fabric's routes
//! for LoadBalancer and external Service addresses. The API is served over TLS only, with the
//! lab's certificate, and authenticates bearer tokens (the admin token, ServiceAccount tokens:
//! the agents' pods use the one their kubelet projects, as on a cluster).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::kubelet::{Binaries, PodRunner};
use crate::paths::LabPaths;
use crate::pod_runtime::LabRuntime;
use crate::spec::LabSpec;
use crate::LabError;

/// Runs the control plane; `loopback` is the listener `lab up` bound on 127.0.0.1 of the root
/// namespace (the same API, published for kubectl and other clients on the machine).
pub async fn run(
    spec: LabSpec,
    paths: LabPaths,
    bins: Binaries,
    loopback: Option<std::net::TcpListener>,
) -> Result<(), LabError> {
    let mut config = sarasa_apiserver::Config::new(paths.store_dir());
    config.cluster_cidrs = spec.cluster_cidrs();
    config.service_cidrs = spec.service_cidrs();
    config.load_balancer_pools = vec![spec.lb_pool.into()];
    config.cluster_id = spec.cluster_id().to_string();
    // With the cloud VPC nodes hold addresses, not podCIDRs.
    config.allocate_node_cidrs = spec.vpc.is_none();
    // externalIPs only from the lab's external range (the fabric routes them to a node);
    // none of the cluster's own or special addresses.
    config.external_ip_cidrs = Some(vec![EXTERNAL_IPS
        .parse()
        .map_err(|e| LabError::Invalid(format!("{EXTERNAL_IPS}: {e}")))?]);
    let addr = SocketAddr::from((spec.fabric_ip, spec.api_port));
    config.advertise_address = Some(addr);
    let pki = crate::pki::Pki::new(paths.pki_dir());
    if !spec.insecure_api {
        config.tls = Some(sarasa_apiserver::config::TlsFiles {
            cert_file: pki.server_cert(),
            key_file: pki.server_key(),
        });
    }
    config.authentication = Some(sarasa_apiserver::config::Authentication {
        static_tokens: vec![sarasa_apiserver::config::StaticToken {
            token: pki.admin_token()?,
            user: sarasa_apiserver::UserInfo {
                name: crate::pki::ADMIN_USER.into(),
                uid: crate::pki::ADMIN_USER.into(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
                ..Default::default()
            },
        }],
        service_account_key_file: pki.service_account_key(),
        issuer: sarasa_apiserver::config::DEFAULT_ISSUER.into(),
        api_audiences: vec![sarasa_apiserver::config::DEFAULT_ISSUER.into()],
        root_ca_file: Some(pki.ca_cert()),
        anonymous: spec.insecure_api,
    });
    // Every request is authorized with RBAC, as `--authorization-mode=RBAC` does: the agents
    // and the DNS server hold only what deploy/rbac.yaml grants them.
    config.authorization = if spec.insecure_api {
        sarasa_apiserver::authz::AuthorizationMode::AlwaysAllow
    } else {
        sarasa_apiserver::authz::AuthorizationMode::Rbac
    };
    // Bounded objects per namespace and replicas per Deployment (lab defaults, overridable
    // in <lab>/api-limits.json).
    crate::api_limits::apply(&mut config.limits, &paths.root.join("api-limits.json"))?;
    let client = crate::client::connect(&spec)?;
    // What covers the binaries the sarasa image lacks, before any container starts.
    crate::image_fs::ensure_blank(&paths)?;
    let vpc = spec.vpc.clone();
    let runner = PodRunner::new(spec.clone(), paths.clone(), bins, client.clone());
    // `kubectl logs` and `kubectl exec` are answered from the runner's containers.
    let server = sarasa_apiserver::ApiServer::open(config)
        .map_err(|e| LabError::Api(format!("opening the store: {e}")))?
        .with_runtime(Arc::new(LabRuntime::new(Arc::clone(&runner))));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| LabError::Api(format!("listening on {addr}: {e}")))?;
    let published = match loopback {
        Some(l) => {
            // It came in without close-on-exec (that is how it crossed exec); set it again so
            // the containers the pod runner starts do not inherit it and keep the port bound
            // after this process exits.
            nix::fcntl::fcntl(
                &l,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| LabError::Api(format!("loopback listener: {e}")))?;
            l.set_nonblocking(true)
                .map_err(|e| LabError::Api(format!("loopback listener: {e}")))?;
            Some(
                tokio::net::TcpListener::from_std(l)
                    .map_err(|e| LabError::Api(format!("loopback listener: {e}")))?,
            )
        }
        None => None,
    };
    let api = tokio::spawn(async move {
        match published {
            Some(l) => {
                let other = server.clone();
                tokio::try_join!(server.serve(listener), other.serve(l)).map(|_| ())
            }
            None => server.serve(listener).await,
        }
    });

    let cloud_lb = tokio::spawn(crate::cloud_lb::run(spec.clone(), client.clone()));
    let vpc_file = paths.root.join("vpc.json");
    let routes = tokio::spawn(crate::service_routes::run(spec.clone(), client));
    let pods = tokio::spawn(Arc::clone(&runner).run());
    let vpc_spec = spec.clone();
    let vpc = tokio::spawn(async move {
        match vpc {
            Some(v) => crate::vpc::run(vpc_spec, v, vpc_file).await,
            None => std::future::pending().await,
        }
    });
    tokio::select! {
        r = vpc => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(LabError::Process(format!("cloud VPC task: {e}"))),
        },
        r = cloud_lb => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(LabError::Process(format!("cloud load balancer task: {e}"))),
        },
        r = routes => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(LabError::Process(format!("service route task: {e}"))),
        },
        r = api => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(LabError::Api(format!("API server stopped: {e}"))),
            Err(e) => Err(LabError::Api(format!("API server task: {e}"))),
        },
        r = pods => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(LabError::Process(format!("pod runner task: {e}"))),
        },
    }
}

/// The CIDR Services may take `spec.externalIPs` from in the lab (TEST-NET-1): the API
/// server refuses any other externalIP.
pub const EXTERNAL_IPS: &str = "192.0.2.0/24";
