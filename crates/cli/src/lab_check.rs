//! `sarasa lab check`: does every node's kernel hold what its plan says? The plan is compiled
//! from the API's objects exactly as `sarasa trace` compiles it (the agents' own compilers);
//! each planned nftables table is read back over netlink inside the node's namespace and
//! diffed. An agent killed at any point and restarted must leave this empty (issue 14's
//! fault run calls it after every restart).

use anyhow::{Context, Result};
use sarasa_lab::Lab;
use sarasa_nft::{diff_kernel, NetlinkBackend};

/// One node's differences from its plan: (table, the commands that would make it right).
pub struct NodeDiff {
    pub node: String,
    pub tables: Vec<(String, Vec<String>)>,
}

/// Compares the nodes (all, or `only`) with their plans.
pub fn check(lab: &Lab, only: Option<&str>) -> Result<(Vec<NodeDiff>, Vec<String>)> {
    let mut warnings = Vec::new();
    let world = crate::trace_fetch::world(lab, &mut warnings)?;
    let mut out = Vec::new();
    for view in world
        .nodes
        .iter()
        .filter(|n| only.is_none_or(|o| o == n.name))
    {
        let node = lab
            .spec
            .node(&view.name)
            .with_context(|| format!("node {} is not in the lab's spec", view.name))?;
        let path = format!("{}/{}", sarasa_netns::NETNS_RUN_DIR, node.netns);
        let mut nft = NetlinkBackend::in_netns(&path)
            .with_context(|| format!("netlink in {}", node.netns))?;
        let mut tables = Vec::new();
        for table in view.plan.tables.values() {
            let current = nft.list_table(table.family, &table.name).with_context(|| {
                format!(
                    "reading {} {} on {}",
                    table.family.as_str(),
                    table.name,
                    view.name
                )
            })?;
            let tx = diff_kernel(current.as_ref(), table);
            if !tx.is_empty() {
                tables.push((
                    format!("{} {}", table.family.as_str(), table.name),
                    tx.commands,
                ));
            }
        }
        out.push(NodeDiff {
            node: view.name.clone(),
            tables,
        });
    }
    Ok((out, warnings))
}

/// Prints the result; true when every node equals its plan.
pub fn print(diffs: &[NodeDiff], warnings: &[String]) -> bool {
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let mut equal = true;
    for d in diffs {
        if d.tables.is_empty() {
            println!("{}: every table equals the plan", d.node);
            continue;
        }
        equal = false;
        for (table, commands) in &d.tables {
            println!(
                "{}: table {table} differs from the plan ({} commands to fix):",
                d.node,
                commands.len()
            );
            for c in commands.iter().take(10) {
                println!("    {c}");
            }
        }
    }
    equal
}
