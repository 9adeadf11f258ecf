//! Lab end-to-end: `lab up --pod-cidr --service-cidr --cluster-id` picks a lab's ranges, as labs
//! that will join a cluster set need. Two labs up at once, one with its own ranges and one
//! with the defaults: every address each hands out (podCIDRs, pod IPs, ClusterIPs, the
//! `kubernetes` and `kube-dns` Services, the pods' resolv.conf, the API server's certificate
//! as curl in a pod verifies it)
//! comes from its own ranges, and a name resolves and connects in each. Bad ranges are refused
//! naming the flag, with nothing built. Each lab is also a cluster set of one: an exported
//! Service is imported at a ClusterSetIP that `web.default.svc.clusterset.local` answers and
//! the service proxy takes to its pod.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{serve_pod, TestLab};
use ipnet::Ipv4Net;

const WAIT: Duration = Duration::from_secs(30);

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(v: &serde_json::Value) -> Ipv4Addr {
    v.as_str()
        .unwrap_or_else(|| panic!("not an address: {v}"))
        .parse()
        .unwrap()
}

/// What one lab must show for ranges `pods` / `services`.
fn check_lab(lab: &TestLab, pods: Ipv4Net, services: Ipv4Net, cluster_id: &str) {
    let first = |n: u32| Ipv4Addr::from(u32::from(services.network()) + n);
    for node in lab.get_json(&["nodes"])["items"].as_array().unwrap() {
        let cidr: Ipv4Net = node["spec"]["podCIDR"].as_str().unwrap().parse().unwrap();
        assert!(pods.contains(&cidr), "{}: podCIDR {cidr}", lab.name);
    }
    let kubernetes = lab.get_json(&["services", "-n", "default", "kubernetes"]);
    assert_eq!(
        ip(&kubernetes["spec"]["clusterIP"]),
        first(1),
        "{}",
        lab.name
    );
    let dns = lab.get_json(&["services", "-n", "kube-system", "kube-dns"]);
    assert_eq!(ip(&dns["spec"]["clusterIP"]), first(10), "{}", lab.name);

    lab.apply(&format!(
        "{}---\n{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n\
         spec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n",
        serve_pod("web", "node-1", "web"),
        serve_pod("client", "node-2", "client"),
    ));
    for pod in ["web", "client"] {
        let addr: Ipv4Addr = lab.pod_ip(pod).parse().unwrap();
        assert!(pods.contains(&addr), "{}: {pod} got {addr}", lab.name);
    }
    let web = lab.get_json(&["services", "-n", "default", "web"]);
    let cluster_ip = ip(&web["spec"]["clusterIP"]);
    assert!(services.contains(&cluster_ip), "{}: {cluster_ip}", lab.name);

    // The kubelet points pods at this lab's DNS, which answers the Service's name with the
    // address from this lab's range; the service proxy takes a connection to it.
    let resolv = lab.exec("client", &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains(&format!("nameserver {}", first(10))),
        "{}: {resolv}",
        lab.name
    );
    let answer = lab.dig_until("client", "web.default.svc.cluster.local", |_| true);
    assert_eq!(answer, cluster_ip.to_string(), "{}", lab.name);
    let reply = lab
        .eventually(WAIT, || {
            lab.probe("client", &format!("tcp://{cluster_ip}:80"))
        })
        .unwrap_or_else(|| panic!("{}: {cluster_ip}:80 not answered", lab.name));
    assert_eq!(reply["pod"], "web", "{}", lab.name);

    // The API server's certificate names the `kubernetes` Service's address of this range:
    // curl in the pod verifies it against the ServiceAccount's CA (any HTTP status means the
    // TLS handshake passed; a name mismatch is curl's exit 60 and status 000).
    let code = lab.exec(
        "client",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
            "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            &format!("https://{}/version", first(1)),
        ],
    );
    assert!(
        code.len() == 3 && code != "000",
        "{}: TLS to the kubernetes Service: {code}",
        lab.name
    );

    let status = lab.ok(&["lab", "status"]);
    assert!(
        status.contains(&format!(
            "cluster id {cluster_id}: pods {pods}, Services {services} (DNS {})",
            first(10)
        )),
        "{status}"
    );

    check_export(lab, services, cluster_id);
}

