//! The lab API server's object limits: per-namespace object counts per kind (as a
//! ResourceQuota's `count/<resource>`) and the bound of `replicas`, defaulted here and
//! overridable per lab in `<lab>/api-limits.json`:
//!
//! ```json
//! {"maxReplicas": 1000, "objectQuotas": {"pods": 500, "services": 200}}
//! ```
//!
//! Kinds the file names replace the defaults of those kinds; a count of 0 refuses every create.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::LabError;

/// Replicas one Deployment may ask for in the lab.
pub const MAX_REPLICAS: i64 = 1000;

/// Objects of a kind one namespace may hold in the lab by default: bounds what a runaway
/// client or controller can make (every pod is a network namespace and processes).
pub const DEFAULT_QUOTAS: &[(&str, usize)] = &[
    ("pods", 500),
    ("services", 200),
    ("endpointslices", 1000),
    ("deployments", 100),
    ("daemonsets", 50),
    ("networkpolicies", 200),
    ("configmaps", 500),
    ("secrets", 500),
];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    max_replicas: Option<i64>,
    #[serde(default)]
    object_quotas: BTreeMap<String, usize>,
}

/// Sets the lab's limits on `limits`, reading overrides from `file` when it exists.
pub fn apply(limits: &mut sarasa_apiserver::config::Limits, file: &Path) -> Result<(), LabError> {
    limits.max_replicas = MAX_REPLICAS;
    limits.object_quotas = DEFAULT_QUOTAS
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LabError::io(file, e)),
    };
    let f: File = serde_json::from_str(&text)
        .map_err(|e| LabError::Invalid(format!("{}: {e}", file.display())))?;
    if let Some(m) = f.max_replicas {
        if m < 0 {
            return Err(LabError::Invalid(format!(
                "{}: maxReplicas must be >= 0 (got {m})",
                file.display()
            )));
        }
        limits.max_replicas = m;
    }
    limits.object_quotas.extend(f.object_quotas);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("api-limits.json");
        let mut l = sarasa_apiserver::config::Limits::default();
        apply(&mut l, &file).unwrap();
        assert_eq!(l.max_replicas, 1000);
        assert_eq!(l.object_quotas["pods"], 500);
        std::fs::write(&file, r#"{"maxReplicas": 10, "objectQuotas": {"pods": 3}}"#).unwrap();
        apply(&mut l, &file).unwrap();
        assert_eq!((l.max_replicas, l.object_quotas["pods"]), (10, 3));
        assert_eq!(l.object_quotas["services"], 200);
        std::fs::write(&file, r#"{"maxReplica": 10}"#).unwrap();
        let e = apply(&mut l, &file).unwrap_err().to_string();
        assert!(
            e.contains("api-limits.json") && e.contains("maxReplica"),
            "{e}"
        );
        std::fs::write(&file, r#"{"maxReplicas": -1}"#).unwrap();
        assert!(apply(&mut l, &file)
            .unwrap_err()
            .to_string()
            .contains("maxReplicas"));
    }
}
