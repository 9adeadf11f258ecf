//! A trace's path as legs to draw over the lab topology (`sarasa trace -o svg`): one leg each
//! time the packet moves to another place (pod, node, fabric, external host), labelled with
//! what happened on the way (Service and DNAT, VXLAN, masquerade), coloured by how it ended.

use sarasa_trace::{Hop, TraceResult, Verdict};
use sarasa_viz::{ElementId, LegOutcome, PathLeg};

/// The picture's element for a hop's place.
fn element(at: &str) -> ElementId {
    if let Some(pod) = at.strip_prefix("pod ") {
        ElementId::Pod(pod.to_string())
    } else if at == "fabric" {
        ElementId::Fabric
    } else if at == "external" {
        ElementId::External
    } else {
        ElementId::Node(at.to_string())
    }
}

/// A short label for what the hops at one place did to the packet.
fn label(hops: &[&Hop]) -> String {
    let mut parts = Vec::new();
    for h in hops {
        match h.kind.as_str() {
            "dnat" => parts.push(h.text.replace("DNAT to ", "DNAT→")),
            "encap" => parts.push("VXLAN".to_string()),
            "snat" => parts.push("masquerade".to_string()),
            "policy" if h.text.starts_with("allowed") => parts.push("policy ok".to_string()),
            _ => {}
        }
    }
    if parts.is_empty() {
        "routed".into()
    } else {
        parts.join(", ")
    }
}

/// A reason cut to fit a legend line.
fn short(reason: &str) -> String {
    const MAX: usize = 70;
    if reason.chars().count() <= MAX {
        reason.to_string()
    } else {
        let cut: String = reason.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
}

/// Where the drawn path heads: the endpoint pod the leading candidate was DNATed to, else the
/// destination asked for.
pub fn heading(result: &TraceResult, asked: Option<ElementId>) -> Option<ElementId> {
    result
        .endpoint_outcomes
        .iter()
        .find(|e| e.verdict == result.verdict)
        .and_then(|e| e.pod.clone())
        .map(ElementId::Pod)
        .or(asked)
}

/// The legs of `result`'s path; `destination` is where the packet was headed (drawn as the
/// last leg's end when it is stopped before reaching anything).
pub fn legs(result: &TraceResult, destination: Option<ElementId>) -> Vec<PathLeg> {
    let mut places: Vec<(String, Vec<&Hop>)> = Vec::new();
    for h in &result.hops {
        match places.last_mut() {
            Some((at, hops)) if *at == h.at => hops.push(h),
            _ => places.push((h.at.clone(), vec![h])),
        }
    }
    let mut legs = Vec::new();
    for pair in places.windows(2) {
        legs.push(PathLeg {
            from: element(&pair[0].0),
            to: element(&pair[1].0),
            label: label(&pair[0].1),
            outcome: LegOutcome::Forwarded,
        });
    }
    let outcome = match result.verdict {
        Verdict::Delivered => LegOutcome::Forwarded,
        Verdict::Dropped => LegOutcome::Dropped,
        Verdict::Rejected => LegOutcome::Rejected,
    };
    if outcome != LegOutcome::Forwarded {
        // The packet stops at the last place: draw a leg from there towards its destination.
        if let (Some((at, _)), Some(dst)) = (places.last(), destination) {
            let from = element(at);
            if from != dst {
                legs.push(PathLeg {
                    from,
                    to: dst,
                    label: short(&result.reason),
                    outcome,
                });
            } else if let Some(last) = legs.last_mut() {
                last.outcome = outcome;
            }
        }
    }
    legs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(at: &str, kind: &str, text: &str) -> Hop {
        Hop {
            at: at.into(),
            kind: kind.into(),
            text: text.into(),
            cites: vec![],
            rule: None,
        }
    }

    fn result(verdict: Verdict, hops: Vec<Hop>) -> TraceResult {
        TraceResult {
            from: "pod x/a".into(),
            to: "svc/web.x".into(),
            protocol: "tcp".into(),
            port: 80,
            verdict,
            reason: String::new(),
            hops,
            service: None,
            endpoints: vec![],
            endpoint_outcomes: vec![],
            policies: vec![],
            policy_decisions: vec![],
            paths: vec![],
        }
    }

    #[test]
    fn one_leg_per_move_labelled_with_what_happened() {
        let r = result(
            Verdict::Delivered,
            vec![
                hop("pod x/a", "source", ""),
                hop("node-1", "dnat", "DNAT to 10.244.2.10:80 (pod x/c)"),
                hop("node-1", "encap", "VXLAN VNI 1"),
                hop(
                    "node-2",
                    "policy",
                    "allowed by NetworkPolicy x/p ingress[0]",
                ),
                hop("pod x/c", "deliver", ""),
            ],
        );
        let l = legs(&r, Some(ElementId::Service("x/web".into())));
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].from, ElementId::Pod("x/a".into()));
        assert_eq!(l[1].label, "DNAT→10.244.2.10:80 (pod x/c), VXLAN");
        assert_eq!(l[2].to, ElementId::Pod("x/c".into()));
        assert!(l.iter().all(|x| x.outcome == LegOutcome::Forwarded));
    }

    #[test]
    fn a_drop_ends_in_a_red_leg_towards_the_destination() {
        let r = result(
            Verdict::Dropped,
            vec![
                hop("pod x/a", "source", ""),
                hop("node-1", "drop", "denied"),
            ],
        );
        let l = legs(&r, Some(ElementId::Pod("x/b".into())));
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].from, ElementId::Node("node-1".into()));
        assert_eq!(l[1].to, ElementId::Pod("x/b".into()));
        assert_eq!(l[1].outcome, LegOutcome::Dropped);
    }
}
