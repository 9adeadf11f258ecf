//! `sarasa trace --live`: sends one real packet of the traced flow from the source's namespace
//! and sets the kernel's own account of it beside the model's.
//!
//! On every node a helper table (`inet sarasa-trace`, priority -350) marks the flow's packets
//! for nftables tracing — matching each node's packet as the model says it arrives there, after
//! any DNAT and masquerade upstream — and a subscriber per node collects the kernel's
//! `NFT_MSG_TRACE` events while `sarasa probe` sends the packet. The model and the kernel agree
//! when one of the model's candidate paths crosses exactly the nodes where the kernel saw the
//! packet, ends the same way (nftables drop or reject at the same table and chain, or no drop),
//! and the probe's outcome matches its verdict. The helper tables are removed afterwards, also
//! on failure.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sarasa_lab::Lab;
use sarasa_nft::nftrace::{
    delete_trace_table_script, trace_table_script, TraceEvent, TraceKind, TraceMatch,
    TraceSubscriber, TraceVerdict, TRACE_TABLE,
};
use sarasa_nft::{L4Proto, NftCli};
use sarasa_trace::{Query, Source, TraceResult, Verdict};
use serde::Serialize;

/// How long the probe waits for an answer.
const PROBE_TIMEOUT: &str = "1s";
/// How long events are still collected after the probe returned.
const SETTLE: Duration = Duration::from_millis(300);
/// Collection stops after this long whatever happens.
const MAX_COLLECT: Duration = Duration::from_secs(10);

/// One kernel trace event, for people.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent {
    pub table: String,
    pub chain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    pub verdict: String,
}

/// What one node's kernel reported.
#[derive(Debug, Clone, Serialize)]
pub struct LiveNode {
    pub node: String,
    pub events: Vec<LiveEvent>,
    /// The table and chain where the kernel dropped the packet, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_in: Option<(String, String)>,
}

/// The live comparison.
#[derive(Debug, Clone, Serialize)]
pub struct LiveReport {
    pub agrees: bool,
    /// `connected` or the probe's error.
    pub probe: String,
    /// Nodes where the kernel saw the packet, in lab order.
    pub nodes_seen: Vec<String>,
    pub nodes: Vec<LiveNode>,
    /// The model path the kernel's account matches, by endpoint (or `-`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched_path: Option<String>,
    pub disagreements: Vec<String>,
}

impl LiveReport {
    pub fn render_text(&self) -> String {
        let mut s = format!("\nLive (kernel nftrace), probe: {}\n", self.probe);
        for n in &self.nodes {
            s.push_str(&format!("[{}] {} events", n.node, n.events.len()));
            let shown = decisive(&n.events);
            s.push_str(&format!(
                ", {} that decided (the rest fell through):\n",
                shown.len()
            ));
            for e in shown {
                s.push_str(&format!(
                    "    {} {} {}{}\n",
                    e.table,
                    e.chain,
                    e.handle.map(|h| format!("handle {h} ")).unwrap_or_default(),
                    e.verdict
                ));
            }
        }
        if self.agrees {
            s.push_str(&format!(
                "model and kernel AGREE (path {})\n",
                self.matched_path.as_deref().unwrap_or("-")
            ));
        } else {
            s.push_str("model and kernel DISAGREE:\n");
            for d in &self.disagreements {
                s.push_str(&format!("  - {d}\n"));
            }
        }
        s
    }
}

/// The events that decided something: verdicts other than falling through, and jumps into
/// chains that did not simply fall through again (`-o json` keeps every event).
fn decisive(events: &[LiveEvent]) -> Vec<&LiveEvent> {
    let quiet = |v: &str| matches!(v, "continue" | "return" | "policy accept");
    events
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            if quiet(&e.verdict) {
                return false;
            }
            match e.verdict.strip_prefix("jump ") {
                Some(target) => !events.get(i + 1).is_some_and(|next| {
                    next.table == e.table && next.chain == target && next.verdict == "continue"
                }),
                None => true,
            }
        })
        .map(|(_, e)| e)
        .collect()
}

fn verdict_text(e: &TraceEvent) -> String {
    match (&e.kind, &e.verdict, e.policy_accept) {
        (TraceKind::Policy, _, Some(true)) => "policy accept".into(),
        (TraceKind::Policy, _, Some(false)) => "policy drop".into(),
        (TraceKind::Return, _, _) => "return".into(),
        (_, Some(TraceVerdict::Accept), _) => "accept".into(),
        (_, Some(TraceVerdict::Drop), _) => "drop".into(),
        (_, Some(TraceVerdict::Continue), _) => "continue".into(),
        (_, Some(TraceVerdict::Jump(c)), _) => format!("jump {c}"),
        (_, Some(TraceVerdict::Goto(c)), _) => format!("goto {c}"),
        (_, Some(TraceVerdict::Return), _) => "return".into(),
        (_, Some(v), _) => format!("{v:?}").to_lowercase(),
        _ => "-".into(),
    }
}

