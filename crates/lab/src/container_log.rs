//! Container logs in the CRI format the kubelet reads (`<RFC3339Nano time> <stdout|stderr>
//! <F|P> <content>`, one record per line, `P` for a piece of a longer or unterminated line), so
//! `kubectl logs --timestamps` and `--since` have a time for every line and stderr stays told
//! apart from stdout. A container's stdout and stderr are pipes into a small log shim process
//! (`sarasa lab log-shim`, in the role of conmon or containerd's shim): it stamps each line and
//! appends it, and lives in its own session so it outlives control-plane restarts and exits
//! when the container's end of the pipes closes. This module holds the shim, the reader that
//! applies `previous`/`tailLines`/`sinceTime`/`timestamps`/`follow`, and the log paths.

use std::fs::{File, OpenOptions};
use std::io::{self, PipeWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::process::ProcessRecord;
use crate::LabError;

/// Longest piece of a line in one record (as the kubelet's 16 KiB), longer lines are split.
pub const MAX_RECORD: usize = 16 * 1024;
/// How often a following reader looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

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

    /// On a restart: the log of the instance that ended becomes the previous one.
    pub fn rotate(&self) -> io::Result<()> {
        match std::fs::rename(&self.current, &self.previous) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A new pod with this name starts with no logs (a recreated pod is a new pod).
    pub fn clear(&self) -> io::Result<()> {
        for p in [&self.current, &self.previous] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
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

/// The shim: copies `stdout` and `stderr` into the CRI log `file` until both end.
pub fn run_shim(
    file: File,
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
) -> io::Result<()> {
    let file = Arc::new(Mutex::new(file));
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
fn copy_stream(mut from: impl Read, stream: &str, file: &Mutex<File>) -> io::Result<()> {
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
                .write_all(&out)?;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// The descriptor the shim reads the container's stderr from (its stdin carries stdout).
pub const SHIM_STDERR_FD: i32 = 3;

/// Starts the log shim for the log at `log` (`sarasa lab log-shim`, detached in its own
/// session) and returns the write ends a container gets as stdout and stderr. The log file is
/// opened here and handed over as the shim's stdout, so the shim writes to this very file even
/// if a restart renames it before the shim gets going. The shim exits once every holder of the
/// pipes' write ends has closed them.
pub fn spawn_shim(sarasa: &Path, log: &Path) -> Result<(PipeWriter, PipeWriter), LabError> {
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
    cmd.args(["lab", "log-shim"])
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
/// log file on stdout.
pub fn run_shim_on_stdio() -> io::Result<()> {
    // Opening the descriptors' /proc entries gives the same pipe and the same file (renamed or
    // not) without taking ownership of raw descriptors; the file again in append mode.
    let stderr = File::open(format!("/proc/self/fd/{SHIM_STDERR_FD}"))?;
    let log = OpenOptions::new().append(true).open("/proc/self/fd/1")?;
    run_shim(log, io::stdin(), stderr)
}

/// What to read: the options of `kubectl logs` the reader applies.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub tail_lines: Option<u64>,
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    /// Keep reading while this process (the container) lives and the file is not rotated.
    pub follow: Option<ProcessRecord>,
}

/// Renders records as kubectl shows them; `at_line_start` carries over between calls so a
/// timestamp prefixes only the first piece of a line.
struct Renderer {
    since: Option<Timestamp>,
    timestamps: bool,
    at_line_start: bool,
    /// The current line is before `since` (all its pieces are skipped).
    skipping: bool,
}

impl Renderer {
    fn push(&mut self, rec: &Record<'_>, out: &mut Vec<u8>) {
        if self.at_line_start {
            self.skipping = match (self.since, rec.time.parse::<Timestamp>()) {
                (Some(since), Ok(t)) => t < since,
                _ => false,
            };
        }
        if !self.skipping {
            if self.timestamps && self.at_line_start {
                out.extend_from_slice(rec.time.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(rec.content);
            if !rec.partial {
                out.push(b'\n');
            }
        }
        self.at_line_start = !rec.partial;
    }
}

/// The records of `text` that belong to the last `tail` lines (a line is its `P` pieces and
/// the closing `F`); unparseable lines are skipped.
fn tail_records(text: &[u8], tail: Option<u64>) -> Vec<Record<'_>> {
    let records: Vec<Record<'_>> = text.split(|b| *b == b'\n').filter_map(parse).collect();
    let Some(tail) = tail else { return records };
    let mut lines = 0u64;
    let mut start = records.len();
    for (i, r) in records.iter().enumerate().rev() {
        // A full record closes a line; counting closings from the end finds where they begin.
        if !r.partial || i == records.len() - 1 {
            if lines == tail {
                break;
            }
            lines += 1;
        }
        start = i;
    }
    records[start..].to_vec()
}

/// How much of a log one step of the reader takes (records are at most 16 KiB and a header).
const BLOCK: usize = 256 * 1024;

/// Reads the log at `path` as kubectl asked for it, a block at a time; the stream ends at what
/// the file held when opened, or with `follow` when the container is gone or restarted (its
/// log rotated away). `--tail` starts from the end of the file, not from its beginning.
pub fn read(path: &Path, opts: ReadOptions) -> io::Result<BoxStream<'static, io::Result<Vec<u8>>>> {
    let file = match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound && opts.follow.is_some() => None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(futures::stream::empty().boxed())
        }
        Err(e) => return Err(e),
    };
    let mut renderer = Renderer {
        since: opts.since,
        timestamps: opts.timestamps,
        at_line_start: true,
        skipping: false,
    };
    let (mut offset, mut end, mut inode, mut first) = (0, 0, None, Vec::new());
    if let Some(f) = &file {
        let meta = f.metadata()?;
        end = meta.len();
        inode = Some(meta.ino());
        if let Some(n) = opts.tail_lines {
            let (start, region) = tail_region(f, end, n)?;
            let whole = region
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            for rec in tail_records(&region[..whole], Some(n)) {
                renderer.push(&rec, &mut first);
            }
            offset = start + whole as u64;
        }
    }
    let reader = Reader {
        path: path.to_path_buf(),
        file: file.map(tokio::fs::File::from_std),
        inode,
        offset,
        end: if opts.follow.is_some() {
            None
        } else {
            Some(end)
        },
        renderer,
        first: Some(first),
        follow: opts.follow,
        ending: false,
        done: false,
    };
    Ok(futures::stream::unfold(reader, |mut r| async move {
        let chunk = r.next_chunk().await;
        chunk.map(|c| (c, r))
    })
    .boxed())
}

/// Where the last `lines` lines of the log begin, and the bytes from there to `len`: scans
/// back for twice as many records each round until the region holds more lines than asked
/// (so its first line is whole) or starts at the beginning.
fn tail_region(file: &File, len: u64, lines: u64) -> io::Result<(u64, Vec<u8>)> {
    let mut records = lines.saturating_add(1);
    loop {
        let start = records_start(file, len, records)?;
        let mut region = vec![0u8; (len - start) as usize];
        file.read_exact_at(&mut region, start)?;
        let recs: Vec<Record<'_>> = region.split(|b| *b == b'\n').filter_map(parse).collect();
        let found = recs.iter().filter(|r| !r.partial).count() as u64
            + u64::from(recs.last().is_some_and(|r| r.partial));
        if found > lines || start == 0 {
            return Ok((start, region));
        }
        records = records.saturating_mul(2);
    }
}

/// The offset where the last `records` newline-terminated records before `len` begin.
fn records_start(file: &File, len: u64, records: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut seen, mut pos) = (0u64, len);
    while pos > 0 {
        let n = (buf.len() as u64).min(pos) as usize;
        pos -= n as u64;
        file.read_exact_at(&mut buf[..n], pos)?;
        for i in (0..n).rev() {
            if buf[i] == b'\n' {
                seen += 1;
                if seen > records {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
    }
    Ok(0)
}

/// The state of one log stream.
struct Reader {
    path: PathBuf,
    /// The instance's log file; it stays readable when a restart renames it.
    file: Option<tokio::fs::File>,
    inode: Option<u64>,
    offset: u64,
    /// Where a reader that does not follow stops (the size when opened).
    end: Option<u64>,
    renderer: Renderer,
    /// The `--tail` lines, sent first.
    first: Option<Vec<u8>>,
    follow: Option<ProcessRecord>,
    /// The container ended: read what is left, then stop.
    ending: bool,
    done: bool,
}

impl Reader {
    /// The next non-empty chunk of rendered lines, or None at the end.
    async fn next_chunk(&mut self) -> Option<io::Result<Vec<u8>>> {
        if let Some(first) = self.first.take().filter(|f| !f.is_empty()) {
            return Some(Ok(first));
        }
        loop {
            if self.done {
                return None;
            }
            match self.read_block().await {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(Some(chunk)) if chunk.is_empty() => continue,
                Ok(Some(chunk)) => return Some(Ok(chunk)),
                Ok(None) => {}
            }
            let Some(process) = self.follow.filter(|_| !self.ending) else {
                self.done = true;
                return None;
            };
            let rotated = match (tokio::fs::metadata(&self.path).await, self.inode) {
                (Ok(m), Some(ino)) => m.ino() != ino,
                (Err(_), Some(_)) => true,
                (_, None) => false,
            };
            // The shim may still be copying the last lines of an instance that just ended:
            // one more poll, one more read, then the end.
            self.ending = rotated || !process.alive();
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }

    /// Renders the whole lines of the next block; None when there is nothing new.
    async fn read_block(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.file.is_none() {
            match tokio::fs::File::open(&self.path).await {
                Ok(f) => {
                    self.inode = Some(f.metadata().await?.ino());
                    self.file = Some(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let Some(f) = self.file.as_mut() else {
            return Ok(None);
        };
        let want = match self.end {
            Some(end) if end <= self.offset => return Ok(None),
            Some(end) => ((end - self.offset) as usize).min(BLOCK),
            None => BLOCK,
        };
        f.seek(io::SeekFrom::Start(self.offset)).await?;
        let mut buf = Vec::with_capacity(want);
        (&mut *f).take(want as u64).read_to_end(&mut buf).await?;
        let whole = match buf.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            // A block without a newline is not a log this reader wrote: skip it.
            None if buf.len() == BLOCK => BLOCK,
            None => return Ok(None),
        };
        self.offset += whole as u64;
        let mut out = Vec::new();
        for rec in buf[..whole].split(|b| *b == b'\n').filter_map(parse) {
            self.renderer.push(&rec, &mut out);
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[(&str, &str, &str)]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|(t, s, l)| encode(t, s, l.as_bytes()))
            .collect()
    }

    async fn all(path: &Path, opts: ReadOptions) -> String {
        let chunks: Vec<Vec<u8>> = read(path, opts)
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
            .await;
        String::from_utf8(chunks.concat()).unwrap()
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

    #[tokio::test]
    async fn tail_since_and_timestamps_apply_to_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut text = log(&[
            ("2026-01-01T00:00:01Z", "stdout", "one\n"),
            ("2026-01-01T00:00:02Z", "stderr", "two\n"),
        ]);
        // A line in two pieces counts once for --tail.
        text.extend(b"2026-01-01T00:00:03Z stdout P thr\n2026-01-01T00:00:03Z stdout F ee\n");
        std::fs::write(&p, &text).unwrap();
        assert_eq!(all(&p, ReadOptions::default()).await, "one\ntwo\nthree\n");
        let tail = |n| ReadOptions {
            tail_lines: Some(n),
            ..ReadOptions::default()
        };
        assert_eq!(all(&p, tail(2)).await, "two\nthree\n");
        assert_eq!(all(&p, tail(1)).await, "three\n");
        assert_eq!(all(&p, tail(0)).await, "");
        assert_eq!(all(&p, tail(10)).await, "one\ntwo\nthree\n");
        let since = ReadOptions {
            since: Some("2026-01-01T00:00:02Z".parse().unwrap()),
            ..ReadOptions::default()
        };
        assert_eq!(all(&p, since).await, "two\nthree\n");
        let ts = ReadOptions {
            timestamps: true,
            tail_lines: Some(2),
            ..ReadOptions::default()
        };
        assert_eq!(
            all(&p, ts).await,
            "2026-01-01T00:00:02Z two\n2026-01-01T00:00:03Z three\n"
        );
        assert_eq!(
            all(&dir.path().join("none.log"), ReadOptions::default()).await,
            ""
        );
    }

    #[tokio::test]
    async fn big_logs_are_read_in_blocks_and_tailed_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut text = Vec::new();
        for i in 1..=50_000 {
            text.extend(encode(
                "2026-01-01T00:00:01Z",
                "stdout",
                format!("line {i}\n").as_bytes(),
            ));
        }
        // The last line in three pieces.
        text.extend(b"2026-01-01T00:00:02Z stdout P a\n2026-01-01T00:00:02Z stdout P b\n2026-01-01T00:00:02Z stdout F c\n");
        assert!(text.len() > 4 * BLOCK);
        std::fs::write(&p, &text).unwrap();
        let chunks: Vec<Vec<u8>> = read(&p, ReadOptions::default())
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert!(chunks.len() > 1, "read a block at a time");
        let text = String::from_utf8(chunks.concat()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 50_001);
        assert_eq!(
            (lines[0], lines[49_999], lines[50_000]),
            ("line 1", "line 50000", "abc")
        );
        let tail = |n| ReadOptions {
            tail_lines: Some(n),
            ..ReadOptions::default()
        };
        assert_eq!(all(&p, tail(1)).await, "abc\n");
        assert_eq!(all(&p, tail(3)).await, "line 49999\nline 50000\nabc\n");
        assert_eq!(all(&p, tail(60_000)).await.lines().count(), 50_001);
    }

    #[tokio::test]
    async fn the_shim_stamps_both_streams() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        run_shim(file, &b"out 1\nout 2"[..], &b"err\n"[..]).unwrap();
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
        assert_eq!(
            all(&p, ReadOptions::default()).await.len(),
            "out 1\nout 2err\n".len()
        );
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
        let file = Mutex::new(File::create(&p).unwrap());
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

    #[tokio::test]
    async fn following_sees_new_lines_and_ends_with_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let paths = LogPaths::new(dir.path(), "ns", "pod", "c");
        std::fs::write(
            &paths.current,
            log(&[("2026-01-01T00:00:01Z", "stdout", "one\n")]),
        )
        .unwrap();
        let me = ProcessRecord::of(std::process::id() as i32).unwrap();
        let opts = ReadOptions {
            follow: Some(me),
            ..ReadOptions::default()
        };
        let mut s = read(&paths.current, opts).unwrap();
        async fn next(
            s: &mut BoxStream<'static, io::Result<Vec<u8>>>,
        ) -> Option<io::Result<Vec<u8>>> {
            tokio::time::timeout(Duration::from_secs(10), s.next())
                .await
                .expect("in time")
        }
        assert_eq!(next(&mut s).await.unwrap().unwrap(), b"one\n");
        let mut f = OpenOptions::new()
            .append(true)
            .open(&paths.current)
            .unwrap();
        f.write_all(&log(&[("2026-01-01T00:00:02Z", "stdout", "two\n")]))
            .unwrap();
        assert_eq!(next(&mut s).await.unwrap().unwrap(), b"two\n");
        // The container restarts: what its old instance wrote last is still read, then the end.
        f.write_all(&log(&[("2026-01-01T00:00:03Z", "stdout", "last\n")]))
            .unwrap();
        paths.rotate().unwrap();
        let mut rest = Vec::new();
        while let Some(c) = next(&mut s).await {
            rest.extend(c.unwrap());
        }
        assert_eq!(rest, b"last\n");
        assert!(paths.previous.exists() && !paths.current.exists());
        paths.clear().unwrap();
        assert!(!paths.previous.exists());
    }
}
