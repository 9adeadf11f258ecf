//! Small crash-safe JSON files (write temp, fsync, rename).

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
    let mut f = fs::File::create(&tmp).map_err(|e| LabError::io(&tmp, e))?;
    f.write_all(&body).map_err(|e| LabError::io(&tmp, e))?;
    f.sync_all().map_err(|e| LabError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| LabError::io(path, e))?;
    Ok(())
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, LabError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LabError::Invalid(format!("{} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LabError::io(path, e)),
    }
}
