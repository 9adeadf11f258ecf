//! Crash-safe persistence: a snapshot (written to a temp file, fsynced, renamed) plus an append
//! log of every change since, replayed at start.
//!
//! A change is written to the log (one `write`, before it becomes visible) under the store lock;
//! the fsync thread then makes every record written so far durable with one `fdatasync` (group
//! commit) and publishes the durable resourceVersion. A request is acknowledged, and a watcher
//! sees the change, only once it is durable.
//!
//! Both files start with a header line, so an emptied or missing file is told from an empty
//! cluster: `{"rv":R,"format":2}` for the snapshot, `{"log":2,"base":R}` for the log (the log
//! holds the changes after resourceVersion R, one per resourceVersion, without gaps). A torn or
//! unreadable last line (a write cut short) is cut off at start with a log line; damage anywhere
//! else refuses to start with an error naming the file and the line.
//!
//! resourceVersions never move backwards, even when the log's tail is lost (a crash before an
//! fsync, after a GET already showed the change; or a log cut short from outside): before a
//! record takes a resourceVersion above the reservation in `rv-reserved.json`, the reservation
//! is raised by a block and made durable (one atomic file write per `RESERVE_BLOCK` writes, as
//! a database caches sequence values). At start the store continues above the reservation and
//! remembers the skipped range as a hole: a watch resuming from inside it gets 410 Gone and
//! relists, since what it saw there may be gone. The first record after a hole says so
//! (`"skip": true`), so the log's resourceVersions stay checkably consecutive otherwise.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::error::Error;

pub const SNAPSHOT: &str = "snapshot.jsonl";
pub const LOG: &str = "log.jsonl";
pub const RESERVED: &str = "rv-reserved.json";
/// How far each durable reservation of resourceVersions reaches ahead.
pub const RESERVE_BLOCK: u64 = 1000;
/// The on-disk format with header lines (format 1 had no log header).
const FORMAT: u64 = 2;

/// One persisted change.
#[derive(Debug)]
pub enum Record {
    Put {
        rv: u64,
        res: String,
        obj: Value,
    },
    Delete {
        rv: u64,
        res: String,
        ns: String,
        name: String,
    },
}

impl Record {
    fn rv(&self) -> u64 {
        match self {
            Record::Put { rv, .. } | Record::Delete { rv, .. } => *rv,
        }
    }
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rv: u64,
    /// The snapshot's resourceVersion (the log's records come after it).
    pub snap_rv: u64,
    /// (qualified resource name, object), in replay order.
    pub records: Vec<Record>,
    /// Neither file existed: a new, empty store.
    pub fresh: bool,
    /// Both files are in the current format (else the store rewrites them when it can).
    pub current: bool,
    /// Records in the log (for compaction).
    pub log_records: usize,
    /// Length of the log's intact part (a torn tail is cut off).
    pub log_len: u64,
    /// Every resourceVersion ever handed out is at most this (0: no reservation on record).
    pub reserved: u64,
    /// Ranges of resourceVersions skipped in the log (exclusive bounds): a watch resuming from
    /// inside one must relist.
    pub holes: Vec<(u64, u64)>,
}

impl Loaded {
    /// The resourceVersion the store continues from: above every one ever handed out.
    pub fn start_rv(&self) -> u64 {
        if self.reserved > self.rv {
            self.reserved + 1
        } else {
            self.rv
        }
    }
}

