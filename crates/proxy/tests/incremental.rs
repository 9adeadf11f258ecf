//! Incremental updates: one changed object rewrites only its own chains and elements, and the
//! per-change transaction equals the diff of full recompilations.

mod common;

use common::*;
use sarasa_model::*;
use sarasa_nft::diff;
use sarasa_proxy::*;

/// A shard's base chains: they come with its first Service that dispatches and go with its
/// last (these tests' few Services mostly sit alone in their shards).
const HOOKS: [&str; 4] = [
    "nat-prerouting",
    "nat-output",
    "nat-prerouting-nodeports",
    "nat-output-nodeports",
];

/// `chains` without a shard's base chains.
fn own<'a>(chains: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    chains
        .into_iter()
        .filter(|c| !HOOKS.contains(&c.as_str()))
        .collect()
}

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
    check_with(
        config(),
        services,
        slices,
        after_services,
        after_slices,
        exact,
        change,
    )
}

/// Checks per table: the incremental state builds the same tables as a full compile, and the
/// update holds exactly the non-empty diffs of each table.
pub fn check_with(
    config: ProxyConfig,
    services: &[Service],
    slices: &[EndpointSlice],
    after_services: &[Service],
    after_slices: &[EndpointSlice],
    exact: bool,
    change: impl FnOnce(&mut ProxyState) -> Update,
) -> Update {
    let mut st = build_with(config.clone(), services, slices);
    let before = st.tables();
    let update = change(&mut st);
    let full = build_with(config.clone(), after_services, after_slices).tables();
    assert_eq!(
        st.tables(),
        full,
        "incremental state differs from a full compile"
    );
    let names: Vec<String> = full.iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, config.table_names());
    let mut expected = std::collections::BTreeMap::new();
    for (b, a) in before.iter().zip(&full) {
        let tx = diff(b, a);
        if !tx.is_empty() {
            expected.insert(a.name.clone(), tx.commands);
        }
    }
    let mut actual: std::collections::BTreeMap<String, Vec<String>> = update
        .transactions
        .iter()
        .map(|(t, tx)| (t.clone(), tx.commands.clone()))
        .collect();
    if !exact {
        // Several sub-updates in one table: same commands, possibly in another order.
        for v in actual.values_mut().chain(expected.values_mut()) {
            v.sort();
        }
    }
    assert_eq!(actual, expected);
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
    let st = build(&services, &slices);
    let shard = st.config().shard_table(shard_of(&st, "s7"));
    let u = check_change(&services, &slices, &services, &after, |st| {
        st.upsert_endpoint_slice(changed)
    });
    // Only endpoints changed: the shard's chains, nothing in the main table.
    assert_eq!(
        u.transactions.keys().cloned().collect::<Vec<_>>(),
        vec![shard.clone()]
    );
    let tx = &u.transactions[&shard];
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
    assert!(tx
        .commands
        .iter()
        .all(|c| c.contains(&format!(" inet {shard} "))));
    assert_eq!(u.ops(), tx.commands.len());
    assert_eq!(
        u.chains_written(),
        tx.chains_written
            .iter()
            .map(|c| format!("{shard}/{c}"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn losing_all_endpoints_touches_main_and_the_shard() {
    let (services, slices) = many(10);
    let mut after = slices.clone();
    after[4].endpoints.clear();
    let empty = after[4].clone();
    let st = build(&services, &slices);
    let shard = st.config().shard_table(shard_of(&st, "s4"));
    let u = check_change(&services, &slices, &services, &after, |st| {
        st.upsert_endpoint_slice(empty)
    });
    let main = &u.transactions["sarasa"];
    // The reject element goes to the main table's filter path…
    assert_eq!(main.elements_added["no-endpoint-services-v4"], 1);
    assert!(main.chains_written.is_empty() && main.chains_deleted.is_empty());
    // …the dispatch element and the chains leave the shard.
    let tx = &u.transactions[&shard];
    assert_eq!(tx.elements_deleted["service-ips-v4"], 1);
    assert_eq!(tx.chains_deleted.len(), 3);
    assert_eq!(u.transactions.len(), 2);
    // And back: the same two tables.
    let back = slices[4].clone();
    let u = check_change(&services, &after, &services, &slices, |st| {
        st.upsert_endpoint_slice(back)
    });
    assert_eq!(
        u.transactions.keys().cloned().collect::<Vec<_>>(),
        vec!["sarasa".to_string(), shard]
    );
    assert_eq!(
        u.transactions["sarasa"].elements_deleted["no-endpoint-services-v4"],
        1
    );
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
    // No endpoints yet: only main-table elements (reject entries and the ClusterIP), no
    // chains, nothing in the shard.
    assert_eq!(
        u.transactions.keys().cloned().collect::<Vec<_>>(),
        vec!["sarasa".to_string()]
    );
    assert!(u.chains_written().is_empty());
    assert_eq!(
        u.transactions["sarasa"].elements_added["no-endpoint-services-v4"],
        2
    );

    let fewer: Vec<Service> = services
        .iter()
        .filter(|s| s.name != "s3")
        .cloned()
        .collect();
    let st = build(&services, &slices);
    let shard = st.config().shard_table(shard_of(&st, "s3"));
    let u = check_change(&services, &slices, &fewer, &slices, |st| {
        st.delete_service("default", "s3")
    });
    // Gone from both tables: ClusterIP element from main, dispatch and chains from the shard.
    assert_eq!(u.transactions.len(), 2);
    assert_eq!(
        u.transactions["sarasa"].elements_deleted["cluster-ips-v4"],
        1
    );
    let tx = &u.transactions[&shard];
    assert!(own(&tx.chains_deleted)
        .iter()
        .all(|c| c.contains("-default-s3-")));
    assert_eq!(own(&tx.chains_deleted).len(), 3);
    assert_eq!(tx.elements_deleted["service-ips-v4"], 1);
    let after = build(&fewer, &slices);
    for t in after.tables() {
        assert!(
            !t.render().contains("default/s3/") && !t.chains.keys().any(|c| c.contains("-s3-")),
            "{} still holds s3",
            t.name
        );
    }
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
    assert_eq!(own(&merged(&u).chains_deleted).len(), 3);
    // A slice moving from s1 to s4 updates both.
    let mut moved = slices.clone();
    moved[1].service_name = "s4".into();
    let m = moved[1].clone();
    let u = check(&services, &slices, &services, &moved, false, |st| {
        st.upsert_endpoint_slice(m)
    });
    let tx = merged(&u);
    assert!(own(tx.chains_written.iter().chain(&tx.chains_deleted))
        .iter()
        .all(|c| c.contains("-default-s1-") || c.contains("-default-s4-")));
    // Deleting it later finds it under its new Service.
    let mut st = build(&services, &moved);
    let u = st.delete_endpoint_slice("default", "s1-1");
    assert!(own(&merged(&u).chains_deleted)
        .iter()
        .all(|c| c.contains("-default-s4-")));
    assert!(!u.is_empty());
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
    assert!(merged(&u)
        .sets_written
        .iter()
        .all(|s| s.starts_with("aff4-default-s0-")));
    // The firewall chain sits in the main table; the first firewall brings the filter
    // chains that jump to it (`filter-prerouting`, and the jump in `filter-output`).
    let written = &u.transactions["sarasa"].chains_written;
    let fw: Vec<&String> = written
        .iter()
        .filter(|c| c.starts_with("fw4-default-s0-"))
        .collect();
    assert_eq!(fw.len(), 1, "{written:?}");
    assert_eq!(
        written
            .iter()
            .filter(|c| !c.starts_with("fw4-"))
            .collect::<Vec<_>>(),
        ["filter-output", "filter-prerouting"]
    );
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
    let u = st.upsert_service(services[1].clone());
    assert!(u.is_empty() && u.transactions.is_empty() && u.ops() == 0);
    assert!(st.upsert_endpoint_slice(slices[1].clone()).is_empty());
    assert!(st.delete_endpoint_slice("default", "nope").is_empty());
    assert!(st.delete_service("default", "nope").is_empty());
}

#[test]
fn objects_are_shared_not_copied() {
    let (services, slices) = many(2);
    let mut st = ProxyState::new(config(), node()).unwrap();
    let svc = std::sync::Arc::new(services[0].clone());
    let slice = std::sync::Arc::new(slices[0].clone());
    st.upsert_service(svc.clone());
    st.upsert_endpoint_slice(slice.clone());
    assert_eq!(std::sync::Arc::strong_count(&svc), 2);
    assert_eq!(std::sync::Arc::strong_count(&slice), 2);
    st.delete_endpoint_slice("default", "s0-1");
    st.delete_service("default", "s0");
    assert_eq!(std::sync::Arc::strong_count(&svc), 1);
    assert_eq!(std::sync::Arc::strong_count(&slice), 1);
    assert_eq!(st.service_count(), 0);
}

#[test]
fn one_shard_works() {
    let one = ProxyConfig {
        shards: 1,
        ..config()
    };
    assert_eq!(one.table_names(), ["sarasa", "sarasa-svc00"]);
    let (services, slices) = many(10);
    let st = build_with(one.clone(), &services, &slices);
    assert_eq!(st.tables().len(), 2);
    assert!((0..10).all(|i| shard_of(&st, &format!("s{i}")) == 0));
    assert_eq!(st.shard_table(0).sets["service-ips-v4"].elements.len(), 10);
    let mut after = slices.clone();
    after[3].endpoints.pop();
    let changed = after[3].clone();
    let u = check_with(one, &services, &slices, &services, &after, true, |st| {
        st.upsert_endpoint_slice(changed)
    });
    assert_eq!(
        u.transactions.keys().cloned().collect::<Vec<_>>(),
        ["sarasa-svc00"]
    );
}

/// 100k Services × 2 endpoints compile, and one EndpointSlice change touches only its chains.
/// Runs without root in seconds (figures: `cargo run --release -p sarasa-proxy --example proxy_bench`).
#[test]
fn scale_100k_services_one_change() {
    let n = 100_000;
    let (services, slices) = many(n);
    let mut st = compile(config(), node(), &services, &slices).unwrap();
    assert_eq!(st.service_count(), n);
    let mut dispatch = 0;
    let mut chains = 0;
    for i in 0..st.config().shards {
        let t = st.shard_table(i);
        let here = t.sets["service-ips-v4"].elements.len();
        // Spread: every shard holds some 1/16 of the Services.
        assert!(here > n / 32 && here < n / 8, "shard {i}: {here}");
        dispatch += here;
        chains += t.chains.len();
    }
    assert_eq!(dispatch, n);
    assert!(chains >= 3 * n);
    assert_eq!(st.main_table().sets["cluster-ips-v4"].elements.len(), n);
    let mut changed = slices[n / 2].clone();
    changed.endpoints.remove(0);
    let u = st.upsert_endpoint_slice(changed);
    assert_eq!(u.transactions.len(), 1);
    let tx = merged(&u);
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

#[test]
fn bulk_load_equals_one_upsert_at_a_time() {
    let (services, mut slices) = many(300);
    // A slice relabelled to another Service, and one whose Service does not exist (yet).
    slices[7].service_name = "s8".into();
    slices.push(slice(
        "ghost",
        "ghost-1",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.250.0.1", "node-1")],
    ));
    let mut one_by_one = ProxyState::new(config(), node()).unwrap();
    for s in &slices {
        one_by_one.upsert_endpoint_slice(s.clone());
    }
    for s in &services {
        one_by_one.upsert_service(s.clone());
    }
    let mut bulk = ProxyState::new(config(), node()).unwrap();
    bulk.load(
        services.iter().cloned().map(std::sync::Arc::new),
        slices.iter().cloned().map(std::sync::Arc::new),
    );
    assert_eq!(bulk.service_count(), 300);
    assert_eq!(bulk.tables(), one_by_one.tables());
    // The loaded state keeps working incrementally like the other.
    let mut s = slices[3].clone();
    s.endpoints.pop();
    assert_eq!(
        bulk.upsert_endpoint_slice(s.clone()),
        one_by_one.upsert_endpoint_slice(s)
    );
    assert_eq!(
        bulk.delete_service("default", "s5"),
        one_by_one.delete_service("default", "s5")
    );
    assert_eq!(bulk.tables(), one_by_one.tables());
}
