//! GlobalNet in the sync (`clusterset join --globalnet`), Submariner's answer to clusters whose
//! pod and Service ranges overlap: each cluster has a global CIDR, and the other clusters
//! reach it only through that range (a dual-stack cluster in a set with an IPv6 GlobalNet range
//! has an IPv6 global CIDR too, and everything below holds per family).
//! - Each exported Service gets a global ingress address from its cluster's global CIDR
//!   (the annotation [`ANNOTATION_GLOBAL_IP`], which the Service model serves as one more
//!   external address, so every node's service proxy answers it); a Service no longer exported
//!   gives it back.
//! - The MCS slices a cluster puts on the broker carry that address instead of its pods' (which
//!   mean nothing, or something else, in another cluster), on the Service's ports: another
//!   cluster's ClusterSetIP balances over it, and the exporting cluster's gateway DNATs it.
//! - The pods' packets towards the other clusters leave from the cluster's egress address (the
//!   node plan's SNAT on the cable), so their replies find the way back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use sarasa_model::clusterset::{global_ingress_ips, ANNOTATION_GLOBAL_IP};

/// `multicluster.kubernetes.io/service-name`.
pub(super) const SERVICE_NAME: &str = "multicluster.kubernetes.io/service-name";

type Key = (String, String);

fn service_of(s: &EndpointSlice) -> Option<Key> {
    let name = s.metadata.labels.as_ref()?.get(SERVICE_NAME)?.clone();
    Some((s.metadata.namespace.clone().unwrap_or_default(), name))
}

/// A Service's global addresses, as its annotation lists them (comma-separated, IPv4 first).
pub(super) fn global_ips(s: &Service) -> Vec<IpAddr> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_GLOBAL_IP))
        .into_iter()
        .flat_map(|text| text.split(','))
        .filter_map(|ip| ip.trim().parse().ok())
        .collect()
}

/// Whether the Service has addresses of `v4`'s family (its `ipFamilies`; IPv4 when unset).
fn has_family(s: &Service, v4: bool) -> bool {
    let want = if v4 { "IPv4" } else { "IPv6" };
    match s.spec.as_ref().and_then(|sp| sp.ip_families.as_ref()) {
        Some(f) if !f.is_empty() => f.iter().any(|x| x == want),
        _ => v4,
    }
}

/// What [`allocate`] found: each exported Service with its global addresses (IPv4 first) and
/// ports, and the exported headless Services (whose endpoints get the addresses instead:
/// [`super::global_ingress`]).
#[derive(Debug, Default)]
pub struct Allocated {
    pub services: BTreeMap<Key, (Vec<IpAddr>, Service)>,
    pub headless: BTreeSet<Key>,
}

fn is_headless(s: &Service) -> bool {
    s.spec.as_ref().and_then(|sp| sp.cluster_ip.as_deref()) == Some("None")
}

