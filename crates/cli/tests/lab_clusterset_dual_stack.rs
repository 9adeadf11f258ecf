//! Lab end-to-end: cluster sets of dual-stack labs (`lab up --dual-stack`).
//! - Without GlobalNet, over the VXLAN cable: a pod reaches the other cluster's pod at its IPv6
//!   address and the IPv6 ClusterSetIP of a dual-stack export, from the gateway node and from
//!   another, with its own IPv6 address kept; `clusterset.local` answers AAAA.
//! - With GlobalNet over IPv4 and IPv6 (`--globalnet CIDR,CIDR6`), over WireGuard: labs whose
//!   IPv6 ranges are identical are refused a plain join, naming them, and connect through
//!   GlobalNet: each gets an IPv6 global CIDR, the exported Service an IPv6 global address,
//!   and the other cluster reaches it at its IPv6 ClusterSetIP and global address, seen from
//!   its IPv6 egress address; when the gateway's agent dies (SIGKILL), the pods of its node
//!   still reach it, through the fallback route to the standby's IPv6 address; `leave` gives
//!   both global addresses back.
//!
//! Both labs of each set equal their plans (the IPv6 routes, cable addresses and SNAT).

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::clusterset::{
    active_gateway, global_cidr, ok, reached_from, refused, status, SetGuard,
};
use common::{serve_pod, TestLab};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// A `sarasa/serve` pod `web` on `node` behind a PreferDualStack Service `web` (80 → 8080),
/// exported.
fn export_dual_stack_web(lab: &TestLab, node: &str) {
    lab.apply(&format!(
        "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n\
         spec:\n  ipFamilyPolicy: PreferDualStack\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n\
         ---\napiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {{name: web}}\n",
        serve_pod("web", node, "web"),
    ));
}

/// A two-node dual-stack lab with cluster id `id` and these extra `lab up` flags.
fn dual_stack_lab(id: &str, flags: &[&str]) -> TestLab {
    let mut args = vec!["--nodes", "2", "--dual-stack", "--cluster-id", id];
    args.extend_from_slice(flags);
    TestLab::up(&args)
}

/// A pod's IPv6 address, once it has one (30 s).
fn pod_ip6(lab: &TestLab, name: &str) -> String {
    lab.eventually(WAIT, || {
        let p = lab.object("pods", "default", name)?;
        p["status"]["podIPs"]
            .as_array()?
            .iter()
            .filter_map(|i| i["ip"].as_str())
            .find(|ip| ip.contains(':'))
            .map(String::from)
    })
    .unwrap_or_else(|| panic!("{name} has no IPv6 address\n{}", lab.logs()))
}

