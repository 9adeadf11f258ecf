//! GC: release every allocation not in `cni.dev/valid-attachments` and delete this
//! network's host veths that no valid attachment owns (crash leftovers).

use std::collections::HashSet;

use sarasa_netns::Netlink;

use crate::config::Plugin;
use crate::error::CniError;
use crate::plumbing::hostport;
use crate::{log, naming};

/// Runs GC.
pub fn run(p: &Plugin) -> Result<(), CniError> {
    // An absent list is not an empty one: refusing it keeps a malformed request from
    // releasing every address of the network.
    if p.raw.valid_attachments.is_none() && p.raw.attachments.is_none() {
        return Err(CniError::config(
            "GC needs \"cni.dev/valid-attachments\" (an empty list releases everything)",
        ));
    }
    let valid = p.valid_attachments();
    let ipam = p.ipam()?;
    super::rebuild::ensure(p, &ipam)?;
    let released = ipam.gc(&valid)?;
    // The host ports of what is released go with it; a crash between the store and the
    // kernel is repaired here too.
    hostport::sync(&ipam)?;
    for a in &released {
        log::info(&format!(
            "GC released {} of {}/{}",
            a.leases
                .iter()
                .map(|l| l.address.to_string())
                .collect::<Vec<_>>()
                .join(","),
            a.container_id,
            a.ifname
        ));
    }
    let keep: HashSet<String> = valid
        .iter()
        .map(|(c, i)| naming::host_veth(&p.name, c, i))
        .collect();
    let prefix = naming::network_prefix(&p.name);
    let mut node = Netlink::current()?;
    for link in node.links()? {
        if link.name.len() == 15
            && link.name.starts_with(&prefix)
            && link.kind.as_deref() == Some("veth")
            && !keep.contains(&link.name)
        {
            match node.delete_link(link.index) {
                Ok(()) => log::info(&format!("GC removed host veth {}", link.name)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
