//! Crash-safe persistence: a snapshot (written to a temp file, fsynced, renamed) plus an append
//! log of every change since, replayed at start.
//!
//! Each change is written to the log with one `write` before it becomes visible, so a killed
//! process loses nothing; a background thread fsyncs the log shortly after each burst of writes,
//! so a machine crash loses at most the last few milliseconds. A torn last line is ignored.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::Error;

const SNAPSHOT: &str = "snapshot.jsonl";
const LOG: &str = "log.jsonl";

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

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rv: u64,
    /// (qualified resource name, object), in replay order.
    pub records: Vec<Record>,
}

struct SyncState {
    file: Option<File>,
    dirty: bool,
    stop: bool,
}

/// The open log plus its fsync thread.
pub struct Log {
    dir: PathBuf,
    file: File,
    /// Records written since the last snapshot.
    pub records: usize,
    sync: Arc<(Mutex<SyncState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::StateDir {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the snapshot and the log of `dir` (missing files mean an empty store).
pub fn load(dir: &Path) -> Result<Loaded, Error> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let mut out = Loaded::default();
    let snap = dir.join(SNAPSHOT);
    if snap.exists() {
        let f = File::open(&snap).map_err(|e| io_err(&snap, e))?;
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| io_err(&snap, e))?;
            let v: Value = serde_json::from_str(&line).map_err(|e| Error::Corrupt {
                path: snap.display().to_string(),
                detail: format!("line {}: {e}", i + 1),
            })?;
            if i == 0 {
                out.rv = v.get("rv").and_then(Value::as_u64).unwrap_or(0);
                continue;
            }
            let res = v
                .get("res")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let obj = v.get("obj").cloned().unwrap_or(Value::Null);
            out.records.push(Record::Put { rv: 0, res, obj });
        }
    }
    let log = dir.join(LOG);
    if log.exists() {
        let text = fs::read_to_string(&log).map_err(|e| io_err(&log, e))?;
        let lines: Vec<&str> = text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = match serde_json::from_str(line) {
                Ok(v) => v,
                // A torn final write (the process died mid-line): everything before it is intact.
                Err(_) if i + 1 == lines.len() => break,
                Err(e) => {
                    return Err(Error::Corrupt {
                        path: log.display().to_string(),
                        detail: format!("line {}: {e}", i + 1),
                    })
                }
            };
            let rv = v.get("rv").and_then(Value::as_u64).unwrap_or(0);
            if rv <= out.rv {
                continue;
            }
            out.rv = rv;
            let res = v
                .get("res")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match v.get("op").and_then(Value::as_str) {
                Some("put") => out.records.push(Record::Put {
                    rv,
                    res,
                    obj: v.get("obj").cloned().unwrap_or(Value::Null),
                }),
                Some("del") => out.records.push(Record::Delete {
                    rv,
                    res,
                    ns: v
                        .get("ns")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    name: v
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                }),
                _ => {}
            }
        }
    }
    Ok(out)
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a snapshot of every object atomically (temp file, fsync, rename, fsync dir).
pub fn write_snapshot<'a>(
    dir: &Path,
    rv: u64,
    objects: impl Iterator<Item = (&'a str, &'a Value)>,
) -> std::io::Result<()> {
    let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
    {
        let f = File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(f);
        serde_json::to_writer(&mut w, &json!({"rv": rv}))?;
        w.write_all(b"\n")?;
        for (res, obj) in objects {
            serde_json::to_writer(&mut w, &json!({"res": res, "obj": obj}))?;
            w.write_all(b"\n")?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(SNAPSHOT))?;
    fsync_dir(dir)
}

impl Log {
    /// Opens a fresh, empty log in `dir` (call after a snapshot covering everything).
    pub fn create(dir: &Path) -> Result<Log, Error> {
        let path = dir.join(LOG);
        let file = Self::fresh_file(&path).map_err(|e| io_err(&path, e))?;
        let sync = Arc::new((
            Mutex::new(SyncState {
                file: file.try_clone().ok(),
                dirty: false,
                stop: false,
            }),
            Condvar::new(),
        ));
        let s2 = sync.clone();
        let thread = std::thread::Builder::new()
            .name("apiserver-fsync".into())
            .spawn(move || sync_loop(s2))
            .map_err(|e| io_err(&path, e))?;
        Ok(Log {
            dir: dir.to_path_buf(),
            file,
            records: 0,
            sync,
            thread: Some(thread),
        })
    }

    fn fresh_file(path: &Path) -> std::io::Result<File> {
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        f.sync_all()?;
        OpenOptions::new().append(true).open(path)
    }

    /// Appends one record with a single write.
    pub fn append(&mut self, rec: &Record) -> std::io::Result<()> {
        let v = match rec {
            Record::Put { rv, res, obj } => json!({"rv": rv, "op": "put", "res": res, "obj": obj}),
            Record::Delete { rv, res, ns, name } => {
                json!({"rv": rv, "op": "del", "res": res, "ns": ns, "name": name})
            }
        };
        let mut line = serde_json::to_vec(&v)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.records += 1;
        let (m, cv) = &*self.sync;
        if let Ok(mut s) = m.lock() {
            s.dirty = true;
            cv.notify_one();
        }
        Ok(())
    }

    /// Replaces snapshot + log with a snapshot of `objects`.
    pub fn compact<'a>(
        &mut self,
        rv: u64,
        objects: impl Iterator<Item = (&'a str, &'a Value)>,
    ) -> std::io::Result<()> {
        write_snapshot(&self.dir, rv, objects)?;
        let path = self.dir.join(LOG);
        self.file = Self::fresh_file(&path)?;
        self.records = 0;
        let (m, _) = &*self.sync;
        if let Ok(mut s) = m.lock() {
            s.file = self.file.try_clone().ok();
            s.dirty = false;
        }
        Ok(())
    }
}

