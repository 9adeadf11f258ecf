//! GlobalNet for headless exports, as Submariner gives each of their endpoints a global ingress
//! address: a headless Service has no address of its own to translate, so each endpoint of an
//! exported headless Service gets one, from the cluster's global CIDR of its family. The
//! address is served like any other global address ([`super::globalnet`]): by a Service of its
//! own, `gi-<hash>` in the export's namespace — no selector, the endpoint's ports, the
//! annotation [`ANNOTATION_GLOBAL_IP`], and one EndpointSlice naming the endpoint — so every
//! node's service proxy DNATs the global address to the pod, and nothing new enters the
//! datapath. The MCS slices the other clusters import then carry these addresses instead of
//! the pods', with the endpoints' hostnames kept. An endpoint that goes takes its Service
//! with it; leaving the set takes them all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::Client;
use sarasa_model::clusterset::{global_ingress_ips, ANNOTATION_GLOBAL_IP};

type Key = (String, String);

/// The label on a global ingress Service (and its slice): the headless Service it serves.
pub const INGRESS_FOR: &str = "multicluster.sarasa.io/global-ingress-for";
/// The label naming a Service an EndpointSlice belongs to.
const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Who keeps the ingress Services' slices (the EndpointSlice controller leaves them alone).
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "globalnet.sarasa.io";

/// The ingress Service of endpoint `ip` of headless Service `ns/svc`.
fn ingress_name(ns: &str, svc: &str, ip: IpAddr) -> String {
    let ip = ip.to_string();
    let h = sarasa_model::hash::fnv1a64_parts([
        ns.as_bytes(),
        b"/",
        svc.as_bytes(),
        b"/",
        ip.as_bytes(),
    ]);
    format!("gi-{h:016x}")
}

/// One endpoint of an exported headless Service, as its MCS slices carry it.
#[derive(Debug, Clone, PartialEq)]
struct Wanted {
    svc: String,
    ip: IpAddr,
    ports: Vec<EndpointPort>,
    pod: Option<k8s_openapi::api::core::v1::ObjectReference>,
}

/// The endpoints of `headless` exports in this cluster's MCS slices, by ingress Service key.
fn wanted(
    own_slices: &BTreeMap<Key, EndpointSlice>,
    headless: &BTreeSet<Key>,
) -> BTreeMap<Key, Wanted> {
    let mut out = BTreeMap::new();
    for s in own_slices.values() {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(super::globalnet::SERVICE_NAME))
        else {
            continue;
        };
        if !headless.contains(&(ns.clone(), svc.clone())) {
            continue;
        }
        for e in s.endpoints.iter().flatten() {
            for ip in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                out.insert(
                    (ns.clone(), ingress_name(&ns, svc, ip)),
                    Wanted {
                        svc: svc.clone(),
                        ip,
                        ports: s.ports.clone().unwrap_or_default(),
                        pod: e.target_ref.clone(),
                    },
                );
            }
        }
    }
    out
}

