//! The log shim (`sarasa lab log-shim`): a container's stdout arrives on its stdin, its stderr
//! on descriptor 3, and it appends stamped CRI records to the log file it got as stdout. It
//! lives in its own session so it outlives control-plane restarts, and exits when the
//! container's end of the pipes closes. The runner starts it with [`spawn_shim`].

use std::fs::{File, OpenOptions};
use std::io::{self, PipeWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;

use super::{encode, MAX_RECORD};
use crate::LabError;

/// Size rotation of the log a shim writes: past `max_bytes` the file becomes `<path>.1`
/// (older ones shift up to `<path>.<keep>`, the oldest dropped) and a new one starts at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub path: PathBuf,
    pub max_bytes: u64,
    pub keep: usize,
}

/// Where the records go: the log file, rotated by size.
struct Sink {
    file: File,
    rotation: Option<Rotation>,
}

impl Sink {
    fn write(&mut self, out: &[u8]) -> io::Result<()> {
        self.file.write_all(out)?;
        if let Some(r) = &self.rotation {
            if self.file.metadata()?.len() >= r.max_bytes {
                self.rotate()?;
            }
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let Some(r) = self.rotation.clone() else {
            return Ok(());
        };
        // Only while this file is still the container's current log: once a restart made it
        // the previous log, it is not this shim's to rotate any more.
        let ours = self.file.metadata()?.ino();
        if std::fs::metadata(&r.path).map(|m| m.ino()).ok() != Some(ours) {
            self.rotation = None;
            return Ok(());
        }
        let keep = r.keep.max(1);
        for n in (1..keep).rev() {
            rename_if_there(
                &super::rotated_path(&r.path, n),
                &super::rotated_path(&r.path, n + 1),
            )?;
        }
        std::fs::rename(&r.path, super::rotated_path(&r.path, 1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&r.path)?;
        Ok(())
    }
}

fn rename_if_there(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The shim: copies `stdout` and `stderr` into the CRI log `file` until both end, rotating it
/// by size when `rotation` says so.
pub fn run_shim(
    file: File,
    rotation: Option<Rotation>,
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
) -> io::Result<()> {
    let file = Arc::new(Mutex::new(Sink { file, rotation }));
    let copy = |from: Box<dyn Read + Send>, stream: &'static str| {
        let file = Arc::clone(&file);
        std::thread::spawn(move || copy_stream(from, stream, &file))
    };
    let out = copy(Box::new(stdout), "stdout");
    let err = copy(Box::new(stderr), "stderr");
    for t in [out, err] {
        t.join()
            .map_err(|_| io::Error::other("log copier panicked"))??;
    }
    Ok(())
}

/// Copies one stream into the log. Lines that arrive in one read share its time stamp and go
/// out in one write (a write per line made the shim ten times slower); a line longer than one
/// record goes out in `P` pieces as it comes, and unterminated output at the end as `P`.
fn copy_stream(mut from: impl Read, stream: &str, file: &Mutex<Sink>) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    // The start of a line whose newline has not come yet.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let time = Timestamp::now().to_string();
        let mut out = Vec::new();
        if n == 0 {
            if !pending.is_empty() {
                out = encode(&time, stream, &pending);
            }
        } else {
            pending.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
                out.extend(encode(&time, stream, &pending[start..start + i + 1]));
                start += i + 1;
            }
            pending.drain(..start);
            while pending.len() >= MAX_RECORD {
                out.extend(encode(&time, stream, &pending[..MAX_RECORD]));
                pending.drain(..MAX_RECORD);
            }
        }
        if !out.is_empty() {
            // Whole records under the lock: the two streams never interleave inside one.
            file.lock()
                .map_err(|_| io::Error::other("log file lock poisoned"))?
                .write(&out)?;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// The descriptor the shim reads the container's stderr from (its stdin carries stdout).
pub const SHIM_STDERR_FD: i32 = 3;

/// Starts the log shim for the log at `log` (`sarasa lab log-shim`, detached in its own
/// session), rotating it past `max_bytes` and keeping `keep` rotated files, and returns the write ends a container gets as stdout and stderr. The log file is
/// opened here and handed over as the shim's stdout, so the shim writes to this very file even
/// if a restart renames it before the shim gets going. The shim exits once every holder of the
/// pipes' write ends has closed them.
pub fn spawn_shim(
    sarasa: &Path,
    log: &Path,
    max_bytes: u64,
    keep: usize,
) -> Result<(PipeWriter, PipeWriter), LabError> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError::io(log, e))?;
    let pipe_err = |e| LabError::Process(format!("making the log pipes of {}: {e}", log.display()));
    let (out_r, out_w) = std::io::pipe().map_err(pipe_err)?;
    let (err_r, err_w) = std::io::pipe().map_err(pipe_err)?;
    let err_fd = err_r.as_raw_fd();
    let mut cmd = Command::new(sarasa);
    // Not the control plane: a shim outlives it, and an older process carrying its tag would
    // be taken for it when its record is lost.
    cmd.env_remove(crate::process::DAEMON_TAG);
    cmd.args(["lab", "log-shim", "--path"])
        .arg(log)
        .arg("--max-bytes")
        .arg(max_bytes.to_string())
        .arg("--keep")
        .arg(keep.to_string())
        .stdin(Stdio::from(out_r))
        .stdout(Stdio::from(file))
        .stderr(Stdio::null());
    // SAFETY: runs in the forked child before exec and only makes system calls (setsid, dup2,
    // fcntl) on a descriptor number taken before the fork; `err_r` stays open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // The pipe is close-on-exec; its copy at SHIM_STDERR_FD must not be.
            let r = if err_fd == SHIM_STDERR_FD {
                libc::fcntl(err_fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(err_fd, SHIM_STDERR_FD)
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        LabError::Process(format!("starting the log shim of {}: {e}", log.display()))
    })?;
    drop(err_r);
    // Reap the shim when it ends, so finished shims leave no zombies behind.
    let reaper = std::thread::Builder::new()
        .name("log-shim-reaper".into())
        .stack_size(64 * 1024)
        .spawn(move || child.wait());
    if let Err(e) = reaper {
        tracing::warn!("no reaper thread for a log shim: {e}");
    }
    Ok((out_w, err_w))
}

