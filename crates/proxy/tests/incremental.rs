//! Incremental updates: one changed object rewrites only its own chains and elements, and the
//! per-change transaction equals the diff of full recompilations.

mod common;

use common::*;
use sarasa_model::*;
use sarasa_nft::diff;
use sarasa_proxy::*;

fn many(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..n {
        let name = format!("s{i}");
        let (hi, mid, lo) = ((i / 250) / 256, (i / 250) % 256, i % 250 + 1);
        let cip = format!("10.{}.{mid}.{lo}", 96 + hi);
        services.push(svc(&name, &cip, vec![port("http", Protocol::Tcp, 80)]));
        slices.push(slice(
            &name,
            &format!("{name}-1"),
            &[("http", Protocol::Tcp, 8080)],
            &[
                (&format!("10.{}.{mid}.{lo}", 200 + hi), "node-1"),
                (&format!("10.{}.{mid}.{lo}", 220 + hi), "node-2"),
            ],
        ));
    }
    (services, slices)
}

/// Applies `change` to a state and checks the returned transaction against a full recompile.
fn check_change(
    services: &[Service],
    slices: &[EndpointSlice],
    after_services: &[Service],
    after_slices: &[EndpointSlice],
    change: impl FnOnce(&mut ProxyState) -> Update,
) -> Update {
    check(services, slices, after_services, after_slices, true, change)
}

fn check(
    services: &[Service],
    slices: &[EndpointSlice],
    after_services: &[Service],
    after_slices: &[EndpointSlice],
    exact: bool,
    change: impl FnOnce(&mut ProxyState) -> Update,
) -> Update {
    let mut st = build(services, slices);
    let before = st.table();
    let update = change(&mut st);
    let full = build(after_services, after_slices);
    assert_eq!(
        st.table(),
        full.table(),
        "incremental state differs from a full compile"
    );
    let expected = diff(&before, &full.table());
    if exact {
        assert_eq!(update.transaction.commands, expected.commands);
    } else {
        // Several sub-updates in one script: same commands, possibly in another order.
        let mut a = update.transaction.commands.clone();
        let mut b = expected.commands.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
    update
}

#[test]
fn endpoint_slice_change_touches_only_its_service() {
    let (services, slices) = many(20);
    let mut after = slices.clone();
    after[7].endpoints.pop();
    after[7]
        .endpoints
        .push(Endpoint::ready(ip("10.246.0.9"), Some("node-3")));
    let changed = after[7].clone();
    let u = check_change(&services, &slices, &services, &after, |st| {
        st.upsert_endpoint_slice(changed)
    });
    let tx = &u.transaction;
    assert!(
        tx.chains_written.iter().all(|c| c.contains("-default-s7-")),
        "{:?}",
        tx.chains_written
    );
    assert!(
        tx.chains_deleted.iter().all(|c| c.contains("-default-s7-")),
        "{:?}",
        tx.chains_deleted
    );
    assert_eq!(tx.chains_deleted.len(), 1);
    assert!(tx.elements_added.is_empty() && tx.elements_deleted.is_empty());
    assert!(!tx.script().contains("flush table"));
}

#[test]
fn service_add_and_delete_touch_only_that_service() {
    let (services, slices) = many(10);
    let extra = svc(
        "new",
        "10.96.9.9",
        vec![
            port("http", Protocol::Tcp, 80),
            port("dns", Protocol::Udp, 53),
        ],
    );
    let mut more = services.clone();
    more.push(extra.clone());
    let u = check_change(&services, &slices, &more, &slices, |st| {
        st.upsert_service(extra)
    });
    // No endpoints yet: only elements (reject entries and the ClusterIP), no chains.
    assert!(u.transaction.chains_written.is_empty());
    assert_eq!(u.transaction.elements_added["no-endpoint-services-v4"], 2);

    let fewer: Vec<Service> = services
        .iter()
        .filter(|s| s.name != "s3")
        .cloned()
        .collect();
    let u = check_change(&services, &slices, &fewer, &slices, |st| {
        st.delete_service("default", "s3")
    });
    assert!(u
        .transaction
        .chains_deleted
        .iter()
        .all(|c| c.contains("-default-s3-")));
    assert_eq!(u.transaction.chains_deleted.len(), 3);
    assert_eq!(u.transaction.elements_deleted["service-ips-v4"], 1);
}

#[test]
fn slice_delete_and_relabel_follow_their_service() {
    let (services, slices) = many(5);
    let rest: Vec<EndpointSlice> = slices
        .iter()
        .filter(|s| s.name != "s2-1")
        .cloned()
        .collect();
    let u = check_change(&services, &slices, &services, &rest, |st| {
        st.delete_endpoint_slice("default", "s2-1")
    });
    assert_eq!(u.transaction.chains_deleted.len(), 3);
    // A slice moving from s1 to s4 updates both.
    let mut moved = slices.clone();
    moved[1].service_name = "s4".into();
    let m = moved[1].clone();
    let u = check(&services, &slices, &services, &moved, false, |st| {
        st.upsert_endpoint_slice(m)
    });
    let tx = u.transaction;
    assert!(tx
        .chains_written
        .iter()
        .chain(&tx.chains_deleted)
        .all(|c| c.contains("-default-s1-") || c.contains("-default-s4-")));
}

#[test]
fn service_type_change_is_incremental() {
    let (services, slices) = many(5);
    let mut after = services.clone();
    after[0].type_ = ServiceType::LoadBalancer;
    after[0].ports[0].node_port = Some(31000);
    after[0].load_balancer_ips = vec![ip("192.168.34.1")];
    after[0].load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    after[0].session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 30,
    };
    let s = after[0].clone();
    let u = check_change(&services, &slices, &after, &slices, |st| {
        st.upsert_service(s)
    });
    assert!(u
        .transaction
        .sets_written
        .iter()
        .all(|s| s.starts_with("aff4-default-s0-")));
    // And back.
    let s = services[0].clone();
    check_change(&after, &slices, &services, &slices, |st| {
        st.upsert_service(s)
    });
}

#[test]
fn unchanged_object_gives_empty_update() {
    let (services, slices) = many(3);
    let mut st = build(&services, &slices);
    assert!(st
        .upsert_service(services[1].clone())
        .transaction
        .is_empty());
    assert!(st
        .upsert_endpoint_slice(slices[1].clone())
        .transaction
        .is_empty());
    assert!(st
        .delete_endpoint_slice("default", "nope")
        .transaction
        .is_empty());
}

/// 100k Services × 2 endpoints compile, and one EndpointSlice change touches only its chains.
/// Runs without root in seconds (figures: `cargo run --release -p sarasa-proxy --example proxy_bench`).
#[test]
fn scale_100k_services_one_change() {
    let n = 100_000;
    let (services, slices) = many(n);
    let mut st = compile(config(), node(), &services, &slices).unwrap();
    assert_eq!(st.service_count(), n);
    let table = st.table();
    assert_eq!(table.sets["service-ips-v4"].elements.len(), n);
    assert!(table.chains.len() >= 3 * n);
    drop(table);
    let mut changed = slices[n / 2].clone();
    changed.endpoints.remove(0);
    let u = st.upsert_endpoint_slice(changed);
    let tx = u.transaction;
    let name = format!("-default-s{}-", n / 2);
    assert!(tx
        .chains_written
        .iter()
        .chain(&tx.chains_deleted)
        .all(|c| c.contains(&name)));
    assert_eq!(tx.chains_written.len(), 1);
    assert_eq!(tx.chains_deleted.len(), 1);
    assert!(tx.commands.len() <= 6, "{}", tx.script());
}
