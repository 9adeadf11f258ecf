//! What to trace: `--from POD|node/NAME|external`, `--to POD|svc/NAME[.NS]|IP|node/NAME`, a port
//! and a protocol, resolved against the [`World`] into the packet's first addresses. Every
//! unknown name or malformed value is an error naming it.

use std::net::IpAddr;

use sarasa_nft::L4Proto;

use crate::world::World;
use crate::TraceError;

/// Where the packet starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Pod { namespace: String, name: String },
    Node(String),
    External,
}

/// Where it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Pod { namespace: String, name: String },
    Service { namespace: String, name: String },
    Ip(IpAddr),
    Node(String),
}

/// Layer 4 of the traced packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn l4(self) -> L4Proto {
        match self {
            Proto::Tcp => L4Proto::Tcp,
            Proto::Udp => L4Proto::Udp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    fn model(self) -> sarasa_model::Protocol {
        match self {
            Proto::Tcp => sarasa_model::Protocol::Tcp,
            Proto::Udp => sarasa_model::Protocol::Udp,
        }
    }
}

/// One trace request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: Source,
    pub to: Destination,
    /// Destination port; `None`: the Service's first port of the protocol (or an error for
    /// other destinations).
    pub port: Option<u16>,
    pub proto: Proto,
}

/// Parses `--from`: `node/NAME`, `external`, `NS/POD` or `POD` (in `namespace`).
pub fn parse_source(s: &str, namespace: &str) -> Result<Source, TraceError> {
    if s.is_empty() {
        return Err(TraceError::BadInput("--from: empty".into()));
    }
    if let Some(n) = s.strip_prefix("node/") {
        return non_empty(n, "--from node/NAME").map(|n| Source::Node(n.into()));
    }
    if s == "external" {
        return Ok(Source::External);
    }
    let (namespace, name) = pod_ref(s, namespace, "--from")?;
    Ok(Source::Pod { namespace, name })
}

/// Parses `--to`: `svc/NAME[.NS]`, `node/NAME`, an IP address, `NS/POD` or `POD`.
pub fn parse_destination(s: &str, namespace: &str) -> Result<Destination, TraceError> {
    if s.is_empty() {
        return Err(TraceError::BadInput("--to: empty".into()));
    }
    if let Some(rest) = s.strip_prefix("svc/") {
        let rest = non_empty(rest, "--to svc/NAME")?;
        let (name, ns) = match rest.split_once('.') {
            Some((n, ns)) => (
                non_empty(n, "--to svc/NAME.NS")?,
                non_empty(ns, "--to svc/NAME.NS")?,
            ),
            None => (rest, namespace),
        };
        return Ok(Destination::Service {
            namespace: ns.into(),
            name: name.into(),
        });
    }
    if let Some(n) = s.strip_prefix("node/") {
        return non_empty(n, "--to node/NAME").map(|n| Destination::Node(n.into()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Destination::Ip(ip));
    }
    if s.chars().next().is_some_and(|c| c.is_ascii_digit()) && s.contains('.') && !s.contains('/') {
        return Err(TraceError::BadInput(format!(
            "--to {s:?}: not a valid IP address"
        )));
    }
    let (namespace, name) = pod_ref(s, namespace, "--to")?;
    Ok(Destination::Pod { namespace, name })
}

/// Parses `--port`.
pub fn parse_port(s: &str) -> Result<u16, TraceError> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(TraceError::BadInput(format!(
            "--port {s:?}: a port is a number from 1 to 65535"
        ))),
    }
}

fn non_empty<'a>(s: &'a str, what: &str) -> Result<&'a str, TraceError> {
    if s.is_empty() {
        Err(TraceError::BadInput(format!("{what}: the name is empty")))
    } else {
        Ok(s)
    }
}

fn pod_ref(s: &str, namespace: &str, flag: &str) -> Result<(String, String), TraceError> {
    let (ns, name) = s.split_once('/').unwrap_or((namespace, s));
    let valid = |x: &str| {
        !x.is_empty()
            && x.len() <= 253
            && x.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if !valid(ns) || !valid(name) {
        return Err(TraceError::BadInput(format!(
            "{flag} {s:?}: expected POD, NAMESPACE/POD, node/NAME{}",
            if flag == "--to" {
                ", svc/NAME[.NAMESPACE] or an IP address"
            } else {
                " or external"
            }
        )));
    }
    Ok((ns.to_string(), name.to_string()))
}

/// Where the packet starts, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    Pod {
        key: String,
        node: String,
        ip: IpAddr,
    },
    Node {
        node: String,
    },
    External {
        ip: IpAddr,
    },
}

/// The first packet's destination, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub ip: IpAddr,
    pub port: u16,
    /// `ns/name` when the destination was given as a Service.
    pub service: Option<String>,
}

