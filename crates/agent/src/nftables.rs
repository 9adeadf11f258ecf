//! The agent's own nftables tables made to match a model: read back over netlink (looked up by
//! the model's names), diffed, and the difference applied as one atomic batch. No `nft` run:
//! the tool dumps every chain of the ruleset first, which takes seconds once the proxy holds
//! 100k Services.

use sarasa_nft::{diff_kernel, NetlinkBackend, NftError, Table, Transaction};

use crate::netns::NetnsTarget;

/// A netlink socket in the target namespace.
pub fn open(target: &NetnsTarget) -> Result<NetlinkBackend, NftError> {
    match target {
        NetnsTarget::Current => NetlinkBackend::new(),
        NetnsTarget::Path(p) => NetlinkBackend::in_netns(p.clone()),
    }
}

/// Makes the kernel hold `desired` (its own table only); returns what was applied.
pub fn reconcile(backend: &mut NetlinkBackend, desired: &Table) -> Result<Transaction, NftError> {
    let current = backend.list_table_like(desired)?;
    let tx = diff_kernel(current.as_ref(), desired);
    drop(current);
    backend.apply_batch(&[(desired.family, desired.name.as_str(), &tx)])?;
    Ok(tx)
}
