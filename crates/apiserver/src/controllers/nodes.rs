//! Node IPAM (a podCIDR per family for every Node without one, the next free subnet of the
//! cluster CIDR) and the pod garbage collection that follows a Node's removal.

use std::collections::HashSet;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::controllers::Controller;
use crate::meta;
use crate::resources::{ResId, NODES, PODS};
use crate::store::{Event, EventKind, Store, Sub, WriteOpts};

pub struct NodeIpam;

fn pod_cidrs(node: &Value) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = meta::path(node, "spec.podCIDRs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if out.is_empty() {
        if let Some(c) = meta::path_str(node, "spec.podCIDR").and_then(|c| c.parse().ok()) {
            out.push(c);
        }
    }
    out
}

/// The first subnet of `cluster` with prefix `mask` that overlaps nothing in `used`.
pub fn next_free(cluster: IpNet, mask: u8, used: &HashSet<IpNet>) -> Option<IpNet> {
    let subnets = cluster.subnets(mask.max(cluster.prefix_len())).ok()?;
    subnets.take(1 << 20).find(|s| {
        !used
            .iter()
            .any(|u| u.contains(&s.network()) || s.contains(&u.network()))
    })
}

impl Controller for NodeIpam {
    fn name(&self) -> &'static str {
        "nodes"
    }

    fn watches(&self) -> &'static [ResId] {
        &[NODES]
    }

    fn reconcile(&mut self, store: &Store, events: Option<&[Event]>) -> Option<Duration> {
        // Pods bound to a Node that was deleted go with it.
        let gone: Vec<String> = match events {
            Some(evs) => evs
                .iter()
                .filter(|e| e.kind == EventKind::Deleted)
                .map(|e| meta::name(&e.obj).to_string())
                .collect(),
            None => Vec::new(),
        };
        let (nodes, _) = store.list(NODES, None, |_| true);
        let names: HashSet<&str> = nodes.iter().map(|n| meta::name(n)).collect();
        let (orphans, _) = store.list(PODS, None, |p| {
            let node = meta::path_str(p, "spec.nodeName").unwrap_or("");
            !node.is_empty()
                && (gone.iter().any(|g| g == node)
                    || (meta::is_deleting(p) && !names.contains(node)))
        });
        for p in orphans {
            if !names.contains(meta::path_str(&p, "spec.nodeName").unwrap_or("")) {
                let _ = store.remove_now(PODS, meta::namespace(&p), meta::name(&p));
            }
        }
        let cfg = store.config.clone();
        if !cfg.allocate_node_cidrs {
            return None;
        }
        let mut used: HashSet<IpNet> = nodes.iter().flat_map(|n| pod_cidrs(n)).collect();
        for n in nodes
            .iter()
            .filter(|n| pod_cidrs(n).is_empty() && !meta::is_deleting(n))
        {
            let mut cidrs = Vec::new();
            for cluster in &cfg.cluster_cidrs {
                let mask = match cluster {
                    IpNet::V4(_) => cfg.node_cidr_mask_v4,
                    IpNet::V6(_) => cfg.node_cidr_mask_v6,
                };
                match next_free(*cluster, mask, &used) {
                    Some(c) => {
                        used.insert(c);
                        cidrs.push(c.to_string());
                    }
                    None => tracing::warn!(
                        "no free podCIDR left in {cluster} for node {}",
                        meta::name(n)
                    ),
                }
            }
            if cidrs.len() != cfg.cluster_cidrs.len() {
                continue;
            }
            let r = store.modify(
                NODES,
                "",
                meta::name(n),
                Sub::Main,
                WriteOpts::internal(),
                |cur| {
                    let mut new = cur.clone();
                    if !pod_cidrs(cur).is_empty() {
                        return Ok(new);
                    }
                    if !new.get("spec").is_some_and(Value::is_object) {
                        new["spec"] = json!({});
                    }
                    new["spec"]["podCIDR"] = json!(cidrs[0]);
                    new["spec"]["podCIDRs"] = json!(cidrs);
                    Ok(new)
                },
            );
            if let Err(e) = r {
                tracing::warn!("assigning a podCIDR to node {}: {e}", meta::name(n));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_free_skips_used() {
        let cluster: IpNet = "10.244.0.0/16".parse().unwrap();
        let mut used = HashSet::new();
        assert_eq!(
            next_free(cluster, 24, &used).unwrap().to_string(),
            "10.244.0.0/24"
        );
        used.insert("10.244.0.0/24".parse().unwrap());
        used.insert("10.244.2.0/24".parse().unwrap());
        assert_eq!(
            next_free(cluster, 24, &used).unwrap().to_string(),
            "10.244.1.0/24"
        );
    }
}
