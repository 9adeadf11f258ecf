//! Reads the interpreter's steps through one hook and says what they mean: which Service and
//! port matched (from the map element's comment), how an endpoint was picked, DNAT and
//! masquerade, MSS clamping, which NetworkPolicy rule allowed or which policies isolate and
//! deny, rejects and drops — each with the table, chain and rule behind it.

use std::net::IpAddr;

use sarasa_nft::interp::{Event, HookVerdict, Path, Step};
use sarasa_nft::{Hook, Key, RejectKind, Table, Value, Verdict as NftVerdict};
use sarasa_policy::{parse_allow_comment, Direction, PodKey};

use crate::result::{Hop, PolicyHit, RuleRef, ServiceHit};
use crate::world::World;

/// What one hook did to the packet, explained.
#[derive(Debug, Default)]
pub(crate) struct Explained {
    pub hops: Vec<Hop>,
    pub service: Option<ServiceHit>,
    pub policies: Vec<PolicyHit>,
    /// The reason when the hook dropped or rejected.
    pub refusal: Option<String>,
}

pub(crate) fn hook_name(h: Hook) -> &'static str {
    h.as_str()
}

fn family_of(step: &Step, tables: &[&Table]) -> &'static str {
    tables
        .iter()
        .find(|t| t.name == step.table)
        .map(|t| t.family.as_str())
        .unwrap_or("inet")
}

fn cite(step: &Step, tables: &[&Table]) -> String {
    let family = family_of(step, tables);
    match step.rule {
        Some(r) => format!(
            "table {family} {} chain {} rule #{r}{}",
            step.table,
            step.chain,
            step.comment
                .as_deref()
                .map(|c| format!(" \"{c}\""))
                .unwrap_or_default()
        ),
        None => format!("table {family} {} chain {}", step.table, step.chain),
    }
}

