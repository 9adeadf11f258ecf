//! The node's podCIDRs when the cluster does not allocate them (kube-controller-manager without
//! `--allocate-node-cidrs`): sarasa's own allocation from the clusterCIDRs, one block per
//! cluster CIDR (`--node-cidr-mask-size-ipv4`, default /24; `-ipv6`, default /64).
//!
//! `Node.spec.podCIDRs` always wins: the agent allocates only when its Node has none, and
//! every node reads a peer's `sarasa.io/pod-cidrs` annotation only when that peer's spec has
//! none ([`sarasa_cluster::state::NodeInfo`]).
//!
//! Two agents starting together must never take the same block, and a Node annotation alone
//! cannot ensure it (each agent writes only its own Node, so a precondition on it orders
//! nothing between two nodes). The allocations live in ONE object, the ConfigMap
//! `sarasa-system/sarasa-pod-cidrs` (`data`: node name → its blocks, comma separated), and
//! every change to it is a replace with the resourceVersion read (optimistic concurrency):
//! of two agents that read the same version, one write succeeds and the other gets 409
//! Conflict, reads again, and allocates from what it now sees. Entries of Nodes that no
//! longer exist are released by the next allocation. The blocks are then mirrored on the
//! Node (`sarasa.io/pod-cidrs`), where the other agents' watches see them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::error::{Error, Result};
use sarasa_cluster::state::{NodeInfo, ANNOTATION_POD_CIDRS};

/// The ConfigMap holding every sarasa-allocated block (in [`crate::lease::LEASE_NAMESPACE`]).
pub const ALLOCATIONS: &str = "sarasa-pod-cidrs";
/// How long a Node without podCIDRs is given for the cluster's own allocator (the lab's
/// control plane, kube-controller-manager) to fill in `spec.podCIDRs` before sarasa allocates.
pub const SPEC_GRACE: Duration = Duration::from_secs(2);
/// Read-allocate-write rounds before giving up on a contended allocation (the caller retries).
const ATTEMPTS: usize = 20;

/// Block sizes of the allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeMasks {
    pub v4: u8,
    pub v6: u8,
}

impl Default for NodeMasks {
    fn default() -> Self {
        NodeMasks { v4: 24, v6: 64 }
    }
}

/// Why no block could be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("clusterCIDRs[{index}] {cidr}: node mask /{mask} is shorter than the CIDR's prefix or too long for its family")]
    BadMask { index: usize, cidr: IpNet, mask: u8 },
    #[error("clusterCIDRs[{index}] {cidr}: no free /{mask} block left")]
    Exhausted { index: usize, cidr: IpNet, mask: u8 },
}

