//! kubectl's AGE column: `HumanDuration` from apimachinery (`45s`, `3m20s`, `5h`, `12d`, `2y3d`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
pub use sarasa_model::human_duration;
use std::time::{SystemTime, UNIX_EPOCH};

/// The age of an object created at `created`, as of `now`.
pub fn age(created: Option<&Time>, now: SystemTime) -> String {
    let Some(created) = created else {
        return "<unknown>".to_string();
    };
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    human_duration(now - created.0.as_second())
}
