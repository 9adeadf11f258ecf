//! Deltas of the node plan and the one seam that applies them.
//!
//! A [`PlanDelta`] is what one reconcile changes: the fabric when it changed (the applier diffs
//! it against netlink state), the nftables transactions of every table it touches (each names
//! its own table; an applier commits them all as one atomic batch), and the CNI conflist when it
//! changed. [`Applier`] is the seam: the agent's netlink implementation in production,
//! [`Recording`] in tests.

use std::collections::BTreeMap;

use sarasa_nft::{diff, diff_kernel, KernelTable, Table, Transaction};

use crate::{CniPlan, FabricPlan, NodePlan, TableId};

/// One table's part of a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChange {
    pub table: TableId,
    pub transaction: Transaction,
}

/// What one reconcile changes on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanDelta {
    /// The desired fabric, when it differs from what was last applied.
    pub fabric: Option<FabricPlan>,
    /// nftables transactions, in order; applied as one atomic batch.
    pub tables: Vec<TableChange>,
    /// The conflist, when it changed.
    pub cni: Option<CniPlan>,
}

impl PlanDelta {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.fabric.is_none()
            && self.cni.is_none()
            && self.tables.iter().all(|t| t.transaction.is_empty())
    }

    /// The delta that turns `old` (what is applied; `None`: nothing yet) into `new`: tables
    /// diffed one by one, tables `new` no longer has deleted.
    pub fn between(old: Option<&NodePlan>, new: &NodePlan) -> PlanDelta {
        let mut tables = Vec::new();
        for (id, table) in &new.tables {
            let transaction = match old.and_then(|o| o.tables.get(id)) {
                Some(before) => diff(before, table),
                None => diff_kernel(None, table),
            };
            if !transaction.is_empty() {
                tables.push(TableChange {
                    table: id.clone(),
                    transaction,
                });
            }
        }
        for id in old.map(|o| o.tables.keys()).into_iter().flatten() {
            if !new.tables.contains_key(id) {
                tables.push(TableChange {
                    table: id.clone(),
                    transaction: Transaction::delete_table(id.family, &id.name),
                });
            }
        }
        PlanDelta {
            fabric: (old.map(|o| &o.fabric) != Some(&new.fabric)).then(|| new.fabric.clone()),
            tables,
            cni: (old.map(|o| &o.cni) != Some(&new.cni)).then(|| new.cni.clone()),
        }
    }
}

/// What one [`Applier::apply`] did, for the agent's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Route, FDB and neighbour operations the fabric needed.
    pub fabric_ops: usize,
    /// nftables operations committed (every table together).
    pub nft_ops: usize,
    /// nf_tables batches sent (0 or 1 per delta).
    pub nft_batches: usize,
    /// The conflist was (re)written.
    pub cni_written: bool,
}

/// Applies plan deltas to a node: the fabric, then every table's transaction as ONE atomic
/// nftables commit, then the conflist (last: a pod is only set up on a programmed node).
pub trait Applier {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The transaction that makes table `id` on the node what `desired` says (`None`: the
    /// table must not exist), read back from the node: for full syncs (start, recovery),
    /// where the compilers cannot know what the node holds. Nothing is applied.
    fn diff_table(
        &mut self,
        id: &TableId,
        desired: Option<&Table>,
    ) -> Result<Transaction, Self::Error>;

    /// Commits `delta`.
    fn apply(&mut self, delta: &PlanDelta) -> Result<Applied, Self::Error>;
}

/// An applier that keeps every delta (tests). Its node holds the tables of
/// [`Recording::kernel`] (empty unless a test puts some there): what
/// [`Applier::diff_table`] reads back.
#[derive(Debug, Default)]
pub struct Recording {
    pub applied: Vec<PlanDelta>,
    pub kernel: BTreeMap<TableId, KernelTable>,
}

impl Applier for Recording {
    type Error = std::convert::Infallible;

    fn diff_table(
        &mut self,
        id: &TableId,
        desired: Option<&Table>,
    ) -> Result<Transaction, Self::Error> {
        let current = self.kernel.get(id);
        Ok(match desired {
            Some(t) => diff_kernel(current, t),
            None if current.is_some() => Transaction::delete_table(id.family, &id.name),
            None => Transaction::default(),
        })
    }

    fn apply(&mut self, delta: &PlanDelta) -> Result<Applied, Self::Error> {
        self.applied.push(delta.clone());
        let nft_ops: usize = delta
            .tables
            .iter()
            .map(|t| t.transaction.commands.len())
            .sum();
        Ok(Applied {
            fabric_ops: usize::from(delta.fabric.is_some()),
            nft_ops,
            nft_batches: usize::from(nft_ops > 0),
            cni_written: delta.cni.is_some(),
        })
    }
}
