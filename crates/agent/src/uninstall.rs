//! `sarasa agent uninstall`: takes off a node everything sarasa put there — the CNI conflist
//! and plugin binary the DaemonSet's init container installed, every nftables table named
//! `sarasa` or `sarasa-*` (the proxy's shards included, found by listing the tables rather than
//! by the names this build would use), the links it owns (the VXLAN device, the node bridge,
//! the host side of every pod veth, recognised by the CNI plugin's name prefix), the routes it
//! marked with its routing protocol number, and its state directory (IPAM leases).
//!
//! Idempotent, and like netavark's teardown it keeps going after an error and reports all of
//! them at the end, so one stuck piece does not leave the rest behind. FDB and neighbour
//! entries live on the VXLAN device and go with it. Nothing is touched that sarasa does not
//! name: other tables, links and routes stay.

use std::path::{Path, PathBuf};

use sarasa_netns::{Family as IpFamily, Netlink, TABLE_MAIN};
use sarasa_nft::{Family, Transaction};

use crate::datapath::ROUTE_PROTOCOL;
use crate::error::{Error, Result};
use crate::netns::{self, NetnsTarget};
use crate::plan::{NODE_BRIDGE, VXLAN_DEVICE};

/// Remove sarasa from this node: CNI config and plugin, nftables tables, links, routes and
/// state (idempotent). The defaults are where deploy/ puts them.
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallConfig {
    /// Directory the CNI conflist was written to.
    #[arg(long = "cni-conf-dir", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,

    /// Directory the `sarasa-cni` plugin binary was installed to.
    #[arg(long = "cni-bin-dir", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,

    /// sarasa's state directory (IPAM leases and anything else under it).
    #[arg(long = "state-dir", default_value = "/var/lib/sarasa")]
    pub state_dir: PathBuf,

    /// Allow acting on the machine's root network namespace (a real node).
    #[arg(long = "host-netns")]
    pub host_netns: bool,

    /// Once done, stay up until SIGTERM (the uninstall DaemonSet's pods stay Running instead
    /// of restarting). Read by the CLI.
    #[arg(long)]
    pub wait: bool,
}

impl UninstallConfig {
    /// The defaults, for library callers and tests.
    pub fn new() -> Self {
        UninstallConfig {
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dir: PathBuf::from("/opt/cni/bin"),
            state_dir: PathBuf::from("/var/lib/sarasa"),
            host_netns: false,
            wait: false,
        }
    }
}

impl Default for UninstallConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// What one run removed (empty on a clean node: uninstall is idempotent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UninstallReport {
    pub files: Vec<PathBuf>,
    pub tables: Vec<String>,
    pub links: Vec<String>,
    pub routes: usize,
}

impl UninstallReport {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.tables.is_empty() && self.links.is_empty() && self.routes == 0
    }
}

/// Is `name` one of sarasa's nftables tables?
pub fn is_sarasa_table(name: &str) -> bool {
    name == "sarasa" || name.starts_with("sarasa-")
}

/// Removes sarasa from the node namespace `target` and its files; see the module docs.
pub fn uninstall(config: &UninstallConfig, target: &NetnsTarget) -> Result<UninstallReport> {
    netns::guard(target, config.host_netns)?;
    let mut report = UninstallReport::default();
    let mut errors: Vec<String> = Vec::new();

    if let Err(e) = remove_tables(target, &mut report) {
        errors.push(e.to_string());
    }
    match netns::run_in_sync(target, || {
        Netlink::current().map_err(|e| Error::netlink("open socket", e))
    }) {
        Ok(mut nl) => {
            remove_routes(&mut nl, &mut report, &mut errors);
            remove_links(&mut nl, &mut report, &mut errors);
        }
        Err(e) => errors.push(e.to_string()),
    }
    let files = [
        config.cni_conf_dir.join(crate::cni_config::CONFLIST_NAME),
        config.cni_bin_dir.join(crate::cni_config::PLUGIN_TYPE),
    ];
    for f in files {
        match std::fs::remove_file(&f) {
            Ok(()) => report.files.push(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("remove {}: {e}", f.display())),
        }
    }
    remove_leftover_temp_files(&config.cni_conf_dir, &mut report, &mut errors);
    match std::fs::remove_dir_all(&config.state_dir) {
        Ok(()) => report.files.push(config.state_dir.clone()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("remove {}: {e}", config.state_dir.display())),
    }

    if errors.is_empty() {
        Ok(report)
    } else {
        Err(Error::Uninstall(errors.join("; ")))
    }
}

