//! Background processes of a lab (control plane, agents, containers): started detached inside a
//! network namespace, recorded with their start time so a later `stop` never signals a recycled
//! pid, stopped with SIGTERM then SIGKILL after a bounded grace.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::{mount_points, LabError};

/// A process the lab started: pid plus kernel start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessRecord {
    pub fn of(pid: i32) -> Option<ProcessRecord> {
        start_time(pid).map(|start_time| ProcessRecord { pid, start_time })
    }

    /// True while the very process we started is alive (not a recycled pid, not a zombie).
    pub fn alive(&self) -> bool {
        match fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => {
                let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                    return false;
                };
                let fields: Vec<&str> = rest.split_whitespace().collect();
                // fields[0] is the state; fields[19] the start time (field 22 of stat).
                // A zombie leader whose other threads are still exiting (a big process tears
                // down for a while) still holds its sockets: alive until they are gone too.
                let running = fields.first().is_some_and(|s| *s != "Z")
                    || fs::read_dir(format!("/proc/{}/task", self.pid))
                        .map(|d| d.count() > 1)
                        .unwrap_or(false);
                running && fields.get(19).and_then(|s| s.parse().ok()) == Some(self.start_time)
            }
            Err(_) => false,
        }
    }

    /// How the process ended, once it has and if this process is its parent (it reaps it):
    /// the exit code, or 128 + the signal that killed it, as shells report it. None while it
    /// runs, or when it is not ours to wait for.
    pub fn exit_code(&self) -> Option<i32> {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        // Only the process we started (a zombie keeps its stat line until reaped).
        if start_time(self.pid) != Some(self.start_time) {
            return None;
        }
        match waitpid(Pid::from_raw(self.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
            _ => None,
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL and wait a little more. Ok if already gone.
    /// As a container runtime does, SIGTERM goes to the main process only, and whatever is
    /// left of its process group (daemons lead their own session) is killed at the end, so a
    /// shell's background children do not outlive their "container". Once the leader is gone
    /// its pid may be reused, so the group is killed member by member: only processes in the
    /// group that started no earlier than the leader did.
    pub fn stop(&self, grace: Duration) -> Result<(), LabError> {
        if !self.alive() {
            return Ok(());
        }
        let pid = Pid::from_raw(self.pid);
        let _ = kill(pid, Signal::SIGTERM);
        if !wait_gone(self, grace) {
            let _ = kill(pid, Signal::SIGKILL);
            if !wait_gone(self, Duration::from_secs(5)) {
                return Err(LabError::Process(format!(
                    "process {} did not exit after SIGKILL",
                    self.pid
                )));
            }
        }
        for member in group_members(self.pid, self.start_time) {
            let _ = kill(Pid::from_raw(member), Signal::SIGKILL);
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<(), LabError> {
        crate::state::write_json_atomic(path, self)
    }

    /// The record at `path`: None when there is none; an error naming the file when it is
    /// empty, unreadable or names no process.
    pub fn read(path: &Path) -> Result<Option<ProcessRecord>, LabError> {
        let Some(rec) = crate::state::read_json::<ProcessRecord>(path)? else {
            return Ok(None);
        };
        if rec.pid <= 0 || rec.start_time == 0 {
            return Err(LabError::Invalid(format!(
                "{} is corrupt: pid {} start time {} names no process",
                path.display(),
                rec.pid,
                rec.start_time
            )));
        }
        Ok(Some(rec))
    }

    /// As [`ProcessRecord::read`], a bad record reported on stderr and taken as none (for
    /// status displays; stopping and starting use [`ProcessRecord::recorded`]).
    pub fn load(path: &Path) -> Option<ProcessRecord> {
        Self::read(path).unwrap_or_else(|e| {
            eprintln!("warning: {e}");
            None
        })
    }

    /// The daemon recorded at `path`, which logs to `log`. When the record is lost or bad, the
    /// daemon is found by the tag [`Daemon::spawn`] put in its environment (its log file), so
    /// it is never orphaned; a bad record with no such process is an error naming the file.
    pub fn recorded(path: &Path, log: &Path) -> Result<Option<ProcessRecord>, LabError> {
        match Self::read(path) {
            Ok(Some(rec)) => Ok(Some(rec)),
            Ok(None) => Ok(find_daemon(log)),
            Err(e) => match find_daemon(log) {
                Some(rec) => {
                    eprintln!(
                        "warning: {e}; found its process by its tag instead (pid {})",
                        rec.pid
                    );
                    Ok(Some(rec))
                }
                None => Err(LabError::Invalid(format!(
                    "{e}; no running process carries its tag ({DAEMON_TAG}={}), so nothing was \
                     stopped or started: check for a leftover process, then remove the file",
                    log.display()
                ))),
            },
        }
    }
}

/// The environment variable naming a daemon's log file: its identity when its record is lost.
pub const DAEMON_TAG: &str = "SARASA_LAB_DAEMON";

/// A live process started by [`Daemon::spawn`] with `log` as its log file.
pub fn find_daemon(log: &Path) -> Option<ProcessRecord> {
    let want = format!("{DAEMON_TAG}={}", log.display());
    let mut found: Vec<ProcessRecord> = fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
        })
        .filter_map(ProcessRecord::of)
        .filter(ProcessRecord::alive)
        .collect();
    // The daemon itself started first (anything it forked inherits the tag).
    found.sort_by_key(|r| r.start_time);
    found.into_iter().next()
}

fn wait_gone(rec: &ProcessRecord, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    loop {
        // Reap it if it is our child (ignore errors: it may be someone else's child).
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(rec.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        if !rec.alive() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A file or directory bind-mounted into a process's private mount namespace (a pod's
/// /etc/resolv.conf, its volumes). The lab's containers share the host's filesystem otherwise,
/// so a target that does not exist is created (empty) on the host before the process starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

impl BindMount {
    pub fn new(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> BindMount {
        BindMount {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }

    pub fn read_only(mut self) -> BindMount {
        self.read_only = true;
        self
    }

    /// Creates the mount point if missing (recorded, see [`crate::mount_points`]): a
    /// directory for a directory source, else an empty file (with its parent directories).
    fn ensure_target(&self, guard: &mount_points::Guard) -> Result<(), LabError> {
        guard.create(&self.target, self.source.is_dir())
    }
}

/// What must stay alive until `spawn` returns: the network namespace file the child enters and
/// the lock that keeps created mount points from being removed before the child mounted them.
#[derive(Debug)]
pub struct Prepared {
    _netns: Option<File>,
    _mount_points: Option<mount_points::Guard>,
}

/// Makes `cmd`'s child enter the network namespace at `netns` (and, with `mounts`, a private
/// mount namespace where each is bind-mounted, in [`mount_order`]; with `setsid`, a new
/// session) right before exec. What it returns must be kept until `spawn` returns.
pub fn enter_before_exec(
    cmd: &mut Command,
    netns: Option<&Path>,
    mounts: &[BindMount],
    setsid: bool,
) -> Result<Prepared, LabError> {
    let netns_file = match netns {
        Some(p) => Some(File::open(p).map_err(|e| LabError::io(p, e))?),
        None => None,
    };
    let netns_fd = netns_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    let mut binds = Vec::with_capacity(mounts.len());
    let guard = if mounts.is_empty() {
        None
    } else {
        Some(mount_points::Guard::shared(&crate::paths::state_root())?)
    };
    for m in mount_order(mounts) {
        if let Some(g) = &guard {
            m.ensure_target(g)?;
        }
        binds.push((
            cstring(m.source.as_os_str().as_encoded_bytes())?,
            cstring(m.target.as_os_str().as_encoded_bytes())?,
            m.read_only,
        ));
    }
    let root = cstring(b"/")?;
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // (setsid, setns, unshare, mount) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if setsid && libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if binds.is_empty() {
                return Ok(());
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Keep our bind mounts from propagating back to the host's mount namespace.
            let null = std::ptr::null();
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(null, root.as_ptr(), null, flags, std::ptr::null()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for (src, dst, read_only) in &binds {
                let flags = libc::MS_BIND | libc::MS_REC;
                if libc::mount(src.as_ptr(), dst.as_ptr(), null, flags, std::ptr::null()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if *read_only {
                    // A bind mount takes MS_RDONLY only on a remount.
                    let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                    if libc::mount(null, dst.as_ptr(), null, ro, std::ptr::null()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    Ok(Prepared {
        _netns: netns_file,
        _mount_points: guard,
    })
}

/// The order bind mounts are made in: as given, except that a mount goes after every mount
/// inside its target (parents first, so a child is not hidden) and before any mount whose
/// target would cover its source (the agent pod's /var/lib/sarasa, the node's, goes after
/// its token volume, whose source is under the lab's own /var/lib/sarasa/<lab>/pods/).
/// Should the two rules contradict each other, the rest keeps the given order.
pub fn mount_order(mounts: &[BindMount]) -> Vec<&BindMount> {
    // `n` must be mounted before `m`.
    let before = |n: &BindMount, m: &BindMount| {
        (m.target.starts_with(&n.target) && m.target != n.target) || n.source.starts_with(&m.target)
    };
    let mut left: Vec<&BindMount> = mounts.iter().collect();
    let mut out = Vec::with_capacity(mounts.len());
    while !left.is_empty() {
        let free = (0..left.len()).find(|&i| {
            !left
                .iter()
                .enumerate()
                .any(|(j, n)| j != i && before(n, left[i]))
        });
        out.push(left.remove(free.unwrap_or(0)));
    }
    out
}

fn cstring(bytes: &[u8]) -> Result<std::ffi::CString, LabError> {
    std::ffi::CString::new(bytes).map_err(|_| LabError::Invalid("path contains a NUL byte".into()))
}

/// Processes whose process group is `pgid` and that started at or after `not_before` (clock
/// ticks since boot, as in /proc/PID/stat).
fn group_members(pgid: i32, not_before: u64) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // fields[2] is the process group, fields[19] the start time.
            fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
                && fields
                    .get(19)
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|t| t >= not_before)
        })
        .collect()
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// What to run and where.
pub struct Daemon<'a> {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Network namespace to run in (`/run/netns/NAME`); None = the caller's.
    pub netns: Option<&'a Path>,
    /// Give the process its own mount namespace with these bind mounts (a pod's
    /// /etc/resolv.conf, its volumes).
    pub mounts: &'a [BindMount],
    pub log: PathBuf,
}

impl Daemon<'_> {
    /// Starts the process detached (own session, stdin from /dev/null, output to the log file)
    /// and returns its record. The child is not waited for: it outlives the caller.
    pub fn spawn(&self) -> Result<ProcessRecord, LabError> {
        self.spawn_passing(None)
    }

    /// As `spawn`, and the child inherits `fd` (same number; e.g. a listening socket bound in
    /// the caller's network namespace before the child enters its own).
    pub fn spawn_passing(
        &self,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<ProcessRecord, LabError> {
        if let Some(dir) = self.log.parent() {
            fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| LabError::io(&self.log, e))?;
        let log_err = log.try_clone().map_err(|e| LabError::io(&self.log, e))?;
        self.spawn_inner(Stdio::from(log), Stdio::from(log_err), fd, false)
    }

    /// A container's process: as [`Daemon::spawn`], with only `env` in its environment (a
    /// container inherits nothing from its runtime: the control plane's own KUBECONFIG must
    /// not steer an in-cluster client) and stdout and stderr going where the caller says (into
    /// its log shim's pipes); `log` is only named in errors.
    pub fn spawn_with(&self, stdout: Stdio, stderr: Stdio) -> Result<ProcessRecord, LabError> {
        self.spawn_inner(stdout, stderr, None, true)
    }

    fn spawn_inner(
        &self,
        stdout: Stdio,
        stderr: Stdio,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
        container: bool,
    ) -> Result<ProcessRecord, LabError> {
        let mut cmd = Command::new(&self.program);
        if container {
            // A container inherits nothing from its runtime (nor the daemon tag: it is not the
            // control plane).
            cmd.env_clear();
        } else {
            // Its identity should its record be lost.
            cmd.env(DAEMON_TAG, &self.log);
        }
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let _netns_file = enter_before_exec(&mut cmd, self.netns, self.mounts, true)?;
        if let Some(fd) = fd.map(|f| std::os::fd::AsRawFd::as_raw_fd(&f)) {
            // SAFETY: runs in the forked child before exec; only clears FD_CLOEXEC on a
            // descriptor the parent keeps open until `spawn` returns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| LabError::Process(format!("starting {}: {e}", self.program.display())))?;
        let pid = child.id() as i32;
        // Detach: dropping `Child` does not kill or wait; the zombie is reaped by `stop`, or by
        // init once this process exits.
        drop(child);
        ProcessRecord::of(pid).ok_or_else(|| {
            LabError::Process(format!(
                "{} exited at once; see {}",
                self.program.display(),
                self.log.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mounts_are_private_created_and_read_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        fs::create_dir(&vol).unwrap();
        fs::write(vol.join("token"), "secret").unwrap();
        let file = dir.path().join("resolv");
        fs::write(&file, "nameserver 10.96.0.10\n").unwrap();
        // Neither mount point exists yet: both are created, a directory and a file.
        let ro_dir = dir.path().join("run/secrets/sa");
        let rw_file = dir.path().join("etc/resolv.conf");
        let mounts = [
            BindMount::new(&vol, &ro_dir).read_only(),
            BindMount::new(&file, &rw_file),
        ];
        let script = format!(
            "cat {d}/token {f}; touch {d}/new 2>/dev/null && echo writable || echo read-only",
            d = ro_dir.display(),
            f = rw_file.display()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let _keep = enter_before_exec(&mut cmd, None, &mounts, false).unwrap();
        let out = cmd.output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "secretnameserver 10.96.0.10\nread-only\n"
        );
        // The mounts stayed in the child's namespace: here the mount points are still empty.
        assert!(ro_dir.is_dir() && fs::read_dir(&ro_dir).unwrap().next().is_none());
        assert_eq!(fs::read_to_string(&rw_file).unwrap(), "");
    }

    #[test]
    fn mounts_go_parents_first_and_before_what_would_cover_their_source() {
        let m = |s: &str, t: &str| BindMount::new(s, t);
        let mounts = [
            m("/v/pods/u/volumes/sub", "/data/sub"),
            m("/v/pods/u/volumes/cfg", "/etc/sarasa"),
            m("/v/pods/u/volumes/data", "/data"),
        ];
        let order: Vec<&str> = mount_order(&mounts)
            .iter()
            .map(|b| b.target.to_str().unwrap())
            .collect();
        assert_eq!(order, ["/etc/sarasa", "/data", "/data/sub"]);
        let lab = [
            m(
                "/var/lib/sarasa/lab/nodes/n/root/var/lib/sarasa",
                "/var/lib/sarasa",
            ),
            m("/var/lib/sarasa/lab/pods/u/tok", "/var/run/secrets/sa"),
        ];
        let order: Vec<&str> = mount_order(&lab)
            .iter()
            .map(|b| b.target.to_str().unwrap())
            .collect();
        assert_eq!(order, ["/var/run/secrets/sa", "/var/lib/sarasa"]);
    }

    #[test]
    fn a_mount_over_the_directory_of_a_later_source_does_not_hide_it() {
        // The agent pod's /var/lib/sarasa (the node's) is mounted before its token volume,
        // whose source lives under the lab's own /var/lib/sarasa: a source is the directory
        // it named when the mounts were planned, whatever is mounted first.
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let node_state = dir.path().join("node-state");
        let token = state.join("pods/u1/token");
        fs::create_dir_all(&token).unwrap();
        fs::write(token.join("token"), "jwt").unwrap();
        fs::create_dir_all(&node_state).unwrap();
        fs::write(node_state.join("ipam"), "leases").unwrap();
        let sa = dir.path().join("sa");
        let mounts = [
            BindMount::new(&node_state, &state),
            BindMount::new(&token, &sa).read_only(),
        ];
        let script = format!(
            "cat {s}/ipam {a}/token",
            s = state.display(),
            a = sa.display()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let _keep = enter_before_exec(&mut cmd, None, &mounts, false).unwrap();
        let out = cmd.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "leasesjwt");
    }

    #[test]
    fn spawned_daemon_is_recorded_alive_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Daemon {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            env: vec![],
            netns: None,
            mounts: &[],
            log: dir.path().join("sleep.log"),
        }
        .spawn()
        .unwrap();
        assert!(rec.alive());
        rec.stop(Duration::from_secs(5)).unwrap();
        assert!(!rec.alive());
        // A record whose start time doesn't match is never "alive" (recycled pid guard).
        let fake = ProcessRecord {
            pid: std::process::id() as i32,
            start_time: 1,
        };
        assert!(!fake.alive());
    }

    #[test]
    fn a_zombie_leader_with_live_threads_is_still_alive() {
        // The main thread exits (pthread_exit) while another thread sleeps: the leader shows
        // state Z, but the process (and whatever it holds, e.g. a listening socket) lives on.
        let dir = tempfile::tempdir().unwrap();
        let rec = Daemon {
            program: "python3".into(),
            args: vec![
                "-c".into(),
                "import ctypes, threading, time; \
                 threading.Thread(target=time.sleep, args=(60,)).start(); \
                 ctypes.CDLL(None).pthread_exit(None)"
                    .into(),
            ],
            env: vec![],
            netns: None,
            mounts: &[],
            log: dir.path().join("py.log"),
        }
        .spawn()
        .unwrap();
        let state = || {
            fs::read_to_string(format!("/proc/{}/stat", rec.pid))
                .ok()
                .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while state().as_deref() != Some("Z") {
            assert!(
                Instant::now() < deadline,
                "leader never exited: {:?}",
                state()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            rec.alive(),
            "zombie leader with a live thread counted as gone"
        );
        rec.stop(Duration::from_secs(5)).unwrap();
        assert!(!rec.alive());
    }

    #[test]
    fn stop_kills_what_is_left_of_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let child_file = dir.path().join("child.pid");
        let rec = Daemon {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "sleep 60 & echo $! > {}; exec sleep 60",
                    child_file.display()
                ),
            ],
            env: vec![],
            netns: None,
            mounts: &[],
            log: dir.path().join("sh.log"),
        }
        .spawn()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let child: i32 = loop {
            if let Some(pid) = fs::read_to_string(&child_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "background child never started");
            std::thread::sleep(Duration::from_millis(10));
        };
        let child = ProcessRecord::of(child).expect("background child runs");
        assert!(group_members(rec.pid, rec.start_time).contains(&child.pid));
        rec.stop(Duration::from_secs(5)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.alive() {
            assert!(Instant::now() < deadline, "background child outlived stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        // A group whose members all started before `not_before` is left alone.
        assert!(group_members(rec.pid, u64::MAX).is_empty());
    }

    /// An emptied, garbage or lost record: the daemon is found by its tag and stopped, never
    /// orphaned; without a tagged process the error names the file.
    #[test]
    fn bad_or_lost_record_finds_the_daemon_by_its_tag() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent-x.log");
        let file = dir.path().join("agent-x.json");
        for damage in ["empty", "garbage", "lost"] {
            let rec = Daemon {
                program: "/bin/sleep".into(),
                args: vec!["30".into()],
                env: vec![],
                netns: None,
                mounts: &[],
                log: log.clone(),
            }
            .spawn()
            .unwrap();
            rec.save(&file).unwrap();
            assert_eq!(ProcessRecord::read(&file).unwrap(), Some(rec));
            match damage {
                "empty" => fs::write(&file, b"").unwrap(),
                "garbage" => fs::write(&file, b"{\"pid\": 0, \"start_time\": 0}").unwrap(),
                _ => fs::remove_file(&file).unwrap(),
            }
            if damage != "lost" {
                let e = ProcessRecord::read(&file).unwrap_err().to_string();
                assert!(e.contains("agent-x.json"), "{e}");
            }
            let found = ProcessRecord::recorded(&file, &log).unwrap();
            assert_eq!(found, Some(rec), "{damage}");
            rec.stop(Duration::from_secs(5)).unwrap();
            assert!(!rec.alive());
        }
        // Nothing carries the tag: a bad record is refused, naming the file; none is none.
        fs::write(&file, b"").unwrap();
        let e = ProcessRecord::recorded(&file, &log)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("agent-x.json") && e.contains("nothing was stopped"),
            "{e}"
        );
        fs::remove_file(&file).unwrap();
        assert_eq!(ProcessRecord::recorded(&file, &log).unwrap(), None);
    }
}