fn service(name: &str, w: &Wanted, global: IpAddr) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([(INGRESS_FOR.to_string(), w.svc.clone())].into()),
            annotations: Some([(ANNOTATION_GLOBAL_IP.to_string(), global.to_string())].into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ip_families: Some(vec![if w.ip.is_ipv4() { "IPv4" } else { "IPv6" }.into()]),
            ports: Some(
                w.ports
                    .iter()
                    .filter_map(|p| {
                        Some(ServicePort {
                            name: p.name.clone(),
                            port: p.port?,
                            target_port: Some(IntOrString::Int(p.port?)),
                            protocol: p.protocol.clone(),
                            app_protocol: p.app_protocol.clone(),
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(name: &str, w: &Wanted) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                [
                    (SERVICE_NAME.to_string(), name.to_string()),
                    (MANAGED_BY.to_string(), MANAGER.to_string()),
                    (INGRESS_FOR.to_string(), w.svc.clone()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        address_type: if w.ip.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![w.ip.to_string()],
            target_ref: w.pod.clone(),
            ..Default::default()
        }]),
        ports: Some(w.ports.clone()),
    }
}

/// Makes the global ingress Services exactly those of the endpoints of the exported headless
/// Services `headless` (their MCS slices in `own_slices`), each with an address from the
/// global CIDR of its family in `globals`; returns each endpoint's global address by
/// (namespace, endpoint address).
pub async fn sync(
    local: &Client,
    globals: &[IpNet],
    own_slices: &BTreeMap<Key, EndpointSlice>,
    headless: &BTreeSet<Key>,
) -> Result<BTreeMap<(String, IpAddr), IpAddr>, kube::Error> {
    let want = wanted(own_slices, headless);
    let services: Api<Service> = Api::all(local.clone());
    let all = services.list(&ListParams::default()).await?.items;
    let mut used: BTreeSet<IpAddr> = all.iter().flat_map(super::globalnet::global_ips).collect();
    let have: BTreeMap<Key, Service> = all
        .into_iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(INGRESS_FOR))
        })
        .map(|s| {
            let key = (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            );
            (key, s)
        })
        .collect();
    for ((ns, name), s) in &have {
        if !want.contains_key(&(ns.clone(), name.clone())) {
            delete(local, ns, name).await?;
            used.retain(|ip| !super::globalnet::global_ips(s).contains(ip));
        }
    }
    let mut out = BTreeMap::new();
    for ((ns, name), w) in &want {
        let Some(global) = globals
            .iter()
            .find(|g| g.addr().is_ipv4() == w.ip.is_ipv4())
        else {
            continue;
        };
        let kept = have.get(&(ns.clone(), name.clone())).and_then(|s| {
            super::globalnet::global_ips(s)
                .into_iter()
                .find(|ip| global.contains(ip))
        });
        let ip = match kept {
            Some(ip) => ip,
            None => {
                let Some(ip) = global_ingress_ips(*global).find(|ip| !used.contains(ip)) else {
                    tracing::warn!("global CIDR {global} is exhausted: {ns}/{} endpoint {} has no global address", w.svc, w.ip);
                    continue;
                };
                used.insert(ip);
                let api: Api<Service> = Api::namespaced(local.clone(), ns);
                api.create(&PostParams::default(), &service(name, w, ip))
                    .await?;
                ip
            }
        };
        let slices: Api<EndpointSlice> = Api::namespaced(local.clone(), ns);
        let want_slice = slice(name, w);
        match slices.get_opt(name).await? {
            Some(cur) if cur.endpoints == want_slice.endpoints && cur.ports == want_slice.ports => {
            }
            Some(cur) => {
                let mut next = want_slice;
                next.metadata.resource_version = cur.metadata.resource_version;
                slices.replace(name, &PostParams::default(), &next).await?;
            }
            None => {
                slices.create(&PostParams::default(), &want_slice).await?;
            }
        }
        out.insert((ns.clone(), w.ip), ip);
    }
    Ok(out)
}

async fn delete(local: &Client, ns: &str, name: &str) -> Result<(), kube::Error> {
    for r in [
        Api::<Service>::namespaced(local.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ()),
        Api::<EndpointSlice>::namespaced(local.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ()),
    ] {
        match r {
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            other => other?,
        }
    }
    Ok(())
}

/// Deletes every global ingress Service and slice (the cluster leaves its set).
pub async fn release(local: &Client) -> Result<(), kube::Error> {
    let services: Api<Service> = Api::all(local.clone());
    for s in services
        .list(&ListParams::default().labels(INGRESS_FOR))
        .await?
        .items
    {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        delete(local, &ns, &name).await?;
    }
    Ok(())
}

