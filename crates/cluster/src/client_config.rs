//! Which API server a component talks to when nothing is given on its command line.
//!
//! kube's `Config::infer` tries the user's kubeconfig first and falls back to the pod's
//! ServiceAccount. A component running as a pod (the agent's DaemonSet, the cluster DNS)
//! must use its ServiceAccount whenever it has one: on a host-network pod whose filesystem
//! is the node's — the lab's, or a real node with an admin's ~/.kube/config — the kubeconfig
//! would win and point it at some other address and identity (the lab's 127.0.0.1 API port,
//! unreachable from a node's namespace). So: in-cluster first when the pod environment is
//! there (`KUBERNETES_SERVICE_HOST` and a mounted token), else the usual inference.

/// Where the ServiceAccount token of a pod is mounted.
pub const TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// In-cluster when running as a pod with a ServiceAccount, else `Config::infer`.
pub async fn infer() -> Result<kube::Config, String> {
    if in_pod(
        std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        std::path::Path::new(TOKEN_FILE).exists(),
    ) {
        return kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"));
    }
    kube::Config::infer().await.map_err(|e| e.to_string())
}

/// The configuration for an API server named on the command line (`--apiserver URL`).
///
/// For `http://` no trust store is built: kube otherwise loads the system's root
/// certificates even for a plain-HTTP server and fails where there are none (the
/// `FROM scratch` image has no /etc/ssl).
pub fn for_url(uri: http::Uri) -> kube::Config {
    let plain = uri.scheme_str() == Some("http");
    let mut c = kube::Config::new(uri);
    c.connect_timeout = Some(std::time::Duration::from_secs(5));
    if plain {
        c.root_cert = Some(Vec::new());
    }
    c
}

fn in_pod(service_host: bool, token: bool) -> bool {
    service_host && token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_uses_its_service_account_only_with_both_parts() {
        assert!(in_pod(true, true));
        assert!(!in_pod(true, false));
        assert!(!in_pod(false, true));
    }

    #[tokio::test]
    async fn a_plain_http_server_needs_no_system_trust_store() {
        let c = for_url("http://192.168.33.1:6443".parse().unwrap());
        assert_eq!(c.root_cert, Some(Vec::new()));
        // What the client builds from it needs no certificate (none is loaded).
        kube::Client::try_from(c).expect("a client without any root certificate");
        let c = for_url("https://192.168.33.1:6443".parse().unwrap());
        assert_eq!(c.root_cert, None, "https keeps the system's trust store");
    }
}