/// The mask for blocks of `cidr`.
fn mask_for(cidr: &IpNet, masks: NodeMasks) -> u8 {
    match cidr {
        IpNet::V4(_) => masks.v4,
        IpNet::V6(_) => masks.v6,
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// One block per cluster CIDR, each the first block of its mask that overlaps nothing in
/// `taken`. Pure: the unit of the allocation.
pub fn allocate(
    cluster_cidrs: &[IpNet],
    masks: NodeMasks,
    taken: &[IpNet],
) -> std::result::Result<Vec<IpNet>, AllocError> {
    let mut out = Vec::with_capacity(cluster_cidrs.len());
    for (index, cidr) in cluster_cidrs.iter().enumerate() {
        let mask = mask_for(cidr, masks);
        let bad = AllocError::BadMask {
            index,
            cidr: *cidr,
            mask,
        };
        if mask < cidr.prefix_len() {
            return Err(bad);
        }
        let blocks = cidr.subnets(mask).map_err(|_| bad)?;
        // A bounded search: at most 2^20 candidate blocks per CIDR.
        let block = blocks
            .take(1 << 20)
            .find(|b| !taken.iter().any(|t| overlaps(t, b)))
            .ok_or(AllocError::Exhausted {
                index,
                cidr: *cidr,
                mask,
            })?;
        out.push(block);
    }
    Ok(out)
}

/// Whether `blocks` is a valid allocation for the cluster: one block per cluster CIDR, each
/// inside it with that CIDR's mask, none overlapping `others`.
pub fn fits(blocks: &[IpNet], cluster_cidrs: &[IpNet], masks: NodeMasks, others: &[IpNet]) -> bool {
    blocks.len() == cluster_cidrs.len()
        && blocks.iter().zip(cluster_cidrs).all(|(b, c)| {
            b.prefix_len() == mask_for(c, masks)
                && c.contains(&b.network())
                && *b == b.trunc()
                && !others.iter().any(|o| overlaps(o, b))
        })
}

/// Parses `a,b` into blocks (None when any part is not a CIDR).
pub fn parse_blocks(v: &str) -> Option<Vec<IpNet>> {
    v.split(',')
        .map(|s| s.trim().parse::<IpNet>().ok())
        .collect::<Option<Vec<_>>>()
        .filter(|b| !b.is_empty())
}

pub fn render_blocks(blocks: &[IpNet]) -> String {
    blocks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The allocation table of the ConfigMap's data (entries that do not parse are dropped: they
/// reserve nothing, and the next write removes them).
pub fn parse_table(data: Option<&BTreeMap<String, String>>) -> BTreeMap<String, Vec<IpNet>> {
    data.into_iter()
        .flatten()
        .filter_map(|(node, v)| Some((node.clone(), parse_blocks(v)?)))
        .collect()
}

/// What one allocation round decided, given what it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// This node's blocks.
    pub blocks: Vec<IpNet>,
    /// The table to write back, or None when it already holds `blocks` for the node and
    /// nothing of a deleted Node.
    pub table: Option<BTreeMap<String, Vec<IpNet>>>,
}

/// The pure core of one round: `table` as read, `nodes` every Node now (their spec podCIDRs
/// and annotations), `me` this node's name.
pub fn decide(
    me: &str,
    table: &BTreeMap<String, Vec<IpNet>>,
    nodes: &[NodeInfo],
    hint: Option<&[IpNet]>,
    cluster_cidrs: &[IpNet],
    masks: NodeMasks,
) -> std::result::Result<Decision, AllocError> {
    let live: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut new: BTreeMap<String, Vec<IpNet>> = table
        .iter()
        .filter(|(n, _)| live.contains(n.as_str()) || n.as_str() == me)
        .map(|(n, b)| (n.clone(), b.clone()))
        .collect();
    // Everything another node holds: its table entry, its podCIDRs (spec or annotation).
    let others: Vec<IpNet> = new
        .iter()
        .filter(|(n, _)| n.as_str() != me)
        .flat_map(|(_, b)| b.iter().copied())
        .chain(
            nodes
                .iter()
                .filter(|n| n.name != me)
                .flat_map(|n| n.pod_cidrs.iter().copied()),
        )
        .collect();
    let blocks = match new.get(me) {
        Some(b) if fits(b, cluster_cidrs, masks, &others) => b.clone(),
        _ => match hint {
            // A restart after the table was lost: keep the Node's blocks when still free.
            Some(h) if fits(h, cluster_cidrs, masks, &others) => h.to_vec(),
            _ => allocate(cluster_cidrs, masks, &others)?,
        },
    };
    new.insert(me.to_string(), blocks.clone());
    let table = (new != *table).then_some(new);
    Ok(Decision { blocks, table })
}

/// The outcome of [`ensure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub pod_cidrs: Vec<IpNet>,
    /// sarasa allocated them (false: the Node's spec has them).
    pub own: bool,
    /// Writes refused with 409 Conflict (another agent allocated in between) before this one.
    pub conflicts: usize,
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// The node's podCIDRs: its spec's when set (waiting up to `grace`, the agent's
/// [`SPEC_GRACE`], for the cluster's allocator when the Node has neither spec podCIDRs nor
/// sarasa's annotation), else sarasa's allocation, recorded in [`ALLOCATIONS`] and on the Node.
pub async fn ensure(
    client: &kube::Client,
    node_name: &str,
    cluster_cidrs: &[IpNet],
    masks: NodeMasks,
    grace: Duration,
) -> Result<Allocation> {
    let nodes: Api<Node> = Api::all(client.clone());
    let get = || async {
        nodes
            .get(node_name)
            .await
            .map_err(|e| Error::kube(format!("get node {node_name}"), e))
    };
    let spec_cidrs = |n: &Node| {
        n.spec.as_ref().is_some_and(|s| {
            s.pod_cidr.is_some() || s.pod_cidrs.as_ref().is_some_and(|c| !c.is_empty())
        })
    };
    let annotated = |n: &Node| n.annotations().contains_key(ANNOTATION_POD_CIDRS);
    let mut obj = get().await?;
    if !spec_cidrs(&obj) && !annotated(&obj) {
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline && !spec_cidrs(&obj) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            obj = get().await?;
        }
    }
    if spec_cidrs(&obj) {
        return Ok(Allocation {
            pod_cidrs: NodeInfo::from_object(&obj).pod_cidrs,
            own: false,
            conflicts: 0,
        });
    }
    let hint = obj
        .annotations()
        .get(ANNOTATION_POD_CIDRS)
        .and_then(|v| parse_blocks(v));

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), crate::lease::LEASE_NAMESPACE);
    let mut conflicts = 0;
    for attempt in 0..ATTEMPTS {
        let current = maps
            .get_opt(ALLOCATIONS)
            .await
            .map_err(|e| Error::kube(format!("get configmap {ALLOCATIONS}"), e))?;
        let all: Vec<NodeInfo> = nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("list nodes", e))?
            .items
            .iter()
            .map(NodeInfo::from_object)
            .collect();
        let table = parse_table(current.as_ref().and_then(|c| c.data.as_ref()));
        let decision = decide(
            node_name,
            &table,
            &all,
            hint.as_deref(),
            cluster_cidrs,
            masks,
        )
        .map_err(|e| Error::Node {
            node: node_name.into(),
            reason: format!("podCIDR allocation: {e}"),
        })?;
        if let Some(new) = &decision.table {
            let mut cm = current.clone().unwrap_or_default();
            cm.metadata.name = Some(ALLOCATIONS.into());
            cm.metadata.namespace = Some(crate::lease::LEASE_NAMESPACE.into());
            cm.data = Some(
                new.iter()
                    .map(|(n, b)| (n.clone(), render_blocks(b)))
                    .collect(),
            );
            // `cm` carries the resourceVersion read: a replace by another agent since makes
            // this one fail with 409 (as does a create racing a create).
            let written = match &current {
                Some(_) => maps.replace(ALLOCATIONS, &PostParams::default(), &cm).await,
                None => maps.create(&PostParams::default(), &cm).await,
            };
            match written {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) && current.is_none() => {
                    // The namespace is missing (an install ships it; the lab makes it).
                    crate::lease::ensure_namespace(client).await?;
                    continue;
                }
                Err(e) if is_status(&e, 409) => {
                    conflicts += 1;
                    tracing::debug!(attempt, "podCIDR allocation conflicted; reading again");
                    continue;
                }
                Err(e) => {
                    return Err(Error::kube(format!("write configmap {ALLOCATIONS}"), e));
                }
            }
        }
        let value = render_blocks(&decision.blocks);
        if obj.annotations().get(ANNOTATION_POD_CIDRS) != Some(&value) {
            let patch = json!({"metadata": {"annotations": {ANNOTATION_POD_CIDRS: value}}});
            nodes
                .patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| Error::kube(format!("annotate node {node_name}"), e))?;
        }
        tracing::info!(node = node_name, pod_cidrs = %value, "podCIDRs allocated by sarasa");
        return Ok(Allocation {
            pod_cidrs: decision.blocks,
            own: true,
            conflicts,
        });
    }
    Err(Error::Node {
        node: node_name.into(),
        reason: format!("podCIDR allocation kept conflicting ({ATTEMPTS} attempts)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn info(name: &str, cidrs: &[&str]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            pod_cidrs: nets(cidrs),
            ..NodeInfo::default()
        }
    }

    #[test]
    fn allocates_the_first_free_block_per_family() {
        let cluster = nets(&["10.244.0.0/16", "fd00:10:244::/56"]);
        let m = NodeMasks::default();
        assert_eq!(
            allocate(&cluster, m, &[]).unwrap(),
            nets(&["10.244.0.0/24", "fd00:10:244::/64"])
        );
        let taken = nets(&["10.244.0.0/24", "10.244.1.0/25", "fd00:10:244::/64"]);
        assert_eq!(
            allocate(&cluster, m, &taken).unwrap(),
            nets(&["10.244.2.0/24", "fd00:10:244:1::/64"])
        );
        // A configured mask.
        let m = NodeMasks { v4: 26, v6: 80 };
        assert_eq!(
            allocate(&nets(&["10.244.0.0/16"]), m, &nets(&["10.244.0.0/26"])).unwrap(),
            nets(&["10.244.0.64/26"])
        );
    }

    #[test]
    fn a_full_cidr_and_a_bad_mask_are_named() {
        let cluster = nets(&["10.244.0.0/23"]);
        let taken = nets(&["10.244.0.0/24", "10.244.1.0/24"]);
        let e = allocate(&cluster, NodeMasks::default(), &taken).unwrap_err();
        assert_eq!(
            e.to_string(),
            "clusterCIDRs[0] 10.244.0.0/23: no free /24 block left"
        );
        let e = allocate(&cluster, NodeMasks { v4: 16, v6: 64 }, &[]).unwrap_err();
        assert!(e.to_string().contains("node mask /16"), "{e}");
        let e = allocate(&cluster, NodeMasks { v4: 33, v6: 64 }, &[]).unwrap_err();
        assert!(matches!(e, AllocError::BadMask { .. }), "{e}");
    }

    #[test]
    fn table_round_trips_and_drops_garbage() {
        let data = BTreeMap::from([
            ("a".to_string(), "10.244.0.0/24,fd00::/64".to_string()),
            ("b".to_string(), "garbage".to_string()),
        ]);
        let t = parse_table(Some(&data));
        assert_eq!(t.len(), 1);
        assert_eq!(render_blocks(&t["a"]), "10.244.0.0/24,fd00::/64");
    }

    #[test]
    fn decide_keeps_its_entry_avoids_others_and_releases_deleted_nodes() {
        let cluster = nets(&["10.244.0.0/16"]);
        let m = NodeMasks::default();
        let mut table = BTreeMap::new();
        table.insert("a".to_string(), nets(&["10.244.0.0/24"]));
        table.insert("gone".to_string(), nets(&["10.244.1.0/24"]));
        // `c` has a spec podCIDR from the cluster's own allocator.
        let nodes = vec![
            info("a", &["10.244.0.0/24"]),
            info("b", &[]),
            info("c", &["10.244.2.0/24"]),
        ];
        let d = decide("b", &table, &nodes, None, &cluster, m).unwrap();
        // The deleted node's block is free again; a's and c's are not.
        assert_eq!(d.blocks, nets(&["10.244.1.0/24"]));
        let t = d.table.unwrap();
        assert_eq!(t.keys().collect::<Vec<_>>(), ["a", "b"]);

        // Once written, deciding again changes nothing.
        let d2 = decide("b", &t, &nodes, None, &cluster, m).unwrap();
        assert_eq!(d2.blocks, nets(&["10.244.1.0/24"]));
        assert!(d2.table.is_none());

        // An entry that collides with another node's spec podCIDR is replaced.
        let mut bad = t.clone();
        bad.insert("b".into(), nets(&["10.244.2.0/24"]));
        let d3 = decide("b", &bad, &nodes, None, &cluster, m).unwrap();
        assert_eq!(d3.blocks, nets(&["10.244.1.0/24"]));

        // The table lost: the Node's annotation is kept when still free, not when taken.
        let empty = BTreeMap::new();
        let hint = nets(&["10.244.7.0/24"]);
        let d4 = decide("b", &empty, &nodes, Some(&hint), &cluster, m).unwrap();
        assert_eq!(d4.blocks, hint);
        let hint = nets(&["10.244.2.0/24"]);
        let d5 = decide("b", &empty, &nodes, Some(&hint), &cluster, m).unwrap();
        assert_eq!(d5.blocks, nets(&["10.244.1.0/24"]));
        // A hint outside the cluster CIDR or of another size is not taken.
        let hint = nets(&["10.9.0.0/24"]);
        let d6 = decide("b", &empty, &nodes, Some(&hint), &cluster, m).unwrap();
        assert_eq!(d6.blocks, nets(&["10.244.1.0/24"]));
    }
}