/// This cluster's MCS slices of headless exports as the other clusters see them under
/// GlobalNet: each endpoint's address replaced by its global one (`globals`, by namespace and
/// endpoint address); an endpoint without one yet is left out.
pub fn globalize(
    own_slices: &BTreeMap<Key, EndpointSlice>,
    headless: &BTreeSet<Key>,
    globals: &BTreeMap<(String, IpAddr), IpAddr>,
) -> BTreeMap<Key, EndpointSlice> {
    let mut out = BTreeMap::new();
    for (key, s) in own_slices {
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let svc = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(super::globalnet::SERVICE_NAME))
            .cloned()
            .unwrap_or_default();
        if !headless.contains(&(ns.clone(), svc)) {
            continue;
        }
        let mut g = s.clone();
        g.endpoints = Some(
            s.endpoints
                .iter()
                .flatten()
                .filter_map(|e| {
                    let ip: IpAddr = e.addresses.first()?.parse().ok()?;
                    let global = globals.get(&(ns.clone(), ip))?;
                    let mut e = e.clone();
                    e.addresses = vec![global.to_string()];
                    Some(e)
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

    fn slice_of(svc: &str, addrs: &[(&str, &str)]) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{svc}-a")),
                namespace: Some("default".into()),
                labels: Some(
                    [(
                        super::super::globalnet::SERVICE_NAME.to_string(),
                        svc.to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                addrs
                    .iter()
                    .map(|(ip, host)| Endpoint {
                        addresses: vec![ip.to_string()],
                        hostname: Some(host.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: Some("tcp".into()),
                port: Some(8080),
                ..Default::default()
            }]),
        }
    }

    #[test]
    fn headless_endpoints_are_imported_at_their_global_addresses_with_their_hostnames() {
        let own: BTreeMap<Key, EndpointSlice> = [
            (
                ("default".to_string(), "db-a".to_string()),
                slice_of("db", &[("10.244.1.5", "db-0"), ("10.244.2.5", "db-1")]),
            ),
            (
                ("default".to_string(), "web-a".to_string()),
                slice_of("web", &[("10.244.1.9", "w")]),
            ),
        ]
        .into();
        let headless: BTreeSet<Key> = [("default".to_string(), "db".to_string())].into();
        // Every endpoint of db is wanted, none of web (not headless).
        let w = wanted(&own, &headless);
        assert_eq!(w.len(), 2);
        assert!(w
            .values()
            .all(|w| w.svc == "db" && w.ports[0].port == Some(8080)));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            w.keys().map(|(_, n)| n.clone()).collect::<BTreeSet<_>>(),
            [
                ingress_name("default", "db", ip("10.244.1.5")),
                ingress_name("default", "db", ip("10.244.2.5"))
            ]
            .into()
        );
        // Only db-0 has its global address yet: db-1 is left out until it has.
        let globals = [(("default".to_string(), ip("10.244.1.5")), ip("242.0.0.7"))].into();
        let g = globalize(&own, &headless, &globals);
        assert_eq!(g.len(), 1, "web is not headless");
        let e = g[&("default".to_string(), "db-a".to_string())]
            .endpoints
            .clone()
            .unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].addresses, ["242.0.0.7"]);
        assert_eq!(e[0].hostname.as_deref(), Some("db-0"));
    }

    #[test]
    fn an_ingress_service_serves_the_endpoint_ports_at_its_global_address() {
        let w = Wanted {
            svc: "db".into(),
            ip: "10.244.1.5".parse().unwrap(),
            ports: vec![EndpointPort {
                name: Some("tcp".into()),
                port: Some(8080),
                ..Default::default()
            }],
            pod: None,
        };
        let s = service("gi-1", &w, "242.0.0.7".parse().unwrap());
        let spec = s.spec.unwrap();
        assert_eq!(spec.selector, None, "selectorless: its slice is ours");
        let p = &spec.ports.unwrap()[0];
        assert_eq!(
            (p.port, p.target_port.clone()),
            (8080, Some(IntOrString::Int(8080)))
        );
        assert_eq!(
            s.metadata.annotations.unwrap()[ANNOTATION_GLOBAL_IP],
            "242.0.0.7"
        );
        let sl = slice("gi-1", &w);
        assert_eq!(sl.metadata.labels.unwrap()[SERVICE_NAME], "gi-1");
        assert_eq!(sl.endpoints.unwrap()[0].addresses, ["10.244.1.5"]);
    }
}