/// The shim's main: the container's stdout on stdin, its stderr on [`SHIM_STDERR_FD`], the
/// log file on stdout; `rotation` names that file and its size bound.
pub fn run_shim_on_stdio(rotation: Option<Rotation>) -> io::Result<()> {
    // Opening the descriptors' /proc entries gives the same pipe and the same file (renamed or
    // not) without taking ownership of raw descriptors; the file again in append mode.
    let stderr = File::open(format!("/proc/self/fd/{SHIM_STDERR_FD}"))?;
    let log = OpenOptions::new().append(true).open("/proc/self/fd/1")?;
    run_shim(log, rotation, io::stdin(), stderr)
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::container_log::{parse, rotated_path, Record};

    #[test]
    fn the_shim_stamps_both_streams() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        run_shim(file, None, &b"out 1\nout 2"[..], &b"err\n"[..]).unwrap();
        let text = std::fs::read(&p).unwrap();
        let recs: Vec<Record> = text.split(|b| *b == b'\n').filter_map(parse).collect();
        assert_eq!(recs.len(), 3);
        let out: Vec<_> = recs.iter().filter(|r| r.stream == "stdout").collect();
        assert_eq!(out[0].content, b"out 1");
        assert!(!out[0].partial);
        assert_eq!(out[1].content, b"out 2");
        assert!(out[1].partial, "unterminated output stays unterminated");
        assert!(recs
            .iter()
            .any(|r| r.stream == "stderr" && r.content == b"err"));
        assert!(recs.iter().all(|r| r.time.parse::<Timestamp>().is_ok()));
    }

    /// Hands out its bytes a few at a time, as a pipe may.
    struct Trickle(Vec<u8>, usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn lines_split_across_reads_or_too_long_are_recorded_right() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let file = Mutex::new(Sink {
            file: File::create(&p).unwrap(),
            rotation: None,
        });
        copy_stream(Trickle(b"abc\nde\n".to_vec(), 3), "stdout", &file).unwrap();
        let mut long = vec![b'x'; MAX_RECORD + 5];
        long.push(b'\n');
        copy_stream(Trickle(long, 4096), "stderr", &file).unwrap();
        let text = std::fs::read(&p).unwrap();
        let recs: Vec<Record> = text.split(|b| *b == b'\n').filter_map(parse).collect();
        let got: Vec<(&str, bool, usize)> = recs
            .iter()
            .map(|r| (r.stream, r.partial, r.content.len()))
            .collect();
        assert_eq!(
            got,
            [
                ("stdout", false, 3),
                ("stdout", false, 2),
                ("stderr", true, MAX_RECORD),
                ("stderr", false, 5)
            ]
        );
        assert_eq!(recs[0].content, b"abc");
    }

    #[test]
    fn the_log_rotates_by_size_keeping_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        let rotation = Rotation {
            path: p.clone(),
            max_bytes: 4096,
            keep: 2,
        };
        // ~100 KiB of numbered lines, in pieces as a pipe delivers them.
        let mut input = Vec::new();
        for i in 0..2000 {
            input.extend_from_slice(format!("line {i:05} {}\n", "x".repeat(40)).as_bytes());
        }
        run_shim(file, Some(rotation), Trickle(input, 1000), &b""[..]).unwrap();
        let sizes: Vec<u64> = [p.clone(), rotated_path(&p, 1), rotated_path(&p, 2)]
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .collect();
        assert!(
            !rotated_path(&p, 3).exists(),
            "only 2 rotated files are kept"
        );
        // Each file is bounded: the limit plus at most one write.
        assert!(sizes.iter().all(|s| *s < 4096 + 8192), "{sizes:?}");
        // The newest lines are in the current file, whole records, in order across files.
        let text = |f: &Path| {
            let t = std::fs::read(f).unwrap();
            t.split(|b| *b == b'\n')
                .filter_map(parse)
                .map(|r| String::from_utf8_lossy(r.content).to_string())
                .collect::<Vec<_>>()
        };
        let all: Vec<String> = [rotated_path(&p, 2), rotated_path(&p, 1), p.clone()]
            .iter()
            .flat_map(|f| text(f))
            .collect();
        assert!(all.last().unwrap().starts_with("line 01999"));
        let nums: Vec<u32> = all.iter().map(|l| l[5..10].parse().unwrap()).collect();
        assert!(
            nums.windows(2).all(|w| w[1] == w[0] + 1),
            "lines in order, none lost within the kept files"
        );
    }

    #[test]
    fn a_log_renamed_by_a_restart_is_not_rotated_by_its_old_shim() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        // The restart made it the previous log before the old shim's last lines came.
        std::fs::rename(&p, dir.path().join("c.previous.log")).unwrap();
        let rotation = Rotation {
            path: p.clone(),
            max_bytes: 10,
            keep: 2,
        };
        run_shim(
            file,
            Some(rotation),
            &b"last words of the old instance\n"[..],
            &b""[..],
        )
        .unwrap();
        assert!(!p.exists() && !rotated_path(&p, 1).exists());
        assert!(
            std::fs::read(dir.path().join("c.previous.log"))
                .unwrap()
                .len()
                > 10
        );
    }
}
