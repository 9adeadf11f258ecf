//! Golden text of a small compiled ruleset (all tables).

mod common;

use common::*;
use sarasa_model::*;

fn golden(name: &str, actual: &str) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run with UPDATE_GOLDEN=1 to create)"));
    assert_eq!(actual, expected, "golden {name} differs");
}

pub fn small() -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut web = svc("web", "10.96.0.10", vec![port("http", Protocol::Tcp, 80)]);
    web.type_ = ServiceType::NodePort;
    web.ports[0].node_port = Some(30080);
    web.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 10800,
    };
    let dns = svc("dns", "10.96.0.53", vec![port("dns", Protocol::Udp, 53)]);
    let slices = vec![slice(
        "web",
        "web-1",
        &[("http", Protocol::Tcp, 8080)],
        &[("10.244.1.5", "node-1"), ("10.244.2.5", "node-2")],
    )];
    (vec![web, dns], slices)
}

/// All tables in one file, main first, then the shards in order (an `nft -f` script).
#[test]
fn small_ruleset_text() {
    let (s, e) = small();
    // web's shard holds its chains; dns has no endpoints, so all it has is main-table
    // elements (its reject entry and ClusterIP).
    let st = build(&s, &e);
    let text: Vec<String> = st.tables().iter().map(|t| t.render()).collect();
    golden("small.nft", &text.join("\n"));
}
