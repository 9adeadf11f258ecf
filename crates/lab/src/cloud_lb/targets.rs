//! What the cloud load balancer should do, from the cluster's objects (pure): one listener per
//! LoadBalancer Service port and ingress address, with its targets by mode, and the Services
//! whose target annotation is invalid.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::service_routes::NodeHop;

/// The Service annotation choosing the targets.
pub const TARGET_ANNOTATION: &str = "sarasa.io/load-balancer-target";
/// The pod readiness gate the balancer sets once an `ip` target of the pod passes its health
/// check (GKE's network endpoint group gate).
pub const READINESS_GATE: &str = "sarasa.io/load-balancer-ready";

/// Where a listener sends connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// Every Ready node's NodePort.
    Instance,
    /// The Service's ready endpoints (pod addresses).
    Ip,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Instance => "instance",
            Mode::Ip => "ip",
        }
    }
}

/// How a target's health is checked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// A TCP connection to the target.
    Tcp,
    /// `GET /healthz` on this port of the target's address answers 200 (kube-proxy's
    /// health-check NodePort for `externalTrafficPolicy: Local`).
    Http(u16),
    /// Not checked (UDP).
    None,
}

/// One backend of a listener.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub check: Check,
    /// The pod behind an `ip` target (namespace, name), from the endpoint's targetRef.
    pub pod: Option<(String, String)>,
}

/// One address:port the balancer answers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `namespace/name` of the Service.
    pub service: String,
    pub vip: Ipv4Addr,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub port: u16,
    pub mode: Mode,
    pub targets: Vec<Target>,
    /// `loadBalancerSourceRanges` (IPv4): only these clients are balanced; others are left to
    /// the nodes' own firewall for the address (which drops them). Empty: every client.
    pub source_ranges: Vec<ipnet::Ipv4Net>,
}

/// A Service whose annotation value is not a mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAnnotation {
    pub namespace: String,
    pub name: String,
    pub value: String,
}

/// The listeners of every LoadBalancer Service with an IPv4 ingress address.
///
/// `gated(namespace, name)` says a pod is ready but for the balancer's readiness gate: its
/// endpoint (not ready because of the gate) is registered anyway, so the gate can open.
pub fn listeners(
    services: &[Service],
    slices: &[EndpointSlice],
    nodes: &[NodeHop],
    gated: &dyn Fn(&str, &str) -> bool,
) -> (Vec<Listener>, Vec<InvalidAnnotation>) {
    let mut out = Vec::new();
    let mut invalid = Vec::new();
    // Nodes not Ready are not registered; with none Ready (a lab whose Nodes report no
    // condition) every node is, and the health checks decide.
    let registered: Vec<&NodeHop> = if nodes.iter().any(|n| n.ready) {
        nodes.iter().filter(|n| n.ready).collect()
    } else {
        nodes.iter().collect()
    };
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() != Some("LoadBalancer")
            || svc.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let ns = svc.namespace().unwrap_or_else(|| "default".into());
        let name = svc.name_any();
        let mode = match svc.annotations().get(TARGET_ANNOTATION).map(String::as_str) {
            None | Some("instance") => Mode::Instance,
            Some("ip") => Mode::Ip,
            Some(other) => {
                invalid.push(InvalidAnnotation {
                    namespace: ns.clone(),
                    name: name.clone(),
                    value: other.to_string(),
                });
                Mode::Instance
            }
        };
        let vips: Vec<Ipv4Addr> = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let source_ranges: Vec<ipnet::Ipv4Net> = spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .filter_map(|r| r.trim().parse::<ipnet::Ipv4Net>().ok())
            .map(|n| n.trunc())
            .collect();
        let endpoints = ready_endpoints(&ns, &name, slices, gated);
        for port in spec.ports.iter().flatten() {
            let protocol = port
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .to_ascii_lowercase();
            let Ok(listen) = u16::try_from(port.port) else {
                continue;
            };
            let check = |tcp: Check| if protocol == "tcp" { tcp } else { Check::None };
            let targets: Vec<Target> = match mode {
                Mode::Instance => {
                    let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) else {
                        continue;
                    };
                    let hc = spec
                        .health_check_node_port
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|_| local);
                    registered
                        .iter()
                        .map(|n| Target {
                            addr: n.ip,
                            port: node_port,
                            // The health-check NodePort is HTTP whatever the Service's protocol.
                            check: match hc {
                                Some(hc) => Check::Http(hc),
                                None => check(Check::Tcp),
                            },
                            pod: None,
                        })
                        .collect()
                }
                Mode::Ip => {
                    let key = (port.name.clone().unwrap_or_default(), protocol.clone());
                    endpoints
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .map(|(addr, p, pod)| Target {
                            addr: *addr,
                            port: *p,
                            check: check(Check::Tcp),
                            pod: pod.clone(),
                        })
                        .collect()
                }
            };
            for vip in &vips {
                out.push(Listener {
                    service: format!("{ns}/{name}"),
                    vip: *vip,
                    protocol: protocol.clone(),
                    port: listen,
                    mode,
                    targets: targets.clone(),
                    source_ranges: source_ranges.clone(),
                });
            }
        }
    }
    (out, invalid)
}

