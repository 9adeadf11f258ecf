//! The on-disk allocation store: one JSON file per network under the IPAM data directory.
//!
//! Every change runs as a transaction: take an exclusive `flock` on `<dir>/lock`, read
//! `<dir>/allocations.json`, change it in memory, write `allocations.json.tmp`, `fsync` it,
//! `rename` it over the old file. A crash therefore leaves either
//! the old or the new state, never a torn one, and concurrent plugin processes serialise on
//! the lock. One file (rather than one per address) makes an attachment's v4 and v6 addresses
//! appear and disappear together. The directory is fsynced after the rename, so an
//! acknowledged ADD or DEL survives a power loss.
//!
//! A store that cannot be read (empty, garbage, truncated) is never taken for "no
//! allocations": the file is renamed aside (`allocations.json.corrupt-<time>`, kept for
//! inspection), a fresh store marked `rebuildPending` takes its place, and allocation is
//! refused ([`Error::NeedsRebuild`]) until the caller rebuilds it from the attachments that
//! really exist ([`crate::Ipam::rebuild`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const STATE_FILE: &str = "allocations.json";
const LOCK_FILE: &str = "lock";
const TMP_SUFFIX: &str = ".tmp";

/// One address handed to an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Address with the subnet's prefix length, e.g. `10.244.1.7/24`.
    pub address: IpNet,
    /// The range's gateway.
    pub gateway: IpAddr,
}

/// The addresses of one attachment: (container id, interface name).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// One lease per range set.
    pub leases: Vec<Lease>,
    /// The node ports mapped to these addresses (`hostPort`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<crate::HostPort>,
}

/// The whole store content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// Allocations in allocation order.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    /// Per range set (keyed by its first subnet): the last address handed out.
    #[serde(default)]
    pub last_reserved: BTreeMap<String, IpAddr>,
    /// The previous store was unreadable and set aside (this names the kept copy): nothing
    /// is allocated until the allocations are rebuilt from the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_pending: Option<String>,
}

impl State {
    /// The allocation of (container id, ifname).
    pub fn find(&self, container_id: &str, ifname: &str) -> Option<&Allocation> {
        self.allocations
            .iter()
            .find(|a| a.container_id == container_id && a.ifname == ifname)
    }
}

/// A store directory.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `allocations.json` exists.
    pub fn file_exists(&self) -> bool {
        self.dir.join(STATE_FILE).exists()
    }

    /// Runs `f` on the state under the exclusive lock and persists the result if it changed.
    pub fn transaction<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let _lock = self.lock(libc::LOCK_EX)?;
        // Under the lock no write is in progress: a temp file is a crashed writer's leftover.
        let _ = std::fs::remove_file(self.dir.join(format!("{STATE_FILE}{TMP_SUFFIX}")));
        let mut state = match self.read_unlocked() {
            Err(Error::Corrupt { path, reason }) => self.quarantine(&path, &reason)?,
            other => other?,
        };
        let before = state.clone();
        let out = f(&mut state)?;
        if state != before {
            self.write_unlocked(&state)?;
        }
        Ok(out)
    }

    /// A consistent snapshot of the state (shared lock; an unreadable store is set aside
    /// under the exclusive lock, as in a transaction).
    pub fn read(&self) -> Result<State> {
        if !self.dir.exists() {
            return Ok(State::default());
        }
        let lock = self.lock(libc::LOCK_SH)?;
        match self.read_unlocked() {
            Err(Error::Corrupt { .. }) => {
                drop(lock);
                self.transaction(|s| Ok(s.clone()))
            }
            other => other,
        }
    }

    /// Sets an unreadable store aside (kept, renamed) and starts a fresh one that waits for a
    /// rebuild; returns the fresh state. Runs under the exclusive lock.
    fn quarantine(&self, path: &str, reason: &str) -> Result<State> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kept = self.dir.join(format!(
            "{STATE_FILE}.corrupt-{stamp}-{}",
            std::process::id()
        ));
        std::fs::rename(path, &kept)
            .map_err(|e| Error::io(format!("set aside {path} as {}", kept.display()), e))?;
        let state = State {
            version: 1,
            rebuild_pending: Some(format!("{} ({reason})", kept.display())),
            ..State::default()
        };
        self.write_unlocked(&state)?;
        eprintln!(
            "ipam: {path} was unreadable ({reason}); kept as {}, allocations must be rebuilt",
            kept.display()
        );
        Ok(state)
    }

    /// Checks that the store can be written: the directory exists or can be made, the lock
    /// can be taken, and a file can be created, synced and removed there.
    pub fn check_writable(&self) -> Result<()> {
        let _lock = self.lock(libc::LOCK_EX)?;
        let probe = self.dir.join(format!(".probe{TMP_SUFFIX}"));
        let mut f = File::create(&probe)
            .map_err(|e| Error::io(format!("create {}", probe.display()), e))?;
        f.write_all(b"ok")
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(format!("write {}", probe.display()), e))?;
        std::fs::remove_file(&probe)
            .map_err(|e| Error::io(format!("remove {}", probe.display()), e))
    }

    fn lock(&self, how: libc::c_int) -> Result<File> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("create {}", self.dir.display()), e))?;
        let path = self.dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        loop {
            // SAFETY: flock on a descriptor we own; released when `f` is closed.
            if unsafe { libc::flock(f.as_raw_fd(), how) } == 0 {
                return Ok(f);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io(format!("lock {}", path.display()), e));
            }
        }
    }

    fn read_unlocked(&self) -> Result<State> {
        let path = self.dir.join(STATE_FILE);
        match std::fs::read(&path) {
            // A written store is never empty: an empty file lost its allocations.
            Ok(bytes) if bytes.is_empty() => Err(Error::Corrupt {
                path: path.display().to_string(),
                reason: "empty file".into(),
            }),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    fn write_unlocked(&self, state: &State) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}{TMP_SUFFIX}"));
        let mut body = serde_json::to_vec_pretty(state).map_err(|e| Error::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        body.push(b'\n');
        // fsync before rename: after a crash (even a power loss) the file is the old state
        // or the new one, never empty or torn. The directory is synced after the rename: an
        // acknowledged ADD whose rename a power loss undid would hand its address out again.
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("write {}", path.display()), e)
        })
    }
}
