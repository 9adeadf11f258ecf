//! A lab's [`Topology`] (what `lab graph` and `trace -o svg` draw) from the lab spec (fabric,
//! external host, node addresses, backend, CNI mode) and the API objects (Nodes: podCIDRs and
//! the published vtep MAC; Pods: node and addresses; Services and their EndpointSlices).
//! [`topology`] is pure over already-listed objects so trace can reuse it with the objects it
//! listed itself; [`list_objects`] is the one listing both commands can share.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::Api;
use sarasa_agent::plan::{NODE_BRIDGE, VXLAN_DEVICE, VXLAN_VNI};
use sarasa_cluster::state::ANNOTATION_VTEP_MAC;
use sarasa_lab::spec::UPLINK;
use sarasa_lab::{Backend, CniMode, Lab, LabError, LabSpec};
use sarasa_viz::{
    EndpointRef, Fabric, Host, NodeBox, PodBox, ServiceBox, Topology, Tunnel, VtepBox,
};

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The API objects a topology is built from.
#[derive(Debug, Clone, Default)]
pub struct ClusterObjects {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
}

/// Lists the objects of every namespace from the lab's API server.
pub fn list_objects(lab: &Lab) -> Result<ClusterObjects, LabError> {
    sarasa_lab::client::with_client(&lab.spec, |c| async move {
        let lp = ListParams::default();
        let err = |what: &'static str| {
            move |e: kube::Error| LabError::Api(format!("listing {what}: {e}"))
        };
        Ok(ClusterObjects {
            nodes: Api::<Node>::all(c.clone())
                .list(&lp)
                .await
                .map_err(err("nodes"))?
                .items,
            pods: Api::<Pod>::all(c.clone())
                .list(&lp)
                .await
                .map_err(err("pods"))?
                .items,
            services: Api::<Service>::all(c.clone())
                .list(&lp)
                .await
                .map_err(err("services"))?
                .items,
            endpoint_slices: Api::<EndpointSlice>::all(c)
                .list(&lp)
                .await
                .map_err(err("endpointslices"))?
                .items,
        })
    })
}

fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or_default()
    )
}

/// The lab as a picture's data: nodes in the lab's order, pods and Services by namespace/name.
pub fn topology(spec: &LabSpec, objects: &ClusterObjects) -> Topology {
    let api_nodes: BTreeMap<&str, &Node> = objects
        .nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    let mut nodes: Vec<NodeBox> = spec
        .nodes
        .iter()
        .map(|n| {
            node_box(
                spec,
                &n.name,
                IpAddr::V4(n.ip),
                api_nodes.get(n.name.as_str()),
            )
        })
        .collect();
    // Nodes the API knows that the spec does not (none in a lab, but say so if there are).
    for (name, node) in &api_nodes {
        if spec.node(name).is_none() {
            let ip = internal_ip(node).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            nodes.push(node_box(spec, name, ip, Some(node)));
        }
    }

    let mut pods: Vec<&Pod> = objects.pods.iter().collect();
    pods.sort_by_key(|p| key(&p.metadata));
    for pod in pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let Some(b) = nodes.iter_mut().find(|b| b.name == node) else {
            continue;
        };
        b.pods.push(pod_box(pod));
    }

    let kind = match spec.backend {
        Backend::Vxlan => format!("vxlan vni {VXLAN_VNI}"),
        Backend::HostGw => "host-gw route".to_string(),
        Backend::Bgp => "bgp route".to_string(),
        Backend::Vpc => "vpc route".to_string(),
    };
    let mut tunnels = Vec::new();
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            tunnels.push(Tunnel {
                from: a.name.clone(),
                to: b.name.clone(),
                kind: kind.clone(),
            });
        }
    }

    // Pod addresses, to name endpoints whose slice carries no targetRef.
    let pod_by_ip: BTreeMap<IpAddr, String> = nodes
        .iter()
        .flat_map(|n| &n.pods)
        .filter(|p| !p.host_network)
        .flat_map(|p| p.ips.iter().map(move |ip| (*ip, p.key())))
        .collect();
    let mut services: Vec<ServiceBox> = objects
        .services
        .iter()
        .map(|s| service_box(s, &objects.endpoint_slices, &pod_by_ip))
        .collect();
    services.sort_by_key(ServiceBox::key);

    Topology {
        lab: spec.name.clone(),
        fabric: Fabric {
            name: "fabric".into(),
            underlay: IpNet::V4(spec.underlay),
            address: IpNet::new(IpAddr::V4(spec.fabric_ip), spec.underlay.prefix_len())
                .unwrap_or(IpNet::V4(spec.underlay)),
        },
        external: Some(Host {
            name: "external".into(),
            address: IpAddr::V4(spec.external_ip),
        }),
        nodes,
        tunnels,
        services,
    }
}

fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

fn node_box(spec: &LabSpec, name: &str, underlay_ip: IpAddr, node: Option<&&Node>) -> NodeBox {
    let node_spec = node.and_then(|n| n.spec.as_ref());
    let mut cidrs: Vec<String> = node_spec
        .and_then(|s| s.pod_cidrs.clone())
        .unwrap_or_default();
    if cidrs.is_empty() {
        cidrs.extend(node_spec.and_then(|s| s.pod_cidr.clone()));
    }
    let mac = node
        .and_then(|n| n.metadata.annotations.as_ref())
        .and_then(|a| a.get(ANNOTATION_VTEP_MAC))
        .cloned();
    NodeBox {
        name: name.to_string(),
        underlay_ip,
        uplink: UPLINK.to_string(),
        pod_cidrs: cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
        backend: spec.backend.as_str().to_string(),
        vtep: (spec.backend == Backend::Vxlan).then(|| VtepBox {
            device: VXLAN_DEVICE.to_string(),
            mac,
            vni: VXLAN_VNI,
        }),
        bridge: (spec.mode == CniMode::Bridge).then(|| NODE_BRIDGE.to_string()),
        cni_mode: spec.mode.as_str().to_string(),
        pods: Vec::new(),
    }
}

fn pod_box(pod: &Pod) -> PodBox {
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|a| a.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    PodBox {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        ips,
        host_network,
        // The CNI plugin names the pod's interface as the runtime asks: eth0.
        interface: (!host_network).then(|| "eth0".to_string()),
    }
}