fn is_drop(e: &TraceEvent) -> bool {
    matches!(e.verdict, Some(TraceVerdict::Drop)) || e.policy_accept == Some(false)
}

/// Removes the helper table from every node when dropped.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = NftCli::in_netns(p).run_script(&delete_trace_table_script());
        }
    }
}

fn probe_command(
    lab: &Lab,
    query: &Query,
    result: &TraceResult,
    proto: L4Proto,
) -> Result<Command> {
    let exe = std::env::current_exe().context("locating the sarasa binary")?;
    let arrival = result
        .paths
        .iter()
        .find_map(|p| p.arrivals.first())
        .context("the model's path reaches no node: nothing to send a live packet through")?;
    let host = match arrival.daddr {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    };
    let scheme = if proto == L4Proto::Udp { "udp" } else { "tcp" };
    let url = format!("{scheme}://{host}:{}", arrival.dport);
    let mut c = Command::new(&exe);
    c.arg("--lab").arg(&lab.spec.name).arg("exec");
    match &query.from {
        Source::Pod { namespace, name } => {
            c.args(["-n", namespace, name]);
        }
        Source::Node(n) => {
            c.arg(format!("node/{n}"));
        }
        Source::External => {
            c.arg("external");
        }
    }
    c.arg("--")
        .arg(&exe)
        .args(["probe", "--timeout", PROBE_TIMEOUT, &url]);
    Ok(c)
}

/// Sends the flow's packet for real and compares the kernel's trace with `result`.
pub fn live(lab: &Lab, query: &Query, result: &TraceResult) -> Result<LiveReport> {
    let proto = query.proto.l4();
    let mut matches: Vec<TraceMatch> = Vec::new();
    for a in result.paths.iter().flat_map(|p| &p.arrivals) {
        let m = TraceMatch {
            saddr: a.saddr,
            daddr: a.daddr,
            proto,
            dport: Some(a.dport),
        };
        if !matches.contains(&m) {
            matches.push(m);
        }
    }
    // The first packet as it leaves a pod or the external host is matched on every node too.
    let nodes: Vec<(String, PathBuf)> = lab
        .spec
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&n.netns),
            )
        })
        .collect();
    let cleanup = Cleanup(nodes.iter().map(|(_, p)| p.clone()).collect());
    let script = trace_table_script(&matches);
    for (name, path) in &nodes {
        NftCli::in_netns(path)
            .run_script(&script)
            .with_context(|| format!("installing table inet {TRACE_TABLE} on {name}"))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut collectors = Vec::new();
    for (name, path) in &nodes {
        let mut sub = TraceSubscriber::open(Some(path))
            .with_context(|| format!("subscribing to nftrace events on {name}"))?;
        let stop = stop.clone();
        let name = name.clone();
        collectors.push(std::thread::spawn(move || {
            let events = sub.collect(MAX_COLLECT, |_| stop.load(Ordering::Relaxed));
            (name, events, sub.lost_events())
        }));
    }
    let out = probe_command(lab, query, result, proto)?
        .output()
        .context("running the probe")?;
    let probe = if out.status.success() {
        "connected".to_string()
    } else {
        let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if text.is_empty() {
            format!("failed ({})", out.status)
        } else {
            text
        }
    };
    // Events of the last packets are still in flight when the probe returns.
    std::thread::sleep(SETTLE);
    stop.store(true, Ordering::Relaxed);
    let mut per_node = Vec::new();
    let mut lost = Vec::new();
    for c in collectors {
        let (name, events, lost_some) = c
            .join()
            .map_err(|_| anyhow::anyhow!("trace collector panicked"))?;
        if lost_some {
            lost.push(name.clone());
        }
        per_node.push((
            name,
            events.with_context(|| "collecting nftrace events".to_string())?,
        ));
    }
    drop(cleanup);
    let mut report = compare(result, probe, per_node);
    if !report.agrees && !lost.is_empty() {
        report.disagreements.push(format!(
            "the kernel dropped trace events on {} (socket buffer full)",
            lost.join(", ")
        ));
    }
    Ok(report)
}

