//! The fabric's routes for Service addresses that live outside the cluster network: LoadBalancer
//! ingress IPs (`status.loadBalancer.ingress`, assigned by the control plane from the lab's pool)
//! and `spec.externalIPs`. The fabric is the lab's "cloud load balancer": one /32 route per
//! address via a node's underlay address; the node's proxy accepts the address in nftables.
//!
//! `externalTrafficPolicy: Local` routes only via nodes with a local ready endpoint (as a cloud
//! LB that health-checks `healthCheckNodePort` would); with none, the address still goes to a
//! Ready node, whose proxy drops it — the behaviour a client of such a Service sees. Other
//! Services spread their addresses over the Ready nodes by hashing the address.
//!
//! With `--backend bgp` it keeps no route: the nodes announce these addresses over BGP
//! (`sarasa_agent::bgp_services`), and the fabric's router spreads each over the nodes that
//! announce it (ECMP).
//!
//! Routes this controller owns carry [`SERVICE_ROUTE_METRIC`], so reconciling is a diff against
//! exactly those routes (a restarted control plane adopts or removes what it left).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::StreamExt;
use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use sarasa_netns::{Family, Netlink, Route};

use crate::spec::LabSpec;
use crate::LabError;

/// Metric marking the fabric routes this controller owns.
pub const SERVICE_ROUTE_METRIC: u32 = 1033;

/// A node as the fabric routes to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHop {
    pub name: String,
    /// The node's underlay address (the next hop).
    pub ip: Ipv4Addr,
    /// The Node's Ready condition is True.
    pub ready: bool,
}

/// Desired routes: Service address → next-hop node address. Pure: the same objects always give
/// the same routes. IPv6 addresses are skipped (the lab's underlay is IPv4 only).
pub fn desired_routes(
    services: &[Service],
    slices: &[EndpointSlice],
    nodes: &[NodeHop],
) -> BTreeMap<Ipv4Addr, Ipv4Addr> {
    let mut nodes: Vec<&NodeHop> = nodes.iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let ready: Vec<&NodeHop> = nodes.iter().copied().filter(|n| n.ready).collect();
    // With no Ready node at all, any node is better than no route.
    let spread = if ready.is_empty() { &nodes } else { &ready };
    let mut out = BTreeMap::new();
    for svc in services {
        let addrs = external_addresses(svc);
        if addrs.is_empty() {
            continue;
        }
        let local = svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local");
        let with_endpoints: Vec<&NodeHop> = if local {
            let names = nodes_with_ready_endpoints(svc, slices);
            spread
                .iter()
                .copied()
                .filter(|n| names.contains(n.name.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        let candidates = if with_endpoints.is_empty() {
            spread
        } else {
            &with_endpoints
        };
        for ip in addrs {
            if let Some(hop) = pick(candidates, ip) {
                // Two Services claiming one address: the first (by listing order) wins.
                out.entry(ip).or_insert(hop.ip);
            }
        }
    }
    out
}

/// Spreads addresses over candidates by hashing the address (stable while the set is).
fn pick<'a>(candidates: &[&'a NodeHop], ip: Ipv4Addr) -> Option<&'a NodeHop> {
    if candidates.is_empty() {
        return None;
    }
    let h = u32::from(ip).wrapping_mul(2_654_435_761);
    Some(candidates[(h as usize) % candidates.len()])
}

/// The Service's LoadBalancer ingress IPs and externalIPs (IPv4).
pub fn external_addresses(svc: &Service) -> BTreeSet<Ipv4Addr> {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref());
    let external = svc
        .spec
        .as_ref()
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str);
    ingress
        .chain(external)
        .filter_map(|s| s.parse::<Ipv4Addr>().ok())
        .collect()
}

/// Nodes holding a ready endpoint of `svc` (EndpointSlices labelled with its name).
fn nodes_with_ready_endpoints<'a>(svc: &Service, slices: &'a [EndpointSlice]) -> BTreeSet<&'a str> {
    let ns = svc.namespace().unwrap_or_else(|| "default".into());
    let name = svc.name_any();
    slices
        .iter()
        .filter(|s| s.namespace().unwrap_or_else(|| "default".into()) == ns)
        .filter(|s| s.labels().get("kubernetes.io/service-name") == Some(&name))
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.node_name.as_deref())
        .collect()
}

