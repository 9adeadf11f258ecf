//! Lab end-to-end: a cluster set of two labs. `clusterset join` builds the WAN namespace, the
//! broker, each lab's sync and gateways; a pod reaches the other cluster's pods and its own
//! ClusterSetIP of their export through the gateways' VXLAN cable with its address kept, and
//! again after the active gateway's agent stops; a Service exported in one lab is
//! imported in the other (ServiceImport listing the exporting cluster, MCS slices naming it,
//! `clusterset.local` answering with the importing cluster's ClusterSetIP), and exported in
//! both it lists both; with the broker stopped each cluster keeps its last state, and catches
//! up when it is back; `leave` takes a lab's exports out of the other and theirs out of it;
//! `delete` leaves nothing behind. Refused, with nothing built: unknown labs, overlapping
//! ranges (both clusters and ranges named), IPv6 GlobalNet ranges that are global or too small.

mod common;

use std::process::Command;
use std::time::Duration;

use common::clusterset::{
    active_gateway, clusterset, export_web, nothing_of_the_set_left, ok, reached_from, refused,
    wan_exists, SetGuard,
};
use common::{serve_pod, TestLab};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn import(lab: &TestLab, name: &str) -> Option<Value> {
    lab.object("serviceimports", "default", name)
}

fn clusters(import: &Value) -> Vec<String> {
    import["status"]["clusters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["cluster"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The test's set.
fn set_name() -> String {
    format!("cs{}", std::process::id())
}

fn wait_clusters(lab: &TestLab, name: &str, want: &[&str]) -> Value {
    lab.eventually(WAIT, || import(lab, name).filter(|i| clusters(i) == want))
        .unwrap_or_else(|| {
            panic!(
                "{}: ServiceImport {name} from {want:?}; have {:?}\n{}\n{}",
                lab.name,
                import(lab, name),
                String::from_utf8_lossy(&clusterset(&["status", &set_name()]).stdout),
                lab.logs()
            )
        })
}

fn web(lab: &TestLab) {
    export_web(lab, "node-1");
}

fn mcs_slices_from(lab: &TestLab, cluster: &str) -> Vec<Value> {
    let slices = lab.get_json(&["endpointslices", "-n", "default"]);
    slices["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"] == cluster)
        .cloned()
        .collect()
}

#[test]
fn two_labs_share_their_exports_through_the_broker() {
    let east = TestLab::up(&[
        "--nodes",
        "2",
        "--pod-cidr",
        "10.245.0.0/16",
        "--service-cidr",
        "10.112.0.0/16",
        "--cluster-id",
        "east",
    ]);
    let west = TestLab::up(&["--nodes", "3", "--cluster-id", "west"]);
    let set = set_name();
    let _guard = SetGuard(set.clone());

    // Refusals build nothing.
    let e = refused(&["join", &set, "--lab", &east.name, "--lab", "no-such-lab"]);
    assert!(e.contains("no-such-lab"), "{e}");
    for (range, why) in [
        ("242.0.0.0/8,2600::/48", "not unique local"),
        (
            "242.0.0.0/8,fd00:242::/120",
            "cannot give each cluster a /112",
        ),
        ("242.0.0.0/8,242.1.0.0/16", "not an IPv6 CIDR"),
    ] {
        let e = refused(&["join", &set, "--lab", &east.name, "--globalnet", range]);
        assert!(e.contains("--globalnet") && e.contains(why), "{range}: {e}");
    }
    assert!(!wan_exists(&set), "a refused join built the WAN");

    ok(&[
        "join", &set, "--lab", &east.name, "--lab", &west.name, "--cable", "vxlan",
    ]);
    assert!(wan_exists(&set));
    let st: Value = serde_json::from_str(&ok(&["status", &set, "-o", "json"])).unwrap();
    assert_eq!(st["cable"], "vxlan");
    assert_eq!(st["broker"]["running"], true);
    let ids: Vec<&str> = st["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clusterId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["east", "west"]);

    // A third lab with the default ranges overlaps west: refused, naming both.
    let third = TestLab::up(&["--nodes", "1", "--cluster-id", "north"]);
    let e = refused(&["join", &set, "--lab", &third.name]);
    assert!(
        e.contains("west") && e.contains("north") && e.contains("10.244.0.0/16"),
        "{e}"
    );
    // A join that fails once building has begun (the lab's fabric namespace is gone, so its
    // WAN link cannot be made) leaves nothing: no WAN namespace, no broker, no state.
    let other = format!("{set}x");
    let _other_guard = SetGuard(other.clone());
    let gone = Command::new("ip")
        .args(["netns", "del", &format!("sarasa-{}-fabric", third.name)])
        .output()
        .expect("ip netns del");
    assert!(gone.status.success());
    refused(&["join", &other, "--lab", &third.name, "--cable", "vxlan"]);
    assert!(!wan_exists(&other), "a failed join left the WAN");
    assert!(
        refused(&["status", &other]).contains("does not exist"),
        "a failed join left the set's state"
    );
    drop(third);

    // Exported in east: imported in west, with east's endpoints, resolvable there.
    web(&east);
    let i = wait_clusters(&west, "web", &["east"]);
    let set_ip = i["spec"]["ips"][0].as_str().unwrap().to_string();
    assert!(
        set_ip.starts_with("10."),
        "west's own ClusterSetIP: {set_ip}"
    );
    let east_pod = east.pod_ip("web");
    west.eventually(WAIT, || {
        let copies = mcs_slices_from(&west, "east");
        (copies.len() == 1 && copies[0]["endpoints"][0]["addresses"][0] == east_pod.as_str())
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "east's endpoint in west: {:#?}",
            mcs_slices_from(&west, "east")
        )
    });
    west.apply(&serve_pod("client", "node-3", "client"));
    west.pod_ip("client");
    west.dig_until("client", "web.default.svc.clusterset.local", |a| {
        a == set_ip
    });

    // Through the gateways and the cable, the source address kept: from west's client (on
    // node-3, not a gateway) to east's pod, and to west's ClusterSetIP of east's export.
    let client = west.pod_ip("client");
    for target in [
        format!("tcp://{east_pod}:8080"),
        format!("tcp://{set_ip}:80"),
    ] {
        let seen = reached_from(&west, "client", &target, "web", &set);
        assert_eq!(seen, client, "{target}: source kept");
    }
    let st: Value = serde_json::from_str(&ok(&["status", &set, "-o", "json"])).unwrap();
    let cables = st["cables"].as_array().unwrap();
    assert_eq!(cables.len(), 2, "{st:#}");
    assert!(
        cables.iter().all(|c| c["state"] == "connected"
            && c["rttMs"].as_f64().is_some()
            && c["txBytes"].as_u64().unwrap_or(0) > 0),
        "{st:#}"
    );
    // node-3 is no gateway: it reaches the active one over the route agent's VXLAN.
    let routes = Command::new("ip")
        .args([
            "-n",
            &format!("sarasa-{}-node-3", west.name),
            "route",
            "show",
            "proto",
            "84",
        ])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains("10.245.0.0/16 via 240.") && routes.contains("dev sarasa-gw"),
        "{routes}"
    );
    // Conntrack tracks the client's connections on the gateway, but not the cable and the
    // route agent's VXLAN that carried them.
    let gateway = active_gateway(&st, "west").expect("west has an active gateway");
    assert!(
        !west.conntrack(&gateway, "tcp", 8080).is_empty(),
        "{gateway} tracks no connection to east's pod"
    );
    for (node, port) in [
        (gateway.as_str(), 4800),
        (gateway.as_str(), 4801),
        ("node-3", 4801),
    ] {
        let tunnel = west.conntrack(node, "udp", port);
        assert!(tunnel.is_empty(), "{node} tracks UDP {port}: {tunnel:?}");
    }
    // trace follows the packet through the cable into east, hop by hop, to the pod.
    let t: Value = serde_json::from_str(&west.ok(&[
        "trace", "--from", "client", "--to", &east_pod, "--port", "8080", "-o", "json",
    ]))
    .unwrap();
    assert_eq!(t["verdict"], "delivered", "{t:#}");
    let hops = t["hops"].as_array().unwrap();
    let cable = hops
        .iter()
        .position(|h| h["kind"] == "cable")
        .unwrap_or_else(|| panic!("no cable hop: {t:#}"));
    assert!(
        hops[cable]["text"]
            .as_str()
            .unwrap()
            .contains("cluster east"),
        "{t:#}"
    );
    assert!(
        hops[cable + 1..]
            .iter()
            .all(|h| h["at"].as_str().unwrap().contains("east/")),
        "after the cable, east's nodes: {t:#}"
    );
    assert!(
        t["reason"].as_str().unwrap().contains("default/web"),
        "{t:#}"
    );
    // `--to svc/web` in west names the ServiceImport (west has no Service web): the trace
    // starts at its ClusterSetIP and ends at east's pod.
    let t: Value = serde_json::from_str(
        &west.ok(&["trace", "--from", "client", "--to", "svc/web", "-o", "json"]),
    )
    .unwrap();
    assert_eq!(t["verdict"], "delivered", "{t:#}");
    assert_eq!(
        t["paths"][0]["arrivals"][0]["daddr"],
        set_ip.as_str(),
        "{t:#}"
    );
    assert!(
        t["hops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["kind"] == "cable"),
        "{t:#}"
    );
    // Both lab trees equal their plans (the other cluster's ranges are not masqueraded).
    for lab in [&east, &west] {
        lab.check_equal();
    }

    // Failover: east's active gateway's agent stops; the standby takes the Lease and the
    // cable, and new connections work again.
    let active = |st: &Value| active_gateway(st, "east");
    let before = active(&st).expect("east has an active gateway");
    let stopped = std::time::Instant::now();
    east.ok(&["lab", "agent", "stop", &before]);
    let after = east
        .eventually(WAIT, || {
            let st: Value = serde_json::from_str(&ok(&["status", &set, "-o", "json"])).ok()?;
            active(&st).filter(|a| *a != before)
        })
        .expect("the standby takes over");
    let target = format!("tcp://{east_pod}:8080");
    west.eventually(WAIT, || west.probe("client", &target))
        .unwrap_or_else(|| panic!("{target} after the failover to {after}"));
    let took = stopped.elapsed();
    eprintln!("gateway failover {before} -> {after}: new connections after {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    east.ok(&["lab", "agent", "start", &before]);

    // Failover again, the active gateway's WAN uplink cut: the cable through it is gone at
    // once; its agent stops renewing the Lease and the standby takes over.
    let cut = after.clone();
    let cut_ns = format!("sarasa-{}-{cut}", east.name);
    let link = |state: &str| {
        let out = Command::new("ip")
            .args(["-n", &cut_ns, "link", "set", "wan0", state])
            .output()
            .expect("ip link");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let t0 = std::time::Instant::now();
    link("down");
    west.eventually(WAIT, || west.probe("client", &target))
        .unwrap_or_else(|| panic!("{target} after cutting {cut}'s uplink"));
    let took = t0.elapsed();
    let st: Value = serde_json::from_str(&ok(&["status", &set, "-o", "json"])).unwrap();
    assert_ne!(active(&st).as_deref(), Some(cut.as_str()), "{st:#}");
    eprintln!("gateway failover, {cut}'s uplink cut: new connections after {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    link("up");

    // Exported in both: both list both.
    web(&west);
    wait_clusters(&west, "web", &["east", "west"]);
    wait_clusters(&east, "web", &["east", "west"]);

    // The broker down: west keeps east's export even after east unexports; back up, the
    // next pass catches up.
    ok(&["broker", "stop", &set]);
    let st: Value = serde_json::from_str(&ok(&["status", &set, "-o", "json"])).unwrap();
    assert_eq!(st["broker"]["running"], false);
    east.ok(&["delete", "serviceexport", "web"]);
    wait_clusters(&east, "web", &["west"]);
    let down = west
        .eventually(WAIT, || {
            let st: Value = serde_json::from_str(&ok(&["status", &set, "-o", "json"])).ok()?;
            let w = st["clusters"]
                .as_array()?
                .iter()
                .find(|c| c["clusterId"] == "west")?
                .clone();
            (w["sync"]["brokerReachable"] == false).then_some(w)
        })
        .expect("west's sync sees the broker down");
    assert!(down["sync"]["error"].is_string(), "{down:#}");
    // Traffic keeps flowing while the broker is down: the cable needs no broker.
    west.eventually(WAIT, || west.probe("client", &target))
        .unwrap_or_else(|| panic!("{target} with the broker down"));
    assert_eq!(
        clusters(&import(&west, "web").unwrap()),
        ["east", "west"],
        "west keeps its last state"
    );
    ok(&["broker", "start", &set]);
    wait_clusters(&west, "web", &["west"]);

    // west leaves: its export leaves east, east's slices leave west.
    web(&east);
    wait_clusters(&west, "web", &["east", "west"]);
    ok(&["leave", &set, "--lab", &west.name]);
    // The broker's MAC is the WAN bridge's own, not its lowest port's: a lab leaving must not
    // move it under the other sites' ARP caches (it did, and east lost the broker for 40 s).
    let out = Command::new("ip")
        .args([
            "-n",
            &format!("sarasa-wan-{set}"),
            "-br",
            "link",
            "show",
            "wan",
        ])
        .output()
        .expect("ip link");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("02:5a:57:41:4e:01"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_clusters(&east, "web", &["east"]);
    assert!(mcs_slices_from(&west, "east").is_empty());
    wait_clusters(&west, "web", &["west"]);
    // Nothing of the set stays on west's nodes: no cable, no routes to east.
    nothing_of_the_set_left(&west, &["node-1", "node-2", "node-3"]);

    ok(&["delete", &set]);
    assert!(!wan_exists(&set));
    let e = refused(&["status", &set]);
    assert!(e.contains("does not exist"), "{e}");
}
