//! Hostile-inputs fault run (scripts/fault-limits.sh): starts the API server on 127.0.0.1
//! (ephemeral port, temporary state) with the default limits except `TIMEOUT_MS` header and
//! body timeouts (so a run takes seconds, not minutes) and runs the driver of
//! `tests/fault/mod.rs` with `ROUNDS` of each hostile request; prints the figures and exits 1
//! when anything got through or the good client was not served.

#[path = "../tests/fault/mod.rs"]
mod fault;

use std::time::Duration;

use sarasa_apiserver::{ApiServer, Config};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds = env_u64("ROUNDS", 50);
    let timeout = Duration::from_millis(env_u64("TIMEOUT_MS", 2000));
    let dir = tempfile::tempdir()?;
    let mut config = Config::new(dir.path().join("state"));
    config.limits.header_read_timeout = timeout;
    config.limits.body_read_timeout = timeout;
    let budget = config.limits.max_mutating_requests_inflight as u64;
    let server = ApiServer::open(config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let s = server.clone();
    let serving = tokio::spawn(async move { s.serve(listener).await });
    println!(
        "API server on {addr}: body limit {} B, header/body timeout {} ms, in flight {} reads / {budget} writes; {rounds} rounds",
        sarasa_apiserver::config::Limits::default().max_body_bytes,
        timeout.as_millis(),
        sarasa_apiserver::config::Limits::default().max_requests_inflight,
    );
    let t = std::time::Instant::now();
    let figures = fault::run(addr, rounds, timeout, budget).await;
    figures.print();
    println!("server metrics:\n{}", server.metrics().render());
    println!("took {:.1} s", t.elapsed().as_secs_f64());
    server.shutdown();
    let _ = serving.await;
    if !figures.clean() {
        anyhow::bail!("a hostile request got through or the good client was not served");
    }
    Ok(())
}
