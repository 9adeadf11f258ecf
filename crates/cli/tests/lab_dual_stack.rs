//! Lab end-to-end: `lab up --dual-stack`. Every node has an IPv4 and an IPv6 InternalIP and
//! podCIDR, every pod both addresses (status.podIPs, hostIPs), IPv4 first; a pod reaches a pod
//! on another node at its IPv6 address with its own kept (the IPv6 crosses the VXLAN tunnel);
//! a PreferDualStack Service gets an IPv6 ClusterIP and an IPv6 EndpointSlice, answers there,
//! and the cluster DNS answers AAAA with it; IPv6 ranges given with `--pod-cidr` and
//! `--service-cidr` are taken; the lab equals its plans. Refused, with nothing built: an IPv6
//! range without `--dual-stack`, and `--dual-stack` with a backend that routes podCIDRs to one
//! IPv4 underlay address.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{serve_pod, TestLab};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x[key].as_str().map(String::from))
        .collect()
}

fn families(ips: &[String]) -> Vec<bool> {
    ips.iter()
        .map(|ip| ip.parse::<IpAddr>().expect("an address").is_ipv4())
        .collect()
}

#[test]
fn a_dual_stack_lab_gives_nodes_pods_and_services_ipv6_as_well() {
    // Refusals first: each names its flag, and no lab is left.
    for (flags, want) in [
        (
            vec!["--pod-cidr", "10.245.0.0/16,fd00:10:245::/56"],
            "needs --dual-stack",
        ),
        (
            vec!["--dual-stack", "--backend", "host-gw"],
            "--backend host-gw",
        ),
    ] {
        let name = common::unique_lab();
        let mut args = vec!["--lab", name.as_str(), "lab", "up", "--nodes", "1"];
        args.extend_from_slice(&flags);
        let out = std::process::Command::new(common::sarasa_bin())
            .args(&args)
            .output()
            .expect("run sarasa");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{flags:?}: {err}"
        );
        let netns = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns");
        assert!(
            !String::from_utf8_lossy(&netns.stdout).contains(&format!("sarasa-{name}-")),
            "a refused lab up left namespaces"
        );
    }

    let lab = TestLab::up(&[
        "--nodes",
        "2",
        "--dual-stack",
        "--service-cidr",
        "10.112.0.0/16,fd00:10:112::/112",
    ]);
    for node in ["node-1", "node-2"] {
        let n = lab.object("nodes", "default", node).expect("node listed");
        let cidrs: Vec<String> = n["spec"]["podCIDRs"]
            .as_array()
            .expect("podCIDRs")
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let networks: Vec<String> = cidrs
            .iter()
            .map(|c| c.split('/').next().unwrap().to_string())
            .collect();
        assert_eq!(families(&networks), [true, false], "{node}: {cidrs:?}");
        assert!(cidrs[1].starts_with("fd00:10:244:"), "{node}: {cidrs:?}");
        let internal: Vec<String> = n["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "InternalIP")
            .map(|a| a["address"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(families(&internal), [true, false], "{node}: {internal:?}");
    }

    lab.apply(&serve_pod("web", "node-2", "web"));
    lab.apply(&serve_pod("client", "node-1", "client"));
    lab.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
         spec:\n  ipFamilyPolicy: PreferDualStack\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n",
    );
    lab.pod_ip("web");
    let pod_ips = |name: &str| {
        lab.eventually(WAIT, || {
            let p = lab.object("pods", "default", name)?;
            let ips = strings(&p["status"]["podIPs"], "ip");
            (ips.len() == 2).then_some((ips, strings(&p["status"]["hostIPs"], "ip")))
        })
        .unwrap_or_else(|| panic!("{name} has no two podIPs\n{}", lab.logs()))
    };
    let (web_ips, web_hosts) = pod_ips("web");
    let (client_ips, _) = pod_ips("client");
    assert_eq!(families(&web_ips), [true, false], "{web_ips:?}");
    assert_eq!(families(&web_hosts), [true, false], "{web_hosts:?}");

    // Pod to pod across nodes over IPv6, the client's address kept.
    let target = format!("tcp://[{}]:8080", web_ips[1]);
    let reply = lab
        .eventually(WAIT, || lab.probe("client", &target))
        .unwrap_or_else(|| panic!("{target} from client\n{}", lab.logs()));
    assert_eq!(reply["pod"], "web");
    assert_eq!(common::client_ip(&reply), client_ips[1], "source kept");

    // The Service: both families, an IPv6 slice, the IPv6 ClusterIP answering, AAAA.
    let svc = lab
        .eventually(WAIT, || {
            let s = lab.object("services", "default", "web")?;
            (s["spec"]["clusterIPs"].as_array()?.len() == 2).then_some(s)
        })
        .expect("web gets two ClusterIPs");
    assert_eq!(
        svc["spec"]["ipFamilies"],
        serde_json::json!(["IPv4", "IPv6"])
    );
    let v6 = svc["spec"]["clusterIPs"][1].as_str().unwrap().to_string();
    assert!(v6.starts_with("fd00:10:112:"), "from the given range: {v6}");
    lab.eventually(WAIT, || {
        let slices = lab.get_json(&["endpointslices", "-n", "default"]);
        slices["items"].as_array()?.iter().find(|s| {
            s["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
                && s["addressType"] == "IPv6"
                && s["endpoints"][0]["addresses"][0] == web_ips[1].as_str()
        })?;
        Some(())
    })
    .expect("web's IPv6 EndpointSlice names web's IPv6 address");
    let target = format!("http://[{v6}]/");
    let reply = lab
        .eventually(WAIT, || lab.probe("client", &target))
        .unwrap_or_else(|| panic!("{target} from client\n{}", lab.logs()));
    assert_eq!(reply["pod"], "web");
    assert_eq!(common::client_ip(&reply), client_ips[1]);
    lab.dig_type_until("client", "AAAA", "web.default.svc.cluster.local", |a| {
        a == v6
    });
    lab.check_equal();
}
