//! Writes the node's CNI conflist (rendered by [`sarasa_plan::cni`]) atomically (temp + rename),
//! so a runtime never reads half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

pub use sarasa_plan::cni::{render, CONFLIST_NAME, NETWORK_NAME, PLUGIN_TYPE};

use crate::error::{Error, Result};

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