/// Nodes of the lab with their Ready condition from the API (a node without a Node object yet
/// counts as not Ready).
pub fn node_hops(spec: &LabSpec, objects: &[Node]) -> Vec<NodeHop> {
    spec.nodes
        .iter()
        .map(|n| {
            let ready = objects
                .iter()
                .find(|o| o.name_any() == n.name)
                .and_then(|o| o.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            NodeHop {
                name: n.name.clone(),
                ip: n.ip,
                ready,
            }
        })
        .collect()
}

/// Makes the routing table of the calling thread's namespace hold exactly `desired` among the
/// routes marked with [`SERVICE_ROUTE_METRIC`]; returns how many routes changed.
pub fn apply_routes(
    nl: &mut Netlink,
    desired: &BTreeMap<Ipv4Addr, Ipv4Addr>,
) -> Result<usize, LabError> {
    let current: BTreeMap<Ipv4Addr, Option<IpAddr>> = nl
        .routes(Some(Family::V4))
        .map_err(LabError::netns)?
        .into_iter()
        .filter(|r| r.metric == Some(SERVICE_ROUTE_METRIC) && r.dst.prefix_len() == 32)
        .filter_map(|r| match r.dst.addr() {
            IpAddr::V4(a) => Some((a, r.gateway)),
            IpAddr::V6(_) => None,
        })
        .collect();
    let mut changed = 0;
    for (ip, gw) in &current {
        if !desired.contains_key(ip) {
            nl.route_del(&owned_route(*ip, *gw))
                .map_err(LabError::netns)?;
            changed += 1;
        }
    }
    for (ip, hop) in desired {
        if current.get(ip) != Some(&Some(IpAddr::V4(*hop))) {
            nl.route_replace(&owned_route(*ip, Some(IpAddr::V4(*hop))))
                .map_err(LabError::netns)?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn owned_route(ip: Ipv4Addr, gw: Option<IpAddr>) -> Route {
    let mut r = Route::new(IpNet::V4(Ipv4Net::from(ip))).metric(SERVICE_ROUTE_METRIC);
    r.gateway = gw;
    r
}

/// Watches Services, EndpointSlices and Nodes and keeps the fabric routes current. Runs in the
/// control-plane process, which lives in the fabric namespace.
pub async fn run(spec: LabSpec, client: Client) -> Result<(), LabError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let svc_store = watch_all::<Service>(&client, &tx, "services").await?;
    let eps_store = watch_all::<EndpointSlice>(&client, &tx, "endpointslices").await?;
    let node_store = watch_all::<Node>(&client, &tx, "nodes").await?;
    // A periodic pass repairs routes removed behind the controller's back.
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut applied: Option<BTreeMap<Ipv4Addr, Ipv4Addr>> = None;
    loop {
        let forced = tokio::select! {
            _ = rx.recv() => false,
            _ = tick.tick() => true,
        };
        let services: Vec<Service> = svc_store.state().iter().map(|s| (**s).clone()).collect();
        let slices: Vec<EndpointSlice> = eps_store.state().iter().map(|s| (**s).clone()).collect();
        let nodes: Vec<Node> = node_store.state().iter().map(|s| (**s).clone()).collect();
        // With the BGP backend the nodes announce these addresses to the fabric's router
        // themselves (MetalLB's BGP mode): this controller keeps none.
        let desired = if spec.backend == crate::spec::Backend::Bgp {
            BTreeMap::new()
        } else {
            desired_routes(&services, &slices, &node_hops(&spec, &nodes))
        };
        if !forced && applied.as_ref() == Some(&desired) {
            continue;
        }
        let want = desired.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut nl = Netlink::current().map_err(LabError::netns)?;
            apply_routes(&mut nl, &want)
        })
        .await
        .map_err(|e| LabError::Process(format!("service route task: {e}")))?;
        match result {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(routes = desired.len(), changed = n, "fabric service routes");
                }
                applied = Some(desired);
            }
            Err(e) => {
                tracing::warn!("fabric service routes: {e}");
                applied = None;
            }
        }
    }
}

