//! Finding the processes of a pod's earlier instance whose runtime record was lost, so they
//! can be ended before the pod starts again. A pod with its own network namespace is covered
//! by ending what runs in that namespace; a hostNetwork pod's containers share the node's
//! namespace with everything else on the node, so there they are found by what ties them to
//! the pod instead:
//! - its log shims: `sarasa lab log-shim --path <logs>/pods/<namespace>_<pod>_<container>.log`
//!   (namespace and pod names cannot contain `_`, so the name is unambiguous, and `<logs>` is
//!   this lab's own);
//! - its container processes (and whatever they started that kept their output): those whose
//!   stdout or stderr (`/proc/PID/fd/1`, `fd/2`) is the write end of a pipe such a shim reads
//!   (the same `pipe:[inode]` as the shim's descriptor 0 or 3).
//!
//! Hand-written over /proc: no crate matches processes by the pipes they share (a /proc
//! parsing crate would only replace the few `read`/`readlink` calls here), and the matching
//! is kept in pure functions ([`shim_log_path`], [`is_pod_log`], [`pipe_inode`]) that are
//! unit-tested.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A process, identified by its pid and start time (clock ticks since boot), so a pid reused
/// while we wait is not taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    pub pid: i32,
    pub started: u64,
}

/// The log path of a `sarasa lab log-shim` command line (its NUL-separated `argv`), or None
/// for any other command.
pub fn shim_log_path(cmdline: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<&[u8]> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(cmdline)
        .split(|b| *b == 0)
        .collect();
    let sub = args
        .windows(2)
        .position(|w| w[0] == b"lab" && w[1] == b"log-shim")?;
    let rest = &args[sub + 2..];
    let i = rest.iter().position(|a| *a == b"--path")?;
    let path = rest.get(i + 1)?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(path)))
}

/// True when `log` is the log of one of the containers of pod `namespace/pod` in the lab's
/// container log directory `dir` (`<dir>/<namespace>_<pod>_<container>.log`).
pub fn is_pod_log(log: &Path, dir: &Path, namespace: &str, pod: &str) -> bool {
    if log.parent() != Some(dir) {
        return false;
    }
    let Some(name) = log.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let container = name
        .strip_prefix(&format!("{namespace}_{pod}_"))
        .and_then(|rest| rest.strip_suffix(".log"));
    // A container name is a DNS label: no `_`, no `.`.
    container.is_some_and(|c| !c.is_empty() && !c.contains(['_', '.']))
}

/// The inode of a `pipe:[inode]` descriptor link.
pub fn pipe_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("pipe:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A process's start time (field 22 of /proc/PID/stat), None once it is gone or a zombie.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    // After the command: state, then 18 fields, then starttime.
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .collect()
}

fn fd_pipe(pid: i32, fd: i32) -> Option<u64> {
    pipe_inode(&std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?)
}

/// The running processes of pod `namespace/pod`'s containers (whose logs are in `dir`): its
/// log shims and the processes writing into them.
pub fn pod_processes(dir: &Path, namespace: &str, pod: &str) -> Vec<Proc> {
    let all = pids();
    let me = std::process::id() as i32;
    let mut shims = Vec::new();
    let mut pipes = BTreeSet::new();
    for &pid in &all {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let Some(log) = shim_log_path(&cmdline) else {
            continue;
        };
        if pid == me || !is_pod_log(&log, dir, namespace, pod) {
            continue;
        }
        pipes.extend(
            [0, crate::container_log::shim::SHIM_STDERR_FD]
                .into_iter()
                .filter_map(|fd| fd_pipe(pid, fd)),
        );
        shims.push(pid);
    }
    let writers = all.iter().copied().filter(|&pid| {
        pid != me
            && !shims.contains(&pid)
            && [1, 2]
                .into_iter()
                .any(|fd| fd_pipe(pid, fd).is_some_and(|ino| pipes.contains(&ino)))
    });
    let found: BTreeSet<i32> = shims.iter().copied().chain(writers).collect();
    found
        .into_iter()
        .filter_map(|pid| {
            Some(Proc {
                pid,
                started: start_time(pid)?,
            })
        })
        .collect()
}

