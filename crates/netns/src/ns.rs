//! Named network namespaces (`ip netns` semantics) and running code inside one.
//!
//! A named namespace is a bind mount of a namespace file onto `/run/netns/NAME`, exactly as
//! iproute2 makes it, so `ip netns exec NAME ...` and sarasa interoperate. Entering a namespace
//! always happens on a dedicated, short-lived thread (`setns(2)` changes only the calling
//! thread), so the caller's threads never change namespace.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Where named namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

const NSFS_MAGIC: i64 = 0x6e73_6673;
// ioctl(NS_GET_NSTYPE) = _IO(0xb7, 0x3)
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open network namespace: a file descriptor plus the path it was opened from.
///
/// Cloning is cheap (the descriptor is shared). The namespace stays alive at least as long as
/// this handle, even if its `/run/netns` entry is deleted.
#[derive(Clone, Debug)]
pub struct NetNs {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl NetNs {
    /// Creates a new named network namespace, like `ip netns add NAME`.
    ///
    /// Fails with `EEXIST` if the name is taken. The calling thread is not moved: a helper
    /// thread unshares its network namespace and bind-mounts it onto `/run/netns/NAME`.
    pub fn create(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        ensure_run_dir()?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        // The mount point: an empty file, created exclusively so two creators cannot share it.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| Error::os(format!("create {}", path.display()), e))?;

        let target = path.clone();
        let made = std::thread::spawn(move || -> Result<()> {
            // SAFETY: unshare only changes this helper thread's namespace, which exits right after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(Error::last_os("unshare(CLONE_NEWNET)"));
            }
            bind_mount(Path::new("/proc/thread-self/ns/net"), &target)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Panicked(name.to_string())));
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Self::open_path(&path)
    }

    /// Opens a namespace by name (`/run/netns/NAME`) or by path (anything containing `/`,
    /// e.g. `/proc/1234/ns/net` or a runtime's own bind mount).
    pub fn open(path_or_name: impl AsRef<Path>) -> Result<NetNs> {
        let p = path_or_name.as_ref();
        if p.as_os_str().as_bytes().contains(&b'/') {
            Self::open_path(p)
        } else {
            Self::open_path(&Path::new(NETNS_RUN_DIR).join(p))
        }
    }

    /// The network namespace of the calling thread.
    pub fn current() -> Result<NetNs> {
        Self::open_path(Path::new("/proc/thread-self/ns/net"))
    }