/// The IPv6 ClusterSetIP of ServiceImport `default/name`, once it has one (30 s).
fn cluster_set_ip6(lab: &TestLab, name: &str) -> String {
    lab.eventually(WAIT, || {
        let i = lab.object("serviceimports", "default", name)?;
        i["spec"]["ips"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .find(|ip| ip.contains(':'))
            .map(String::from)
    })
    .unwrap_or_else(|| panic!("{}: no IPv6 ClusterSetIP for {name}", lab.name))
}

#[test]
fn dual_stack_clusters_keep_the_pods_ipv6_source_through_the_cable() {
    let east = dual_stack_lab("east", &[]);
    let west = dual_stack_lab(
        "west",
        &[
            "--pod-cidr",
            "10.245.0.0/16,fd00:10:245::/56",
            "--service-cidr",
            "10.112.0.0/16,fd00:10:112::/112",
        ],
    );
    let set = format!("ds{}", std::process::id());
    let _guard = SetGuard(set.clone());
    ok(&[
        "join", &set, "--lab", &east.name, "--lab", &west.name, "--cable", "vxlan",
    ]);
    export_dual_stack_web(&east, "node-2");
    west.apply(&serve_pod("c1", "node-1", "client"));
    west.apply(&serve_pod("c2", "node-2", "client"));
    let web6 = pod_ip6(&east, "web");
    let set_ip6 = cluster_set_ip6(&west, "web");
    assert!(
        set_ip6.starts_with("fd00:10:112:"),
        "west's own IPv6 Service range: {set_ip6}"
    );
    let st = status(&set);
    let gateway = active_gateway(&st, "west").expect("west has an active gateway");
    let mut from_gateway = false;
    for client in ["c1", "c2"] {
        let own: IpAddr = pod_ip6(&west, client).parse().unwrap();
        from_gateway |= west
            .object("pods", "default", client)
            .is_some_and(|p| p["spec"]["nodeName"] == gateway.as_str());
        for target in [
            format!("tcp://[{web6}]:8080"),
            format!("tcp://[{set_ip6}]:80"),
        ] {
            assert_eq!(
                reached_from(&west, client, &target, "web", &set)
                    .parse::<IpAddr>()
                    .unwrap(),
                own,
                "{client} → {target}: the pod's IPv6 address is kept"
            );
        }
    }
    assert!(from_gateway, "one client is on the gateway node {gateway}");
    west.dig_type_until("c1", "AAAA", "web.default.svc.clusterset.local", |a| {
        a == set_ip6
    });
    for lab in [&east, &west] {
        lab.check_equal();
    }
    ok(&["delete", &set]);
}

#[test]
fn dual_stack_globalnet_connects_identical_ipv6_ranges() {
    // Distinct IPv4 ranges, the same (default) IPv6 ones.
    let east = dual_stack_lab("east", &[]);
    let west = dual_stack_lab(
        "west",
        &[
            "--pod-cidr",
            "10.245.0.0/16",
            "--service-cidr",
            "10.112.0.0/16",
        ],
    );
    let set = format!("dg{}", std::process::id());
    let _guard = SetGuard(set.clone());
    let e = refused(&["join", &set, "--lab", &east.name, "--lab", &west.name]);
    assert!(
        e.contains("fd00:10:244::/56") && e.contains("east") && e.contains("west"),
        "the refusal names the clusters and their IPv6 ranges: {e}"
    );
    ok(&[
        "join",
        &set,
        "--lab",
        &east.name,
        "--lab",
        &west.name,
        "--globalnet",
        "242.0.0.0/8,fd00:242::/96",
    ]);
    let st = status(&set);
    let (east6, west6) = (
        global_cidr(&st, "east", "globalCidrV6"),
        global_cidr(&st, "west", "globalCidrV6"),
    );
    assert_ne!(east6, west6);
    assert_eq!(east6.prefix_len(), 112);

    export_dual_stack_web(&east, "node-2");
    // The client runs on west's active gateway: after that node's agent stops, its IPv6 goes
    // through the fallback route to the candidate that takes over.
    let west_gw = west
        .eventually(WAIT, || active_gateway(&status(&set), "west"))
        .expect("west elects a gateway");
    west.apply(&serve_pod("client", &west_gw, "client"));
    let global_ips = east
        .eventually(WAIT, || {
            let svc = east.object("services", "default", "web")?;
            let text = svc["metadata"]["annotations"]["multicluster.sarasa.io/global-ip"]
                .as_str()?
                .to_string();
            text.contains(',').then_some(text)
        })
        .expect("east's web gets a global address of each family");
    let global_ip6 = global_ips.split(',').nth(1).unwrap().to_string();
    assert!(
        east6.contains(&global_ip6.parse::<IpAddr>().unwrap()),
        "{global_ip6} in {east6}"
    );
    let set_ip6 = cluster_set_ip6(&west, "web");
    for target in [
        format!("tcp://[{set_ip6}]:80"),
        format!("tcp://[{global_ip6}]:80"),
    ] {
        let seen: IpAddr = reached_from(&west, "client", &target, "web", &set)
            .parse()
            .unwrap();
        assert!(
            west6.contains(&seen),
            "{target}: east sees {seen}, not an address of west's IPv6 global CIDR {west6}"
        );
    }
    west.dig_type_until("client", "AAAA", "web.default.svc.clusterset.local", |a| {
        a == set_ip6
    });
    for lab in [&east, &west] {
        lab.check_equal();
    }
    // The gateway's agent dies without a word (SIGKILL: no handover, its WireGuard device and
    // routes go with it) and stays down (`lab agent stop` before the kubelet's first restart,
    // 10 s later): its node's pods reach the other cluster's IPv6 through the fallback route
    // to the standby's IPv6 underlay address, once the standby holds the Lease.
    let pid = common::agent_pid(&west.name, &west_gw).expect("the gateway's agent runs");
    // SAFETY: kill(2) on a pid this test found as the agent of its own lab's node.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
    west.ok(&["lab", "agent", "stop", &west_gw]);
    let target = format!("tcp://[{set_ip6}]:80");
    let after = west
        .eventually(WAIT, || {
            let now = active_gateway(&status(&set), "west").filter(|a| *a != west_gw)?;
            west.probe("client", &target).map(|_| now)
        })
        .unwrap_or_else(|| panic!("{target} from {west_gw} after its agent died"));
    assert_ne!(after, west_gw);
    assert!(
        common::agent_pid(&west.name, &west_gw).is_none(),
        "the dead gateway's agent stayed down"
    );
    west.ok(&["lab", "agent", "start", &west_gw]);

    ok(&["leave", &set, "--lab", &east.name]);
    east.eventually(WAIT, || {
        let svc = east.object("services", "default", "web")?;
        svc["metadata"]["annotations"]["multicluster.sarasa.io/global-ip"]
            .is_null()
            .then_some(())
    })
    .expect("east's web gives its global addresses back");
    ok(&["delete", &set]);
}