/// Every `sarasa`/`sarasa-*` table of every family, deleted in one batch.
fn remove_tables(target: &NetnsTarget, report: &mut UninstallReport) -> Result<()> {
    let mut nft = crate::nftables::open(target).map_err(|e| Error::Nft(e.to_string()))?;
    let mut found: Vec<(Family, String, Transaction)> = Vec::new();
    for family in [Family::Inet, Family::Ip, Family::Ip6] {
        let names = nft
            .table_names(family)
            .map_err(|e| Error::Nft(format!("list {} tables: {e}", family.as_str())))?;
        for name in names.into_iter().filter(|n| is_sarasa_table(n)) {
            let tx = Transaction::delete_table(family, &name);
            found.push((family, name, tx));
        }
    }
    let parts: Vec<(Family, &str, &Transaction)> = found
        .iter()
        .map(|(f, n, tx)| (*f, n.as_str(), tx))
        .collect();
    nft.apply_batch(&parts)
        .map_err(|e| Error::Nft(format!("delete tables: {e}")))?;
    report
        .tables
        .extend(found.iter().map(|(f, n, _)| format!("{} {n}", f.as_str())));
    Ok(())
}

/// Routes marked with sarasa's protocol number in the main table (host-gw routes over the
/// uplink; those over the VXLAN device would go with it, but are removed here too).
fn remove_routes(nl: &mut Netlink, report: &mut UninstallReport, errors: &mut Vec<String>) {
    for family in [IpFamily::V4, IpFamily::V6] {
        let routes = match nl.routes(Some(family)) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("dump routes: {e}"));
                continue;
            }
        };
        for r in routes {
            if r.protocol != Some(ROUTE_PROTOCOL) || r.table != TABLE_MAIN {
                continue;
            }
            match nl.route_del(&r) {
                Ok(()) => report.routes += 1,
                Err(e) => errors.push(format!("delete route {}: {e}", r.dst)),
            }
        }
    }
}

/// The VXLAN device, the node bridge and the host side of every pod veth (`sa` + the network's
/// hash: [`sarasa_cni::naming::network_prefix`]). Deleting a veth end deletes its peer, so the
/// pods lose their interface, as they must once the network is gone.
fn remove_links(nl: &mut Netlink, report: &mut UninstallReport, errors: &mut Vec<String>) {
    let veth_prefix = sarasa_cni::naming::network_prefix(crate::cni_config::NETWORK_NAME);
    let links = match nl.links() {
        Ok(l) => l,
        Err(e) => {
            errors.push(format!("dump links: {e}"));
            return;
        }
    };
    for link in links {
        let ours = link.name == VXLAN_DEVICE
            || link.name == NODE_BRIDGE
            || (link.name.starts_with(&veth_prefix) && link.name.len() == 15);
        if !ours {
            continue;
        }
        match nl.delete_link(link.index) {
            Ok(()) => report.links.push(link.name),
            // Gone meanwhile (a veth whose peer's namespace was just removed): already done.
            Err(e) if nl.link_by_index(link.index).ok().flatten().is_none() => {
                tracing::debug!(link = %link.name, error = %e, "already gone");
            }
            Err(e) => errors.push(format!("delete link {}: {e}", link.name)),
        }
    }
}

/// A conflist write interrupted by a crash leaves `.10-sarasa.conflist.tmp<pid>`.
fn remove_leftover_temp_files(dir: &Path, report: &mut UninstallReport, errors: &mut Vec<String>) {
    let prefix = format!(".{}.tmp", crate::cni_config::CONFLIST_NAME);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => report.files.push(path),
            Err(e) => errors.push(format!("remove {}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sarasa_tables_are_recognised_by_name() {
        for t in ["sarasa", "sarasa-node", "sarasa-policy", "sarasa-svc-3"] {
            assert!(is_sarasa_table(t), "{t}");
        }
        for t in ["sarasanet", "kube-proxy", "filter", "nat", ""] {
            assert!(!is_sarasa_table(t), "{t}");
        }
    }
}