    fn open_path(path: &Path) -> Result<NetNs> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::os(format!("open {}", path.display()), e))?;
        let fd: OwnedFd = file.into();
        if !is_net_ns(fd.as_fd()) {
            return Err(Error::NotNetNs(path.to_path_buf()));
        }
        Ok(NetNs {
            path: path.to_path_buf(),
            fd: Arc::new(fd),
        })
    }

    /// True when `/run/netns/NAME` exists.
    pub fn exists(name: &str) -> bool {
        Path::new(NETNS_RUN_DIR).join(name).exists()
    }

    /// Names under `/run/netns`, sorted.
    pub fn list() -> Result<Vec<String>> {
        let mut names = Vec::new();
        let dir = match std::fs::read_dir(NETNS_RUN_DIR) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(Error::os(format!("read {NETNS_RUN_DIR}"), e)),
        };
        for entry in dir.flatten() {
            if let Some(n) = entry.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes a named namespace like `ip netns del NAME`: unmounts and removes
    /// `/run/netns/NAME`. Succeeds if it does not exist. Processes or handles still inside keep
    /// the namespace alive until they go.
    pub fn delete(name: &str) -> Result<()> {
        validate_name(name)?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        let c = cpath(&path)?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = io::Error::last_os_error();
            // EINVAL: not a mount point (half-made); ENOENT: already gone.
            if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
                return Err(Error::os(format!("umount {}", path.display()), e));
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::os(format!("remove {}", path.display()), e)),
        }
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name under `/run/netns`, or the path's last component.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The namespace file descriptor (valid while `self` lives).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The namespace file descriptor, borrowed.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// (device, inode) of the namespace: equal ids mean the same namespace.
    pub fn id(&self) -> Result<(u64, u64)> {
        // SAFETY: zeroed stat is a valid out-parameter for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open for our lifetime; st is a valid pointer.
        if unsafe { libc::fstat(self.fd(), &mut st) } != 0 {
            return Err(Error::last_os("fstat netns"));
        }
        Ok((st.st_dev, st.st_ino))
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its value.
    ///
    /// Everything `f` opens that is namespace-bound (netlink and other sockets,
    /// `/proc/sys/net/...` files) belongs to this namespace and keeps belonging to it after
    /// `f` returns. A panic in `f` becomes [`Error::Panicked`].
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                setns(self.fd(), &self.path)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Panicked(self.path.display().to_string())))
        })
    }

    /// Writes a sysctl inside this namespace, e.g. `("net.ipv4.ip_forward", "1")`.
    pub fn sysctl_write(&self, key: &str, value: &str) -> Result<()> {
        self.run(|| crate::sysctl::write(key, value))?
    }

    /// Reads a sysctl inside this namespace (trimmed).
    pub fn sysctl_read(&self, key: &str) -> Result<String> {
        self.run(|| crate::sysctl::read(key))?
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Moves the calling thread into the namespace open at `fd`.
///
/// Async-signal-safe (one system call), so it is usable between `fork` and `exec`; prefer
/// [`CommandExt::netns`], which wires it into [`Command::pre_exec`].
pub fn enter_in_child(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor; an invalid one yields EBADF.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Spawning processes inside a namespace.
pub trait CommandExt {
    /// The child enters `ns` right before `exec` (the parent is untouched).
    fn netns(&mut self, ns: &NetNs) -> &mut Self;
}

impl CommandExt for Command {
    fn netns(&mut self, ns: &NetNs) -> &mut Self {
        let fd = Arc::clone(&ns.fd);
        // SAFETY: the hook only calls setns(2), which is async-signal-safe; `fd` stays open
        // because the closure (owned by the Command) holds a reference to it.
        unsafe { self.pre_exec(move || enter_in_child(fd.as_raw_fd())) }
    }
}

fn setns(fd: RawFd, path: &Path) -> Result<()> {
    enter_in_child(fd).map_err(|e| Error::os(format!("setns {}", path.display()), e))
}

fn is_net_ns(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid open descriptor; sfs is a valid pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut sfs) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    if sfs.f_type as i64 != NSFS_MAGIC {
        return false;
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the namespace type.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    kind == libc::CLONE_NEWNET
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 255 || name.contains('/') || name == "." || name == ".." {
        return Err(Error::os(
            format!("invalid network namespace name {name:?}"),
            io::Error::from_raw_os_error(libc::EINVAL),
        ));
    }
    Ok(())
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        Error::os(
            format!("path {} contains NUL", p.display()),
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    })
}

fn bind_mount(src: &Path, dst: &Path) -> Result<()> {
    let (s, d) = (cpath(src)?, cpath(dst)?);
    let none = c"none";
    // SAFETY: all pointers are valid NUL-terminated strings or null.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            none.as_ptr(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::last_os(format!(
            "bind mount {} on {}",
            src.display(),
            dst.display()
        )));
    }
    Ok(())
}

/// Makes `/run/netns` exist and be a shared mount, as iproute2 does, so namespace mounts
/// propagate to mount namespaces created later (container runtimes).
fn ensure_run_dir() -> Result<()> {
    // Threads of one process creating namespaces at once must not stack bind mounts.
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let dir = Path::new(NETNS_RUN_DIR);
    std::fs::create_dir_all(dir).map_err(|e| Error::os(format!("mkdir {NETNS_RUN_DIR}"), e))?;
    let c = cpath(dir)?;
    let none = c"none";
    let empty = c"";
    for attempt in 0..2 {
        // SAFETY: valid NUL-terminated strings; data is null.
        let rc = unsafe {
            libc::mount(
                empty.as_ptr(),
                c.as_ptr(),
                none.as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) || attempt == 1 {
            return Err(Error::os(format!("make {NETNS_RUN_DIR} shared"), e));
        }
        // EINVAL: not a mount point yet; bind it onto itself and retry.
        // SAFETY: valid NUL-terminated strings; data is null.
        let rc = unsafe {
            libc::mount(
                c.as_ptr(),
                c.as_ptr(),
                none.as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(Error::last_os(format!("bind mount {NETNS_RUN_DIR}")));
        }
    }
    Ok(())
}
