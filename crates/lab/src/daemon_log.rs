//! Size rotation of the lab's own process logs (`logs/*.log`: control plane, agents, the
//! external servers). Those processes write their output straight to the file (opened
//! `O_APPEND` by [`crate::process::Daemon`]), so rotation is logrotate's copytruncate: the
//! file is copied to `<log>.1` (older copies shift up to `<log>.<keep>`) and truncated in
//! place; the writers' next appends land at the new end. What is written between the copy
//! and the truncation is lost (a few lines at most, once per rotation). The pod runner runs
//! this every [`CHECK_INTERVAL`]; container logs (`logs/pods/`) rotate in their shim.

use std::fs::OpenOptions;
use std::io;
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
        if is_log && meta.is_file() && meta.len() >= max {
            copytruncate(&path, keep)?;
            rotated.push(path);
        }
    }
    Ok(rotated)
}

fn copytruncate(path: &Path, keep: usize) -> io::Result<()> {
    let keep = keep.max(1);
    for n in (1..keep).rev() {
        match std::fs::rename(rotated_path(path, n), rotated_path(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::copy(path, rotated_path(path, 1))?;
    OpenOptions::new().write(true).open(path)?.set_len(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn big_process_logs_are_copied_and_truncated_while_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
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
        for round in 0..5 {
            w.write_all(format!("round {round} {}\n", "y".repeat(200)).as_bytes())
                .unwrap();
            let rotated = rotate_dir(dir.path(), 100, 2).unwrap();
            assert_eq!(rotated, std::slice::from_ref(&agent), "round {round}");
            assert_eq!(std::fs::metadata(&agent).unwrap().len(), 0);
        }
        // Appends after a truncation start at the new end, not at the old offset.
        w.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(&agent).unwrap(), b"after\n");
        let newest = std::fs::read_to_string(rotated_path(&agent, 1)).unwrap();
        assert!(newest.starts_with("round 4 "), "{newest}");
        assert!(std::fs::read_to_string(rotated_path(&agent, 2))
            .unwrap()
            .starts_with("round 3 "));
        assert!(!rotated_path(&agent, 3).exists(), "only 2 copies kept");
        // Small logs and container logs (rotated by their shim) are left alone.
        assert_eq!(std::fs::read(&small).unwrap(), b"fine\n");
        assert_eq!(std::fs::metadata(&pod).unwrap().len(), 300);
    }
}
