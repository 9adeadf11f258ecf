//! One Service (with its EndpointSlices) → its own chains, affinity sets and map elements,
//! split into the part that lives in the main table and the part in its shard table.
//! Nothing here depends on other Services, which is what makes updates incremental.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use sarasa_model::{
    AddressType, EndpointSlice, IpFamily, NodeInfo, Protocol, Service, ServicePort, ServiceRef,
    SessionAffinity, TrafficPolicy,
};
use sarasa_nft::{Chain, Element, Expr, Key, L4Proto, MetaKey, Rule, Set, Stmt, Value, Verdict};

use crate::base::{addr_type, daddr, saddr};
use crate::config::ProxyConfig;
use crate::names::{global, PortNames};

/// What one Service contributes to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Part {
    pub chains: Vec<Chain>,
    pub sets: Vec<Set>,
    /// (global map or set of that table, key, element).
    pub elements: Vec<(&'static str, Key, Element)>,
}

impl Part {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty() && self.elements.is_empty()
    }
}

/// Everything one Service contributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fragment {
    /// Main table: ClusterIP, no-endpoint and firewall elements, firewall chains.
    pub main: Part,
    /// Its shard table: dispatch elements, svc/local/ext/ep chains, affinity sets.
    pub shard: Part,
    pub health_check: Option<HealthCheck>,
    /// UDP destinations and the endpoints they lead to (for conntrack cleanup).
    pub udp: BTreeMap<UdpDest, BTreeSet<IpAddr>>,
}

/// A health-check NodePort the agent must serve (not programmed in nftables): HTTP 200 with
/// the local endpoint count when there are local endpoints, 503 otherwise (as kube-proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub service: ServiceRef,
    pub node_port: u16,
    /// Ready (or serving-terminating) endpoints of the Service on this node.
    pub local_endpoints: usize,
}

/// Where UDP packets for a Service arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UdpDest {
    /// A ClusterIP, externalIP or LoadBalancer IP and the Service port.
    Ip { addr: IpAddr, port: u16 },
    /// A NodePort on any local address, in one family.
    NodePort { port: u16, family: IpFamily },
}

/// One endpoint of one Service port, in one family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Backend {
    ip: IpAddr,
    port: u16,
    local: bool,
    ready: bool,
    serving_terminating: bool,
}

fn family_of_slice(t: AddressType) -> Option<IpFamily> {
    match t {
        AddressType::Ipv4 => Some(IpFamily::V4),
        AddressType::Ipv6 => Some(IpFamily::V6),
        AddressType::Fqdn => None,
    }
}

/// The endpoints of `port` in `family`, deduplicated (an endpoint may sit in two slices while
/// the controller moves it) and sorted.
fn backends<'a>(
    port: &ServicePort,
    family: IpFamily,
    slices: impl Iterator<Item = &'a EndpointSlice>,
    node: &NodeInfo,
) -> Vec<Backend> {
    let mut out: BTreeMap<(IpAddr, u16), Backend> = BTreeMap::new();
    for slice in slices {
        if family_of_slice(slice.address_type) != Some(family) {
            continue;
        }
        let Some(ep_port) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(ip) = ep.addresses.first() else {
                continue;
            };
            if IpFamily::of(ip) != family {
                continue;
            }
            let c = ep.conditions;
            let b = Backend {
                ip: *ip,
                port: ep_port.port,
                local: !node.name.is_empty() && ep.node_name.as_deref() == Some(&node.name),
                ready: c.ready,
                serving_terminating: c.serving && c.terminating,
            };
            // Prefer the more usable copy of a duplicate.
            out.entry((b.ip, b.port))
                .and_modify(|old| {
                    if b.ready && !old.ready {
                        *old = b.clone();
                    }
                })
                .or_insert(b);
        }
    }
    out.into_values().collect()
}