/// Gives each exported Service (one with an MCS slice of this cluster) a global ingress address
/// from each global CIDR of a family it has, and takes them from a Service no longer exported;
/// a headless Service gets none (its endpoints do). The global ingress Services of headless
/// endpoints are left to [`super::global_ingress`].
pub async fn allocate(
    local: &Client,
    globals: &[IpNet],
    own_slices: &BTreeMap<Key, EndpointSlice>,
) -> Result<Allocated, kube::Error> {
    let exported: BTreeSet<Key> = own_slices.values().filter_map(service_of).collect();
    let services: Api<Service> = Api::all(local.clone());
    let list = services.list(&ListParams::default()).await?.items;
    let ours = |ip: &IpAddr| globals.iter().any(|g| g.contains(ip));
    let mut used: BTreeSet<IpAddr> = list.iter().flat_map(global_ips).filter(ours).collect();
    let mut out = Allocated::default();
    for svc in list {
        let key = (
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let ingress = svc
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(super::global_ingress::INGRESS_FOR));
        if ingress {
            continue;
        }
        let api: Api<Service> = Api::namespaced(local.clone(), &key.0);
        let have = global_ips(&svc);
        let exported_here = exported.contains(&key) && !is_headless(&svc);
        if exported.contains(&key) && is_headless(&svc) {
            out.headless.insert(key.clone());
        }
        if !exported_here {
            if !have.is_empty() {
                let patch = serde_json::json!({"metadata": {"annotations": {
                    ANNOTATION_GLOBAL_IP: null,
                }}});
                api.patch(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            continue;
        }
        let mut want = Vec::new();
        for g in globals {
            if !has_family(&svc, g.addr().is_ipv4()) {
                continue;
            }
            if let Some(ip) = have.iter().find(|ip| g.contains(*ip)) {
                want.push(*ip);
                continue;
            }
            let Some(ip) = global_ingress_ips(*g).find(|ip| !used.contains(ip)) else {
                tracing::warn!(
                    "global CIDR {g} is exhausted: {}/{} is not reachable from the other clusters",
                    key.0,
                    key.1
                );
                continue;
            };
            used.insert(ip);
            want.push(ip);
        }
        if want.is_empty() {
            continue;
        }
        if want != have {
            let text: Vec<String> = want.iter().map(ToString::to_string).collect();
            let patch = serde_json::json!({"metadata": {"annotations": {
                ANNOTATION_GLOBAL_IP: text.join(","),
            }}});
            api.patch(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        out.services.insert(key, (want, svc));
    }
    Ok(out)
}

/// Takes every Service's global address away, and the global ingress Services of headless
/// endpoints (the cluster leaves its set).
pub async fn release(local: &Client) -> Result<(), kube::Error> {
    super::global_ingress::release(local).await?;
    let services: Api<Service> = Api::all(local.clone());
    for svc in services.list(&ListParams::default()).await?.items {
        if global_ips(&svc).is_empty() {
            continue;
        }
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"annotations": {
            ANNOTATION_GLOBAL_IP: null,
        }}});
        Api::<Service>::namespaced(local.clone(), &ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// This cluster's MCS slices as the other clusters see them under GlobalNet: per exported
/// Service and address family one slice (the first by name), its one endpoint the Service's
/// global address of that family (ready while any of its endpoints of the family is), on the
/// Service's ports. A Service without an address of the family yet is left out.
pub fn globalize(
    own_slices: &BTreeMap<Key, EndpointSlice>,
    exported: &BTreeMap<Key, (Vec<IpAddr>, Service)>,
) -> BTreeMap<Key, EndpointSlice> {
    let family = |s: &EndpointSlice| s.address_type == "IPv6";
    let mut ready: BTreeMap<(Key, bool), bool> = BTreeMap::new();
    for s in own_slices.values() {
        if let Some(svc) = service_of(s).map(|k| (k, family(s))) {
            let any = s
                .endpoints
                .iter()
                .flatten()
                .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
            *ready.entry(svc).or_default() |= any;
        }
    }
    let mut out = BTreeMap::new();
    let mut done: BTreeSet<(Key, bool)> = BTreeSet::new();
    for (key, s) in own_slices {
        let Some(svc_key) = service_of(s).map(|k| (k, family(s))) else {
            continue;
        };
        let Some((ips, svc)) = exported.get(&svc_key.0) else {
            continue;
        };
        let Some(ip) = ips.iter().find(|ip| ip.is_ipv6() == svc_key.1) else {
            continue;
        };
        if !done.insert(svc_key.clone()) {
            continue;
        }
        let mut g = s.clone();
        g.address_type = if ip.is_ipv4() { "IPv4" } else { "IPv6" }.into();
        g.endpoints = Some(vec![Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready.get(&svc_key).copied().unwrap_or(false)),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }]);
        g.ports = Some(
            svc.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| EndpointPort {
                    name: p.name.clone(),
                    port: Some(p.port),
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect(),
        );
        out.insert(key.clone(), g);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use kube::api::ObjectMeta;

    fn slice(
        name: &str,
        svc: &str,
        addrs: &[&str],
        ready: bool,
    ) -> ((String, String), EndpointSlice) {
        let s = EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some([(SERVICE_NAME.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                addrs
                    .iter()
                    .map(|a| Endpoint {
                        addresses: vec![a.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: Some(ready),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..Default::default()
            }]),
        };
        (("default".into(), name.into()), s)
    }

    #[test]
    fn exported_slices_carry_the_services_global_address_on_its_ports() {
        let own: BTreeMap<_, _> = [
            slice("web-a", "web", &["10.244.1.5"], false),
            slice("web-b", "web", &["10.244.2.5"], true),
            slice("db-a", "db", &["10.244.1.9"], true),
        ]
        .into();
        let web = Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ip: IpAddr = "242.0.0.2".parse().unwrap();
        let exported = [(("default".to_string(), "web".to_string()), (vec![ip], web))].into();
        let g = globalize(&own, &exported);
        assert_eq!(
            g.len(),
            1,
            "one slice for web, none for db (no address yet)"
        );
        let s = &g[&("default".to_string(), "web-a".to_string())];
        let endpoints = s.endpoints.as_ref().unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].addresses, ["242.0.0.2"]);
        assert_eq!(
            endpoints[0].conditions.as_ref().unwrap().ready,
            Some(true),
            "ready while any of web's endpoints is"
        );
        assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(80));
        assert_eq!(s.ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
    }
}
