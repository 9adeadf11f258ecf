//! Container logs in the CRI format the kubelet reads (`<RFC3339Nano time> <stdout|stderr>
//! <F|P> <content>`, one record per line, `P` for a piece of a longer or unterminated line), so
//! `kubectl logs --timestamps` and `--since` have a time for every line and stderr stays told
//! apart from stdout. A container's stdout and stderr are pipes into a small log shim process
//! ([`shim`], in the role of conmon or containerd's shim); [`reader`] serves `kubectl logs`
//! from the files. This module owns the record format and where the logs of a container's
//! current and previous instance live.

pub mod reader;
pub mod shim;

use std::io;
use std::path::{Path, PathBuf};

pub use reader::{read, ReadOptions};
pub use shim::{run_shim_on_stdio, spawn_shim, Rotation};

/// By default a container's log is rotated once it passes this size (the kubelet's
/// `containerLogMaxSize`, 10 MiB); the lab spec's `container_log_max_bytes` sets it.
pub const LOG_MAX_BYTES: u64 = 10 << 20;
/// By default, rotated files kept per container besides the one written
/// (`containerLogMaxFiles` 5 in all); the lab spec's `container_log_max_files` sets it.
pub const LOG_KEEP_ROTATED: usize = 4;

/// Longest piece of a line in one record (as the kubelet's 16 KiB), longer lines are split.
pub const MAX_RECORD: usize = 16 * 1024;

/// The current and the previous instance's log of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPaths {
    pub current: PathBuf,
    pub previous: PathBuf,
}

impl LogPaths {
    /// `<dir>/<namespace>_<pod>_<container>.log` and `....previous.log`.
    pub fn new(dir: &Path, namespace: &str, pod: &str, container: &str) -> LogPaths {
        let base = format!("{namespace}_{pod}_{container}");
        LogPaths {
            current: dir.join(format!("{base}.log")),
            previous: dir.join(format!("{base}.previous.log")),
        }
    }

    /// The `n`th size-rotated file of the current instance (`<current>.<n>`, 1 the newest).
    pub fn rotated(&self, n: usize) -> PathBuf {
        rotated_path(&self.current, n)
    }

    /// On a restart: the log of the instance that ended becomes the previous one (its
    /// size-rotated files go: `--previous` shows the last file, as the kubelet does).
    pub fn rotate(&self) -> io::Result<()> {
        self.remove_rotated()?;
        match std::fs::rename(&self.current, &self.previous) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A new pod with this name starts with no logs (a recreated pod is a new pod).
    pub fn clear(&self) -> io::Result<()> {
        for p in [&self.current, &self.previous] {
            remove(p)?;
        }
        self.remove_rotated()
    }

    /// Removes every `<current>.<n>` (however many the lab's setting keeps).
    fn remove_rotated(&self) -> io::Result<()> {
        let (Some(dir), Some(name)) = (self.current.parent(), self.current.file_name()) else {
            return Ok(());
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let prefix = format!("{}.", name.to_string_lossy());
        for entry in entries {
            let entry = entry?;
            let file = entry.file_name();
            let rotated = file
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if rotated {
                remove(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// `<log>.<n>`.
pub fn rotated_path(log: &Path, n: usize) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn remove(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    /// True for `P`: the line goes on in the next record.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line of a CRI log file (without its newline).
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        content,
    })
}

/// Writes the records of one line of output (`line` with its newline, if it had one).
pub fn encode(time: &str, stream: &str, line: &[u8]) -> Vec<u8> {
    let (body, complete) = match line.strip_suffix(b"\n") {
        Some(b) => (b, true),
        None => (line, false),
    };
    let mut out = Vec::with_capacity(body.len() + 48);
    let pieces: Vec<&[u8]> = if body.is_empty() {
        vec![body]
    } else {
        body.chunks(MAX_RECORD).collect()
    };
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let tag = if i == last && complete { "F" } else { "P" };
        for part in [time, " ", stream, " ", tag, " "] {
            out.extend_from_slice(part.as_bytes());
        }
        out.extend_from_slice(piece);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_removes_every_rotated_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths::new(dir.path(), "ns", "web", "c");
        let other = LogPaths::new(dir.path(), "ns", "web", "c2");
        let mut files = vec![paths.current.clone(), paths.previous.clone()];
        files.extend((1..=12).map(|n| paths.rotated(n)));
        files.extend([other.current.clone(), other.rotated(1)]);
        for f in &files {
            std::fs::write(f, "x").unwrap();
        }
        paths.clear().unwrap();
        let left: Vec<_> = files.iter().filter(|f| f.exists()).collect();
        assert_eq!(left, [&other.current, &other.rotated(1)]);
    }

    #[test]
    fn records_round_trip_and_split_long_lines() {
        let out = encode("2026-01-01T00:00:00.5Z", "stderr", b"oops\n");
        assert_eq!(out, b"2026-01-01T00:00:00.5Z stderr F oops\n");
        let rec = parse(&out[..out.len() - 1]).unwrap();
        assert_eq!(
            rec,
            Record {
                time: "2026-01-01T00:00:00.5Z",
                stream: "stderr",
                partial: false,
                content: b"oops"
            }
        );
        // No newline at the end of output: a partial record, so nothing adds one.
        assert_eq!(encode("t", "stdout", b"x"), b"t stdout P x\n");
        assert_eq!(encode("t", "stdout", b"\n"), b"t stdout F \n");
        let long = vec![b'a'; MAX_RECORD + 3];
        let mut line = long.clone();
        line.push(b'\n');
        let out = encode("t", "stdout", &line);
        let recs: Vec<Record> = out.split(|b| *b == b'\n').filter_map(parse).collect();
        assert_eq!(recs.len(), 2);
        assert!(recs[0].partial && !recs[1].partial);
        assert_eq!([recs[0].content, recs[1].content].concat(), long);
        assert!(parse(b"garbage").is_none());
        assert!(parse(b"t stdin F x").is_none());
    }
}