/// Ready endpoints; when none is ready, serving-and-terminating ones.
fn usable<'a>(all: impl Iterator<Item = &'a Backend> + Clone) -> Vec<&'a Backend> {
    let ready: Vec<&Backend> = all.clone().filter(|b| b.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    all.filter(|b| b.serving_terminating).collect()
}

/// From this many endpoints on, one `numgen random mod N vmap { ... }` picks the endpoint
/// (O(1) per packet). Below, a short run of `numgen random mod (N-i) 0 goto ep_i` rules does
/// (uniform, like iptables' statistic): each anonymous vmap is a kernel set, and the kernel
/// allocates anonymous set names in time linear in the sets of the table, so one vmap per
/// Service makes programming 10k Services take ~10 s and 100k Services hours.
pub(crate) const VMAP_MIN_ENDPOINTS: usize = 9;

/// Rules choosing one of `targets` uniformly at random.
fn pick_endpoint(targets: Vec<Verdict>) -> Vec<Rule> {
    let n = targets.len();
    if n >= VMAP_MIN_ENDPOINTS {
        return vec![Rule::new().then(Stmt::NumgenVmap { targets })];
    }
    let mut rules = Vec::with_capacity(n);
    for (i, t) in targets.into_iter().enumerate() {
        let left = (n - i) as u32;
        let rule = if left > 1 {
            Rule::new().eq(Expr::NumgenRandom(left), Expr::Value(Value::Num(0)))
        } else {
            Rule::new()
        };
        rules.push(rule.verdict(t));
    }
    rules
}

fn goto(c: &str) -> Verdict {
    Verdict::Goto(c.to_string())
}

fn jump_masq() -> Stmt {
    Stmt::Verdict(Verdict::Jump(global::MARK_FOR_MASQUERADE.to_string()))
}

fn svc_key(addr: IpAddr, proto: L4Proto, port: u16) -> Key {
    Key(vec![
        Value::Addr(addr),
        Value::Proto(proto),
        Value::Port(port),
    ])
}

fn port_key(proto: L4Proto, port: u16) -> Key {
    Key(vec![Value::Proto(proto), Value::Port(port)])
}

/// Compiles one Service. Returns an empty fragment for Services that are not proxied.
/// `sref` is `svc`'s key.
pub(crate) fn compile_service<'a>(
    svc: &Service,
    slices: impl Iterator<Item = &'a EndpointSlice> + Clone,
    sref: &ServiceRef,
    node: &NodeInfo,
    config: &ProxyConfig,
) -> Fragment {
    let mut frag = Fragment::default();
    if !svc.is_proxied() {
        return frag;
    }
    let mut local_total = 0usize;
    let mut seen_family = BTreeSet::new();
    for cluster_ip in &svc.cluster_ips {
        let family = IpFamily::of(cluster_ip);
        // One ClusterIP per family; a second one would be invalid input.
        if !seen_family.insert(family) {
            continue;
        }
        for port in &svc.ports {
            let n = compile_port(
                &mut frag,
                svc,
                sref,
                port,
                family,
                *cluster_ip,
                slices.clone(),
                node,
                config,
            );
            local_total = local_total.max(n);
        }
    }
    if svc.external_traffic_policy == TrafficPolicy::Local {
        if let Some(p) = svc.health_check_node_port {
            frag.health_check = Some(HealthCheck {
                service: sref.clone(),
                node_port: p,
                local_endpoints: local_total,
            });
        }
    }
    frag
}