/// The comparison itself (pure). The kernel's trace ids do not follow one packet through a
/// node (the id hashes the input interface, which changes when a bridged packet is routed), and
/// a dropped datagram or SYN leaves no confirmed conntrack entry, so a retry may pick another
/// endpoint: the comparison therefore works on what each node did, not on packets.
/// - every drop the kernel made (node, table, chain) is where some model path stops;
/// - every node where the kernel saw the flow is crossed by some model path;
/// - where every model path crossing a node stops there, the kernel dropped there too;
/// - a probe that connects needs a delivering path; a model whose every path delivers needs a
///   probe that connects; a model that crosses nodes needs the kernel to have seen the flow.
fn compare(
    result: &TraceResult,
    probe: String,
    per_node: Vec<(String, Vec<TraceEvent>)>,
) -> LiveReport {
    let mut nodes = Vec::new();
    let mut seen = Vec::new();
    let mut drops: Vec<(String, String, String)> = Vec::new();
    for (name, events) in per_node {
        // The helper table's own marking rule is not part of the datapath.
        let events: Vec<&TraceEvent> = events.iter().filter(|e| e.table != TRACE_TABLE).collect();
        if events.is_empty() {
            continue;
        }
        seen.push(name.clone());
        for e in events.iter().filter(|e| is_drop(e)) {
            let d = (name.clone(), e.table.clone(), e.chain.clone());
            if !drops.contains(&d) {
                drops.push(d);
            }
        }
        let dropped_in = events
            .iter()
            .find(|e| is_drop(e))
            .map(|e| (e.table.clone(), e.chain.clone()));
        nodes.push(LiveNode {
            node: name,
            events: events
                .iter()
                .map(|e| LiveEvent {
                    table: e.table.clone(),
                    chain: e.chain.clone(),
                    handle: e.rule_handle,
                    verdict: verdict_text(e),
                })
                .collect(),
            dropped_in,
        });
    }
    let connected = probe == "connected";
    let mut disagreements = Vec::new();
    let mut matched: Vec<String> = Vec::new();
    let mut note = |p: &sarasa_trace::PathSummary| {
        let name = p.endpoint.clone().unwrap_or_else(|| "-".into());
        if !matched.contains(&name) {
            matched.push(name);
        }
    };
    for (node, table, chain) in &drops {
        let stops_here = |p: &&sarasa_trace::PathSummary| {
            p.stop
                .as_ref()
                .is_some_and(|s| s.node == *node && s.table == *table && s.chain == *chain)
        };
        match result.paths.iter().find(stops_here) {
            Some(p) => note(p),
            None => disagreements.push(format!(
                "the kernel dropped the flow in {table} {chain} on {node}; no model path stops there"
            )),
        }
    }
    for node in &seen {
        let crossing: Vec<&sarasa_trace::PathSummary> = result
            .paths
            .iter()
            .filter(|p| p.nodes.contains(node))
            .collect();
        if crossing.is_empty() {
            disagreements.push(format!(
                "the kernel saw the flow on {node}; no model path crosses it"
            ));
            continue;
        }
        let all_stop_here = crossing
            .iter()
            .all(|p| p.stop.as_ref().is_some_and(|s| s.node == *node));
        if all_stop_here && !drops.iter().any(|(n, _, _)| n == node) {
            disagreements.push(format!(
                "every model path stops on {node}; the kernel dropped nothing there"
            ));
        }
        for p in crossing.iter().filter(|p| p.stop.is_none()) {
            if connected {
                note(p);
            }
        }
    }
    let any_delivers = result.paths.iter().any(|p| p.verdict == Verdict::Delivered);
    let all_deliver =
        !result.paths.is_empty() && result.paths.iter().all(|p| p.verdict == Verdict::Delivered);
    if connected && !any_delivers {
        disagreements.push(format!(
            "the probe connected, the model delivers on no path ({})",
            result.reason
        ));
    }
    if !connected && all_deliver {
        disagreements.push(format!(
            "the model delivers on every path, the probe {probe}"
        ));
    }
    if seen.is_empty() && result.paths.iter().any(|p| !p.nodes.is_empty()) {
        disagreements.push("the model's packet crosses nodes, the kernel saw it on none".into());
    }
    if result.paths.is_empty() {
        disagreements.push("the model has no path".into());
    }
    let agrees = disagreements.is_empty();
    LiveReport {
        agrees,
        probe,
        nodes_seen: seen,
        nodes,
        matched_path: (!matched.is_empty()).then(|| matched.join(", ")),
        disagreements,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_trace::{PathSummary, StopPoint};

    fn event(id: u32, table: &str, chain: &str, verdict: Option<TraceVerdict>) -> TraceEvent {
        TraceEvent {
            id,
            family: 1,
            table: table.into(),
            chain: chain.into(),
            kind: TraceKind::Rule,
            rule_handle: Some(7),
            verdict,
            policy_accept: None,
            iif: None,
            oif: None,
            mark: None,
            nfproto: Some(2),
            network_header: vec![],
            transport_header: vec![],
        }
    }

    fn path(endpoint: &str, nodes: &[&str], stop: Option<(&str, &str)>) -> PathSummary {
        PathSummary {
            endpoint: Some(endpoint.into()),
            verdict: if stop.is_some() {
                Verdict::Dropped
            } else {
                Verdict::Delivered
            },
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            arrivals: vec![],
            stop: stop.map(|(node, chain)| StopPoint {
                node: node.into(),
                table: "sarasa-policy".into(),
                chain: chain.into(),
            }),
        }
    }

    fn result(paths: Vec<PathSummary>) -> TraceResult {
        let verdict = if paths.iter().all(|p| p.verdict == Verdict::Delivered) {
            Verdict::Delivered
        } else {
            Verdict::Dropped
        };
        TraceResult {
            from: "pod y/e".into(),
            to: "svc/echo.y".into(),
            protocol: "udp".into(),
            port: 81,
            verdict,
            reason: "r".into(),
            hops: vec![],
            service: None,
            endpoints: vec![],
            endpoint_outcomes: vec![],
            policies: vec![],
            policy_decisions: vec![],
            paths,
        }
    }

    #[test]
    fn every_dropped_packet_may_pick_another_endpoint() {
        // e is on node-2, f on node-3; both isolated. The first datagram went to e, the
        // retry (no conntrack entry was confirmed) to f.
        let r = result(vec![
            path("e", &["node-2"], Some(("node-2", "ing_y_e"))),
            path("f", &["node-2", "node-3"], Some(("node-3", "ing_y_f"))),
        ]);
        let per_node = vec![
            (
                "node-2".to_string(),
                vec![
                    event(1, "sarasa-policy", "ing_y_e", Some(TraceVerdict::Drop)),
                    event(2, "sarasa-policy", "forward", Some(TraceVerdict::Accept)),
                ],
            ),
            (
                "node-3".to_string(),
                vec![event(
                    9,
                    "sarasa-policy",
                    "ing_y_f",
                    Some(TraceVerdict::Drop),
                )],
            ),
        ];
        let rep = compare(&r, "error: no reply".into(), per_node);
        assert!(rep.agrees, "{:?}", rep.disagreements);
        assert_eq!(rep.matched_path.as_deref(), Some("e, f"));
        // A reject seen in another trace id than the packet's prerouting events still counts.
        let r = result(vec![path("-", &["node-2"], Some(("node-2", "ing_y_e")))]);
        let per_node = vec![(
            "node-2".to_string(),
            vec![
                event(
                    3,
                    "sarasa",
                    "filter-prerouting",
                    Some(TraceVerdict::Continue),
                ),
                event(4, "sarasa-policy", "ing_y_e", Some(TraceVerdict::Drop)),
            ],
        )];
        assert!(compare(&r, "error".into(), per_node).agrees);
    }

    #[test]
    fn a_drop_the_model_does_not_make_or_a_probe_it_does_not_expect_disagrees() {
        let r = result(vec![path("c", &["node-1", "node-2"], None)]);
        let per_node = vec![(
            "node-2".to_string(),
            vec![event(
                1,
                "sarasa-policy",
                "ing_x_c",
                Some(TraceVerdict::Drop),
            )],
        )];
        let rep = compare(&r, "error: no reply".into(), per_node);
        assert!(!rep.agrees);
        assert!(
            rep.disagreements.iter().any(|d| d.contains("ing_x_c")),
            "{:?}",
            rep.disagreements
        );
        assert!(
            rep.disagreements
                .iter()
                .any(|d| d.contains("delivers on every path")),
            "{:?}",
            rep.disagreements
        );
        // The kernel saw nothing although the model crosses nodes.
        let rep = compare(&r, "connected".into(), vec![("node-1".into(), vec![])]);
        assert!(!rep.agrees);
        // The probe connected although every path drops.
        let r = result(vec![path("b", &["node-1"], Some(("node-1", "ing_x_b")))]);
        let per_node = vec![(
            "node-1".to_string(),
            vec![event(
                1,
                "sarasa-policy",
                "ing_x_b",
                Some(TraceVerdict::Drop),
            )],
        )];
        let rep = compare(&r, "connected".into(), per_node);
        assert!(
            rep.disagreements
                .iter()
                .any(|d| d.contains("probe connected")),
            "{:?}",
            rep.disagreements
        );
    }
}