/// Ends (SIGKILL) these processes and waits up to `wait` for them to be gone; returns how
/// many were still running.
pub fn end(procs: &[Proc], wait: Duration) -> usize {
    let running = || -> Vec<Proc> {
        procs
            .iter()
            .copied()
            .filter(|p| start_time(p.pid) == Some(p.started))
            .collect()
    };
    let now = running();
    for p in &now {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = Instant::now() + wait;
    while !running().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    now.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shims_log_path_is_read_from_its_command_line() {
        let cmd = [
            &b"/usr/bin/sarasa\0lab\0log-shim\0--path\0"[..],
            b"/var/lib/sarasa/l/logs/pods/default_web_c.log\0--max-bytes\0",
            b"100\0",
        ]
        .concat();
        assert_eq!(
            shim_log_path(&cmd),
            Some(PathBuf::from(
                "/var/lib/sarasa/l/logs/pods/default_web_c.log"
            ))
        );
        // Another sarasa command naming a path, or a shim without one: not a pod's shim.
        assert_eq!(shim_log_path(b"sarasa\0logs\0--path\0/x.log\0"), None);
        assert_eq!(shim_log_path(b"sarasa\0lab\0log-shim\0"), None);
        assert_eq!(shim_log_path(b"sarasa\0lab\0log-shim\0--path"), None);
        assert_eq!(shim_log_path(b""), None);
    }

    #[test]
    fn only_the_pods_own_logs_match() {
        let dir = Path::new("/var/lib/sarasa/l/logs/pods");
        let m = |p: &str| is_pod_log(&dir.join(p), dir, "default", "web");
        assert!(m("default_web_c.log"));
        assert!(m("default_web_server-2.log"));
        // Another pod whose name starts the same, another namespace, another lab's logs,
        // the previous instance's log, a rotated file.
        assert!(!m("default_web-1_c.log"));
        assert!(!m("other_web_c.log"));
        assert!(!m("default_web_.log"));
        assert!(!m("default_web_c.previous.log"));
        assert!(!m("default_web_c.log.1"));
        assert!(!is_pod_log(
            Path::new("/var/lib/sarasa/other/logs/pods/default_web_c.log"),
            dir,
            "default",
            "web"
        ));
    }

    #[test]
    fn pipe_links_give_their_inode() {
        assert_eq!(pipe_inode(Path::new("pipe:[4026532]")), Some(4026532));
        assert_eq!(pipe_inode(Path::new("socket:[12]")), None);
        assert_eq!(pipe_inode(Path::new("/dev/null")), None);
    }

    /// A process writing into a shim-like reader of this test is found through the pipe, and
    /// ended; a process with the same command line elsewhere is not.
    #[test]
    fn the_writers_of_a_pods_shim_are_found_and_ended() {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("pods");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join("ns1_pod1_c.log");
        // The "shim": a process with a log shim's command line reading a pipe on fd 0.
        let (r, w) = std::io::pipe().unwrap();
        let mut shim = Command::new("sh")
            .args(["-c", "read x", "sarasa", "lab", "log-shim", "--path"])
            .arg(&log)
            .stdin(Stdio::from(r))
            .spawn()
            .unwrap();
        let mut writer = Command::new("sleep")
            .arg("60")
            .stdout(Stdio::from(w))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // An unrelated process.
        let mut other = Command::new("sleep").arg("60").spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut found = Vec::new();
        while Instant::now() < deadline {
            found = pod_processes(&logs, "ns1", "pod1");
            if found.len() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pids: BTreeSet<i32> = found.iter().map(|p| p.pid).collect();
        let want: BTreeSet<i32> = [shim.id() as i32, writer.id() as i32].into();
        assert_eq!(pids, want);
        assert!(pod_processes(&logs, "ns1", "pod2").is_empty());
        // Our own children become zombies until reaped: reap them as they die.
        let reaper = std::thread::spawn(move || {
            let _ = shim.wait();
            let _ = writer.wait();
        });
        assert_eq!(end(&found, Duration::from_secs(5)), 2);
        reaper.join().unwrap();
        assert!(pod_processes(&logs, "ns1", "pod1").is_empty());
        assert!(
            other.try_wait().unwrap().is_none(),
            "the other process runs on"
        );
        let _ = other.kill();
        let _ = other.wait();
    }
}
