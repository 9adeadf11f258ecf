//! Logging for a short-lived plugin: never stdout (that is the result channel). Errors go to
//! stderr; details go to stderr only with `SARASA_CNI_DEBUG=1`, and always to the log file
//! when one is configured (`logFile` in the config or `SARASA_CNI_LOG_FILE`).

use std::io::Write;
use std::sync::OnceLock;

static LOG_FILE: OnceLock<Option<String>> = OnceLock::new();

/// Sets the log file (first call wins).
pub fn init(config_file: Option<&str>) {
    let path = config_file
        .map(str::to_string)
        .or_else(|| std::env::var("SARASA_CNI_LOG_FILE").ok())
        .filter(|p| !p.is_empty());
    let _ = LOG_FILE.set(path);
}

fn debug_enabled() -> bool {
    std::env::var("SARASA_CNI_DEBUG").is_ok_and(|v| v == "1")
}

fn to_file(level: &str, msg: &str) {
    if let Some(Some(path)) = LOG_FILE.get() {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let _ = writeln!(f, "{now:.3} {level} pid={} {msg}", std::process::id());
        }
    }
}

/// A detail worth keeping.
pub fn info(msg: &str) {
    if debug_enabled() {
        eprintln!("sarasa-cni: {msg}");
    }
    to_file("INFO", msg);
}

/// A failure (always on stderr).
pub fn error(msg: &str) {
    eprintln!("sarasa-cni: {msg}");
    to_file("ERROR", msg);
}
