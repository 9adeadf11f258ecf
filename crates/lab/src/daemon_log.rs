//! Size rotation of the lab's own process logs (`logs/*.log`: control plane, the external
//! servers). Those processes write their output straight to the file (opened `O_APPEND` by
//! [`crate::process::Daemon`]) and cannot be told to reopen it, so the file stays in place and
//! its head moves out: the whole blocks at its start are copied to `<log>.1` (older copies
//! shift up to `<log>.<keep>`) and then removed from the live file with
//! `fallocate(FALLOC_FL_COLLAPSE_RANGE)`, which shifts what follows to the front in one step
//! under the inode lock. What a writer appends meanwhile lands after the removed range and
//! stays: no line is lost (logrotate's copytruncate, used before, lost whatever was written
//! between its copy and its truncation). A line may straddle the copy's end and the live
//! file's start. Filesystems without collapse (tmpfs, some overlays) fall back to
//! copytruncate, with a warning. The pod runner runs this every [`CHECK_INTERVAL`]; container
//! logs (`logs/pods/`) rotate in their shim.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::container_log::rotated_path;

/// A process log is rotated once it passes this size.
pub const MAX_BYTES: u64 = 10 << 20;
/// Rotated copies kept per log.
pub const KEEP: usize = 3;
/// How often the sizes are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Rotates every `*.log` directly in `dir` that has reached `max` bytes; returns those rotated.
pub fn rotate_dir(dir: &Path, max: u64, keep: usize) -> io::Result<Vec<PathBuf>> {
    let mut rotated = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(rotated),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_log = path.extension().is_some_and(|x| x == "log");
        let Ok(meta) = entry.metadata() else { continue };
        if is_log && meta.is_file() && meta.len() >= max && rotate(&path, keep)? {
            rotated.push(path);
        }
    }
    Ok(rotated)
}

/// Moves the log's head to `<log>.1`; false when it holds less than one block (nothing moved).
fn rotate(path: &Path, keep: usize) -> io::Result<bool> {
    let live = OpenOptions::new().read(true).write(true).open(path)?;
    let meta = live.metadata()?;
    let block = meta.blksize().max(1);
    // Collapse works on whole blocks only.
    let cut = meta.len() / block * block;
    if cut == 0 {
        return Ok(false);
    }
    shift(path, keep)?;
    let copy = rotated_path(path, 1);
    {
        let mut out = File::create(&copy)?;
        io::copy(&mut io::Read::take(&live, cut), &mut out)?;
        out.sync_data()?;
    }
    // SAFETY: fallocate on a descriptor we own, with in-range offsets; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            live.as_raw_fd(),
            libc::FALLOC_FL_COLLAPSE_RANGE,
            0,
            cut as libc::off_t,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
            tracing::warn!(
                "{}: the filesystem cannot collapse a range ({e}); rotating by copy and truncate (lines written meanwhile are lost)",
                path.display()
            );
            // The copy holds the first `cut` bytes; what came after goes with the truncation
            // unless it is appended to the copy first.
            let mut rest = Vec::new();
            {
                use std::io::{Read, Seek, SeekFrom};
                let mut f = &live;
                f.seek(SeekFrom::Start(cut))?;
                f.read_to_end(&mut rest)?;
            }
            let mut out = OpenOptions::new().append(true).open(&copy)?;
            io::Write::write_all(&mut out, &rest)?;
            live.set_len(0)?;
            Ok(true)
        }
        _ => Err(e),
    }
}

/// `<log>.n` → `<log>.n+1`, the oldest beyond `keep` overwritten.
fn shift(path: &Path, keep: usize) -> io::Result<()> {
    for n in (1..keep.max(1)).rev() {
        match std::fs::rename(rotated_path(path, n), rotated_path(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// On the machine's disk (collapse needs ext4/xfs; /tmp may be tmpfs).
    fn disk_dir() -> tempfile::TempDir {
        tempfile::tempdir_in("/var/tmp").unwrap()
    }

    #[test]
    fn big_process_logs_move_their_head_out_while_the_writer_goes_on() {
        let dir = disk_dir();
        let agent = dir.path().join("agent-n1.log");
        let small = dir.path().join("control-plane.log");
        std::fs::create_dir(dir.path().join("pods")).unwrap();
        let pod = dir.path().join("pods").join("ns_p_c.log");
        // The writer holds the file as a Daemon's output: O_APPEND.
        let mut w = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&agent)
            .unwrap();
        std::fs::write(&small, b"fine\n").unwrap();
        std::fs::write(&pod, vec![b'x'; 300]).unwrap();
        for round in 0..5u8 {
            // Exactly two blocks, then a tail.
            w.write_all(&vec![b'a' + round; 8192]).unwrap();
            w.write_all(b"tail\n").unwrap();
            let rotated = rotate_dir(dir.path(), 8192, 2).unwrap();
            assert_eq!(rotated, std::slice::from_ref(&agent), "round {round}");
            // The tail (past the last whole block) stays in the live file.
            assert_eq!(std::fs::read(&agent).unwrap(), b"tail\n", "round {round}");
            // Start the next round empty.
            let rest = OpenOptions::new().write(true).open(&agent).unwrap();
            rest.set_len(0).unwrap();
        }
        w.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(&agent).unwrap(), b"after\n");
        let newest = std::fs::read(rotated_path(&agent, 1)).unwrap();
        assert_eq!(newest, vec![b'e'; 8192]);
        assert_eq!(
            std::fs::read(rotated_path(&agent, 2)).unwrap(),
            vec![b'd'; 8192]
        );
        assert!(!rotated_path(&agent, 3).exists(), "only 2 copies kept");
        // Small logs and container logs (rotated by their shim) are left alone.
        assert_eq!(std::fs::read(&small).unwrap(), b"fine\n");
        assert_eq!(std::fs::metadata(&pod).unwrap().len(), 300);
    }

    /// A writer appending numbered lines as fast as it can while the log is rotated again and
    /// again: every line is in the copies and the live file, once, in order.
    #[test]
    fn no_line_is_lost_while_rotating_under_a_busy_writer() {
        let dir = disk_dir();
        let log = dir.path().join("control-plane.log");
        let mut w = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        const LINES: usize = 200_000;
        let writer = std::thread::spawn(move || {
            for i in 0..LINES {
                w.write_all(format!("line {i:07} {}\n", "z".repeat(40)).as_bytes())
                    .unwrap();
            }
        });
        let mut rotations = 0;
        let keep = 1_000;
        while !writer.is_finished() {
            rotations += rotate_dir(dir.path(), 64 << 10, keep).unwrap().len();
        }
        writer.join().unwrap();
        assert!(rotations > 10, "the log was rotated {rotations} times");
        let mut all = Vec::new();
        for n in (1..=rotations).rev() {
            all.extend(std::fs::read(rotated_path(&log, n)).unwrap());
        }
        all.extend(std::fs::read(&log).unwrap());
        let text = String::from_utf8(all).unwrap();
        let mut next = 0;
        for l in text.lines() {
            assert_eq!(l, format!("line {next:07} {}", "z".repeat(40)));
            next += 1;
        }
        assert_eq!(next, LINES, "lines lost");
    }
}
