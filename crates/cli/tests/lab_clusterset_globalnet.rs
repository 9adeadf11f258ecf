//! Lab end-to-end: GlobalNet. Two labs with identical pod and Service ranges are refused a
//! plain join and accepted with `--globalnet`: each gets a global CIDR; a Service exported in
//! east gets a global ingress address, the MCS slice west imports carries it instead of east's
//! (overlapping) pod address, and west's client reaches the Service through its own
//! ClusterSetIP and through the global address, seen by east's pod from west's egress address;
//! `clusterset.local` answers in west; both labs still equal their plans (the egress SNAT is
//! part of the node plan); a headless export's endpoint gets a global address of its own,
//! which west's `clusterset.local` answers and a connection reaches; `leave` gives the global
//! addresses back.

mod common;

use std::time::Duration;

use common::clusterset::{
    cluster_set_ip, export_web, global_cidr, ok, reached_from, refused, status, SetGuard,
};
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
        let seen: std::net::IpAddr = reached_from(&west, "client", &target, "web", &set)
            .parse()
            .unwrap();
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

    // A headless export: its endpoint gets a global address of its own (a global ingress
    // Service in east), west's `clusterset.local` answers with it, not the (overlapping) pod
    // address, and a connection there reaches the pod from west's egress address.
    east.apply(&format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: db}}\n\
         spec:\n  clusterIP: None\n  selector: {{app: db}}\n  ports: [{{name: tcp, port: 8080}}]\n\
         ---\napiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {{name: db}}\n",
        serve_pod("db", "node-1", "db"),
    ));
    let db_pod = east.pod_ip("db");
    let db_global = west.dig_until("client", "db.default.svc.clusterset.local", |a| {
        a.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| east_global.contains(&ip))
    });
    assert_ne!(db_global, db_pod);
    let target = format!("tcp://{db_global}:8080");
    let seen: std::net::IpAddr = reached_from(&west, "client", &target, "db", &set)
        .parse()
        .unwrap();
    assert!(west_global.contains(&seen), "db sees {seen}");
    east.check_equal();

    // east leaves: its web gives the global address back, and db's endpoint its Service.
    ok(&["leave", &set, "--lab", &east.name]);
    east.eventually(WAIT, || {
        let svcs = east.get_json(&["services", "-n", "default"]);
        let left = svcs["items"]
            .as_array()?
            .iter()
            .any(|s| s["metadata"]["labels"]["multicluster.sarasa.io/global-ingress-for"] == "db");
        (!left).then_some(())
    })
    .expect("east's global ingress Services go when it leaves");
    east.eventually(WAIT, || {
        let svc = east.object("services", "default", "web")?;
        svc["metadata"]["annotations"]["multicluster.sarasa.io/global-ip"]
            .is_null()
            .then_some(())
    })
    .expect("east's web gives its global address back");
    ok(&["delete", &set]);
}
