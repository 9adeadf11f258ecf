//! What a trace answers: the verdict, the hops of the path with the kernel object behind each,
//! every candidate endpoint when a Service is crossed, and the policies that decided. Rendered
//! as text for people (`render_text`) and as JSON (`serde`) for tools.

use serde::Serialize;

/// How the packet ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Delivered,
    Dropped,
    Rejected,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Dropped => "dropped",
            Verdict::Rejected => "rejected",
        }
    }
}

/// One step of the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// Where it happens: `pod x/a`, `node-1`, `fabric`, `external`.
    pub at: String,
    /// What kind of decision: `source`, `service`, `dnat`, `policy`, `filter`, `route`,
    /// `encap`, `snat`, `mss`, `untracked`, `cable`, `deliver`, `drop`, `reject`.
    pub kind: String,
    /// The explanation.
    pub text: String,
    /// The kernel objects behind it (table/chain/rule, route, FDB entry).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cites: Vec<String>,
    /// The nftables rule (or chain) behind it, when a hook decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
}

impl Hop {
    /// A hop no nftables rule decided (routing, encapsulation, delivery).
    pub fn new(at: &str, kind: &str, text: String, cites: Vec<String>) -> Hop {
        Hop {
            at: at.into(),
            kind: kind.into(),
            text,
            cites,
            rule: None,
        }
    }
}

/// An nftables rule or chain of a node's plan, and its kernel handle once read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub node: String,
    pub family: String,
    pub table: String,
    pub chain: String,
    /// Position of the rule in the chain (`None`: the chain itself, or its policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The kernel's handle of that rule on the node (filled by the CLI from the kernel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
}

/// The Service a packet matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceHit {
    /// `namespace/name`.
    pub service: String,
    /// The port's name (or its number when unnamed).
    pub port: String,
    /// How an endpoint is chosen.
    pub selection: String,
}

/// One candidate endpoint of a crossed Service, followed to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointOutcome {
    /// `ip:port`.
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub verdict: Verdict,
    pub reason: String,
}

/// A NetworkPolicy decision on the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyHit {
    /// `namespace/name`.
    pub policy: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `allowed` or `denied`.
    pub effect: String,
    /// The node that enforced it.
    pub node: String,
    /// The policy rule (`spec.ingress[i]`) that allowed, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// A packet as it arrives at (or leaves) a node on the path: what a live trace matches on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arrival {
    pub node: String,
    pub saddr: std::net::IpAddr,
    pub daddr: std::net::IpAddr,
    pub dport: u16,
}

/// Where a path ended in nftables (the chain that dropped or rejected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopPoint {
    pub node: String,
    pub table: String,
    pub chain: String,
}

/// One candidate path, summarised: what a live trace compares with the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathSummary {
    /// The endpoint `ip:port` this path DNATs to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub verdict: Verdict,
    /// The nodes the packet crosses, in order.
    pub nodes: Vec<String>,
    pub arrivals: Vec<Arrival>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopPoint>,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceResult {
    pub from: String,
    pub to: String,
    pub protocol: String,
    pub port: u16,
    pub verdict: Verdict,
    /// Why it ends so, in one sentence.
    pub reason: String,
    /// The path of the first candidate (the only one when no Service is crossed).
    pub hops: Vec<Hop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceHit>,
    /// Every endpoint the Service could pick, as `ip:port` (empty when none is crossed).
    pub endpoints: Vec<String>,
    /// Each candidate's fate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoint_outcomes: Vec<EndpointOutcome>,
    /// Names (`namespace/name`) of the NetworkPolicies that allowed or denied, on every
    /// candidate path.
    pub policies: Vec<String>,
    /// Each of those decisions: which policy, direction, effect, node and rule.
    pub policy_decisions: Vec<PolicyHit>,
    /// Every candidate path, summarised.
    pub paths: Vec<PathSummary>,
}

impl TraceResult {
    /// The text form: a network engineer's explanation, one hop per paragraph, kernel objects
    /// cited beneath.
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "{} → {} {}/{}: {}\n  {}\n\n",
            self.from,
            self.to,
            self.protocol,
            self.port,
            self.verdict.as_str().to_uppercase(),
            self.reason
        );
        let mut last_at = String::new();
        for (i, hop) in self.hops.iter().enumerate() {
            if hop.at != last_at {
                s.push_str(&format!("[{}]\n", hop.at));
                last_at = hop.at.clone();
            }
            s.push_str(&format!("  {:>2}. {:<8} {}\n", i + 1, hop.kind, hop.text));
            for c in &hop.cites {
                s.push_str(&format!("               ↳ {c}\n"));
            }
        }
        if let Some(svc) = &self.service {
            s.push_str(&format!(
                "\nService {} port {}: {}\n",
                svc.service, svc.port, svc.selection
            ));
        }
        if !self.endpoint_outcomes.is_empty() {
            s.push_str("Candidate endpoints:\n");
            for e in &self.endpoint_outcomes {
                s.push_str(&format!(
                    "  {:<22} {:<24} {:<9} {}\n",
                    e.endpoint,
                    e.pod.as_deref().unwrap_or("-"),
                    e.verdict.as_str(),
                    e.reason
                ));
            }
        }
        if !self.policy_decisions.is_empty() {
            s.push_str("NetworkPolicies:\n");
            for p in &self.policy_decisions {
                s.push_str(&format!(
                    "  {} {} {} on {}{}\n",
                    p.policy,
                    p.effect,
                    p.direction,
                    p.node,
                    p.rule
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            }
        }
        s
    }
}
