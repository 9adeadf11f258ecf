//! `sarasa agent install-cni`: what the DaemonSet's init container does before the agent
//! starts — put the `sarasa-cni` plugin binary into the node's CNI bin directory (atomically:
//! the container runtime may exec it at any moment, so it must never see a half-written file)
//! and, with `--sysctls`, turn on the kernel settings the datapath needs (IPv4/IPv6
//! forwarding; bridge netfilter where the module is loaded). The sysctls are here because a
//! container's /proc/sys is read-only unless it is privileged: only this short-lived init
//! container is, the long-running agent keeps just CAP_NET_ADMIN. The conflist is not written
//! here: the agent writes it once the node has a podCIDR, last, so the kubelet reports the
//! node Ready only when pods can really be wired.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Install the sarasa-cni plugin into the node's CNI bin directory (the DaemonSet's init
/// container), optionally setting the forwarding sysctls.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallCniConfig {
    /// The plugin binary to install (default: `sarasa-cni` beside this executable).
    #[arg(long)]
    pub plugin: Option<PathBuf>,

    /// The node's CNI bin directory, as mounted into the container.
    #[arg(long = "cni-bin-dir", default_value = "/host/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,

    /// Also set net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1 and (where
    /// br_netfilter is loaded) bridge-nf-call-ip{,6}tables=1 in this network namespace.
    #[arg(long)]
    pub sysctls: bool,
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    pub installed: PathBuf,
    /// False when the binary there was already identical.
    pub replaced: bool,
    pub sysctls: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::CniConfig {
        path: path.to_path_buf(),
        source,
    }
}

/// Installs the plugin (and sets the sysctls when asked).
pub fn install(config: &InstallCniConfig) -> Result<InstallReport> {
    let plugin = match &config.plugin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join(crate::cni_config::PLUGIN_TYPE))
            .ok_or_else(|| Error::Config("--plugin: cannot locate sarasa-cni".into()))?,
    };
    let bytes = std::fs::read(&plugin).map_err(io_err(&plugin))?;
    let dest = config.cni_bin_dir.join(crate::cni_config::PLUGIN_TYPE);
    let replaced = std::fs::read(&dest).map_or(true, |cur| cur != bytes);
    if replaced {
        std::fs::create_dir_all(&config.cni_bin_dir).map_err(io_err(&config.cni_bin_dir))?;
        let tmp = config.cni_bin_dir.join(format!(
            ".{}.tmp{}",
            crate::cni_config::PLUGIN_TYPE,
            std::process::id()
        ));
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    }
    let mut sysctls = Vec::new();
    if config.sysctls {
        for (path, required) in [
            ("/proc/sys/net/ipv4/ip_forward", true),
            ("/proc/sys/net/ipv6/conf/all/forwarding", false),
            ("/proc/sys/net/bridge/bridge-nf-call-iptables", false),
            ("/proc/sys/net/bridge/bridge-nf-call-ip6tables", false),
        ] {
            let key = path.trim_start_matches("/proc/sys/").replace('/', ".");
            match std::fs::read_to_string(path) {
                Ok(v) if v.trim() == "1" => {}
                Ok(_) => {
                    std::fs::write(path, "1").map_err(|source| Error::Sysctl {
                        key: key.clone(),
                        source,
                    })?;
                    sysctls.push(format!("{key}=1"));
                }
                Err(source) if required => return Err(Error::Sysctl { key, source }),
                Err(_) => {}
            }
        }
    }
    Ok(InstallReport {
        installed: dest,
        replaced,
        sysctls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_atomically_executable_and_only_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("build").join("sarasa-cni");
        std::fs::create_dir_all(plugin.parent().unwrap()).unwrap();
        std::fs::write(&plugin, b"v1").unwrap();
        let cfg = InstallCniConfig {
            plugin: Some(plugin.clone()),
            cni_bin_dir: dir.path().join("opt/cni/bin"),
            sysctls: false,
        };
        let r = install(&cfg).unwrap();
        assert!(r.replaced);
        assert_eq!(std::fs::read(&r.installed).unwrap(), b"v1");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&r.installed)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!install(&cfg).unwrap().replaced, "unchanged: left alone");
        std::fs::write(&plugin, b"v2").unwrap();
        assert!(install(&cfg).unwrap().replaced, "an upgrade replaces it");
        assert_eq!(std::fs::read(&r.installed).unwrap(), b"v2");
        // No temp file left behind.
        assert_eq!(std::fs::read_dir(&cfg.cni_bin_dir).unwrap().count(), 1);

        let missing = InstallCniConfig {
            plugin: Some(dir.path().join("nope")),
            ..cfg
        };
        assert!(install(&missing).unwrap_err().to_string().contains("nope"));
    }
}