type Endpoints = BTreeMap<(String, String), Vec<(Ipv4Addr, u16, Option<(String, String)>)>>;

/// Ready (serving, not terminating) IPv4 endpoints of a Service by (port name, protocol), with
/// the endpoints held back only by the balancer's readiness gate.
fn ready_endpoints(
    ns: &str,
    name: &str,
    slices: &[EndpointSlice],
    gated: &dyn Fn(&str, &str) -> bool,
) -> Endpoints {
    let mut out: Endpoints = BTreeMap::new();
    for slice in slices {
        if slice.namespace().as_deref().unwrap_or("default") != ns
            || slice
                .labels()
                .get("kubernetes.io/service-name")
                .map(String::as_str)
                != Some(name)
            || slice.address_type != "IPv4"
        {
            continue;
        }
        for port in slice.ports.iter().flatten() {
            let Some(p) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            let key = (
                port.name.clone().unwrap_or_default(),
                port.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase(),
            );
            for ep in slice.endpoints.iter().flatten() {
                let conditions = ep.conditions.as_ref();
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                let pod = ep
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        Some((
                            r.namespace.clone().unwrap_or_else(|| ns.to_string()),
                            r.name.clone()?,
                        ))
                    });
                let waits_for_gate = !ready
                    && !terminating
                    && pod.as_ref().is_some_and(|(pns, pname)| gated(pns, pname));
                if !ready && !waits_for_gate {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<Ipv4Addr>() {
                        out.entry(key.clone())
                            .or_default()
                            .push((ip, p, pod.clone()));
                    }
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nodes() -> Vec<NodeHop> {
        (1..=3)
            .map(|i| NodeHop {
                name: format!("node-{i}"),
                ip: Ipv4Addr::new(192, 168, 33, 10 + i),
                ready: i != 3,
            })
            .collect()
    }

    fn svc(annotations: serde_json::Value, spec: serde_json::Value) -> Service {
        let mut s = json!({"type": "LoadBalancer",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]});
        s.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
            "spec": s,
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}
        }))
        .unwrap()
    }

    fn slice() -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.2.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.2.7"], "conditions": {"ready": true}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn instance_mode_targets_every_ready_nodes_nodeport() {
        let (l, bad) = listeners(
            &[svc(json!({}), json!({}))],
            &[slice()],
            &nodes(),
            &|_, _| false,
        );
        assert!(bad.is_empty());
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].mode, Mode::Instance);
        assert_eq!(l[0].vip, Ipv4Addr::new(198, 51, 100, 7));
        let t: Vec<String> = l[0]
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.addr, t.port))
            .collect();
        assert_eq!(t, ["192.168.33.11:30080", "192.168.33.12:30080"]);
        assert!(l[0].targets.iter().all(|t| t.check == Check::Tcp));
    }

    #[test]
    fn local_policy_checks_the_health_check_node_port() {
        let s = svc(
            json!({}),
            json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": 32000}),
        );
        let (l, _) = listeners(&[s], &[], &nodes(), &|_, _| false);
        assert!(l[0].targets.iter().all(|t| t.check == Check::Http(32000)));
    }

    #[test]
    fn ip_mode_targets_ready_endpoints_and_drains_terminating_ones() {
        let s = svc(json!({TARGET_ANNOTATION: "ip"}), json!({}));
        let (l, _) = listeners(&[s], &[slice()], &nodes(), &|_, _| false);
        assert_eq!(l[0].mode, Mode::Ip);
        let t: Vec<String> = l[0]
            .targets
            .iter()
            .map(|t| format!("{}:{}", t.addr, t.port))
            .collect();
        assert_eq!(t, ["10.244.1.5:8080", "10.244.2.7:8080"]);
    }

    #[test]
    fn source_ranges_are_carried() {
        let s = svc(
            json!({}),
            json!({"loadBalancerSourceRanges": ["203.0.113.0/24", " 10.1.2.3/8"]}),
        );
        let (l, _) = listeners(&[s], &[], &nodes(), &|_, _| false);
        let r: Vec<String> = l[0].source_ranges.iter().map(|n| n.to_string()).collect();
        assert_eq!(r, ["203.0.113.0/24", "10.0.0.0/8"]);
    }

    #[test]
    fn endpoints_held_back_by_the_gate_are_registered() {
        let s = svc(json!({TARGET_ANNOTATION: "ip"}), json!({}));
        let mut sl = slice();
        let eps = sl.endpoints.as_mut().unwrap();
        eps.push(
            serde_json::from_value(
                json!({"addresses": ["10.244.3.8"], "conditions": {"ready": false},
            "targetRef": {"kind": "Pod", "name": "new", "namespace": "default"}}),
            )
            .unwrap(),
        );
        let (l, _) = listeners(
            std::slice::from_ref(&s),
            std::slice::from_ref(&sl),
            &nodes(),
            &|_, name| name == "new",
        );
        let t = l[0]
            .targets
            .iter()
            .find(|t| t.addr == Ipv4Addr::new(10, 244, 3, 8))
            .expect("gated pod registered");
        assert_eq!(t.pod, Some(("default".into(), "new".into())));
        let (l, _) = listeners(&[s], &[sl], &nodes(), &|_, _| false);
        assert!(
            l[0].targets
                .iter()
                .all(|t| t.addr != Ipv4Addr::new(10, 244, 3, 8)),
            "not ready, no gate: out"
        );
    }

    #[test]
    fn an_invalid_annotation_keeps_instance_mode_and_is_reported() {
        let s = svc(json!({TARGET_ANNOTATION: "pods"}), json!({}));
        let (l, bad) = listeners(&[s], &[slice()], &nodes(), &|_, _| false);
        assert_eq!(l[0].mode, Mode::Instance);
        assert_eq!(
            bad,
            [InvalidAnnotation {
                namespace: "default".into(),
                name: "web".into(),
                value: "pods".into()
            }]
        );
    }

    #[test]
    fn services_without_an_ingress_address_have_no_listener() {
        let mut s = svc(json!({}), json!({}));
        s.status = None;
        assert!(listeners(&[s], &[], &nodes(), &|_, _| false).0.is_empty());
        let plain: Service = serde_json::from_value(
            json!({"metadata": {"name": "c"}, "spec": {"type": "ClusterIP"}}),
        )
        .unwrap();
        assert!(listeners(&[plain], &[], &nodes(), &|_, _| false)
            .0
            .is_empty());
    }
}