/// A store of every `K` kept current by a watch, ready (first list done) when returned; each
/// change is signalled on `tx`.
pub(crate) async fn watch_all<K>(
    client: &Client,
    tx: &tokio::sync::mpsc::Sender<()>,
    what: &'static str,
) -> Result<reflector::Store<K>, LabError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    spawn_watch(
        reflector(
            writer,
            watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .touched_objects(),
        tx.clone(),
        what,
    );
    store
        .wait_until_ready()
        .await
        .map_err(|e| LabError::Api(format!("{what} watch never became ready: {e}")))?;
    Ok(store)
}

fn spawn_watch<K, S>(stream: S, tx: tokio::sync::mpsc::Sender<()>, what: &'static str)
where
    S: futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::warn!("{what} watch: {e}");
            }
            let _ = tx.try_send(());
        }
    });
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
                ready: true,
            })
            .collect()
    }

    fn svc(name: &str, v: serde_json::Value) -> Service {
        let mut o = json!({"metadata": {"name": name, "namespace": "default"}});
        o.as_object_mut()
            .expect("object")
            .extend(v.as_object().expect("object").clone());
        serde_json::from_value(o).expect("service")
    }

    fn slice(svc: &str, eps: &[(&str, bool)]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{svc}-x"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": eps.iter().enumerate().map(|(i, (node, ready))| json!({
                "addresses": [format!("10.244.0.{}", i + 2)],
                "nodeName": node,
                "conditions": {"ready": ready},
            })).collect::<Vec<_>>(),
        }))
        .expect("slice")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn lb_ingress_and_external_ips_get_one_route_each_via_a_ready_node() {
        let s = svc(
            "web",
            json!({"spec": {"type": "LoadBalancer", "externalIPs": ["203.0.113.50"]},
                   "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}),
        );
        let plain = svc("plain", json!({"spec": {"type": "ClusterIP"}}));
        let mut ns = nodes();
        ns[0].ready = false;
        let r = desired_routes(&[s, plain], &[], &ns);
        assert_eq!(
            r.keys().copied().collect::<Vec<_>>(),
            [ip("198.51.100.1"), ip("203.0.113.50")]
        );
        for hop in r.values() {
            assert_ne!(*hop, ip("192.168.33.11"), "node-1 is not Ready: {r:?}");
        }
    }

    #[test]
    fn addresses_spread_over_ready_nodes() {
        let services: Vec<Service> = (1..=30)
            .map(|i| {
                svc(
                    &format!("s{i}"),
                    json!({"spec": {"type": "LoadBalancer"},
                       "status": {"loadBalancer": {"ingress": [{"ip": format!("198.51.100.{i}")}]}}}),
                )
            })
            .collect();
        let r = desired_routes(&services, &[], &nodes());
        let hops: BTreeSet<Ipv4Addr> = r.values().copied().collect();
        assert_eq!(hops.len(), 3, "{r:?}");
        // Stable: the same input gives the same routes.
        assert_eq!(r, desired_routes(&services, &[], &nodes()));
    }

    #[test]
    fn local_policy_routes_only_via_nodes_with_a_ready_local_endpoint() {
        let services: Vec<Service> = (1..=20)
            .map(|i| {
                svc(
                    &format!("s{i}"),
                    json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
                       "status": {"loadBalancer": {"ingress": [{"ip": format!("198.51.100.{i}")}]}}}),
                )
            })
            .collect();
        let slices: Vec<EndpointSlice> = (1..=20)
            .map(|i| {
                slice(
                    &format!("s{i}"),
                    &[("node-2", true), ("node-3", false), ("node-9", true)],
                )
            })
            .collect();
        let r = desired_routes(&services, &slices, &nodes());
        assert_eq!(r.len(), 20);
        assert!(r.values().all(|h| *h == ip("192.168.33.12")), "{r:?}");
    }

    #[test]
    fn local_policy_without_local_endpoints_still_routes_to_a_node_that_drops() {
        let s = svc(
            "web",
            json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
                   "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}}),
        );
        let r = desired_routes(&[s], &[slice("web", &[("node-1", false)])], &nodes());
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn slices_of_other_services_or_namespaces_do_not_count() {
        let s = svc(
            "web",
            json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
                   "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.8"}]}}}),
        );
        let mut other_ns = slice("web", &[("node-3", true)]);
        other_ns.metadata.namespace = Some("other".into());
        let slices = [other_ns, slice("db", &[("node-2", true)])];
        let names = nodes_with_ready_endpoints(&s, &slices);
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn ipv6_and_unparsable_addresses_are_skipped() {
        let s = svc(
            "web",
            json!({"spec": {"type": "LoadBalancer", "externalIPs": ["2001:db8::1", "nope"]},
                   "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}}),
        );
        assert!(desired_routes(&[s], &[], &nodes()).is_empty());
    }

    #[test]
    fn no_nodes_no_routes() {
        let s = svc(
            "web",
            json!({"spec": {"type": "LoadBalancer"},
                   "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}}),
        );
        assert!(desired_routes(&[s], &[], &[]).is_empty());
    }
}

/// Privileged: the diff against a real routing table, in a namespace this test creates.
#[cfg(test)]
mod netns_tests {
    use super::*;
    use sarasa_netns::{NetNs, Veth};

    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = NetNs::delete(&self.0);
        }
    }

    #[test]
    fn apply_routes_adds_moves_and_removes_only_its_own_routes() {
        let name = format!("sarasa-t{}-svcroutes", std::process::id());
        let ns = NetNs::create(&name).expect("creating a namespace (needs root)");
        let _guard = Guard(name);
        let mut nl = Netlink::open_in(&ns).expect("netlink");
        nl.add_veth(&Veth {
            name: "up0".into(),
            peer_name: "up1".into(),
            peer_netns: None,
            mtu: None,
            mac: None,
            peer_mac: None,
        })
        .expect("veth");
        for l in ["up0", "up1"] {
            let idx = nl.link(l).expect("link").index;
            nl.set_up(idx).expect("up");
        }
        let up0 = nl.link("up0").expect("link").index;
        nl.addr_add(up0, "192.168.33.1/24".parse().expect("net"))
            .expect("address");
        // A foreign /32 route (no owner metric) must survive every reconcile.
        let foreign = Route::new("192.0.2.99/32".parse().expect("net"))
            .via("192.168.33.13".parse().expect("ip"));
        nl.route_add(&foreign).expect("foreign route");

        let ours = |r: &mut Netlink| -> BTreeMap<String, String> {
            r.routes(Some(Family::V4))
                .expect("routes")
                .into_iter()
                .filter(|r| r.metric == Some(SERVICE_ROUTE_METRIC))
                .map(|r| {
                    (
                        r.dst.addr().to_string(),
                        r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    )
                })
                .collect()
        };
        let mut want = BTreeMap::new();
        want.insert(ip("198.51.100.1"), ip("192.168.33.11"));
        want.insert(ip("192.0.2.50"), ip("192.168.33.12"));
        assert_eq!(apply_routes(&mut nl, &want).expect("apply"), 2);
        assert_eq!(
            apply_routes(&mut nl, &want).expect("apply"),
            0,
            "idempotent"
        );
        want.insert(ip("198.51.100.1"), ip("192.168.33.13"));
        want.remove(&ip("192.0.2.50"));
        assert_eq!(apply_routes(&mut nl, &want).expect("apply"), 2);
        assert_eq!(
            ours(&mut nl),
            BTreeMap::from([("198.51.100.1".to_string(), "192.168.33.13".to_string())])
        );
        assert_eq!(apply_routes(&mut nl, &BTreeMap::new()).expect("apply"), 1);
        assert!(ours(&mut nl).is_empty());
        let all = nl.routes(Some(Family::V4)).expect("routes");
        assert!(
            all.iter().any(|r| r.dst == foreign.dst),
            "a route the controller does not own was removed: {all:?}"
        );
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }
}
