//! The node's CNI conflist, rendered from its podCIDR(s) and written atomically (temp + rename),
//! so a runtime never reads half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::json;

use crate::config::CniMode;
use crate::error::{Error, Result};
use crate::plan::NODE_BRIDGE;

pub const CONFLIST_NAME: &str = "10-sarasa.conflist";
pub const NETWORK_NAME: &str = "sarasa";
pub const PLUGIN_TYPE: &str = "sarasa-cni";

/// The conflist JSON: one range set per address family.
pub fn render(pod_cidrs: &[IpNet], mode: CniMode, mtu: u32, ipam_data_dir: &Path) -> String {
    let mut ranges = Vec::new();
    for v4 in [true, false] {
        let set: Vec<_> = pod_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == v4)
            .map(|c| json!({ "subnet": c.trunc().to_string() }))
            .collect();
        if !set.is_empty() {
            ranges.push(serde_json::Value::Array(set));
        }
    }
    let doc = json!({
        "cniVersion": "1.1.0",
        "name": NETWORK_NAME,
        "plugins": [{
            "type": PLUGIN_TYPE,
            "mode": mode.as_str(),
            "bridge": NODE_BRIDGE,
            "mtu": mtu,
            "ipam": {
                "ranges": ranges,
                "dataDir": ipam_data_dir.to_string_lossy(),
            }
        }]
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// Writes `content` to `dir/10-sarasa.conflist` atomically; does nothing when it is unchanged.
/// Returns whether the file was (re)written.
pub fn write_atomic(dir: &Path, content: &str) -> Result<bool> {
    let path = dir.join(CONFLIST_NAME);
    let err = |path: &PathBuf| {
        let path = path.clone();
        move |source| Error::CniConfig { path, source }
    };
    if std::fs::read_to_string(&path).is_ok_and(|cur| cur == content) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(err(&dir.to_path_buf()))?;
    let tmp = dir.join(format!(".{CONFLIST_NAME}.tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(content.as_bytes()).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(err(&path))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract() {
        let s = render(
            &["10.244.1.0/24".parse().unwrap()],
            CniMode::Bridge,
            1450,
            Path::new("/var/lib/sarasa/ipam"),
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"1.1.0","name":"sarasa","plugins":[{"type":"sarasa-cni",
                "mode":"bridge","bridge":"sarasa0","mtu":1450,
                "ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"dataDir":"/var/lib/sarasa/ipam"}}]})
        );
    }

    #[test]
    fn dual_stack_has_two_range_sets() {
        let s = render(
            &[
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:244:1::/64".parse().unwrap(),
            ],
            CniMode::Routed,
            1500,
            Path::new("/d"),
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["plugins"][0]["mode"], "routed");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"],
            json!([[{"subnet":"10.244.1.0/24"}],[{"subnet":"fd00:10:244:1::/64"}]])
        );
    }

    #[test]
    fn atomic_write_replaces_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("net.d");
        assert!(write_atomic(&sub, "a\n").unwrap());
        assert!(!write_atomic(&sub, "a\n").unwrap());
        assert!(write_atomic(&sub, "b\n").unwrap());
        assert_eq!(
            std::fs::read_to_string(sub.join(CONFLIST_NAME)).unwrap(),
            "b\n"
        );
        let names: Vec<_> = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
    }
}