fn key_text(key: &Key) -> String {
    key.0
        .iter()
        .map(|v| match v {
            Value::Addr(a) => a.to_string(),
            Value::Prefix(p) => p.to_string(),
            Value::Proto(p) => p.as_str().to_string(),
            Value::Port(p) => p.to_string(),
            Value::Mark(m) => format!("{m:#x}"),
            Value::Ifname(i) => i.clone(),
            Value::Num(n) => n.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" . ")
}

/// The comment of map element `key` in `map` of `table`: the proxy writes the Service port's
/// key there (`ns/name/proto/port/family`).
fn element_comment(tables: &[&Table], table: &str, map: &str, key: &Key) -> Option<String> {
    tables
        .iter()
        .find(|t| t.name == table)?
        .sets
        .get(map)?
        .elements
        .get(key)?
        .comment
        .clone()
}

fn service_from_comment(c: &str) -> Option<(String, String)> {
    let mut parts = c.split('/');
    let (ns, name, _proto, port) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((format!("{ns}/{name}"), port.to_string()))
}

/// The Service port a `service-ips` (`ip . proto . port`) or `service-nodeports`
/// (`proto . port`) key belongs to.
fn service_by_key(world: &World, map: &str, key: &Key) -> Option<(String, String)> {
    let nodeport = map.starts_with("service-nodeports");
    let (addr, port) = match key.0.as_slice() {
        [Value::Addr(a), _, Value::Port(p)] => (Some(*a), *p),
        [_, Value::Port(p)] => (None, *p),
        _ => return None,
    };
    world.services.iter().find_map(|s| {
        let p = s.ports.iter().find(|sp| {
            if nodeport {
                sp.node_port == Some(port)
            } else {
                sp.port == port
            }
        })?;
        let owns = match addr {
            None => true,
            Some(a) => {
                s.cluster_ips.contains(&a)
                    || s.external_ips.contains(&a)
                    || s.global_ips.contains(&a)
                    || s.load_balancer_ips.contains(&a)
            }
        };
        owns.then(|| {
            let name = if p.name.is_empty() {
                p.port.to_string()
            } else {
                p.name.clone()
            };
            (format!("{}/{}", s.namespace, s.name), name)
        })
    })
}

/// `ing_<ns>_<pod>` / `egr_<ns>_<pod>` → direction and pod.
fn policy_chain(chain: &str) -> Option<(Direction, PodKey)> {
    let (dir, rest) = if let Some(r) = chain.strip_prefix("ing_") {
        (Direction::Ingress, r)
    } else if let Some(r) = chain.strip_prefix("egr_") {
        (Direction::Egress, r)
    } else {
        return None;
    };
    let (ns, pod) = rest.split_once('_')?;
    Some((dir, PodKey::new(ns, pod)))
}

fn dir_str(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn isolating(world: &World, dir: Direction, pod: &PodKey) -> Vec<String> {
    match world.policy.pod(pod) {
        Some(p) => world
            .policy
            .isolating_policies(p, dir)
            .iter()
            .map(|np| np.key().to_string())
            .collect(),
        None => Vec::new(),
    }
}

/// Explains one interpreter path through `hook` at `node`.
pub(crate) fn explain(
    world: &World,
    node: &str,
    hook: Hook,
    tables: &[&Table],
    path: &Path,
) -> Explained {
    let mut out = Explained::default();
    let at = node.to_string();
    let rule_ref = |step: &Step| RuleRef {
        node: node.to_string(),
        family: family_of(step, tables).to_string(),
        table: step.table.clone(),
        chain: step.chain.clone(),
        index: step.rule,
        handle: None,
    };
    // A hop decided by `step`: cites it and carries its rule.
    let hop = |kind: &str, text: String, step: &Step, cites: Vec<String>| Hop {
        at: at.clone(),
        kind: kind.into(),
        text,
        cites,
        rule: Some(rule_ref(step)),
    };
    // The policy chain entered last, to name what a drop in it means.
    let mut policy_ctx: Option<(Direction, PodKey)> = None;
    for step in &path.steps {
        match &step.event {
            Event::EnterChain { .. } if step.table == sarasa_policy::TABLE => {
                if let Some((dir, pod)) = policy_chain(&step.chain) {
                    let names = isolating(world, dir, &pod);
                    out.hops.push(hop(
                        "policy",
                        format!(
                            "pod {pod} is isolated for {} by {}",
                            dir_str(dir),
                            if names.is_empty() {
                                "NetworkPolicy".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                        step,
                        vec![cite(step, tables)],
                    ));
                    policy_ctx = Some((dir, pod));
                }
            }
            Event::MapHit { map, key } if map.starts_with("service-") => {
                // Service-IP elements carry no comment (memory at 100k Services): name the
                // Service by the element's key among the cluster's Services.
                let (svc, port) = element_comment(tables, &step.table, map, key)
                    .as_deref()
                    .and_then(service_from_comment)
                    .or_else(|| service_by_key(world, map, key))
                    .unwrap_or_else(|| ("?".into(), "?".into()));
                let via = if map.starts_with("service-nodeports") {
                    "NodePort"
                } else {
                    "Service address"
                };
                out.hops.push(hop(
                    "service",
                    format!("{via} {} matches Service {svc} port {port}", key_text(key)),
                    step,
                    vec![format!(
                        "{} map @{map} element {{ {} }}",
                        cite(step, tables),
                        key_text(key)
                    )],
                ));
                out.service = Some(ServiceHit {
                    service: svc,
                    port,
                    selection:
                        "one endpoint at random (numgen), kept for the connection by conntrack"
                            .into(),
                });
            }
            Event::Numgen { modulus, picked } => {
                out.hops.push(hop(
                    "service",
                    format!("random endpoint choice (numgen mod {modulus}): this path takes slot {picked}"),
                    step, vec![cite(step, tables)],
                ));
            }
            Event::UpdateSet { set, key } if set.starts_with("aff") => {
                if let Some(s) = out.service.as_mut() {
                    s.selection = "ClientIP session affinity: a client sticks to the endpoint it got first; a new client gets one at random".into();
                }
                out.hops.push(hop(
                    "service",
                    format!(
                        "session affinity: client {} remembered in @{set}",
                        key_text(key)
                    ),
                    step,
                    vec![cite(step, tables)],
                ));
            }
            Event::Dnat { addr, port } => {
                let dst = match port {
                    Some(p) => sock(*addr, *p),
                    None => addr.to_string(),
                };
                out.hops.push(hop(
                    "dnat",
                    match world.name_of(*addr) {
                        Some(n) => format!("DNAT to {dst} ({n})"),
                        None => format!("DNAT to {dst}"),
                    },
                    step,
                    vec![cite(step, tables)],
                ));
            }
            Event::MarkSet { mark } if *mark != 0 && step.table != sarasa_policy::TABLE => {
                out.hops.push(hop(
                    "mark",
                    format!("marked {mark:#x}: to be masqueraded on the way out"),
                    step,
                    vec![cite(step, tables)],
                ));
            }
            Event::Masquerade { addr } => {
                out.hops.push(hop(
                    "snat",
                    format!(
                        "masquerade: source becomes {}",
                        addr.map(|a| a.to_string())
                            .unwrap_or_else(|| "the interface address".into())
                    ),
                    step,
                    vec![cite(step, tables)],
                ));
            }
            Event::Snat { addr } => {
                out.hops.push(hop(
                    "snat",
                    format!("SNAT: source becomes {addr}"),
                    step,
                    vec![cite(step, tables)],
                ));
            }
            Event::Untracked => {
                out.hops.push(hop(
                    "untracked",
                    "notrack: conntrack skips the packet (a tunnel's underlay UDP), so no NAT \
                     applies to it"
                        .to_string(),
                    step,
                    vec![cite(step, tables)],
                ));
            }
            Event::MssClamped => {
                out.hops.push(hop(
                    "mss",
                    format!(
                        "TCP MSS clamped to what the route through {} carries",
                        path.packet
                            .oifname
                            .as_deref()
                            .unwrap_or("the output device")
                    ),
                    step,
                    vec![cite(step, tables)],
                ));
            }
            Event::Verdict(NftVerdict::Accept | NftVerdict::Return)
                if step.table == sarasa_policy::TABLE =>
            {
                if let Some((policy, dir, i)) =
                    step.comment.as_deref().and_then(parse_allow_comment)
                {
                    out.hops.push(hop(
                        "policy",
                        format!("allowed by NetworkPolicy {policy} {}[{i}]", dir_str(dir)),
                        step,
                        vec![cite(step, tables)],
                    ));
                    out.policies.push(PolicyHit {
                        policy: policy.to_string(),
                        direction: dir_str(dir).into(),
                        effect: "allowed".into(),
                        node: node.to_string(),
                        rule: Some(format!("spec.{}[{i}]", dir_str(dir))),
                    });
                }
            }
            Event::Verdict(NftVerdict::Drop) | Event::ChainPolicy(sarasa_nft::Policy::Drop) => {
                let reason = match (&policy_ctx, step.table == sarasa_policy::TABLE) {
                    (Some((dir, pod)), true) => {
                        let names = isolating(world, *dir, pod);
                        for n in &names {
                            out.policies.push(PolicyHit {
                                policy: n.clone(),
                                direction: dir_str(*dir).into(),
                                effect: "denied".into(),
                                node: node.to_string(),
                                rule: None,
                            });
                        }
                        format!(
                            "denied by NetworkPolicy: no {} rule of {} allows this connection {} pod {pod}",
                            dir_str(*dir),
                            if names.is_empty() { "the policies selecting it".to_string() } else { names.join(", ") },
                            if *dir == Direction::Ingress { "to" } else { "from" },
                        )
                    }
                    _ => format!(
                        "dropped in {} {} at {}",
                        step.table,
                        step.chain,
                        hook_name(hook)
                    ),
                };
                out.hops
                    .push(hop("drop", reason.clone(), step, vec![cite(step, tables)]));
                out.refusal = Some(reason);
            }
            Event::Reject(kind) => {
                let how = match kind {
                    RejectKind::TcpReset => "TCP reset",
                    RejectKind::IcmpxPortUnreachable => "ICMP port unreachable",
                    RejectKind::IcmpxAdminProhibited => "ICMP administratively prohibited",
                };
                let why = if step.chain.contains("reject") || step.chain.contains("endpoints") {
                    "the Service has no ready endpoints"
                } else if step.chain.starts_with("fw") || step.chain.contains("firewall") {
                    "the source is outside loadBalancerSourceRanges"
                } else {
                    "a reject rule matched"
                };
                let reason = format!("rejected with {how}: {why}");
                out.hops.push(hop(
                    "reject",
                    reason.clone(),
                    step,
                    vec![cite(step, tables)],
                ));
                out.refusal = Some(reason);
            }
            _ => {}
        }
    }
    if out.refusal.is_none() && path.verdict != HookVerdict::Accept {
        out.refusal = Some(format!("dropped at the {} hook", hook_name(hook)));
    }
    out
}

/// `ip:port`, with brackets for IPv6.
pub(crate) fn sock(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}
