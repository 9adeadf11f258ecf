//! Egress masquerade on the node: the table (`inet sarasa-node`, built by
//! [`sarasa_plan::masquerade`]) made to match over netlink ([`crate::nftables`]): a diff, so an
//! unchanged plan changes nothing and conntrack (established NAT flows) is left alone.

pub use sarasa_plan::masquerade::{table, TABLE_FAMILY, TABLE_NAME};
use sarasa_plan::Masquerade;

use crate::error::{Error, Result};
use crate::netns::NetnsTarget;

/// Applies the masquerade plan (a diff against what the kernel holds).
pub async fn apply(target: &NetnsTarget, m: &Masquerade) -> Result<()> {
    let desired = table(m);
    let target = target.clone();
    tokio::task::spawn_blocking(move || {
        let mut backend = crate::nftables::open(&target)?;
        crate::nftables::reconcile(&mut backend, &desired).map(|_| ())
    })
    .await
    .map_err(|e| Error::Config(format!("blocking task failed: {e}")))?
    .map_err(|e| Error::Nft(format!("masquerade table {TABLE_NAME}: {e}")))
}
