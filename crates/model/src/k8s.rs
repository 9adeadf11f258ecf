//! Conversions from k8s-openapi objects (feature `k8s`). Bad input gives a [`ModelError`]
//! naming the object and the field.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::{
    AddressType, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, IpFamily, ModelError,
    NodeInfo, Protocol, Service, ServicePort, ServiceType, SessionAffinity, TargetPort,
    TrafficPolicy,
};

/// Label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// MCS (KEP-1645): the ServiceImport a derived Service or an MCS slice belongs to.
pub const MCS_SERVICE_NAME_LABEL: &str = "multicluster.kubernetes.io/service-name";
/// MCS: the cluster an MCS slice's endpoints are in.
pub const MCS_SOURCE_CLUSTER_LABEL: &str = "multicluster.kubernetes.io/source-cluster";

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

struct Ctx {
    object: String,
}

impl Ctx {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ModelError {
        ModelError {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn ip(&self, field: String, s: &str) -> Result<IpAddr, ModelError> {
        s.parse()
            .map_err(|_| self.err(field, format!("{s:?} is not an IP address")))
    }

    fn port(&self, field: &str, p: i32) -> Result<u16, ModelError> {
        u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| self.err(field, format!("port {p} out of range 1-65535")))
    }

    fn protocol(&self, field: &str, p: Option<&str>) -> Result<Protocol, ModelError> {
        let p = p.unwrap_or("TCP");
        Protocol::parse(p).ok_or_else(|| self.err(field, format!("unknown protocol {p:?}")))
    }
}

impl TryFrom<&core::Service> for Service {
    type Error = ModelError;

