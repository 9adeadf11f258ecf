//! Serving `kubectl logs` from a container's CRI log: `tailLines` counted from the end of the
//! file (and reaching into the size-rotated files when the current one holds fewer), `sinceTime`
//! and `timestamps` applied per line, and `follow` that polls for new lines
//! until the container ends or restarts (its log renamed away), read a block at a time so a
//! big log never sits in memory whole.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{parse, Record};
use crate::process::ProcessRecord;

/// How often a following reader looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

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

/// The lines `records` make (closed ones, and a last one still open).
fn line_count(records: &[Record<'_>]) -> u64 {
    let closed = records.iter().filter(|r| !r.partial).count() as u64;
    closed + u64::from(records.last().is_some_and(|r| r.partial))
}

/// The last `lines` lines before the current file, from the size-rotated files `<log>.1`,
/// `<log>.2`, ...: each file's whole records near its end and how many lines to take from
/// them, oldest file first.
fn older_lines(path: &Path, mut lines: u64) -> io::Result<Vec<(Vec<u8>, u64)>> {
    let mut parts = Vec::new();
    let mut n = 1;
    while lines > 0 {
        let f = match File::open(super::rotated_path(path, n)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let (_, region) = tail_region(&f, len, lines)?;
        let whole = region
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let mut text = region;
        text.truncate(whole);
        let taken = line_count(&tail_records(&text, Some(lines)));
        parts.push((text, lines));
        if taken == 0 {
            break;
        }
        lines = lines.saturating_sub(taken);
        n += 1;
    }
    parts.reverse();
    Ok(parts)
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
            let records = tail_records(&region[..whole], Some(n));
            // Fewer lines than asked since the last size rotation: the rest comes from the
            // rotated files of this instance, newest first.
            let older = older_lines(path, n.saturating_sub(line_count(&records)))?;
            for (text, take) in &older {
                for rec in tail_records(text, Some(*take)) {
                    renderer.push(&rec, &mut first);
                }
            }
            for rec in records {
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
            // Rotated by size (the shim renamed it to `<log>.1`), not by a restart: finish the
            // old file (the shim wrote all of it before renaming it), then go on with the new.
            let by_size = rotated
                && tokio::fs::metadata(super::rotated_path(&self.path, 1))
                    .await
                    .is_ok_and(|m| Some(m.ino()) == self.inode);
            if by_size && self.file.is_some() {
                loop {
                    match self.read_block().await {
                        Ok(Some(chunk)) if !chunk.is_empty() => return Some(Ok(chunk)),
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
                self.file = None;
                self.inode = None;
                self.offset = 0;
                continue;
            }
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
    use crate::container_log::{encode, LogPaths};
    use std::fs::OpenOptions;
    use std::io::Write;

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

    #[tokio::test]
    async fn tail_reaches_into_the_size_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let t = "2026-01-01T00:00:01Z";
        std::fs::write(
            crate::container_log::rotated_path(&p, 2),
            log(&[(t, "stdout", "a\n"), (t, "stdout", "b\n")]),
        )
        .unwrap();
        std::fs::write(
            crate::container_log::rotated_path(&p, 1),
            log(&[(t, "stdout", "c\n")]),
        )
        .unwrap();
        std::fs::write(&p, log(&[(t, "stdout", "last\n")])).unwrap();
        let tail = |n| ReadOptions {
            tail_lines: Some(n),
            ..ReadOptions::default()
        };
        assert_eq!(all(&p, tail(1)).await, "last\n");
        assert_eq!(all(&p, tail(2)).await, "c\nlast\n");
        assert_eq!(all(&p, tail(3)).await, "b\nc\nlast\n");
        assert_eq!(all(&p, tail(9)).await, "a\nb\nc\nlast\n");
        // Without --tail the current file alone, as before.
        assert_eq!(all(&p, ReadOptions::default()).await, "last\n");
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

    #[tokio::test]
    async fn following_goes_on_across_a_rotation_by_size() {
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
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut step = 0;
        while !got.ends_with(b"three\n") {
            assert!(
                std::time::Instant::now() < deadline,
                "got {:?}",
                String::from_utf8_lossy(&got)
            );
            if let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(300), s.next()).await {
                got.extend(c.unwrap());
            }
            if got == b"one\n" && step == 0 {
                // The shim's last write before rotating, the rotation, the first write after.
                let mut f = OpenOptions::new()
                    .append(true)
                    .open(&paths.current)
                    .unwrap();
                f.write_all(&log(&[("2026-01-01T00:00:02Z", "stdout", "two\n")]))
                    .unwrap();
                std::fs::rename(&paths.current, paths.rotated(1)).unwrap();
                std::fs::write(
                    &paths.current,
                    log(&[("2026-01-01T00:00:03Z", "stdout", "three\n")]),
                )
                .unwrap();
                step = 1;
            }
        }
        assert_eq!(got, b"one\ntwo\nthree\n");
        // `kubectl logs` without --follow serves the current file, as the kubelet does.
        let mut plain = read(&paths.current, ReadOptions::default()).unwrap();
        assert_eq!(plain.next().await.unwrap().unwrap(), b"three\n");
        paths.clear().unwrap();
        assert!(!paths.rotated(1).exists());
    }
}
