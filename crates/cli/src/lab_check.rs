//! `sarasa lab check`: does every node's kernel hold what its plan says? The plan is compiled
//! from the API's objects exactly as `sarasa trace` compiles it (the agents' own compilers);
//! each planned nftables table is read back over netlink inside the node's namespace and
//! diffed, and so is the fabric the agent owns (routes with its protocol, the VXLAN device's
//! FDB and neighbour entries), with the agent's own reader and diff. With `--ipam vpc` the
//! VPC's routes in the fabric are compared with the addresses the Nodes published. An agent killed at any point and restarted must leave this empty (issue 14's
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
                    format!("table {} {}", table.family.as_str(), table.name),
                    tx.commands,
                ));
            }
        }
        let fabric = fabric_diff(&node.netns, &view.plan.fabric)
            .with_context(|| format!("reading the fabric of {}", view.name))?;
        if !fabric.is_empty() {
            tables.push(("fabric (routes, FDB, neighbours)".into(), fabric));
        }
        out.push(NodeDiff {
            node: view.name.clone(),
            tables,
        });
    }
    if lab.spec.vpc.is_some() && only.is_none() {
        // The VPC's routes: every address a Node published, via that node, and nothing else.
        let mut want = std::collections::BTreeMap::new();
        for view in &world.nodes {
            let Some(node) = lab.spec.node(&view.name) else {
                continue;
            };
            for a in &view.plan.fabric.pod_cidrs {
                if let ipnet::IpNet::V4(a) = a {
                    want.insert(*a, node.ip);
                }
            }
        }
        let diff = vpc_route_diff(lab, &want).context("reading the VPC's routes")?;
        out.push(NodeDiff {
            node: "fabric (the VPC)".into(),
            tables: if diff.is_empty() {
                Vec::new()
            } else {
                vec![("routes of the Nodes' VPC addresses".into(), diff)]
            },
        });
    }
    Ok((out, warnings))
}

/// The fabric's VPC routes (metric [`sarasa_lab::vpc::VPC_ROUTE_METRIC`]) against `want`.
fn vpc_route_diff(
    lab: &Lab,
    want: &std::collections::BTreeMap<ipnet::Ipv4Net, std::net::Ipv4Addr>,
) -> Result<Vec<String>> {
    let ns = sarasa_netns::NetNs::open(&lab.spec.fabric_netns)?;
    let mut nl = sarasa_netns::Netlink::open_in(&ns)?;
    let have: std::collections::BTreeMap<ipnet::Ipv4Net, Option<std::net::IpAddr>> = nl
        .routes(Some(sarasa_netns::Family::V4))?
        .into_iter()
        .filter(|r| r.metric == Some(sarasa_lab::vpc::VPC_ROUTE_METRIC))
        .filter_map(|r| match r.dst {
            ipnet::IpNet::V4(d) => Some((d, r.gateway)),
            ipnet::IpNet::V6(_) => None,
        })
        .collect();
    let mut out = Vec::new();
    for (dst, hop) in want {
        if have.get(dst) != Some(&Some(std::net::IpAddr::V4(*hop))) {
            out.push(format!("missing route {dst} via {hop}"));
        }
    }
    for (dst, hop) in &have {
        if !want.contains_key(dst) {
            let via = hop.map(|h| format!(" via {h}")).unwrap_or_default();
            out.push(format!("route {dst}{via} routes an address no Node holds"));
        }
    }
    Ok(out)
}

/// The fabric operations that would make the node's kernel hold `plan`'s fabric.
fn fabric_diff(netns: &str, plan: &sarasa_plan::fabric::FabricPlan) -> Result<Vec<String>> {
    let ns = sarasa_netns::NetNs::open(netns)?;
    let mut nl = sarasa_netns::Netlink::open_in(&ns)?;
    let uplink = match &plan.vxlan {
        Some(v) => v.uplink.clone(),
        None => sarasa_lab::spec::UPLINK.to_string(),
    };
    let uplink_index = nl.link(&uplink)?.index;
    let vxlan_index = match &plan.vxlan {
        Some(v) => nl.link_by_name(&v.name)?.map(|l| l.index),
        None => None,
    };
    // The agent's own entries; with BGP also BIRD's routes: BGP must have delivered the
    // plan's (the agent's stand behind them with a worse metric).
    let mut protocols = vec![("", sarasa_agent::datapath::ROUTE_PROTOCOL)];
    if plan.routes_by_bgp {
        protocols.push(("BGP: ", sarasa_agent::datapath::BIRD_ROUTE_PROTOCOL));
    }
    let mut out = Vec::new();
    for (label, protocol) in protocols {
        let mut current =
            sarasa_agent::datapath::read_fabric_of(&mut nl, vxlan_index, uplink_index, protocol)?;
        let mut want = plan.fabric.clone();
        if !label.is_empty() {
            // BIRD holds routes only; FDB and neighbours are the agent's.
            want.fdb.clear();
            want.neighbours.clear();
            current.fdb.clear();
            current.neighbours.clear();
        }
        out.extend(
            sarasa_agent::diff::diff(&want, &current)
                .into_iter()
                .map(|op| format!("{label}{op:?}")),
        );
    }
    Ok(out)
}

/// Prints the result; true when every node equals its plan.
pub fn print(diffs: &[NodeDiff], warnings: &[String]) -> bool {
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let mut equal = true;
    for d in diffs {
        if d.tables.is_empty() {
            println!("{}: every table and the fabric equal the plan", d.node);
            continue;
        }
        equal = false;
        for (table, commands) in &d.tables {
            println!(
                "{}: {table} differs from the plan ({} changes to fix):",
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