fn io_err(path: &Path, source: io::Error) -> Error {
    Error::StateDir {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

const REMEDY: &str =
    "restore the state directory from a backup, or remove it to start an empty cluster";

/// Reads the snapshot and the log of `dir`, cutting a torn last line off the log.
pub fn load(dir: &Path) -> Result<Loaded, Error> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let snap = dir.join(SNAPSHOT);
    let log = dir.join(LOG);
    let snap_bytes = read_if_exists(&snap)?;
    let log_bytes = read_if_exists(&log)?;
    let mut out = Loaded {
        reserved: read_reserved(dir)?,
        ..Loaded::default()
    };
    let (snap_bytes, log_bytes) = match (snap_bytes, log_bytes) {
        (None, None) => {
            out.fresh = true;
            out.current = true;
            return Ok(out);
        }
        (None, Some(_)) => {
            return Err(corrupt(
                &snap,
                format!(
                    "missing, but {LOG} exists: the objects of the snapshot are gone; {REMEDY}"
                ),
            ))
        }
        (Some(s), l) => (s, l),
    };
    if snap_bytes.is_empty() {
        return Err(corrupt(
            &snap,
            format!("empty (a snapshot always starts with a header line): the objects it held are gone; {REMEDY}"),
        ));
    }
    let snap_format = read_snapshot(&snap, &snap_bytes, &mut out)?;
    let snap_rv = out.rv;
    out.snap_rv = snap_rv;
    let Some(log_bytes) = log_bytes else {
        if snap_format >= FORMAT {
            return Err(corrupt(
                &log,
                format!("missing, but {SNAPSHOT} exists: the changes since the snapshot are gone; {REMEDY}"),
            ));
        }
        return Ok(out);
    };
    if log_bytes.is_empty() {
        if snap_format >= FORMAT {
            return Err(corrupt(
                &log,
                format!("empty (a log always starts with a header line): the changes since the snapshot are gone; {REMEDY}"),
            ));
        }
        // Format 1 left an empty log after each snapshot.
        return Ok(out);
    }
    let log_format = read_log(&log, &log_bytes, snap_rv, &mut out)?;
    out.current = snap_format >= FORMAT && log_format >= FORMAT;
    Ok(out)
}

/// The reservation on record: 0 when there is none (a store from before reservations); an
/// unreadable one is refused, since starting below it could reuse resourceVersions.
fn read_reserved(dir: &Path) -> Result<u64, Error> {
    let path = dir.join(RESERVED);
    let Some(bytes) = read_if_exists(&path)? else {
        return Ok(0);
    };
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("reserved").and_then(Value::as_u64))
        .ok_or_else(|| {
            corrupt(
                &path,
                "not a reservation ({\"reserved\":N}); remove it to start without the guarantee \
                 that resourceVersions never move backwards, or restore it from a backup",
            )
        })
}