    fn try_from(svc: &core::Service) -> Result<Self, ModelError> {
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let cx = Ctx {
            object: format!("Service {namespace}/{name}"),
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let type_ = match spec.type_.as_deref().unwrap_or("ClusterIP") {
            "ClusterIP" => ServiceType::ClusterIP,
            "NodePort" => ServiceType::NodePort,
            "LoadBalancer" => ServiceType::LoadBalancer,
            "ExternalName" => ServiceType::ExternalName,
            other => return Err(cx.err("spec.type", format!("unknown type {other:?}"))),
        };
        // clusterIPs wins over the legacy clusterIP field when set.
        let raw_ips: Vec<String> = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(ips), _) if !ips.is_empty() => ips.clone(),
            (_, Some(ip)) if !ip.is_empty() => vec![ip.clone()],
            _ => Vec::new(),
        };
        let headless = raw_ips.iter().any(|ip| ip == "None");
        let mut cluster_ips = Vec::new();
        if !headless && type_ != ServiceType::ExternalName {
            for (i, ip) in raw_ips.iter().enumerate() {
                cluster_ips.push(cx.ip(format!("spec.clusterIPs[{i}]"), ip)?);
            }
        }
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let f = |x: &str| format!("spec.ports[{i}].{x}");
            let node_port = match p.node_port {
                Some(np) if np != 0 => Some(cx.port(&f("nodePort"), np)?),
                _ => None,
            };
            let target_port = match &p.target_port {
                None => None,
                Some(IntOrString::Int(n)) => {
                    Some(TargetPort::Number(cx.port(&f("targetPort"), *n)?))
                }
                Some(IntOrString::String(s)) => Some(TargetPort::Name(s.clone())),
            };
            ports.push(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: cx.protocol(&f("protocol"), p.protocol.as_deref())?,
                port: cx.port(&f("port"), p.port)?,
                node_port,
                target_port,
            });
        }
        let mut external_ips = Vec::new();
        for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
            external_ips.push(cx.ip(format!("spec.externalIPs[{i}]"), ip)?);
        }
        // GlobalNet: an exported Service's global ingress addresses (one per family,
        // comma-separated).
        let mut global_ips = Vec::new();
        if let Some(list) = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::ANNOTATION_GLOBAL_IP))
        {
            for ip in list.split(',') {
                global_ips.push(cx.ip(
                    format!("metadata.annotations[{}]", crate::ANNOTATION_GLOBAL_IP),
                    ip.trim(),
                )?);
            }
        }
        let mut load_balancer_ips = Vec::new();
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            if let Some(ip) = &ing.ip {
                load_balancer_ips.push(cx.ip(format!("status.loadBalancer.ingress[{i}].ip"), ip)?);
            }
        }
        let mut load_balancer_source_ranges = Vec::new();
        for (i, r) in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            let field = format!("spec.loadBalancerSourceRanges[{i}]");
            let net = r
                .trim()
                .parse::<ipnet::IpNet>()
                .or_else(|_| r.trim().parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| cx.err(field, format!("{r:?} is not a CIDR")))?;
            load_balancer_source_ranges.push(net.trunc());
        }
        let policy = |field: &str, v: Option<&str>| match v {
            None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
            Some("Local") => Ok(TrafficPolicy::Local),
            Some(other) => Err(cx.err(field, format!("unknown policy {other:?}"))),
        };
        let session_affinity = match spec.session_affinity.as_deref() {
            None | Some("None") => SessionAffinity::None,
            Some("ClientIP") => {
                let t = spec
                    .session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds);
                let timeout_seconds = match t {
                    None => DEFAULT_AFFINITY_TIMEOUT,
                    Some(t) if (1..=86400).contains(&t) => t as u32,
                    Some(t) => {
                        return Err(cx.err(
                            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                            format!("{t} out of range 1-86400"),
                        ))
                    }
                };
                SessionAffinity::ClientIp { timeout_seconds }
            }
            Some(other) => {
                return Err(cx.err("spec.sessionAffinity", format!("unknown value {other:?}")))
            }
        };
        let health_check_node_port = match spec.health_check_node_port {
            Some(p) if p != 0 => Some(cx.port("spec.healthCheckNodePort", p)?),
            _ => None,
        };
        let mut ip_families = Vec::new();
        for (i, f) in spec.ip_families.iter().flatten().enumerate() {
            ip_families.push(match f.as_str() {
                "IPv4" => IpFamily::V4,
                "IPv6" => IpFamily::V6,
                other => {
                    return Err(cx.err(
                        format!("spec.ipFamilies[{i}]"),
                        format!("unknown family {other:?}"),
                    ))
                }
            });
        }
        if ip_families.is_empty() {
            ip_families = cluster_ips.iter().map(IpFamily::of).collect();
        }
        for (i, ip) in cluster_ips.iter().enumerate() {
            if ip_families.get(i) != Some(&IpFamily::of(ip)) {
                return Err(cx.err(
                    format!("spec.clusterIPs[{i}]"),
                    format!("{ip} does not match spec.ipFamilies {ip_families:?}"),
                ));
            }
        }
        // Exact capacities: an agent keeps 100k of these.
        for v in [&mut cluster_ips, &mut external_ips, &mut load_balancer_ips] {
            v.shrink_to_fit();
        }
        ports.shrink_to_fit();
        load_balancer_source_ranges.shrink_to_fit();
        ip_families.shrink_to_fit();
        Ok(Service {
            external_traffic_policy: policy(
                "spec.externalTrafficPolicy",
                spec.external_traffic_policy.as_deref(),
            )?,
            internal_traffic_policy: policy(
                "spec.internalTrafficPolicy",
                spec.internal_traffic_policy.as_deref(),
            )?,
            namespace,
            name,
            type_,
            cluster_ips,
            headless,
            ports,
            external_ips,
            load_balancer_ips,
            load_balancer_source_ranges,
            session_affinity,
            health_check_node_port,
            ip_families,
            external_name: spec.external_name.clone(),
            publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
            mcs_import: svc
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MCS_SERVICE_NAME_LABEL))
                .cloned(),
            global_ips,
        })
    }
}

impl TryFrom<&discovery::EndpointSlice> for EndpointSlice {
    type Error = ModelError;

