//! Deltas of the node plan and the one seam that applies them.
//!
//! A [`PlanDelta`] is what one reconcile changes: the fabric when it changed (the applier diffs
//! it against netlink state), the nftables transactions of every table it touches (each names
//! its own table; an applier commits them all as one atomic batch), and the CNI conflist when it
//! changed. [`Applier`] is the seam: the agent's netlink implementation in production,
//! [`Recording`] in tests.

use sarasa_nft::{diff, diff_kernel, Transaction};

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

/// Applies plan deltas to a node.
pub trait Applier {
    type Error: std::error::Error;
    fn apply(&mut self, delta: &PlanDelta) -> Result<(), Self::Error>;
}

/// An applier that keeps every delta (tests).
#[derive(Debug, Default)]
pub struct Recording {
    pub applied: Vec<PlanDelta>,
}

impl Applier for Recording {
    type Error = std::convert::Infallible;
    fn apply(&mut self, delta: &PlanDelta) -> Result<(), Self::Error> {
        self.applied.push(delta.clone());
        Ok(())
    }
}