/// Records durably that resourceVersions up to `upto` may be handed out.
fn write_reserved(dir: &Path, upto: u64) -> io::Result<()> {
    let mut line = serde_json::to_vec(&json!({ "reserved": upto }))?;
    line.push(b'\n');
    write_atomic(dir, RESERVED, |w| w.write_all(&line))
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Parses the snapshot into `out`; returns its format.
fn read_snapshot(path: &Path, bytes: &[u8], out: &mut Loaded) -> Result<u64, Error> {
    // A snapshot is renamed into place whole: any damage is corruption, the last line too.
    if bytes.last() != Some(&b'\n') {
        return Err(corrupt(path, "the last line is cut short (no newline)"));
    }
    let mut format = 1;
    for (i, line) in bytes[..bytes.len() - 1].split(|b| *b == b'\n').enumerate() {
        let v: Value = serde_json::from_slice(line)
            .map_err(|e| corrupt(path, format!("line {}: {e}", i + 1)))?;
        if i == 0 {
            out.rv = v
                .get("rv")
                .and_then(Value::as_u64)
                .ok_or_else(|| corrupt(path, "line 1: not a snapshot header (no \"rv\")"))?;
            format = v.get("format").and_then(Value::as_u64).unwrap_or(1);
            continue;
        }
        let res = str_of(&v, "res");
        let obj = v.get("obj").cloned().unwrap_or(Value::Null);
        if res.is_empty() || !obj.is_object() {
            return Err(corrupt(
                path,
                format!("line {}: not a stored object", i + 1),
            ));
        }
        out.records.push(Record::Put { rv: 0, res, obj });
    }
    Ok(format)
}

fn parse_record(v: &Value) -> Option<Record> {
    let rv = v.get("rv").and_then(Value::as_u64)?;
    let res = str_of(v, "res");
    match v.get("op").and_then(Value::as_str)? {
        "put" => Some(Record::Put {
            rv,
            res,
            obj: v.get("obj").filter(|o| o.is_object()).cloned()?,
        }),
        "del" => Some(Record::Delete {
            rv,
            res,
            ns: str_of(v, "ns"),
            name: str_of(v, "name"),
        }),
        _ => None,
    }
}

/// Parses the log into `out` (after the snapshot at `snap_rv`), cutting a torn last line off the
/// file; returns its format.
fn read_log(path: &Path, bytes: &[u8], snap_rv: u64, out: &mut Loaded) -> Result<u64, Error> {
    // Lines with their end offsets; the part after the last newline is a torn write.
    let mut lines: Vec<(&[u8], u64)> = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            lines.push((&bytes[start..i], (i + 1) as u64));
            start = i + 1;
        }
    }
    let mut good_len = start as u64;
    let mut torn = start < bytes.len();
    // A torn write follows the header: without one complete line the file is not a log whose
    // last write was cut (all of it would go) but a damaged one.
    if lines.is_empty() && torn {
        return Err(corrupt(
            path,
            format!("line 1 (the header) is cut short or unreadable; {REMEDY}"),
        ));
    }
    let parsed: Vec<Option<Value>> = lines
        .iter()
        .map(|(l, _)| serde_json::from_slice::<Value>(l).ok())
        .collect();
    // An unreadable complete last line is a torn write too (its tail was lost, or zeros).
    if let (Some(None), n) = (parsed.last(), lines.len()) {
        if n > 1 {
            good_len = lines[n - 2].1;
            lines.pop();
            torn = true;
        }
    }
    let mut format = 1;
    let mut expect: Option<u64> = None;
    for (i, (line, _)) in lines.iter().enumerate() {
        let n = i + 1;
        let v = match &parsed[i] {
            Some(v) => v,
            None => {
                let e = serde_json::from_slice::<Value>(line)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                return Err(corrupt(path, format!("line {n}: {e}; {REMEDY}")));
            }
        };
        if i == 0 {
            if let Some(f) = v.get("log").and_then(Value::as_u64) {
                format = f;
                let base = v
                    .get("base")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| corrupt(path, "line 1: log header without \"base\""))?;
                if base > snap_rv {
                    return Err(corrupt(
                        path,
                        format!(
                            "the log continues from resourceVersion {base} but {SNAPSHOT} ends at {snap_rv}: \
                             the snapshot is older than the log; {REMEDY}"
                        ),
                    ));
                }
                expect = Some(base + 1);
                continue;
            }
        }
        let rec = parse_record(v)
            .ok_or_else(|| corrupt(path, format!("line {n}: not a change record")))?;
        let rv = rec.rv();
        if let Some(want) = expect {
            let skip = v.get("skip").and_then(Value::as_bool) == Some(true);
            if skip && rv > want {
                out.holes.push((want - 1, rv));
            } else if rv != want {
                return Err(corrupt(
                    path,
                    format!(
                        "line {n}: resourceVersion {rv} where {want} was expected (records are missing); {REMEDY}"
                    ),
                ));
            }
            expect = Some(rv + 1);
        }
        out.log_records += 1;
        if rv <= out.rv {
            continue;
        }
        out.rv = rv;
        out.records.push(rec);
    }
    if torn {
        tracing::warn!(
            "{}: cutting off a torn last write ({} bytes after offset {good_len}); the change it held was never acknowledged",
            path.display(),
            bytes.len() as u64 - good_len
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        f.set_len(good_len).map_err(|e| io_err(path, e))?;
        f.sync_all().map_err(|e| io_err(path, e))?;
    }
    out.log_len = good_len;
    Ok(format)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `lines` to `dir/name` atomically: a temp file, fsynced, renamed, the directory fsynced.
/// The temp file is removed on failure (a full disk gets its space back).
fn write_atomic(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let r = (|| {
        let f = File::create(&tmp)?;
        let mut w = io::BufWriter::new(f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(name))?;
        fsync_dir(dir)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Writes a snapshot of every object atomically.
pub fn write_snapshot<'a>(
    dir: &Path,
    rv: u64,
    objects: impl Iterator<Item = (&'a str, &'a Value)>,
) -> io::Result<()> {
    write_atomic(dir, SNAPSHOT, |w| {
        serde_json::to_writer(&mut *w, &json!({"rv": rv, "format": FORMAT}))?;
        w.write_all(b"\n")?;
        for (res, obj) in objects {
            serde_json::to_writer(&mut *w, &json!({"res": res, "obj": obj}))?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Writes an empty log (its header) continuing from `base` atomically; returns its length.
fn write_log_header(dir: &Path, base: u64) -> io::Result<u64> {
    let mut header = serde_json::to_vec(&json!({"log": FORMAT, "base": base}))?;
    header.push(b'\n');
    write_atomic(dir, LOG, |w| w.write_all(&header))?;
    Ok(header.len() as u64)
}

/// The file the log appends to (a trait so tests can make writes and syncs fail).
pub trait LogFile: Send + Sync + 'static {
    /// Writes all of `buf` at the end (a failure may leave part of it written).
    fn append(&self, buf: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Makes everything written durable.
    fn sync(&self) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&self, buf: &[u8]) -> io::Result<()> {
        let mut f: &File = self;
        f.write_all(buf)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}

fn open_append(path: &Path) -> io::Result<Arc<dyn LogFile>> {
    Ok(Arc::new(OpenOptions::new().append(true).open(path)?))
}

/// Why a write could not be persisted.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The disk (or quota) is full; nothing was written, later writes may succeed.
    #[error("no space left for the API server state ({path}): {source}")]
    Full { path: String, source: io::Error },
    /// Any other failure; nothing was written.
    #[error("writing the API server state ({path}) failed: {source}")]
    Io { path: String, source: io::Error },
    /// An earlier failure left the log unusable until the server restarts.
    #[error("the API server state ({path}) is unusable until restart: {detail}")]
    Broken { path: String, detail: String },
}

impl PersistError {
    /// A failed write: a full disk or quota is told apart (writes may resume).
    fn classify(path: String, source: io::Error) -> PersistError {
        if matches!(
            source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ) {
            PersistError::Full { path, source }
        } else {
            PersistError::Io { path, source }
        }
    }
}

struct SyncState {
    file: Arc<dyn LogFile>,
    /// Highest resourceVersion written to the log.
    written: u64,
    /// Highest resourceVersion made durable.
    synced: u64,
    /// An fsync failed: what was written since may be lost, so writes stop until restart.
    failed: Option<String>,
    stop: bool,
}

/// What the appender, the fsync thread and waiting requests share.
pub struct Durability {
    state: Mutex<SyncState>,
    cv: Condvar,
    /// The durable resourceVersion (watchers and waiting requests follow it).
    tx: Arc<watch::Sender<u64>>,
}

impl Durability {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest resourceVersion written to the log.
    pub fn written(&self) -> u64 {
        self.lock().written
    }

    /// Why writes stopped being durable, if they did.
    pub fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Blocks until `rv` is durable (tests and tools; requests wait asynchronously).
    pub fn wait(&self, rv: u64) -> Result<(), String> {
        let mut s = self.lock();
        loop {
            if s.synced >= rv {
                return Ok(());
            }
            if let Some(f) = &s.failed {
                return Err(f.clone());
            }
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn publish(&self, rv: u64) {
        self.tx.send_if_modified(|cur| {
            if *cur < rv {
                *cur = rv;
                true
            } else {
                false
            }
        });
    }
}

/// The open log plus its fsync thread.
pub struct Log {
    dir: PathBuf,
    path: PathBuf,
    file: Arc<dyn LogFile>,
    /// Length of the log's intact part (where the next record starts).
    len: u64,
    /// Records written since the last snapshot.
    pub records: usize,
    /// A failed write could not be cut off again: the log's end is unknown.
    broken: Option<String>,
    /// The resourceVersion of the log's last record (or its base).
    last_rv: u64,
    /// The durable reservation: records up to it need no new one.
    reserved: u64,
    durability: Arc<Durability>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Log {
    /// Opens the log of a loaded store for appending, creating snapshot and log for a fresh one.
    /// Writes nothing else (a store opens on a full disk). `tx` carries the durable
    /// resourceVersion.
    pub fn open(dir: &Path, loaded: &Loaded, tx: Arc<watch::Sender<u64>>) -> Result<Log, Error> {
        let path = dir.join(LOG);
        let len = if loaded.fresh {
            write_snapshot(dir, 0, std::iter::empty()).map_err(|e| io_err(dir, e))?;
            write_log_header(dir, 0).map_err(|e| io_err(&path, e))?
        } else if !path.exists() {
            // Format 1 after a crash between snapshot and log: start an empty old-style log.
            File::create(&path).map_err(|e| io_err(&path, e))?;
            0
        } else {
            loaded.log_len
        };
        let file = open_append(&path).map_err(|e| io_err(&path, e))?;
        let mut log = Self::with_file(dir, file, len, loaded.log_records, loaded.start_rv(), tx)
            .map_err(|e| io_err(&path, e))?;
        log.last_rv = loaded.rv;
        log.reserved = loaded.reserved;
        Ok(log)
    }

    /// A log appending to `file` (of length `len`, holding `records`, durable up to `rv`).
    pub fn with_file(
        dir: &Path,
        file: Arc<dyn LogFile>,
        len: u64,
        records: usize,
        rv: u64,
        tx: Arc<watch::Sender<u64>>,
    ) -> io::Result<Log> {
        let durability = Arc::new(Durability {
            state: Mutex::new(SyncState {
                file: file.clone(),
                written: rv,
                synced: rv,
                failed: None,
                stop: false,
            }),
            cv: Condvar::new(),
            tx,
        });
        durability.publish(rv);
        let d2 = durability.clone();
        let thread = std::thread::Builder::new()
            .name("apiserver-fsync".into())
            .spawn(move || sync_loop(&d2))?;
        Ok(Log {
            dir: dir.to_path_buf(),
            path: dir.join(LOG),
            file,
            len,
            records,
            broken: None,
            last_rv: rv,
            reserved: 0,
            durability,
            thread: Some(thread),
        })
    }

    pub fn durability(&self) -> &Arc<Durability> {
        &self.durability
    }

    /// Appends one record; on failure nothing of it stays in the file (a short write is cut off
    /// again), so the next record never lands glued to a torn one.
    pub fn append(&mut self, rec: &Record) -> Result<(), PersistError> {
        let path = self.path.display().to_string();
        if let Some(detail) = self.broken.clone().or_else(|| self.durability.failed()) {
            return Err(PersistError::Broken { path, detail });
        }
        let rv = rec.rv();
        if rv > self.reserved {
            let upto = rv + RESERVE_BLOCK - 1;
            write_reserved(&self.dir, upto).map_err(|source| {
                PersistError::classify(self.dir.join(RESERVED).display().to_string(), source)
            })?;
            self.reserved = upto;
        }
        let mut v = match rec {
            Record::Put { rv, res, obj } => json!({"rv": rv, "op": "put", "res": res, "obj": obj}),
            Record::Delete { rv, res, ns, name } => {
                json!({"rv": rv, "op": "del", "res": res, "ns": ns, "name": name})
            }
        };
        if rv != self.last_rv + 1 {
            v["skip"] = json!(true);
        }
        let mut line = serde_json::to_vec(&v).map_err(|e| PersistError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        if let Err(source) = self.file.append(&line) {
            if let Err(e) = self.file.truncate(self.len) {
                let detail = format!(
                    "a failed write ({source}) could not be cut off at offset {} ({e})",
                    self.len
                );
                tracing::error!("{path}: {detail}");
                self.broken = Some(detail);
            }
            return Err(PersistError::classify(path, source));
        }
        self.len += line.len() as u64;
        self.records += 1;
        self.last_rv = rv;
        let mut s = self.durability.lock();
        s.written = s.written.max(rec.rv());
        self.durability.cv.notify_all();
        Ok(())
    }

    /// Replaces snapshot + log with a snapshot of `objects` (at `rv`) and an empty log.
    pub fn compact<'a>(
        &mut self,
        rv: u64,
        objects: impl Iterator<Item = (&'a str, &'a Value)>,
    ) -> io::Result<()> {
        write_snapshot(&self.dir, rv, objects)?;
        // The snapshot is durable and holds everything: a crash from here on replays it (the old
        // log's records are all at or below rv and skipped).
        let len = write_log_header(&self.dir, rv)?;
        let file = open_append(&self.path)?;
        self.file = file.clone();
        self.len = len;
        self.records = 0;
        self.broken = None;
        self.last_rv = rv;
        {
            let mut s = self.durability.lock();
            s.file = file;
            s.written = s.written.max(rv);
            s.synced = s.synced.max(rv);
        }
        self.durability.cv.notify_all();
        self.durability.publish(rv);
        Ok(())
    }
}

fn sync_loop(d: &Durability) {
    loop {
        let (file, target) = {
            let mut s = d.lock();
            while (s.written <= s.synced || s.failed.is_some()) && !s.stop {
                s = d.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.stop && (s.written <= s.synced || s.failed.is_some()) {
                return;
            }
            (s.file.clone(), s.written)
        };
        // Everything written while this fsync runs goes into the next one (group commit).
        let r = file.sync();
        let ok = r.is_ok();
        {
            let mut s = d.lock();
            match r {
                Ok(()) => s.synced = s.synced.max(target),
                Err(e) => {
                    let msg = format!("fsync of the API server log failed: {e}");
                    tracing::error!("{msg}; refusing writes until restart");
                    s.failed = Some(msg);
                }
            }
        }
        if ok {
            d.publish(target);
        } else {
            // Wake waiting requests so they report the failure.
            d.tx.send_modify(|_| {});
        }
        d.cv.notify_all();
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        {
            let mut s = self.durability.lock();
            s.stop = true;
        }
        self.durability.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    fn tx() -> Arc<watch::Sender<u64>> {
        Arc::new(watch::channel(0).0)
    }

    fn put(rv: u64, name: &str) -> Record {
        Record::Put {
            rv,
            res: "pods".into(),
            obj: json!({"metadata": {"name": name}}),
        }
    }

    fn names(l: &Loaded) -> Vec<String> {
        l.records
            .iter()
            .map(|r| match r {
                Record::Put { obj, .. } => obj["metadata"]["name"].as_str().unwrap().to_string(),
                Record::Delete { name, .. } => format!("-{name}"),
            })
            .collect()
    }

    fn open(dir: &Path) -> (Loaded, Log) {
        let loaded = load(dir).unwrap();
        let log = Log::open(dir, &loaded, tx()).unwrap();
        (loaded, log)
    }

    fn err_text(r: Result<Loaded, Error>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(l) => panic!("loaded {} records, wanted an error", l.records.len()),
        }
    }

    #[test]
    fn snapshot_then_log_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (loaded, mut log) = open(dir.path());
        assert!(loaded.fresh);
        let objs = [("pods".to_string(), json!({"metadata": {"name": "a"}}))];
        log.append(&put(1, "a")).unwrap();
        log.compact(1, objs.iter().map(|(r, o)| (r.as_str(), o)))
            .unwrap();
        log.append(&put(2, "b")).unwrap();
        log.append(&Record::Delete {
            rv: 3,
            res: "pods".into(),
            ns: "".into(),
            name: "a".into(),
        })
        .unwrap();
        drop(log);
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.rv, 3);
        assert!(loaded.current);
        assert_eq!(names(&loaded), ["a", "b", "-a"]);
    }

    #[test]
    fn torn_tail_is_cut_off_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut log) = open(dir.path());
        log.append(&put(1, "a")).unwrap();
        drop(log);
        let path = dir.path().join(LOG);
        let good = fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"rv\":2,\"op\":\"pu").unwrap();
        drop(f);
        let (loaded, mut log) = open(dir.path());
        assert_eq!(loaded.rv, 1);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            good,
            "torn tail cut off"
        );
        log.append(&put(2, "b")).unwrap();
        drop(log);
        assert_eq!(names(&load(dir.path()).unwrap()), ["a", "b"]);
    }

    #[test]
    fn unreadable_last_line_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut log) = open(dir.path());
        log.append(&put(1, "a")).unwrap();
        drop(log);
        let path = dir.path().join(LOG);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        // A block of zeros (a crash after the size grew, before the data landed).
        f.write_all(&[0u8; 40]).unwrap();
        f.write_all(b"\n").unwrap();
        drop(f);
        let loaded = load(dir.path()).unwrap();
        assert_eq!(names(&loaded), ["a"]);
    }

    #[test]
    fn a_log_without_one_complete_line_is_refused_not_cut_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut log) = open(dir.path());
        log.append(&put(1, "a")).unwrap();
        drop(log);
        let path = dir.path().join(LOG);
        let len = fs::metadata(&path).unwrap().len() as usize;
        // Garbage over the whole file, no newline: not a torn last write (the header and
        // every record would go with it).
        fs::write(&path, vec![0xffu8; len]).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(LOG) && e.contains("header"), "{e}");
        assert_eq!(
            fs::metadata(&path).unwrap().len() as usize,
            len,
            "nothing cut"
        );
    }

    #[test]
    fn corrupt_middle_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut log) = open(dir.path());
        log.append(&put(1, "a")).unwrap();
        log.append(&put(2, "b")).unwrap();
        drop(log);
        let path = dir.path().join(LOG);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replacen("\"op\":\"put\"", "\"op\":\"p#t\"!", 1)).unwrap();
        let e = err_text(load(dir.path()));
        assert!(e.contains("log.jsonl") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn missing_record_in_the_middle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut log) = open(dir.path());
        for rv in 1..=3 {
            log.append(&put(rv, &format!("p{rv}"))).unwrap();
        }
        drop(log);
        let path = dir.path().join(LOG);
        let text = fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| l)
            .collect();
        fs::write(&path, kept.join("\n") + "\n").unwrap();
        let e = err_text(load(dir.path()));
        assert!(
            e.contains("line 3") && e.contains("resourceVersion 3 where 2"),
            "{e}"
        );
    }

    #[test]
    fn emptied_or_missing_files_are_never_an_empty_cluster() {
        for (file, how) in [
            (SNAPSHOT, "empty"),
            (SNAPSHOT, "missing"),
            (LOG, "empty"),
            (LOG, "missing"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (_, mut log) = open(dir.path());
            log.append(&put(1, "a")).unwrap();
            drop(log);
            let path = dir.path().join(file);
            if how == "empty" {
                fs::write(&path, b"").unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
            let e = err_text(load(dir.path()));
            assert!(e.contains(file) && e.contains(how), "{file} {how}: {e}");
        }
    }

    #[test]
    fn snapshot_older_than_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut log) = open(dir.path());
        log.append(&put(1, "a")).unwrap();
        let snap0 = fs::read(dir.path().join(SNAPSHOT)).unwrap();
        let objs = [("pods".to_string(), json!({"metadata": {"name": "a"}}))];
        log.compact(1, objs.iter().map(|(r, o)| (r.as_str(), o)))
            .unwrap();
        drop(log);
        fs::write(dir.path().join(SNAPSHOT), snap0).unwrap();
        let e = err_text(load(dir.path()));
        assert!(e.contains("older than the log"), "{e}");
    }

    #[test]
    fn format_1_state_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(SNAPSHOT),
            "{\"rv\":4}\n{\"res\":\"pods\",\"obj\":{\"metadata\":{\"name\":\"a\"}}}\n",
        )
        .unwrap();
        fs::write(dir.path().join(LOG), "").unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!((loaded.rv, loaded.current), (4, false));
        fs::write(
            dir.path().join(LOG),
            "{\"rv\":5,\"op\":\"put\",\"res\":\"pods\",\"obj\":{\"metadata\":{\"name\":\"b\"}}}\n",
        )
        .unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.rv, 5);
        assert_eq!(names(&loaded), ["a", "b"]);
    }

    /// A real file whose appends fail (after writing part of the data, as a full disk does) and
    /// whose syncs can be made to fail or be counted.
    struct Faulty {
        file: File,
        fail_writes: AtomicBool,
        fail_truncate: AtomicBool,
        fail_sync: AtomicBool,
        syncs: AtomicUsize,
        sync_delay: Duration,
    }

    impl Faulty {
        fn new(path: &Path, sync_delay: Duration) -> Arc<Faulty> {
            Arc::new(Faulty {
                file: OpenOptions::new().append(true).open(path).unwrap(),
                fail_writes: AtomicBool::new(false),
                fail_truncate: AtomicBool::new(false),
                fail_sync: AtomicBool::new(false),
                syncs: AtomicUsize::new(0),
                sync_delay,
            })
        }
    }

    impl LogFile for Faulty {
        fn append(&self, buf: &[u8]) -> io::Result<()> {
            if self.fail_writes.load(Ordering::SeqCst) {
                // A short write, then no space for the rest.
                (&self.file).write_all(&buf[..buf.len() / 2])?;
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            self.file.append(buf)
        }
        fn truncate(&self, len: u64) -> io::Result<()> {
            if self.fail_truncate.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected truncate failure"));
            }
            self.file.truncate(len)
        }
        fn sync(&self) -> io::Result<()> {
            std::thread::sleep(self.sync_delay);
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected fsync failure"));
            }
            self.file.sync()
        }
    }

    fn faulty_log(dir: &Path, delay: Duration) -> (Log, Arc<Faulty>) {
        let loaded = load(dir).unwrap();
        drop(Log::open(dir, &loaded, tx()).unwrap());
        let loaded = load(dir).unwrap();
        let f = Faulty::new(&dir.join(LOG), delay);
        let log = Log::with_file(
            dir,
            f.clone(),
            loaded.log_len,
            loaded.log_records,
            loaded.rv,
            tx(),
        )
        .unwrap();
        (log, f)
    }

    #[test]
    fn short_write_on_a_full_disk_leaves_no_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, f) = faulty_log(dir.path(), Duration::ZERO);
        log.append(&put(1, "a")).unwrap();
        f.fail_writes.store(true, Ordering::SeqCst);
        let e = log.append(&put(2, "b")).unwrap_err();
        assert!(matches!(e, PersistError::Full { .. }), "{e}");
        // The half-written line was cut off again: the file holds only whole lines.
        let text = fs::read_to_string(dir.path().join(LOG)).unwrap();
        assert!(
            text.ends_with('\n') && text.lines().count() == 2,
            "{text:?}"
        );
        // Space returns: the same resourceVersion is written whole.
        f.fail_writes.store(false, Ordering::SeqCst);
        log.append(&put(2, "b")).unwrap();
        log.durability().wait(2).unwrap();
        drop(log);
        assert_eq!(names(&load(dir.path()).unwrap()), ["a", "b"]);
    }

    #[test]
    fn a_failed_cut_off_stops_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, f) = faulty_log(dir.path(), Duration::ZERO);
        f.fail_writes.store(true, Ordering::SeqCst);
        f.fail_truncate.store(true, Ordering::SeqCst);
        assert!(log.append(&put(1, "a")).is_err());
        f.fail_writes.store(false, Ordering::SeqCst);
        let e = log.append(&put(1, "a")).unwrap_err();
        assert!(matches!(e, PersistError::Broken { .. }), "{e}");
        drop(log);
        // At start the torn line is found and cut off.
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.rv, 0);
    }

    #[test]
    fn a_failed_fsync_fails_waiters_and_stops_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, f) = faulty_log(dir.path(), Duration::ZERO);
        f.fail_sync.store(true, Ordering::SeqCst);
        log.append(&put(1, "a")).unwrap();
        let e = log.durability().wait(1).unwrap_err();
        assert!(e.contains("injected fsync failure"), "{e}");
        let e = log.append(&put(2, "b")).unwrap_err();
        assert!(matches!(e, PersistError::Broken { .. }), "{e}");
    }

    #[test]
    fn concurrent_writes_share_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (log, f) = faulty_log(dir.path(), Duration::from_millis(20));
        let log = Arc::new(Mutex::new(log));
        let d = log.lock().unwrap().durability().clone();
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (log, d) = (log.clone(), d.clone());
                std::thread::spawn(move || {
                    // The store lock orders the writes, as Inner does.
                    let mut l = log.lock().unwrap();
                    let rv = d.written() + 1;
                    l.append(&put(rv, &format!("p{rv}"))).unwrap();
                    drop(l);
                    d.wait(rv).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let syncs = f.syncs.load(Ordering::SeqCst);
        assert!(syncs < 16, "16 acknowledged writes took {syncs} fsyncs");
        assert_eq!(*d.tx.borrow(), 16);
    }
}