    fn try_from(s: &discovery::EndpointSlice) -> Result<Self, ModelError> {
        let namespace = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        let cx = Ctx {
            object: format!("EndpointSlice {namespace}/{name}"),
        };
        let service_name = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
            .ok_or_else(|| {
                cx.err(
                    format!("metadata.labels[{SERVICE_NAME_LABEL}]"),
                    "missing: the slice belongs to no Service",
                )
            })?;
        let address_type = match s.address_type.as_str() {
            "IPv4" => AddressType::Ipv4,
            "IPv6" => AddressType::Ipv6,
            "FQDN" => AddressType::Fqdn,
            other => return Err(cx.err("addressType", format!("unknown type {other:?}"))),
        };
        let mut endpoints = Vec::new();
        if address_type != AddressType::Fqdn {
            for (i, e) in s.endpoints.iter().flatten().enumerate() {
                let mut addresses = Vec::new();
                for (j, a) in e.addresses.iter().enumerate() {
                    let ip = cx.ip(format!("endpoints[{i}].addresses[{j}]"), a)?;
                    let want = if address_type == AddressType::Ipv4 {
                        IpFamily::V4
                    } else {
                        IpFamily::V6
                    };
                    if IpFamily::of(&ip) != want {
                        return Err(cx.err(
                            format!("endpoints[{i}].addresses[{j}]"),
                            format!("{ip} does not match addressType {}", s.address_type),
                        ));
                    }
                    addresses.push(ip);
                }
                addresses.shrink_to_fit();
                let c = e.conditions.clone().unwrap_or_default();
                let ready = c.ready.unwrap_or(true);
                endpoints.push(Endpoint {
                    addresses,
                    conditions: EndpointConditions {
                        ready,
                        serving: c.serving.unwrap_or(ready),
                        terminating: c.terminating.unwrap_or(false),
                    },
                    node_name: e.node_name.clone(),
                    hostname: e.hostname.clone(),
                });
            }
        }
        let mut ports = Vec::new();
        for (i, p) in s.ports.iter().flatten().enumerate() {
            let f = |x: &str| format!("ports[{i}].{x}");
            // A port without a number means "all ports": nothing to DNAT to; skip it.
            let Some(port) = p.port else { continue };
            ports.push(EndpointPort {
                name: p.name.clone().unwrap_or_default(),
                protocol: cx.protocol(&f("protocol"), p.protocol.as_deref())?,
                port: cx.port(&f("port"), port)?,
            });
        }
        endpoints.shrink_to_fit();
        ports.shrink_to_fit();
        Ok(EndpointSlice {
            source_cluster: s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MCS_SOURCE_CLUSTER_LABEL))
                .cloned(),
            namespace,
            name,
            service_name,
            address_type,
            endpoints,
            ports,
        })
    }
}

impl TryFrom<&core::Node> for NodeInfo {
    type Error = ModelError;

