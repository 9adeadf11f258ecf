//! Which network namespace the agent programs, and the root-namespace guard.
//!
//! The agent normally runs inside its node's namespace ([`NetnsTarget::Current`]). Tests (and
//! tools) may drive a node namespace by path from outside: netlink sockets are opened there, and
//! process-level work (sysctls, `nft`) runs on a short-lived thread that entered it, so the
//! calling process never changes namespace.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsTarget {
    /// The namespace the process runs in.
    Current,
    /// A namespace file, e.g. `/var/run/netns/NAME`.
    Path(PathBuf),
}

/// The inode number of the kernel's initial network namespace (`PROC_NET_INIT_INO`, fixed in
/// current kernels). Used when PID 1's namespace cannot be read (a sandbox that denies
/// ptrace-level access to PID 1 still runs us as root).
const PROC_NET_INIT_INO: u64 = 0xEFFF_FFF9;

/// True when the process is in the machine's root network namespace (the one of PID 1).
pub fn in_root_netns() -> Result<bool> {
    is_root_netns(Path::new("/proc/self/ns/net"))
}

/// True when `path` names the machine's root network namespace: the same as PID 1's, or, when
/// PID 1's is unreadable, the kernel's initial namespace.
pub fn is_root_netns(path: &Path) -> Result<bool> {
    let target = std::fs::metadata(path).map_err(|source| Error::Netns {
        path: path.into(),
        source,
    })?;
    match std::fs::metadata("/proc/1/ns/net") {
        Ok(init) => Ok(target.dev() == init.dev() && target.ino() == init.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Ok(target.ino() == PROC_NET_INIT_INO)
        }
        Err(source) => Err(Error::Netns {
            path: "/proc/1/ns/net".into(),
            source,
        }),
    }
}

/// Refuses the root namespace unless `allow_host_netns` (`--host-netns`) says this is a real node.
pub fn guard(target: &NetnsTarget, allow_host_netns: bool) -> Result<()> {
    if allow_host_netns {
        return Ok(());
    }
    let root = match target {
        NetnsTarget::Current => in_root_netns()?,
        NetnsTarget::Path(p) => is_root_netns(p)?,
    };
    if root {
        Err(Error::RootNetns)
    } else {
        Ok(())
    }
}

/// Runs `f` in the target namespace on a dedicated thread (or inline for `Current`), so the
/// namespace switch never leaks into the async runtime's worker threads.
pub async fn run_in<F, R>(target: &NetnsTarget, f: F) -> Result<R>
where
    F: FnOnce() -> Result<R> + Send + 'static,
    R: Send + 'static,
{
    let target = target.clone();
    tokio::task::spawn_blocking(move || run_in_sync(&target, f))
        .await
        .map_err(|e| Error::Config(format!("blocking task failed: {e}")))?
}

/// [`run_in`] for a caller that may block: `f` runs inline for `Current`, else on a scoped
/// thread that entered the namespace (the caller's thread never moves).
pub fn run_in_sync<F, R>(target: &NetnsTarget, f: F) -> Result<R>
where
    F: FnOnce() -> Result<R> + Send,
    R: Send,
{
    match target {
        NetnsTarget::Current => f(),
        NetnsTarget::Path(path) => std::thread::scope(|s| {
            s.spawn(|| {
                enter(path)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Config("netns worker thread panicked".into())))
        }),
    }
}

/// Moves the calling thread into the namespace at `path` (the thread must not be reused).
fn enter(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|source| Error::Netns {
        path: path.into(),
        source,
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
        path: path.into(),
        source: std::io::Error::from(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_process_is_detected_in_root_netns() {
        // Unit tests run in whatever namespace the test runner has; the guard must agree with
        // the plain comparison and `--host-netns` always passes.
        let root = in_root_netns().unwrap();
        assert_eq!(guard(&NetnsTarget::Current, false).is_err(), root);
        assert!(guard(&NetnsTarget::Current, true).is_ok());
    }
}