/// Compiles one Service port in one family; returns the number of local endpoints.
#[allow(clippy::too_many_arguments)]
fn compile_port<'a>(
    frag: &mut Fragment,
    svc: &Service,
    sref: &ServiceRef,
    port: &ServicePort,
    family: IpFamily,
    cluster_ip: IpAddr,
    slices: impl Iterator<Item = &'a EndpointSlice>,
    node: &NodeInfo,
    config: &ProxyConfig,
) -> usize {
    let names = PortNames::new(sref, port, family);
    let proto = L4Proto::from(port.protocol);
    let all = backends(port, family, slices, node);
    let cluster_eps = usable(all.iter());
    let local_eps = usable(all.iter().filter(|b| b.local));

    let same_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
        ips.iter()
            .copied()
            .filter(|ip| IpFamily::of(ip) == family)
            .collect()
    };
    let external_ips = same_family(&svc.external_ips);
    let lb_ips = same_family(&svc.load_balancer_ips);
    let node_port = if svc.has_node_ports() {
        port.node_port
    } else {
        None
    };
    let externally_accessible =
        !external_ips.is_empty() || !lb_ips.is_empty() || node_port.is_some();

    let itp_local = svc.internal_traffic_policy == TrafficPolicy::Local;
    let etp_local = externally_accessible && svc.external_traffic_policy == TrafficPolicy::Local;
    let has_endpoints = !cluster_eps.is_empty() || !local_eps.is_empty();
    let has_internal = if itp_local {
        !local_eps.is_empty()
    } else {
        has_endpoints
    };
    let has_external = if etp_local {
        !local_eps.is_empty()
    } else {
        has_endpoints
    };
    let cluster_chain = names.cluster();
    let local_chain = names.local();
    let uses_cluster_chain = !cluster_eps.is_empty() && (!itp_local || externally_accessible);
    let uses_local_chain = !local_eps.is_empty() && (itp_local || etp_local);
    let internal_chain = if itp_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let external_policy_chain = if etp_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let ext_chain = names.external();
    let uses_ext_chain = has_endpoints && externally_accessible;
    let comment = names.comment();

    // Verdicts for the filter stage when there is nothing to DNAT to.
    let reject = Verdict::Goto(global::REJECT.to_string());
    let internal_filter = if !has_endpoints {
        reject.clone()
    } else {
        Verdict::Drop
    };
    let external_filter = internal_filter.clone();
    let with_comment = |v: Verdict| Element {
        comment: Some(comment.clone()),
        ..Element::verdict(v)
    };

    // ClusterIP.
    frag.main.elements.push((
        global::cluster_ips(family),
        Key::one(cluster_ip),
        Element::default(),
    ));
    if has_internal {
        frag.shard.elements.push((
            global::service_ips(family),
            svc_key(cluster_ip, proto, port.port),
            Element::verdict(goto(internal_chain)),
        ));
    } else {
        frag.main.elements.push((
            global::no_endpoint_services(family),
            svc_key(cluster_ip, proto, port.port),
            with_comment(internal_filter.clone()),
        ));
    }
    // GlobalNet's global ingress addresses: the other clusters reach the Service here, as
    // its ClusterIP is reached (internal policy, their egress address kept).
    let global_ips = same_family(&svc.global_ips);
    for ip in &global_ips {
        if has_internal {
            frag.shard.elements.push((
                global::service_ips(family),
                svc_key(*ip, proto, port.port),
                Element::verdict(goto(internal_chain)),
            ));
        } else {
            frag.main.elements.push((
                global::no_endpoint_services(family),
                svc_key(*ip, proto, port.port),
                with_comment(internal_filter.clone()),
            ));
        }
    }
    // externalIPs and LoadBalancer IPs.
    for ip in external_ips.iter().chain(&lb_ips) {
        if has_endpoints {
            frag.shard.elements.push((
                global::service_ips(family),
                svc_key(*ip, proto, port.port),
                Element::verdict(goto(&ext_chain)),
            ));
        }
        if !has_external {
            frag.main.elements.push((
                global::no_endpoint_services(family),
                svc_key(*ip, proto, port.port),
                with_comment(external_filter.clone()),
            ));
        }
    }
    // loadBalancerSourceRanges.
    let ranges: Vec<_> = svc
        .load_balancer_source_ranges
        .iter()
        .filter(|n| IpFamily::of(&n.addr()) == family)
        .collect();
    if !lb_ips.is_empty() && !svc.load_balancer_source_ranges.is_empty() {
        let fw = names.firewall();
        let mut allowed: Vec<Vec<Value>> =
            ranges.iter().map(|n| vec![Value::Prefix(**n)]).collect();
        // A node inside the ranges reaching the LB IP may loop back with the LB IP as source.
        if node
            .addresses
            .iter()
            .any(|a| ranges.iter().any(|n| n.contains(a)))
        {
            allowed.extend(lb_ips.iter().map(|ip| vec![Value::Addr(*ip)]));
        }
        let rule = if allowed.is_empty() {
            // Ranges only of the other family: nobody of this family may pass.
            Rule::new().verdict(Verdict::Drop)
        } else {
            Rule::new()
                .ne(saddr(family), Expr::AnonSet(allowed))
                .verdict(Verdict::Drop)
        };
        frag.main
            .chains
            .push(Chain::new(&fw).rule(rule.comment(comment.clone())));
        for ip in &lb_ips {
            frag.main.elements.push((
                global::firewall_ips(family),
                svc_key(*ip, proto, port.port),
                with_comment(goto(&fw)),
            ));
        }
    }
    // NodePort.
    if let Some(np) = node_port {
        if has_endpoints {
            frag.shard.elements.push((
                global::service_nodeports(family),
                port_key(proto, np),
                Element::verdict(goto(&ext_chain)),
            ));
        }
        if !has_external {
            frag.main.elements.push((
                global::no_endpoint_nodeports(family),
                port_key(proto, np),
                with_comment(external_filter.clone()),
            ));
        }
    }

    // Session affinity: one dynamic set per endpoint, remembering client addresses.
    let affinity = match svc.session_affinity {
        SessionAffinity::ClientIp { timeout_seconds } => Some(timeout_seconds),
        SessionAffinity::None => None,
    };
    let mut endpoint_union: BTreeSet<&Backend> = BTreeSet::new();
    if uses_cluster_chain {
        endpoint_union.extend(cluster_eps.iter().copied());
    }
    if uses_local_chain {
        endpoint_union.extend(local_eps.iter().copied());
    }

    // Policy chains: pick an endpoint.
    let masq_rule = |chain: &str| -> Option<Rule> {
        // Off-cluster sources to the ClusterIP are masqueraded (they may be bounced to another
        // node); pods keep their address.
        if chain != internal_chain || !has_internal {
            return None;
        }
        let has_cluster_cidr = config
            .cluster_cidrs
            .iter()
            .any(|c| IpFamily::of(&c.addr()) == family);
        has_cluster_cidr.then(|| {
            Rule::new()
                .eq(daddr(family), Expr::value(cluster_ip))
                .eq(Expr::Meta(MetaKey::L4proto), Expr::value(proto))
                .eq(
                    Expr::Payload(sarasa_nft::Field::ThDport),
                    Expr::Value(Value::Port(port.port)),
                )
                .ne(
                    saddr(family),
                    Expr::Set(global::cluster_cidrs(family).into()),
                )
                .then(jump_masq())
        })
    };
    let policy_chain = |name: &str, eps: &[&Backend]| -> Chain {
        let mut c = Chain::new(name);
        if let Some(r) = masq_rule(name) {
            c.push(r);
        }
        if affinity.is_some() {
            for b in eps {
                c.push(
                    Rule::new()
                        .eq(saddr(family), Expr::Set(names.affinity(&b.ip, b.port)))
                        .verdict(goto(&names.endpoint(&b.ip, b.port))),
                );
            }
        }
        let targets: Vec<Verdict> = eps
            .iter()
            .map(|b| goto(&names.endpoint(&b.ip, b.port)))
            .collect();
        for rule in pick_endpoint(targets) {
            c.push(rule);
        }
        if let Some(last) = c.rules.last_mut() {
            last.comment = Some(comment.clone());
        }
        c
    };
    if uses_cluster_chain {
        frag.shard
            .chains
            .push(policy_chain(&cluster_chain, &cluster_eps));
    }
    if uses_local_chain {
        frag.shard
            .chains
            .push(policy_chain(&local_chain, &local_eps));
    }

    // External chain: NodePort / externalIPs / LB IPs enter here.
    if uses_ext_chain {
        let mut c = Chain::new(&ext_chain);
        if !etp_local {
            // Cluster policy may forward to another node: masquerade so replies come back.
            c.push(Rule::new().then(jump_masq()));
        } else {
            // Pods reaching an external address of the Service behave as if they went out to
            // the load balancer and came back: cluster policy, no masquerade.
            if uses_cluster_chain {
                c.push(
                    Rule::new()
                        .eq(
                            saddr(family),
                            Expr::Set(global::cluster_cidrs(family).into()),
                        )
                        .verdict(goto(&cluster_chain))
                        .comment("short-circuit pod traffic"),
                );
                // The node's own traffic has a local source address: masquerade, cluster policy.
                c.push(
                    Rule::new()
                        .eq(
                            Expr::FibSaddrType,
                            Expr::keyword(sarasa_nft::Keyword::Local),
                        )
                        .then(jump_masq())
                        .comment("masquerade local traffic"),
                );
                c.push(
                    Rule::new()
                        .eq(
                            Expr::FibSaddrType,
                            Expr::keyword(sarasa_nft::Keyword::Local),
                        )
                        .verdict(goto(&cluster_chain))
                        .comment("short-circuit local traffic"),
                );
            }
        }
        if has_external {
            c.push(Rule::new().verdict(goto(external_policy_chain)));
        } else {
            // Dropped in filter (no-endpoint element) anyway; dropping here keeps the NodePort
            // chains of later hooks (other shards) from DNATing what matched an IP.
            c.push(
                Rule::new()
                    .verdict(Verdict::Drop)
                    .comment("no local endpoints"),
            );
        }
        frag.shard.chains.push(c);
    }

    // Endpoint chains.
    for b in &endpoint_union {
        let mut c = Chain::new(names.endpoint(&b.ip, b.port));
        // Hairpin: a pod reaching itself through the Service.
        c.push(
            Rule::new()
                .eq(saddr(family), Expr::value(b.ip))
                .then(jump_masq()),
        );
        let mut dnat = Rule::new();
        if let Some(timeout) = affinity {
            let set = names.affinity(&b.ip, b.port);
            let mut s = Set::new(&set, vec![addr_type(family)]);
            s.flags.dynamic = true;
            s.flags.timeout = true;
            s.timeout = Some(timeout);
            frag.shard.sets.push(s);
            dnat = dnat.then(Stmt::UpdateSet {
                set,
                key: saddr(family),
                timeout: None,
            });
        }
        c.push(
            dnat.eq(Expr::Meta(MetaKey::L4proto), Expr::value(proto))
                .then(Stmt::Dnat {
                    addr: b.ip,
                    port: Some(b.port),
                }),
        );
        frag.shard.chains.push(c);
    }

    if port.protocol == Protocol::Udp {
        let eps: BTreeSet<IpAddr> = endpoint_union.iter().map(|b| b.ip).collect();
        let mut dests: Vec<UdpDest> = std::iter::once(cluster_ip)
            .chain(global_ips.iter().copied())
            .chain(external_ips.iter().copied())
            .chain(lb_ips.iter().copied())
            .map(|addr| UdpDest::Ip {
                addr,
                port: port.port,
            })
            .collect();
        if let Some(np) = node_port {
            dests.push(UdpDest::NodePort { port: np, family });
        }
        for d in dests {
            frag.udp.entry(d).or_default().extend(eps.iter().copied());
        }
    }
    local_eps.len()
}
