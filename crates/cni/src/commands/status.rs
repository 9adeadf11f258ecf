//! STATUS: ready when the ranges are valid with a free address and the store is writable
//! (code 50 otherwise); in bridge mode, attachments without their bridge mean existing pods
//! have lost connectivity (code 51).

use sarasa_netns::Netlink;

use crate::config::{Mode, Plugin};
use crate::error::{CniError, LIMITED_CONNECTIVITY, NOT_AVAILABLE};

/// Runs STATUS.
pub fn run(p: &Plugin) -> Result<(), CniError> {
    let unavailable = |e: CniError| CniError::new(NOT_AVAILABLE, "plugin not available", e.details);
    let ipam = p.ipam().map_err(unavailable)?;
    super::rebuild::ensure(p, &ipam).map_err(unavailable)?;
    ipam.status().map_err(|e| unavailable(e.into()))?;
    if p.mode == Mode::Bridge {
        let allocations = ipam.allocations().map_err(|e| unavailable(e.into()))?;
        if !allocations.is_empty() {
            let mut node = Netlink::current().map_err(|e| unavailable(e.into()))?;
            let bridge = node
                .link_by_name(&p.bridge)
                .map_err(|e| unavailable(e.into()))?;
            if !bridge.is_some_and(|b| b.up) {
                return Err(CniError::new(
                    LIMITED_CONNECTIVITY,
                    "plugin not available; existing containers may have limited connectivity",
                    format!(
                        "bridge {} is missing or down while {} attachments exist",
                        p.bridge,
                        allocations.len()
                    ),
                ));
            }
        }
    }
    Ok(())
}
