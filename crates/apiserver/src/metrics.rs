//! Counters of the server's self-protection, served at `/metrics` in the Prometheus text
//! format: controller restarts after a panic and requests refused by the limits.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Why the server refused a request before serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// More requests in flight than allowed (429).
    TooManyRequests,
    /// Body over the size limit (413).
    TooLarge,
    /// Body not sent in time (408).
    BodyTimeout,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::TooManyRequests => "too_many_requests",
            Refusal::TooLarge => "too_large",
            Refusal::BodyTimeout => "body_timeout",
        }
    }
}

/// The counters of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    restarts: Mutex<BTreeMap<&'static str, u64>>,
    refused: [AtomicU64; 3],
}

impl Metrics {
    /// Counts one restart of controller `name` after a panic.
    pub fn controller_restarted(&self, name: &'static str) {
        let mut m = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(name).or_default() += 1;
    }

    /// How often controller `name` was restarted after a panic.
    pub fn controller_restarts(&self, name: &str) -> u64 {
        let m = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        m.get(name).copied().unwrap_or(0)
    }

    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP sarasa_controller_restarts_total Controller restarts after a panic.\n",
        );
        out.push_str("# TYPE sarasa_controller_restarts_total counter\n");
        let m = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        for (name, n) in m.iter() {
            let _ = writeln!(
                out,
                "sarasa_controller_restarts_total{{controller=\"{name}\"}} {n}"
            );
        }
        out.push_str("# HELP sarasa_requests_refused_total Requests refused by a limit.\n");
        out.push_str("# TYPE sarasa_requests_refused_total counter\n");
        for why in [
            Refusal::TooManyRequests,
            Refusal::TooLarge,
            Refusal::BodyTimeout,
        ] {
            let _ = writeln!(
                out,
                "sarasa_requests_refused_total{{reason=\"{}\"}} {}",
                why.label(),
                self.refusals(why)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let m = Metrics::default();
        m.controller_restarted("deployments");
        m.controller_restarted("deployments");
        m.refused(Refusal::TooLarge);
        assert_eq!(m.controller_restarts("deployments"), 2);
        let text = m.render();
        assert!(text.contains("sarasa_controller_restarts_total{controller=\"deployments\"} 2"));
        assert!(text.contains("sarasa_requests_refused_total{reason=\"too_large\"} 1"));
        assert!(text.contains("sarasa_requests_refused_total{reason=\"body_timeout\"} 0"));
    }
}
