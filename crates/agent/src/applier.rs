//! The one applier of the agent: commits a reconcile's [`PlanDelta`] to the node. The fabric
//! through the datapath code on `sarasa_netns::Netlink` (a diff against the kernel's routes,
//! FDB and neighbours), then every nftables table's transaction — masquerade, the service
//! proxy's main table and shards, policy — as ONE nf_tables netlink batch (one kernel commit:
//! all of it or nothing), then the CNI conflist. Runs on tokio's blocking pool: every call
//! blocks on the kernel.
//!
//! Why one batch: a reconcile's changes are one state of the node. Committed together, a
//! Service and the policy that admits its clients appear at the same instant, a failure leaves
//! the kernel as it was (so the compilers can start over from a full diff), and the kernel
//! re-validates the touched tables once. It became possible once every sarasa table encoded
//! over netlink (`log` was the last statement missing): a mixed batch would otherwise have sent
//! every Service change of that reconcile through `nft -f`.

use std::path::PathBuf;

use sarasa_model::MacAddr;
use sarasa_nft::{diff_kernel, Family, NetlinkBackend, Transaction};
use sarasa_plan::{Applied, Applier, PlanDelta, TableId};

use crate::datapath::{NodeDatapath, Uplink};
use crate::error::{Error, Result};
use crate::netns::NetnsTarget;

/// The agent's [`Applier`]: netlink for the fabric and nftables, a file for the conflist.
pub struct NetlinkApplier {
    target: NetnsTarget,
    datapath: NodeDatapath,
    uplink_index: u32,
    vtep_mac: Option<MacAddr>,
    cni_conf_dir: PathBuf,
    /// NetworkPolicy is enforced and bridge netfilter not yet turned on: bridged pod traffic
    /// must meet the `forward` hook.
    bridge_netfilter: bool,
    /// The nf_tables socket in the node's namespace, opened on first use and again after a
    /// failure to open it.
    nft: Option<NetlinkBackend>,
}

impl NetlinkApplier {
    /// An applier for the node `datapath` is connected to; `vtep_mac` is used only when the
    /// VXLAN device must be created again; `bridge_netfilter` when NetworkPolicy is enforced
    /// (see [`crate::policy::ensure_bridge_netfilter`]).
    pub fn new(
        datapath: NodeDatapath,
        uplink: &Uplink,
        vtep_mac: Option<MacAddr>,
        cni_conf_dir: PathBuf,
        bridge_netfilter: bool,
    ) -> Self {
        NetlinkApplier {
            target: datapath.target().clone(),
            datapath,
            uplink_index: uplink.index,
            vtep_mac,
            cni_conf_dir,
            bridge_netfilter,
            nft: None,
        }
    }

    fn nft(&mut self) -> Result<&mut NetlinkBackend> {
        if self.nft.is_none() {
            let b = crate::nftables::open(&self.target)
                .map_err(|e| Error::Nft(format!("open nf_tables socket: {e}")))?;
            self.nft = Some(b);
        }
        self.nft
            .as_mut()
            .ok_or_else(|| Error::Nft("nf_tables socket".into()))
    }
}

impl Applier for NetlinkApplier {
    type Error = Error;

    fn diff_table(
        &mut self,
        id: &TableId,
        desired: Option<&sarasa_nft::Table>,
    ) -> Result<Transaction> {
        let nft = self.nft()?;
        let read = |e| Error::Nft(format!("read back table {id}: {e}"));
        Ok(match desired {
            // Looked up by the model's names: a full chain dump covers every chain of every
            // table of the family (seconds at 100k Services, again for each shard).
            Some(t) => diff_kernel(nft.list_table_like(t).map_err(read)?.as_ref(), t),
            None => match nft.list_table(id.family, &id.name).map_err(read)? {
                Some(_) => Transaction::delete_table(id.family, &id.name),
                None => Transaction::default(),
            },
        })
    }

    fn apply(&mut self, delta: &PlanDelta) -> Result<Applied> {
        let mut applied = Applied::default();
        if let Some(fabric) = &delta.fabric {
            if std::mem::take(&mut self.bridge_netfilter) {
                // Once: the sysctl stays; a missing module is logged once.
                crate::policy::ensure_bridge_netfilter(&self.target);
            }
            let report =
                self.datapath
                    .program_fabric_blocking(fabric, self.uplink_index, self.vtep_mac)?;
            applied.fabric_ops = report.fabric_ops.len();
            if !report.is_noop() {
                tracing::info!(
                    ops = report.fabric_ops.len(),
                    links = report.link_changes,
                    addresses = report.address_changes,
                    "fabric programmed"
                );
            }
        }
        let parts: Vec<(Family, &str, &Transaction)> = delta
            .tables
            .iter()
            .filter(|t| !t.transaction.is_empty())
            .map(|t| (t.table.family, t.table.name.as_str(), &t.transaction))
            .collect();
        if !parts.is_empty() {
            let nft = self.nft()?;
            nft.apply_batch(&parts).map_err(|e| {
                Error::Apply(format!("nftables batch over {} table(s): {e}", parts.len()))
            })?;
            applied.nft_batches = 1;
            applied.nft_ops = parts.iter().map(|(_, _, tx)| tx.commands.len()).sum();
        }
        if let Some(cni) = &delta.cni {
            applied.cni_written =
                crate::cni_config::write_atomic(&self.cni_conf_dir, &cni.conflist)?;
        }
        Ok(applied)
    }
}
