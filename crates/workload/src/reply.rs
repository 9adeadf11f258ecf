//! What the server says about itself and about the client it saw.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// The JSON reply of `sarasa serve` (one line for raw TCP and UDP, the body for HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeReply {
    /// Pod name (`POD_NAME`, else the hostname).
    pub pod: String,
    /// Pod namespace (`POD_NAMESPACE`, else empty).
    pub namespace: String,
    /// Pod IP (`POD_IP`, else the local address the request arrived on).
    #[serde(rename = "podIP")]
    pub pod_ip: String,
    /// The client address the server saw, `ip:port` (`[ip]:port` for IPv6).
    pub client: String,
    /// The local port that answered.
    pub port: u16,
    /// `tcp`, `udp` (HTTP is served over `tcp`).
    pub protocol: String,
    /// The HTTP request path, for HTTP requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl ServeReply {
    /// The client's IP address, parsed from `client`.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client.parse::<SocketAddr>().ok().map(|a| a.ip())
    }
}

/// Who this server is: taken from the environment the pod runner sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub pod: String,
    pub namespace: String,
    /// `None` means "report the local address of each connection".
    pub pod_ip: Option<String>,
}

impl PodIdentity {
    /// `POD_NAME`, `POD_NAMESPACE`, `POD_IP`; the pod name falls back to the hostname.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        PodIdentity {
            pod: var("POD_NAME").unwrap_or_else(hostname),
            namespace: var("POD_NAMESPACE").unwrap_or_default(),
            pod_ip: var("POD_IP"),
        }
    }

    pub(crate) fn reply(
        &self,
        local: SocketAddr,
        client: SocketAddr,
        protocol: &str,
        path: Option<String>,
    ) -> ServeReply {
        ServeReply {
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            pod_ip: self
                .pod_ip
                .clone()
                .unwrap_or_else(|| local.ip().to_canonical().to_string()),
            client: canonical(client).to_string(),
            port: local.port(),
            protocol: protocol.to_string(),
            path,
        }
    }
}

/// A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`; show them as IPv4.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_json_uses_kubernetes_field_names_and_ipv4_clients() {
        let id = PodIdentity {
            pod: "web-1".into(),
            namespace: "default".into(),
            pod_ip: None,
        };
        let local: SocketAddr = "[::ffff:10.244.1.5]:80".parse().unwrap();
        let client: SocketAddr = "[::ffff:10.244.2.7]:40000".parse().unwrap();
        let r = id.reply(local, client, "tcp", None);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"pod":"web-1","namespace":"default","podIP":"10.244.1.5","client":"10.244.2.7:40000","port":80,"protocol":"tcp"}"#
        );
        assert_eq!(r.client_ip(), Some("10.244.2.7".parse().unwrap()));
    }
}
