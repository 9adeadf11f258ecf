//! Lab end-to-end: GlobalNet. Two labs with identical pod and Service ranges are refused a
//! plain join and accepted with `--globalnet`: each gets a global CIDR; a Service exported in
//! east gets a global ingress address, the MCS slice west imports carries it instead of east's
//! (overlapping) pod address, and west's client reaches the Service through its own
//! ClusterSetIP and through the global address, seen by east's pod from west's egress address;
//! `clusterset.local` answers in west; both labs still equal their plans (the egress SNAT is
//! part of the node plan); `leave` gives the global address back.

mod common;

use std::time::Duration;

use common::clusterset::{cluster_set_ip, export_web, global_cidr, ok, refused, status, SetGuard};
use common::{serve_pod, TestLab};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn labs_with_identical_ranges_connect_through_globalnet() {
    let east = TestLab::up(&["--nodes", "2", "--cluster-id", "east"]);
    let west = TestLab::up(&["--nodes", "2", "--cluster-id", "west"]);
    let set = format!("gn{}", std::process::id());
    let _guard = SetGuard(set.clone());
    let e = refused(&["join", &set, "--lab", &east.name, "--lab", &west.name]);
    assert!(
        e.contains("--globalnet"),
        "the refusal points at GlobalNet: {e}"
    );
    let e = refused(&[
        "join",
        &set,
        "--lab",
        &east.name,
        "--globalnet",
        "242.0.0.0/33",
    ]);
    assert!(e.contains("--globalnet"), "{e}");
    ok(&[
        "join",
        &set,
        "--lab",
        &east.name,
        "--lab",
        &west.name,
        "--globalnet",
        "242.0.0.0/8",
    ]);
    let st = status(&set);
    let (east_global, west_global) = (
        global_cidr(&st, "east", "globalCidr"),
        global_cidr(&st, "west", "globalCidr"),
    );
    assert_ne!(east_global, west_global);
    assert!(
        "242.0.0.0/8"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&east_global),
        "{east_global}"
    );

    export_web(&east, "node-2");
    west.apply(&serve_pod("client", "node-1", "client"));
    let east_pod = east.pod_ip("web");
    let client = west.pod_ip("client");
    assert_eq!(
        east_pod
            .rsplit_once('.')
            .unwrap()
            .0
            .split('.')
            .take(2)
            .collect::<Vec<_>>(),
        client
            .rsplit_once('.')
            .unwrap()
            .0
            .split('.')
            .take(2)
            .collect::<Vec<_>>(),
        "the two labs' pods share a range"
    );
    // east's Service has its global address; west's import slice carries it.
    let global_ip = east
        .eventually(WAIT, || {
            let svc = east.object("services", "default", "web")?;
            svc["metadata"]["annotations"]["multicluster.sarasa.io/global-ip"]
                .as_str()
                .map(String::from)
        })
        .expect("east's web gets a global address");
    assert!(
        east_global.contains(&global_ip.parse::<std::net::IpAddr>().unwrap()),
        "{global_ip} in {east_global}"
    );
    west.eventually(WAIT, || {
        let slices = west.get_json(&["endpointslices", "-n", "default"]);
        slices["items"].as_array()?.iter().find(|s| {
            s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"] == "east"
                && s["endpoints"][0]["addresses"][0] == global_ip.as_str()
                && s["ports"][0]["port"] == 80
        })?;
        Some(())
    })
    .unwrap_or_else(|| panic!("west imports web at {global_ip}:80"));
    let set_ip = cluster_set_ip(&west, "web").expect("west imports web");

    // west's client reaches web through its ClusterSetIP and at the global address; east's
    // pod sees west's egress address.
    for target in [
        format!("tcp://{set_ip}:80"),
        format!("tcp://{global_ip}:80"),
    ] {
        let reply = west
            .eventually(WAIT, || west.probe("client", &target))
            .unwrap_or_else(|| panic!("{target} from west:\n{}", ok(&["status", &set])));
        assert_eq!(reply["pod"], "web", "{target}");
        let seen: std::net::IpAddr = common::client_ip(&reply).parse().unwrap();
        assert!(
            west_global.contains(&seen),
            "{target}: east sees {seen}, not an address of west's global CIDR {west_global}"
        );
    }
    west.dig_until("client", "web.default.svc.clusterset.local", |a| {
        a == set_ip
    });
    for lab in [&east, &west] {
        lab.check_equal();
    }

    // east leaves: its web gives the global address back.
    ok(&["leave", &set, "--lab", &east.name]);
    east.eventually(WAIT, || {
        let svc = east.object("services", "default", "web")?;
        svc["metadata"]["annotations"]["multicluster.sarasa.io/global-ip"]
            .is_null()
            .then_some(())
    })
    .expect("east's web gives its global address back");
    ok(&["delete", &set]);
}