fn service_box(
    svc: &Service,
    slices: &[EndpointSlice],
    pod_by_ip: &BTreeMap<IpAddr, String>,
) -> ServiceBox {
    let namespace = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc.spec.as_ref();
    let mut cluster_ips: Vec<String> = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
    if cluster_ips.is_empty() {
        cluster_ips.extend(spec.and_then(|s| s.cluster_ip.clone()));
    }
    let ports = spec.and_then(|s| s.ports.as_ref());
    let port_text = ports
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            match &p.target_port {
                Some(IntOrString::Int(t)) if *t != p.port => format!("{}→{t}/{proto}", p.port),
                Some(IntOrString::String(t)) => format!("{}→{t}/{proto}", p.port),
                _ => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    let node_ports = ports
        .into_iter()
        .flatten()
        .filter_map(|p| p.node_port.and_then(|n| u16::try_from(n).ok()))
        .collect();
    let lb_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    let mut endpoints: Vec<EndpointRef> = Vec::new();
    let ours = slices.iter().filter(|s| {
        s.metadata.namespace.as_deref().unwrap_or("default") == namespace
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|n| *n == name)
    });
    for slice in ours {
        let slice_ports: Vec<u16> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.and_then(|n| u16::try_from(n).ok()))
            .collect();
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let target = ep
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    Some(format!(
                        "{}/{}",
                        r.namespace.as_deref().unwrap_or(&namespace),
                        r.name.as_deref()?
                    ))
                });
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    continue;
                };
                let pod = target.clone().or_else(|| pod_by_ip.get(&ip).cloned());
                for port in &slice_ports {
                    let e = EndpointRef {
                        ip,
                        port: *port,
                        pod: pod.clone(),
                        ready,
                    };
                    if !endpoints.contains(&e) {
                        endpoints.push(e);
                    }
                }
            }
        }
    }
    endpoints.sort_by_key(|e| (e.ip, e.port));
    ServiceBox {
        namespace,
        name,
        service_type: spec
            .and_then(|s| s.type_.clone())
            .unwrap_or_else(|| "ClusterIP".into()),
        cluster_ips: cluster_ips
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
        ports: port_text,
        node_ports,
        lb_ips,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("valid object")
    }

    fn objects() -> ClusterObjects {
        ClusterObjects {
            nodes: vec![obj(json!({
                "metadata": {"name": "node-2", "annotations": {"sarasa.io/vtep-mac": "02:aa:bb:cc:dd:02"}},
                "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}
            }))],
            pods: vec![
                obj(json!({"metadata": {"namespace": "x", "name": "b"},
                    "spec": {"nodeName": "node-2", "containers": []},
                    "status": {"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}})),
                obj(json!({"metadata": {"namespace": "x", "name": "a"},
                    "spec": {"nodeName": "node-1", "containers": []},
                    "status": {"podIP": "10.244.0.7"}})),
                obj(json!({"metadata": {"namespace": "x", "name": "pending"},
                    "spec": {"containers": []}})),
            ],
            services: vec![obj(json!({
                "metadata": {"namespace": "x", "name": "web"},
                "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}]}
            }))],
            endpoint_slices: vec![obj(json!({
                "metadata": {"namespace": "x", "name": "web-1",
                    "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"port": 8080, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.244.1.5"], "conditions": {"ready": true},
                     "targetRef": {"kind": "Pod", "namespace": "x", "name": "b"}},
                    {"addresses": ["10.244.0.7"], "conditions": {"ready": false}}
                ]
            }))],
        }
    }

    #[test]
    fn nodes_pods_tunnels_and_endpoints_come_from_spec_and_objects() {
        let spec = LabSpec::new("t", 3, Backend::Vxlan, CniMode::Bridge).unwrap();
        let t = topology(&spec, &objects());
        assert_eq!(t.fabric.address.to_string(), "192.168.33.1/24");
        assert_eq!(
            t.external.as_ref().unwrap().address.to_string(),
            "203.0.113.10"
        );
        let names: Vec<&str> = t.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node-1", "node-2", "node-3"]);
        let n2 = &t.nodes[1];
        assert_eq!(n2.underlay_ip.to_string(), "192.168.33.12");
        assert_eq!(n2.pod_cidrs[0].to_string(), "10.244.1.0/24");
        let vtep = n2.vtep.as_ref().unwrap();
        assert_eq!(
            (vtep.device.as_str(), vtep.mac.as_deref(), vtep.vni),
            ("sarasa.1", Some("02:aa:bb:cc:dd:02"), 1)
        );
        assert_eq!(n2.bridge.as_deref(), Some("sarasa0"));
        // node-1 has no Node object yet: no podCIDR, no MAC, still drawn.
        assert!(t.nodes[0].pod_cidrs.is_empty());
        assert_eq!(t.nodes[0].vtep.as_ref().unwrap().mac, None);
        assert_eq!(t.nodes[0].pods[0].key(), "x/a");
        assert_eq!(n2.pods[0].ips[0].to_string(), "10.244.1.5");
        assert!(
            t.find_pod("x/pending").is_none(),
            "unscheduled pods are on no node"
        );
        assert_eq!(t.tunnels.len(), 3);
        assert_eq!(t.tunnels[0].kind, "vxlan vni 1");
        let web = &t.services[0];
        assert_eq!(web.ports, ["80→8080/TCP"]);
        assert_eq!(web.node_ports, [30080]);
        assert_eq!(web.endpoints.len(), 2);
        // The endpoint without targetRef is named by its address.
        assert_eq!(web.endpoints[0].pod.as_deref(), Some("x/a"));
        assert!(!web.endpoints[0].ready);
        assert_eq!(web.endpoints[1].pod.as_deref(), Some("x/b"));
    }

    #[test]
    fn host_gw_routed_labs_have_no_vtep_or_bridge() {
        let spec = LabSpec::new("t", 2, Backend::HostGw, CniMode::Routed).unwrap();
        let t = topology(&spec, &ClusterObjects::default());
        assert!(t
            .nodes
            .iter()
            .all(|n| n.vtep.is_none() && n.bridge.is_none()));
        assert_eq!(t.tunnels[0].kind, "host-gw route");
        assert_eq!(t.nodes[0].cni_mode, "routed");
    }
}
