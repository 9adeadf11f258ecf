//! The short form of scripts/fault-limits.sh: a few rounds of each hostile request against a
//! real server; every one refused or contained, the good client served throughout, nothing
//! left behind.

mod common;
mod fault;

use std::time::Duration;

use common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_others_still_served() {
    let timeout = Duration::from_millis(500);
    let srv = TestServer::start_with(|c| {
        c.limits.header_read_timeout = timeout;
        c.limits.body_read_timeout = timeout;
        c.limits.max_mutating_requests_inflight = 4;
    })
    .await;
    let figures = fault::run(srv.addr, 3, timeout, 4).await;
    figures.print();
    assert!(figures.clean(), "{figures:#?}");
    assert!(figures.good_ok > 0);
}