    fn try_from(n: &core::Node) -> Result<Self, ModelError> {
        let name = n.metadata.name.clone().unwrap_or_default();
        let cx = Ctx {
            object: format!("Node {name}"),
        };
        let mut addresses = Vec::new();
        let addrs = n.status.as_ref().and_then(|s| s.addresses.as_ref());
        for (i, a) in addrs.into_iter().flatten().enumerate() {
            if a.type_ == "InternalIP" || a.type_ == "ExternalIP" {
                addresses.push(cx.ip(format!("status.addresses[{i}].address"), &a.address)?);
            }
        }
        let mut pod_cidrs = Vec::new();
        let spec = n.spec.clone().unwrap_or_default();
        let cidrs = match (spec.pod_cidrs, spec.pod_cidr) {
            (Some(c), _) if !c.is_empty() => c,
            (_, Some(c)) => vec![c],
            _ => Vec::new(),
        };
        for (i, c) in cidrs.iter().enumerate() {
            pod_cidrs.push(c.parse().map_err(|_| {
                cx.err(
                    format!("spec.podCIDRs[{i}]"),
                    format!("{c:?} is not a CIDR"),
                )
            })?);
        }
        Ok(NodeInfo {
            name,
            addresses,
            pod_cidrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, ServicePort as KPort, ServiceSpec,
        ServiceStatus, SessionAffinityConfig,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        }
    }

    fn lb_service() -> core::Service {
        core::Service {
            metadata: meta("web"),
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                cluster_ips: Some(vec!["10.96.0.10".into(), "fd00:96::10".into()]),
                ip_families: Some(vec!["IPv4".into(), "IPv6".into()]),
                ports: Some(vec![KPort {
                    name: Some("http".into()),
                    port: 80,
                    node_port: Some(30080),
                    target_port: Some(IntOrString::String("web".into())),
                    ..KPort::default()
                }]),
                external_traffic_policy: Some("Local".into()),
                health_check_node_port: Some(32000),
                load_balancer_source_ranges: Some(vec!["203.0.113.0/24".into()]),
                session_affinity: Some("ClientIP".into()),
                session_affinity_config: Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(60),
                    }),
                }),
                ..ServiceSpec::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some("192.168.34.1".into()),
                        ..LoadBalancerIngress::default()
                    }]),
                }),
                ..ServiceStatus::default()
            }),
        }
    }

    #[test]
    fn converts_a_load_balancer_service() {
        let s = Service::try_from(&lb_service()).unwrap();
        assert_eq!(s.type_, ServiceType::LoadBalancer);
        assert_eq!(s.cluster_ips.len(), 2);
        assert_eq!(s.ip_families, [IpFamily::V4, IpFamily::V6]);
        assert_eq!(s.ports[0].protocol, Protocol::Tcp);
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(s.ports[0].target_port, Some(TargetPort::Name("web".into())));
        assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
        assert_eq!(s.health_check_node_port, Some(32000));
        assert_eq!(
            s.load_balancer_ips,
            ["192.168.34.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            s.session_affinity,
            SessionAffinity::ClientIp {
                timeout_seconds: 60
            }
        );
        assert!(s.is_proxied());
    }

    #[test]
    fn a_global_ingress_address_is_read_from_its_annotation() {
        let mut k = lb_service();
        k.metadata.annotations = Some(
            [(
                crate::ANNOTATION_GLOBAL_IP.to_string(),
                "242.0.0.2".to_string(),
            )]
            .into(),
        );
        let s = Service::try_from(&k).unwrap();
        assert_eq!(s.global_ips, ["242.0.0.2".parse::<IpAddr>().unwrap()]);
        assert!(s.external_ips.is_empty());
        // A dual-stack Service's: one of each family.
        k.metadata.annotations = Some(
            [(
                crate::ANNOTATION_GLOBAL_IP.to_string(),
                "242.0.0.2,fd00:242::2".to_string(),
            )]
            .into(),
        );
        let s = Service::try_from(&k).unwrap();
        assert_eq!(
            s.global_ips,
            ["242.0.0.2", "fd00:242::2"].map(|a| a.parse::<IpAddr>().unwrap())
        );
        k.metadata.annotations = Some(
            [(
                crate::ANNOTATION_GLOBAL_IP.to_string(),
                "242.0.0".to_string(),
            )]
            .into(),
        );
        let e = Service::try_from(&k).unwrap_err();
        assert_eq!(
            e.field,
            format!("metadata.annotations[{}]", crate::ANNOTATION_GLOBAL_IP)
        );
    }

    #[test]
    fn headless_and_external_name_are_not_proxied() {
        let mut k = lb_service();
        let spec = k.spec.as_mut().unwrap();
        spec.type_ = None;
        spec.cluster_ips = Some(vec!["None".into()]);
        spec.ip_families = None;
        let s = Service::try_from(&k).unwrap();
        assert!(s.headless && !s.is_proxied());
        let spec = k.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.cluster_ips = None;
        spec.external_name = Some("example.com".into());
        assert!(!Service::try_from(&k).unwrap().is_proxied());
    }

    #[test]
    fn bad_fields_are_named() {
        let mut k = lb_service();
        k.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 70000;
        let e = Service::try_from(&k).unwrap_err();
        assert_eq!(e.field, "spec.ports[0].port");
        let mut k = lb_service();
        k.spec.as_mut().unwrap().cluster_ips = Some(vec!["10.96.0.300".into()]);
        assert_eq!(
            Service::try_from(&k).unwrap_err().field,
            "spec.clusterIPs[0]"
        );
        let mut k = lb_service();
        k.spec.as_mut().unwrap().ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
        assert!(Service::try_from(&k)
            .unwrap_err()
            .to_string()
            .contains("ipFamilies"));
    }

    #[test]
    fn converts_an_endpoint_slice_with_condition_defaults() {
        let k = discovery::EndpointSlice {
            metadata: ObjectMeta {
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "web".to_string())].into()),
                ..meta("web-abc")
            },
            address_type: "IPv4".into(),
            endpoints: Some(vec![
                discovery::Endpoint {
                    addresses: vec!["10.244.1.5".into()],
                    node_name: Some("node-1".into()),
                    ..discovery::Endpoint::default()
                },
                discovery::Endpoint {
                    addresses: vec!["10.244.2.5".into()],
                    conditions: Some(discovery::EndpointConditions {
                        ready: Some(false),
                        serving: Some(true),
                        terminating: Some(true),
                    }),
                    ..discovery::Endpoint::default()
                },
            ]),
            ports: Some(vec![discovery::EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..discovery::EndpointPort::default()
            }]),
        };
        let s = EndpointSlice::try_from(&k).unwrap();
        assert_eq!(s.service_name, "web");
        assert_eq!(s.endpoints[0].conditions, EndpointConditions::default());
        assert!(s.endpoints[1].conditions.terminating && !s.endpoints[1].conditions.ready);
        assert_eq!(s.ports[0].port, 8080);
        let mut bad = k.clone();
        bad.endpoints.as_mut().unwrap()[0].addresses = vec!["fd00::1".into()];
        assert_eq!(
            EndpointSlice::try_from(&bad).unwrap_err().field,
            "endpoints[0].addresses[0]"
        );
        let mut unlabeled = k;
        unlabeled.metadata.labels = None;
        assert!(EndpointSlice::try_from(&unlabeled).is_err());
    }
}