impl Query {
    /// Resolves names to addresses. The destination decides the family (IPv4 unless it is
    /// an IPv6 address or a Service with only IPv6 ClusterIPs).
    pub(crate) fn resolve(&self, world: &World) -> Result<(Start, Target), TraceError> {
        let target = self.target(world)?;
        let v6 = target.ip.is_ipv6();
        let start = match &self.from {
            Source::Pod { namespace, name } => {
                let pod = world
                    .pod(namespace, name)
                    .ok_or_else(|| TraceError::UnknownPod(format!("{namespace}/{name}")))?;
                let node = pod.node.clone().ok_or_else(|| {
                    TraceError::BadInput(format!(
                        "pod {namespace}/{name} is not scheduled to a node yet"
                    ))
                })?;
                if pod.host_network {
                    Start::Node { node }
                } else {
                    let ip = pod
                        .ips
                        .iter()
                        .copied()
                        .find(|i| i.is_ipv6() == v6)
                        .ok_or_else(|| {
                            TraceError::BadInput(format!(
                                "pod {namespace}/{name} has no {} address yet",
                                if v6 { "IPv6" } else { "IPv4" }
                            ))
                        })?;
                    Start::Pod {
                        key: format!("{namespace}/{name}"),
                        node,
                        ip,
                    }
                }
            }
            Source::Node(n) => {
                world
                    .node(n)
                    .ok_or_else(|| TraceError::UnknownNode(n.clone()))?;
                Start::Node { node: n.clone() }
            }
            Source::External => {
                let ext = world.fabric.external.as_ref().ok_or_else(|| {
                    TraceError::BadInput(
                        "--from external: this cluster has no external host".into(),
                    )
                })?;
                Start::External { ip: ext.ip }
            }
        };
        Ok((start, target))
    }

    fn target(&self, world: &World) -> Result<Target, TraceError> {
        let need_port = |what: &str| {
            self.port
                .ok_or_else(|| TraceError::BadInput(format!("--port is needed to trace to {what}")))
        };
        match &self.to {
            Destination::Ip(ip) => Ok(Target {
                ip: *ip,
                port: need_port(&ip.to_string())?,
                service: None,
            }),
            Destination::Node(n) => {
                let node = world
                    .node(n)
                    .ok_or_else(|| TraceError::UnknownNode(n.clone()))?;
                Ok(Target {
                    ip: node.underlay_ip,
                    port: need_port(&format!("node/{n}"))?,
                    service: None,
                })
            }
            Destination::Pod { namespace, name } => {
                let key = format!("{namespace}/{name}");
                let pod = world
                    .pod(namespace, name)
                    .ok_or_else(|| TraceError::UnknownPod(key.clone()))?;
                let ip = if pod.host_network {
                    pod.node
                        .as_deref()
                        .and_then(|n| world.node(n))
                        .map(|n| n.underlay_ip)
                } else {
                    pod.ips
                        .iter()
                        .copied()
                        .find(IpAddr::is_ipv4)
                        .or(pod.ips.first().copied())
                }
                .ok_or_else(|| TraceError::BadInput(format!("pod {key} has no address yet")))?;
                Ok(Target {
                    ip,
                    port: need_port(&format!("pod {key}"))?,
                    service: None,
                })
            }
            Destination::Service { namespace, name } => {
                let key = format!("{namespace}/{name}");
                // A Service, else a ServiceImport of that name: its derived Service, whose
                // ClusterIP is the ClusterSetIP.
                let svc = world
                    .service(namespace, name)
                    .or_else(|| {
                        let derived =
                            sarasa_model::clusterset::derived_service_name(namespace, name);
                        world.service(namespace, &derived)
                    })
                    .ok_or_else(|| TraceError::UnknownService(key.clone()))?;
                let ip = svc
                    .cluster_ips
                    .iter()
                    .copied()
                    .find(IpAddr::is_ipv4)
                    .or(svc.cluster_ips.first().copied())
                    .ok_or_else(|| {
                        TraceError::BadInput(format!(
                            "Service {key} has no ClusterIP (headless or ExternalName): trace to one of its pods instead"
                        ))
                    })?;
                let port = match self.port {
                    Some(p) => p,
                    None => svc
                        .ports
                        .iter()
                        .find(|p| p.protocol == self.proto.model())
                        .map(|p| p.port)
                        .ok_or_else(|| {
                            TraceError::BadInput(format!(
                                "Service {key} has no {} port",
                                self.proto.as_str()
                            ))
                        })?,
                };
                Ok(Target {
                    ip,
                    port,
                    service: Some(key),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_names_bad_input() {
        assert_eq!(
            parse_source("web-1", "x").unwrap(),
            Source::Pod {
                namespace: "x".into(),
                name: "web-1".into()
            }
        );
        assert_eq!(
            parse_source("node/node-2", "x").unwrap(),
            Source::Node("node-2".into())
        );
        assert_eq!(parse_source("external", "x").unwrap(), Source::External);
        assert_eq!(
            parse_destination("svc/web.y", "x").unwrap(),
            Destination::Service {
                namespace: "y".into(),
                name: "web".into()
            }
        );
        assert_eq!(
            parse_destination("svc/web", "x").unwrap(),
            Destination::Service {
                namespace: "x".into(),
                name: "web".into()
            }
        );
        assert_eq!(
            parse_destination("10.96.0.1", "x").unwrap(),
            Destination::Ip("10.96.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_destination("fd00::1", "x").unwrap(),
            Destination::Ip("fd00::1".parse().unwrap())
        );
        for bad in ["10.96.0.300", "svc/", "node/", "Bad_Pod", ""] {
            let e = parse_destination(bad, "x").unwrap_err().to_string();
            assert!(e.contains("--to"), "{bad}: {e}");
        }
        for bad in ["0", "65536", "http", "-1"] {
            assert!(parse_port(bad).unwrap_err().to_string().contains("--port"));
        }
        assert!(parse_source("UPPER", "x")
            .unwrap_err()
            .to_string()
            .contains("--from"));
    }
}
