//! Mount points the lab has to create on the machine's filesystem, and their removal.
//!
//! The lab's containers share the machine's filesystem, each in a private mount namespace, so a
//! bind-mount target that does not exist — a DaemonSet's `/host/opt/cni/bin`, a ServiceAccount
//! token's `/var/run/secrets/kubernetes.io/serviceaccount` — must be created before the mount.
//! Each path created is recorded in `<state root>/mount-points`, and the last lab to go down
//! removes them again (only what is still empty: a directory tree of empty directories, an
//! empty file). A shared `flock` on that file is held from creating a mount point until the
//! process that mounts it has started; removal takes it exclusively, so it never takes a mount
//! point from under a container being started.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::LabError;

/// Name of the record in the state root.
const RECORD: &str = "mount-points";

/// The record of a state root.
pub fn record_file(state_root: &Path) -> PathBuf {
    state_root.join(RECORD)
}

/// A shared lock on the record: mount points created under it stay until it is dropped.
#[derive(Debug)]
pub struct Guard {
    file: File,
}

fn open_record(state_root: &Path) -> Result<File, LabError> {
    fs::create_dir_all(state_root).map_err(|e| LabError::io(state_root, e))?;
    let path = record_file(state_root);
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)
        .map_err(|e| LabError::io(&path, e))
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor this function's caller owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Guard {
    /// Takes the shared lock (waits while a removal runs; removals are short).
    pub fn shared(state_root: &Path) -> Result<Guard, LabError> {
        let file = open_record(state_root)?;
        flock(&file, libc::LOCK_SH).map_err(|e| LabError::io(&record_file(state_root), e))?;
        Ok(Guard { file })
    }

    /// Creates `target` (a directory, or an empty file with its parent directories) if it is
    /// missing, and records the topmost path it had to create.
    pub fn create(&self, target: &Path, dir: bool) -> Result<(), LabError> {
        if target.symlink_metadata().is_ok() {
            return Ok(());
        }
        let top = target
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && p.symlink_metadata().is_err())
            .last()
            .unwrap_or(target)
            .to_path_buf();
        let made = if dir {
            fs::create_dir_all(target).map_err(|e| LabError::io(target, e))
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| LabError::io(parent, e))?;
            }
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(target)
                .map(drop)
                .map_err(|e| LabError::io(target, e))
        };
        // Record even a partial creation, so removal finds what was made.
        let mut line = top.as_os_str().as_encoded_bytes().to_vec();
        line.push(b'\n');
        (&self.file)
            .write_all(&line)
            .map_err(|e| LabError::io(&top, e))?;
        made
    }
}

/// Removes `path` if it is an empty file or a tree of empty directories (what is not empty
/// stays, and so do its ancestors). Returns true when it is gone.
fn remove_if_empty(path: &Path) -> bool {
    let Ok(meta) = path.symlink_metadata() else {
        return true;
    };
    if meta.is_dir() {
        let mut empty = true;
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                empty &= remove_if_empty(&entry.path());
            }
        }
        empty && fs::remove_dir(path).is_ok()
    } else if meta.is_file() && meta.len() == 0 {
        fs::remove_file(path).is_ok()
    } else {
        false
    }
}

/// Removes the recorded mount points that are still empty and rewrites the record with those
/// that are not. Waits at most `wait` for containers being started to have started; returns the
/// paths kept.
pub fn remove_recorded(state_root: &Path, wait: Duration) -> Result<Vec<PathBuf>, LabError> {
    let path = record_file(state_root);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LabError::io(&path, e)),
    };
    let deadline = Instant::now() + wait;
    loop {
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(LabError::io(&path, e)),
        }
    }
    let text = fs::read(&path).map_err(|e| LabError::io(&path, e))?;
    let recorded: BTreeSet<PathBuf> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| PathBuf::from(String::from_utf8_lossy(l).into_owned()))
        .collect();
    // Deepest first, so a path recorded inside another is handled before it.
    let mut order: Vec<&PathBuf> = recorded.iter().collect();
    order.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let kept: Vec<PathBuf> = order
        .into_iter()
        .filter(|p| !remove_if_empty(p))
        .cloned()
        .collect();
    let mut rest = Vec::new();
    for p in &kept {
        rest.extend_from_slice(p.as_os_str().as_encoded_bytes());
        rest.push(b'\n');
    }
    file.set_len(0).map_err(|e| LabError::io(&path, e))?;
    (&file)
        .write_all(&rest)
        .map_err(|e| LabError::io(&path, e))?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_mount_points_are_recorded_and_removed_while_empty() {
        let state = tempfile::tempdir().unwrap();
        let machine = tempfile::tempdir().unwrap();
        let m = machine.path();
        fs::create_dir(m.join("etc")).unwrap();
        {
            let guard = Guard::shared(state.path()).unwrap();
            guard.create(&m.join("host/opt/cni/bin"), true).unwrap();
            guard.create(&m.join("host/etc/cni/net.d"), true).unwrap();
            guard
                .create(&m.join("var/run/secrets/token"), false)
                .unwrap();
            guard.create(&m.join("etc/sarasa"), true).unwrap();
            // Already there: nothing recorded.
            guard.create(&m.join("etc"), true).unwrap();
        }
        let record = fs::read_to_string(record_file(state.path())).unwrap();
        let lines: BTreeSet<&str> = record.lines().collect();
        let want: BTreeSet<String> = ["host", "host/etc", "var", "etc/sarasa"]
            .iter()
            .map(|p| m.join(p).display().to_string())
            .collect();
        assert_eq!(lines, want.iter().map(String::as_str).collect(), "{record}");
        // Something written into a created directory keeps it (and the file).
        fs::write(m.join("host/etc/cni/net.d/10-x.conflist"), "{}").unwrap();
        let kept = remove_recorded(state.path(), Duration::from_secs(1)).unwrap();
        assert_eq!(kept, vec![m.join("host/etc"), m.join("host")]);
        assert!(m.join("host/etc/cni/net.d/10-x.conflist").exists());
        assert!(!m.join("host/opt").exists(), "the empty branch goes");
        assert!(!m.join("var").exists() && !m.join("etc/sarasa").exists());
        assert!(m.join("etc").exists(), "what the lab did not create stays");
        assert_eq!(
            fs::read_to_string(record_file(state.path())).unwrap(),
            format!(
                "{}\n{}\n",
                m.join("host/etc").display(),
                m.join("host").display()
            )
        );
        fs::remove_file(m.join("host/etc/cni/net.d/10-x.conflist")).unwrap();
        assert!(remove_recorded(state.path(), Duration::from_secs(1))
            .unwrap()
            .is_empty());
        assert!(!m.join("host").exists());
    }

    #[test]
    fn removal_waits_for_a_container_being_started() {
        let state = tempfile::tempdir().unwrap();
        let guard = Guard::shared(state.path()).unwrap();
        let err = remove_recorded(state.path(), Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains(RECORD), "{err}");
        drop(guard);
        assert!(remove_recorded(state.path(), Duration::from_millis(100)).is_ok());
    }
}
