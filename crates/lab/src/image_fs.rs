//! What the lab's processes see of the `sarasa` image, which they do not really run in.
//!
//! The lab's containers run the machine's binaries on the machine's filesystem. The shipped
//! image (deploy/image/Containerfile) is `FROM scratch` with the two sarasa binaries and no
//! `nft`, and a node need not have `nft` either: the agent and the CNI plugin speak nftables
//! over netlink only. So containers of the `sarasa` image and every CNI plugin the lab's
//! runtime runs get the machine's `nft` covered by an empty file that cannot be executed
//! (`Permission denied`): an `nft -f` fallback anywhere in them fails as it would on a real
//! node, and every lab test runs with the binary hidden.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::paths::LabPaths;
use crate::process::BindMount;
use crate::LabError;

/// Binaries of the machine the `sarasa` image does not have.
pub const HIDDEN: &[&str] = &["nft"];

/// Where a binary may be found (the runtimes' default PATH, as a container's would be).
const BIN_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// True for the lab's `sarasa` image (`sarasa`, `sarasa:TAG`, `REGISTRY/sarasa@DIGEST`...).
pub fn is_sarasa_image(image: &str) -> bool {
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split(['@', ':']).next().unwrap_or(name);
    name == "sarasa"
}

/// The empty, mode-0 file that covers hidden binaries.
fn blank(paths: &LabPaths) -> PathBuf {
    paths.root.join("no-binary")
}

/// Creates the covering file (once per lab).
pub fn ensure_blank(paths: &LabPaths) -> Result<(), LabError> {
    let path = blank(paths);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o000)
        .open(&path)
        .map(drop)
        .map_err(|e| LabError::io(&path, e))
}

/// The bind mounts that hide [`HIDDEN`] binaries: one per distinct file the machine has under
/// [`BIN_DIRS`] (symlinks resolved, so `/sbin/nft` and `/usr/sbin/nft` are one mount).
pub fn hide_binaries(paths: &LabPaths) -> Vec<BindMount> {
    hidden_files(Path::new("/"))
        .into_iter()
        .map(|target| BindMount::new(blank(paths), target).read_only())
        .collect()
}

fn hidden_files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in BIN_DIRS {
        for name in HIDDEN {
            let candidate = root.join(dir.trim_start_matches('/')).join(name);
            if let Ok(real) = fs::canonicalize(&candidate) {
                if real.is_file() && !out.contains(&real) {
                    out.push(real);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sarasa_image_by_any_registry_tag_or_digest() {
        for yes in [
            "sarasa",
            "sarasa:0.1.0",
            "localhost/sarasa:0.1.0",
            "registry.example:5000/team/sarasa@sha256:abc",
        ] {
            assert!(is_sarasa_image(yes), "{yes}");
        }
        for no in ["busybox", "sarasa-dev", "registry.example:5000/nginx", ""] {
            assert!(!is_sarasa_image(no), "{no}");
        }
    }

    #[test]
    fn each_binary_file_is_hidden_once_through_its_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("usr/sbin")).unwrap();
        fs::create_dir_all(r.join("usr/bin")).unwrap();
        fs::write(r.join("usr/sbin/nft"), "").unwrap();
        std::os::unix::fs::symlink("usr/sbin", r.join("sbin")).unwrap();
        std::os::unix::fs::symlink("../sbin/nft", r.join("usr/bin/nft")).unwrap();
        let real = fs::canonicalize(r.join("usr/sbin/nft")).unwrap();
        assert_eq!(hidden_files(r), vec![real]);
        assert!(hidden_files(&r.join("usr/bin")).is_empty());
    }

    #[test]
    fn the_blank_cannot_be_executed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LabPaths {
            root: dir.path().to_path_buf(),
        };
        ensure_blank(&paths).unwrap();
        ensure_blank(&paths).unwrap();
        let err = std::process::Command::new(blank(&paths))
            .output()
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    }
}
