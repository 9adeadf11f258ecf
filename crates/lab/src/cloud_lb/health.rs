//! The balancer's health checks, from inside the edge namespace (where its traffic leaves):
//! every target is checked every 500 ms; two failures in a row take it out, one success
//! brings it back, a new target is out until its first success.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sarasa_netns::NetNs;

use super::targets::{Check, Target};

const INTERVAL: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_millis(300);
const FAILURES_TO_REMOVE: u32 = 2;

#[derive(Default)]
struct State {
    targets: BTreeSet<Target>,
    /// Consecutive failures; absent: never checked.
    failures: HashMap<Target, u32>,
}

/// The checker: a thread in the edge namespace and the shared results.
pub struct Health {
    state: Arc<Mutex<State>>,
    generation: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Health {
    /// Starts checking from inside `edge`.
    pub fn start(edge: NetNs) -> Health {
        let state = Arc::new(Mutex::new(State::default()));
        let generation = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, g, st) = (
            Arc::clone(&state),
            Arc::clone(&generation),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            let result = edge.run(move || {
                while !st.load(Ordering::SeqCst) {
                    round(&s, &g);
                    std::thread::sleep(INTERVAL);
                }
            });
            if let Err(e) = result {
                tracing::warn!("cloud load balancer health checks stopped: {e}");
            }
        });
        Health {
            state,
            generation,
            stop,
        }
    }

    /// The targets to check from now on.
    pub fn set_targets(&self, targets: BTreeSet<Target>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.failures.retain(|t, _| targets.contains(t));
        s.targets = targets;
    }

    /// Whether `t` passed its last check and has not failed twice since.
    pub fn healthy(&self, t: &Target) -> bool {
        if t.check == Check::None {
            return true;
        }
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.failures.get(t).is_some_and(|f| *f < FAILURES_TO_REMOVE)
    }

    /// Changes whenever a target's health changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn round(state: &Mutex<State>, generation: &AtomicU64) {
    let targets: Vec<Target> = {
        let s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.targets.iter().cloned().collect()
    };
    for t in targets {
        if t.check == Check::None {
            continue;
        }
        let ok = check(&t);
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        if !s.targets.contains(&t) {
            continue;
        }
        let before = s.failures.get(&t).map(|f| *f < FAILURES_TO_REMOVE);
        let f = s.failures.entry(t.clone()).or_insert(FAILURES_TO_REMOVE);
        *f = if ok { 0 } else { f.saturating_add(1) };
        let after = Some(*f < FAILURES_TO_REMOVE);
        if before != after {
            tracing::info!(target = %format!("{}:{}", t.addr, t.port), healthy = ok, "cloud load balancer health");
            generation.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn check(t: &Target) -> bool {
    match t.check {
        Check::None => true,
        Check::Tcp => {
            TcpStream::connect_timeout(&SocketAddr::from((t.addr, t.port)), TIMEOUT).is_ok()
        }
        Check::Http(port) => http_ok(SocketAddr::from((t.addr, port))),
    }
}

/// `GET /healthz` answers 200.
fn http_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let _ = s.set_write_timeout(Some(TIMEOUT));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: lb\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 32];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    line.starts_with("HTTP/1.") && line.get(9..12) == Some("200")
}
