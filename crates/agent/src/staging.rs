//! One reconcile's [`PlanDelta`] being put together: the compilers push their tables'
//! transactions here, the fabric and conflist are set on it, and [`Staging::commit`] hands it
//! to the [`Applier`] in one call.
//!
//! One bound: a full sync from nothing (a cold start at 100k Services is ~300k chains and a
//! batch of ~290 MB) is not held whole. Once the staged nftables operations pass
//! [`FLUSH_OPS`], what is staged so far is committed as its own delta and staging goes on, so
//! memory stays bounded by that many operations, as when each table was applied alone.
//! Measured (`scripts/bench-services-control.sh 10000`, cold start): staging the whole
//! ruleset in one delta raised the agent's peak from 80-87 MB to 204-211 MB; committing every
//! 10k operations, to 93-100 MB; 3k is about one shard table at 10k Services, what the agent
//! applied at a time before. Only full syncs that write a lot get there: every incremental
//! reconcile, and a restart over a programmed node (nothing to change), is one delta.

use sarasa_nft::Transaction;
use sarasa_plan::{Applied, Applier, PlanDelta, TableChange, TableId};

use crate::error::{Error, Result};

/// Staged nftables operations past which a full sync commits what it has staged so far.
pub const FLUSH_OPS: usize = 3_000;

/// A delta being staged for one applier.
pub struct Staging<'a, A: Applier> {
    pub applier: &'a mut A,
    pub delta: PlanDelta,
    ops: usize,
    /// What the deltas committed so far did (flushes and the final commit).
    pub applied: Applied,
    /// Deltas committed (flushes included).
    pub commits: usize,
}

pub(crate) fn apply_err(e: impl std::fmt::Display) -> Error {
    Error::Apply(e.to_string())
}

impl<'a, A: Applier> Staging<'a, A> {
    pub fn new(applier: &'a mut A) -> Self {
        Staging {
            applier,
            delta: PlanDelta::default(),
            ops: 0,
            applied: Applied::default(),
            commits: 0,
        }
    }

    /// What the node holds of `id` against `desired`, as a transaction (see
    /// [`Applier::diff_table`]).
    pub fn diff_table(
        &mut self,
        id: &TableId,
        desired: Option<&sarasa_nft::Table>,
    ) -> Result<Transaction> {
        self.applier.diff_table(id, desired).map_err(apply_err)
    }

    /// Stages one table's transaction (nothing when it is empty); commits what is staged
    /// when it passes [`FLUSH_OPS`].
    pub fn push(&mut self, table: TableId, transaction: Transaction) -> Result<()> {
        if transaction.is_empty() {
            return Ok(());
        }
        self.ops += transaction.commands.len();
        self.delta.tables.push(TableChange { table, transaction });
        if self.ops >= FLUSH_OPS {
            tracing::debug!(
                ops = self.ops,
                "full sync: committing what is staged so far"
            );
            self.commit()?;
        }
        Ok(())
    }

    /// Commits the staged delta (nothing when it is empty).
    pub fn commit(&mut self) -> Result<()> {
        let delta = std::mem::take(&mut self.delta);
        self.ops = 0;
        if delta.is_empty() {
            return Ok(());
        }
        let a = self.applier.apply(&delta).map_err(apply_err)?;
        self.commits += 1;
        self.applied.fabric_ops += a.fabric_ops;
        self.applied.nft_ops += a.nft_ops;
        self.applied.nft_batches += a.nft_batches;
        self.applied.cni_written |= a.cni_written;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sarasa_nft::Family;
    use sarasa_plan::Recording;

    fn tx(n: usize) -> Transaction {
        Transaction {
            commands: (0..n).map(|i| format!("add chain inet t c{i}")).collect(),
            ..Transaction::default()
        }
    }

    fn id(name: &str) -> TableId {
        TableId {
            family: Family::Inet,
            name: name.into(),
        }
    }

    #[test]
    fn stages_into_one_delta_and_flushes_only_past_the_bound() {
        let mut rec = Recording::default();
        let mut s = Staging::new(&mut rec);
        s.push(id("a"), tx(3)).unwrap();
        s.push(id("b"), Transaction::default()).unwrap();
        s.push(id("c"), tx(2)).unwrap();
        s.commit().unwrap();
        assert_eq!(s.commits, 1);
        assert_eq!(s.applied.nft_ops, 5);
        let mut s = Staging::new(&mut rec);
        s.push(id("big"), tx(FLUSH_OPS)).unwrap();
        assert_eq!(s.commits, 1, "committed at the bound");
        s.push(id("after"), tx(1)).unwrap();
        s.commit().unwrap();
        s.commit().unwrap();
        assert_eq!(s.commits, 2, "an empty delta is not committed");
        let tables: Vec<Vec<String>> = rec
            .applied
            .iter()
            .map(|d| d.tables.iter().map(|t| t.table.name.clone()).collect())
            .collect();
        assert_eq!(tables, vec![vec!["a", "c"], vec!["big"], vec!["after"]]);
    }
}