/// A cluster set of one: exporting `web` imports it in this cluster (MCS API), at a
/// ClusterSetIP that is the ClusterIP of a derived Service in this lab's range; the MCS
/// EndpointSlice names this lab's cluster id; the service proxy takes a connection to the
/// ClusterSetIP to the web pod, with the client's address kept.
fn check_export(lab: &TestLab, services: Ipv4Net, cluster_id: &str) {
    lab.apply(
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\nmetadata: {name: web}\n",
    );
    let import = lab
        .eventually(WAIT, || {
            lab.object("serviceimports", "default", "web")
                .filter(|i| i["spec"]["ips"][0].is_string())
        })
        .unwrap_or_else(|| panic!("{}: no ServiceImport web with an address", lab.name));
    assert_eq!(import["spec"]["type"], "ClusterSetIP");
    assert_eq!(
        import["status"]["clusters"],
        serde_json::json!([{"cluster": cluster_id}]),
        "{}",
        lab.name
    );
    let set_ip = ip(&import["spec"]["ips"][0]);
    assert!(services.contains(&set_ip), "{}: {set_ip}", lab.name);
    let slices = lab.get_json(&["endpointslices", "-n", "default"]);
    let mcs: Vec<&serde_json::Value> = slices["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["metadata"]["labels"]["multicluster.kubernetes.io/service-name"] == "web")
        .collect();
    assert_eq!(mcs.len(), 1, "{}: {slices:#}", lab.name);
    assert_eq!(
        mcs[0]["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"], cluster_id,
        "{}",
        lab.name
    );
    // The MCS DNS names: the import's name under clusterset.local is the ClusterSetIP.
    let want = set_ip.to_string();
    lab.dig_until("client", "web.default.svc.clusterset.local", |a| a == want);
    let client = lab.pod_ip("client");
    let reply = lab
        .eventually(WAIT, || lab.probe("client", &format!("tcp://{set_ip}:80")))
        .unwrap_or_else(|| panic!("{}: ClusterSetIP {set_ip}:80 not answered", lab.name));
    assert_eq!(reply["pod"], "web", "{}", lab.name);
    assert_eq!(
        common::client_ip(&reply),
        client,
        "{}: source kept",
        lab.name
    );
}

#[test]
fn each_lab_hands_out_addresses_from_its_own_ranges() {
    let west = TestLab::up(&[
        "--nodes",
        "2",
        "--pod-cidr",
        "10.245.0.0/16",
        "--service-cidr",
        "10.112.0.0/16",
        "--cluster-id",
        "west",
    ]);
    let plain = TestLab::up(&["--nodes", "2"]);
    check_lab(&west, net("10.245.0.0/16"), net("10.112.0.0/16"), "west");
    check_lab(
        &plain,
        net("10.244.0.0/16"),
        net("10.96.0.0/12"),
        &plain.name,
    );
}

#[test]
fn bad_ranges_are_refused_naming_the_flag_and_nothing_is_built() {
    for (flags, want) in [
        (
            vec!["--pod-cidr", "10.245.0.1/16"],
            "--pod-cidr \"10.245.0.1/16\": host bits are set",
        ),
        (
            vec!["--nodes", "3", "--pod-cidr", "10.245.0.0/23"],
            "holds 2 /24 podCIDR(s), not one for each of the 3 nodes",
        ),
        (
            vec!["--service-cidr", "10.0.0.0/8"],
            "--service-cidr 10.0.0.0/8: the prefix must be between /12",
        ),
        (
            vec!["--pod-cidr", "10.96.0.0/16"],
            "--pod-cidr 10.96.0.0/16 and --service-cidr 10.96.0.0/12 overlap",
        ),
        (
            vec!["--pod-cidr", "192.168.0.0/16"],
            "overlaps the lab's underlay 192.168.33.0/24",
        ),
        (vec!["--cluster-id", "West_1"], "--cluster-id \"West_1\""),
    ] {
        let lab = TestLab {
            name: common::unique_lab(),
        };
        let mut args = vec!["lab", "up"];
        args.extend_from_slice(&flags);
        let out = lab.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(err.contains(want), "{flags:?}: {err}");
        let prefix = format!("sarasa-{}-", lab.name);
        let netns = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(netns, 0, "{flags:?}: namespaces were made");
        assert!(
            !std::path::Path::new("/var/lib/sarasa")
                .join(&lab.name)
                .exists(),
            "{flags:?}: state was written"
        );
    }
}
