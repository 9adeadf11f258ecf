//! The kernel handles of the rules a trace cites: each chain on the path is listed once from
//! its node (`nft -j -a list chain`, a few small chains, never the whole ruleset) and the
//! model's rule position mapped to the kernel rule at that position.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use sarasa_lab::LabSpec;
use sarasa_trace::TraceResult;

/// (node, family, table, chain) → handles of its rules in order.
type Chains = BTreeMap<(String, String, String, String), Option<Vec<u64>>>;

fn list_chain(netns: &std::path::Path, family: &str, table: &str, chain: &str) -> Option<Vec<u64>> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["nft", "-j", "-a", "list", "chain", family, table, chain])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["nftables"]
            .as_array()?
            .iter()
            .filter_map(|o| o.get("rule")?.get("handle")?.as_u64())
            .collect(),
    )
}

/// Fills `rule.handle` of every hop whose rule the node's kernel holds at that position, and
/// adds it to the hop's first citation. Returns how many hops got a handle.
pub fn fill(spec: &LabSpec, result: &mut TraceResult) -> usize {
    let mut chains: Chains = BTreeMap::new();
    let mut filled = 0;
    for hop in &mut result.hops {
        let Some(rule) = hop.rule.as_mut() else {
            continue;
        };
        let Some(index) = rule.index else {
            continue;
        };
        let Some(node) = spec.node(&rule.node) else {
            continue;
        };
        let key = (
            rule.node.clone(),
            rule.family.clone(),
            rule.table.clone(),
            rule.chain.clone(),
        );
        let handles = chains.entry(key).or_insert_with(|| {
            let netns = PathBuf::from(sarasa_netns::NETNS_RUN_DIR).join(&node.netns);
            list_chain(&netns, &rule.family, &rule.table, &rule.chain)
        });
        if let Some(h) = handles.as_ref().and_then(|hs| hs.get(index)) {
            rule.handle = Some(*h);
            if let Some(first) = hop.cites.first_mut() {
                first.push_str(&format!(" · kernel handle {h}"));
            }
            filled += 1;
        }
    }
    filled
}
