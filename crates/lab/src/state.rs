//! Small crash-safe JSON files (write temp, fsync, rename, fsync the directory), validated
//! on read: an empty or unreadable record is an error naming the file, never "no record".

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::LabError;

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), LabError> {
    let dir = path
        .parent()
        .ok_or_else(|| LabError::Invalid(format!("{} has no parent", path.display())))?;
    fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| LabError::Invalid(format!("encoding {}: {e}", path.display())))?;
    let write = || -> Result<(), LabError> {
        let mut f = fs::File::create(&tmp).map_err(|e| LabError::io(&tmp, e))?;
        f.write_all(&body).map_err(|e| LabError::io(&tmp, e))?;
        f.sync_all().map_err(|e| LabError::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| LabError::io(path, e))?;
        // The rename itself is durable only once the directory is.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| LabError::io(dir, e))
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, LabError> {
    match fs::read(path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Err(LabError::Invalid(format!(
            "{} is empty (records are never written empty: it was truncated or emptied)",
            path.display()
        ))),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LabError::Invalid(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LabError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/rec.json");
        write_json_atomic(&p, &vec![1, 2, 3]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2, 3]));
        assert!(!p.with_extension("tmp").exists());
        assert_eq!(
            read_json::<Vec<u32>>(&dir.path().join("none.json")).unwrap(),
            None
        );
        for (bytes, want) in [
            (&b""[..], "is empty"),
            (b"\n", "is empty"),
            (b"[1,", "is corrupt"),
        ] {
            fs::write(&p, bytes).unwrap();
            let e = read_json::<Vec<u32>>(&p).unwrap_err().to_string();
            assert!(e.contains("rec.json") && e.contains(want), "{e}");
        }
    }
}