fn sync_loop(sync: Arc<(Mutex<SyncState>, Condvar)>) {
    let (m, cv) = &*sync;
    loop {
        let file = {
            let Ok(mut s) = m.lock() else { return };
            while !s.dirty && !s.stop {
                s = match cv.wait(s) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            }
            if s.stop && !s.dirty {
                return;
            }
            s.dirty = false;
            s.file.as_ref().and_then(|f| f.try_clone().ok())
        };
        if let Some(f) = file {
            if let Err(e) = f.sync_data() {
                tracing::warn!("fsync of the API server log failed: {e}");
            }
        }
        // Coalesce a burst of writes into one fsync.
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let (m, cv) = &*self.sync;
        if let Ok(mut s) = m.lock() {
            s.stop = true;
            cv.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.file.sync_data();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_then_log_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let objs = [("pods".to_string(), json!({"metadata": {"name": "a"}}))];
        write_snapshot(dir.path(), 5, objs.iter().map(|(r, o)| (r.as_str(), o))).unwrap();
        let mut log = Log::create(dir.path()).unwrap();
        log.append(&Record::Put {
            rv: 6,
            res: "pods".into(),
            obj: json!({"metadata": {"name": "b"}}),
        })
        .unwrap();
        log.append(&Record::Delete {
            rv: 7,
            res: "pods".into(),
            ns: "".into(),
            name: "a".into(),
        })
        .unwrap();
        drop(log);
        // A torn tail is ignored.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LOG))
            .unwrap();
        f.write_all(b"{\"rv\":8,\"op\":\"pu").unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.rv, 7);
        assert_eq!(loaded.records.len(), 3);
        assert!(matches!(&loaded.records[2], Record::Delete { name, .. } if name == "a"));
    }

    #[test]
    fn corrupt_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(LOG),
            "garbage\n{\"rv\":1,\"op\":\"put\",\"res\":\"pods\",\"obj\":{}}\n",
        )
        .unwrap();
        assert!(matches!(load(dir.path()), Err(Error::Corrupt { .. })));
    }
}
