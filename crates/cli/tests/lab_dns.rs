//! Lab end-to-end: cluster DNS as the Kubernetes DNS-Based Service Discovery specification
//! (schema 1.1.0, github.com/kubernetes/dns docs/specification.md) describes it, checked on the
//! wire with the real `dig` run inside pods (each sees the resolv.conf its kubelet wrote) over
//! UDP and TCP, in one 3-node lab whose `lab up` deployed `deploy/dns.yaml` (two `sarasa dns`
//! replicas behind kube-dns at 10.96.0.10) and NSD on the external host.
//!
//! One lab for the file: the sections run in order in one test, each named in its failures.
//! The lab is IPv4-only (`LabSpec` has one IPv4 cluster and service CIDR, `lab up` has no
//! dual-stack flag), so AAAA records of dual-stack Services are not checked here; the server's
//! own suite covers them.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{sarasa_bin, TestLab};

const DNS_IP: &str = "10.96.0.10";
const EXTERNAL_IP: &str = "203.0.113.10";
const WAIT: Duration = Duration::from_secs(30);

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: sarasa/serve
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
  - {name: echo, port: 53, targetPort: 8080, protocol: UDP}
  - {name: alt, port: 81, targetPort: 8080, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  nodeName: node-1
  terminationGracePeriodSeconds: 1
  containers: [{name: db, image: sarasa/serve, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, labels: {app: db}}
spec:
  hostname: db-1
  subdomain: db
  nodeName: node-2
  terminationGracePeriodSeconds: 1
  containers: [{name: db, image: sarasa/serve, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  clusterIP: None
  selector: {app: nothing-matches}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: warming, labels: {app: warming}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: w
    image: sarasa/serve
    ports: [{containerPort: 8080}]
    readinessProbe:
      exec: {command: ["false"]}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: warming-published}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: warming}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: warming-hidden}
spec:
  clusterIP: None
  selector: {app: warming}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: www.example.com
---
apiVersion: v1
kind: Service
metadata: {name: big}
spec:
  clusterIP: None
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: node-3
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: sarasa/serve, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: sarasa/serve, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: node-dns}
spec:
  dnsPolicy: Default
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: sarasa/serve, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: own-dns}
spec:
  dnsPolicy: None
  dnsConfig:
    nameservers: [10.96.0.10]
    searches: [shop.svc.cluster.local]
    options: [{name: ndots, value: "1"}, {name: edns0}]
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: sarasa/serve, ports: [{containerPort: 8080}]}]
"#;

/// A selector-less headless Service's EndpointSlice with `n` ready endpoints (10.244.200.x):
/// an answer far larger than 512 bytes.
fn big_slice(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-1\n  labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nports: [{name: http, port: 80, protocol: TCP}]\nendpoints:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "- {{addresses: [10.244.200.{}], conditions: {{ready: true}}}}\n",
            i + 1
        ));
    }
    s
}

/// `dig` inside `pod` (namespace `ns`) with a 2 s timeout and no retry: one query, one answer.
fn dig_in(lab: &TestLab, ns: &str, pod: &str, args: &[&str]) -> String {
    let mut a = vec!["exec", "-n", ns, pod, "--", "dig", "+time=2", "+tries=1"];
    a.extend_from_slice(args);
    let out = lab.run(&a);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dig(lab: &TestLab, args: &[&str]) -> String {
    dig_in(lab, "default", "client", args)
}

/// Answer-section data of `+short`, sorted.
fn short(lab: &TestLab, transport: &str, name: &str, qtype: &str) -> Vec<String> {
    let text = dig(lab, &[transport, "+short", name, qtype]);
    let mut v: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    v.retain(|l| !l.is_empty() && !l.starts_with(";;"));
    v.sort();
    v
}

fn status(answer: &str) -> &str {
    answer
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("<no header>")
}

/// Records of one section (`ANSWER`, `AUTHORITY`, `ADDITIONAL`) of a full dig reply, as
/// (name, type, data) in lower case.
fn section(answer: &str, name: &str) -> Vec<(String, String, String)> {
    let marker = format!(";; {name} SECTION:");
    let Some(start) = answer.find(&marker) else {
        return Vec::new();
    };
    answer[start + marker.len()..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| {
                (
                    f[0].to_ascii_lowercase(),
                    f[3].to_string(),
                    f[4..].join(" ").to_ascii_lowercase(),
                )
            })
        })
        .collect()
}

fn flags(answer: &str) -> String {
    answer
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("")
        .to_string()
}

fn pod_ip(lab: &TestLab, ns: &str, name: &str) -> String {
    lab.object("pods", ns, name)
        .and_then(|p| p["status"]["podIP"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("pod {ns}/{name} has no IP"))
}

fn cluster_ip(lab: &TestLab, name: &str) -> String {
    lab.object("services", "default", name)
        .and_then(|s| s["spec"]["clusterIP"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("service {name} has no clusterIP"))
}

fn reverse(ip: &str) -> String {
    let mut o: Vec<&str> = ip.split('.').collect();
    o.reverse();
    format!("{}.in-addr.arpa", o.join("."))
}

const TRANSPORTS: [&str; 2] = ["+notcp", "+tcp"];

#[test]
fn cluster_dns_follows_the_specification() {
    let lab = TestLab::up(&["--nodes", "3"]);
    let t0 = Instant::now();
    the_dns_deployment_is_as_a_cluster_has_it(&lab);
    lab.apply_nowait(OBJECTS);
    lab.apply_nowait(&big_slice(120));
    for (ns, name) in [
        ("default", "client"),
        ("shop", "client"),
        ("default", "db-0"),
        ("default", "db-1"),
        ("default", "node-dns"),
        ("default", "own-dns"),
    ] {
        lab.eventually(Duration::from_secs(90), || {
            lab.object("pods", ns, name)
                .filter(|p| {
                    p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .map(|_| ())
        })
        .unwrap_or_else(|| panic!("pod {ns}/{name} never got ready\n{}", lab.logs()));
    }
    resolv_conf_per_dns_policy(&lab);
    schema_version(&lab);
    cluster_ip_service_records(&lab);
    headless_service_records(&lab);
    publish_not_ready_addresses(&lab);
    negative_answers(&lab);
    external_name_and_names_on_the_internet(&lab);
    pod_records(&lab);
    truncation_over_udp_and_the_full_answer_over_tcp(&lab);
    short_names_through_the_search_path(&lab);
    service_changes_resolve_within_a_second(&lab);
    restarting_a_dns_pod_loses_no_query(&lab);
    metrics_count_queries_by_type_and_rcode(&lab);
    eprintln!("lab_dns sections took {:.1}s", t0.elapsed().as_secs_f64());
}

fn the_dns_deployment_is_as_a_cluster_has_it(lab: &TestLab) {
    let svc = lab
        .object("services", "kube-system", "kube-dns")
        .expect("lab up created kube-system/kube-dns");
    assert_eq!(svc["spec"]["clusterIP"], DNS_IP);
    let pods = lab.pods("kube-system", "k8s-app", "kube-dns");
    assert_eq!(pods.len(), 2, "two DNS replicas: {pods:?}");
    let slices = lab.get_json(&["endpointslices", "-n", "kube-system"]);
    let ready: BTreeSet<String> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns")
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .filter_map(|e| e["addresses"][0].as_str().map(String::from))
        .collect();
    let ips: BTreeSet<String> = pods.iter().map(|p| p.1.clone()).collect();
    assert_eq!(ready, ips, "both replicas are ready endpoints of kube-dns");
}

fn resolv_conf_per_dns_policy(lab: &TestLab) {
    let cat =
        |ns: &str, pod: &str| lab.ok(&["exec", "-n", ns, pod, "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(
        cat("default", "client"),
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
        "ClusterFirst"
    );
    assert!(
        cat("shop", "client")
            .starts_with("search shop.svc.cluster.local svc.cluster.local cluster.local\n"),
        "ClusterFirst searches the pod's own namespace first"
    );
    assert_eq!(
        cat("default", "node-dns"),
        format!("nameserver {EXTERNAL_IP}\n"),
        "Default is the node's resolv.conf"
    );
    assert_eq!(
        cat("default", "own-dns"),
        "search shop.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:1 edns0\n",
        "None is only dnsConfig"
    );
    // The DNS pods themselves use dnsPolicy Default: they forward to the node's resolver.
    let dns_pod = &lab.pods("kube-system", "k8s-app", "kube-dns")[0].0;
    assert_eq!(
        cat("kube-system", dns_pod),
        format!("nameserver {EXTERNAL_IP}\n")
    );
    // A pod whose dnsConfig breaks the API's rules is refused, naming the field.
    let err = lab.apply_err(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad-dns}\nspec:\n  dnsPolicy: None\n  containers: [{name: c, image: x}]\n",
    );
    assert!(err.contains("spec.dnsConfig"), "{err}");
    let err = lab.apply_err(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad-dns}\nspec:\n  dnsConfig: {nameservers: [1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4]}\n  containers: [{name: c, image: x}]\n",
    );
    assert!(err.contains("spec.dnsConfig.nameservers"), "{err}");
}

fn schema_version(lab: &TestLab) {
    for t in TRANSPORTS {
        assert_eq!(
            short(lab, t, "dns-version.cluster.local", "TXT"),
            ["\"1.1.0\""],
            "dns-version over {t}"
        );
    }
}

fn cluster_ip_service_records(lab: &TestLab) {
    let ip = cluster_ip(lab, "web");
    for t in TRANSPORTS {
        let full = dig(lab, &[t, "web.default.svc.cluster.local", "A"]);
        assert_eq!(status(&full), "NOERROR", "{full}");
        assert!(
            flags(&full).split(' ').any(|f| f == "aa"),
            "authoritative: {full}"
        );
        assert_eq!(
            section(&full, "ANSWER"),
            [(
                "web.default.svc.cluster.local.".to_string(),
                "A".to_string(),
                ip.clone()
            )],
            "A over {t}"
        );
        // SRV per named port with its protocol; the target is the Service name.
        let srv = dig(lab, &[t, "_http._tcp.web.default.svc.cluster.local", "SRV"]);
        let answers = section(&srv, "ANSWER");
        assert_eq!(answers.len(), 1, "{srv}");
        let data: Vec<&str> = answers[0].2.split(' ').collect();
        assert_eq!(
            &data[2..],
            ["80", "web.default.svc.cluster.local."],
            "{srv}"
        );
        assert!(
            section(&srv, "ADDITIONAL")
                .iter()
                .any(|r| r.0 == "web.default.svc.cluster.local." && r.2 == ip),
            "additional A of the SRV target: {srv}"
        );
        let udp = short(lab, t, "_echo._udp.web.default.svc.cluster.local", "SRV");
        assert_eq!(udp.len(), 1);
        assert!(
            udp[0].ends_with(" 53 web.default.svc.cluster.local."),
            "{udp:?}"
        );
        // The port name with the wrong protocol has no record.
        let wrong = dig(lab, &[t, "_http._udp.web.default.svc.cluster.local", "SRV"]);
        assert!(section(&wrong, "ANSWER").is_empty(), "{wrong}");
        // PTR of the ClusterIP.
        assert_eq!(
            short(lab, t, &reverse(&ip), "PTR"),
            ["web.default.svc.cluster.local."],
            "PTR over {t}"
        );
        // Case-insensitive: the same record for any case, the question echoed as asked.
        let mixed = dig(lab, &[t, "WeB.DeFaUlT.SvC.ClUsTeR.LoCaL", "A"]);
        assert_eq!(status(&mixed), "NOERROR", "{mixed}");
        assert!(
            section(&mixed, "ANSWER").iter().any(|r| r.2 == ip),
            "{mixed}"
        );
        assert!(mixed.contains(";WeB.DeFaUlT.SvC.ClUsTeR.LoCaL."), "{mixed}");
    }
}

fn headless_service_records(lab: &TestLab) {
    let ips: BTreeSet<String> = ["db-0", "db-1"]
        .iter()
        .map(|p| pod_ip(lab, "default", p))
        .collect();
    let db0 = pod_ip(lab, "default", "db-0");
    for t in TRANSPORTS {
        let a: BTreeSet<String> = lab
            .eventually(WAIT, || {
                let v = short(lab, t, "db.default.svc.cluster.local", "A");
                (v.len() == 2).then_some(v)
            })
            .unwrap_or_else(|| panic!("headless A records over {t}"))
            .into_iter()
            .collect();
        assert_eq!(a, ips, "one A per ready endpoint over {t}");
        assert_eq!(
            short(lab, t, "db-0.db.default.svc.cluster.local", "A"),
            [db0.as_str()],
            "hostname record over {t}"
        );
        let srv = short(lab, t, "_pg._tcp.db.default.svc.cluster.local", "SRV");
        let targets: BTreeSet<String> = srv
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f[2], "5432", "{l}");
                f[3].to_string()
            })
            .collect();
        assert_eq!(
            targets,
            BTreeSet::from([
                "db-0.db.default.svc.cluster.local.".to_string(),
                "db-1.db.default.svc.cluster.local.".to_string()
            ]),
            "one SRV per endpoint, targets the hostnames, over {t}"
        );
        assert_eq!(
            short(lab, t, &reverse(&db0), "PTR"),
            ["db-0.db.default.svc.cluster.local."],
            "PTR of an endpoint with a hostname over {t}"
        );
    }
}

fn publish_not_ready_addresses(lab: &TestLab) {
    let ip = lab
        .eventually(WAIT, || {
            lab.object("pods", "default", "warming")
                .and_then(|p| p["status"]["podIP"].as_str().map(String::from))
        })
        .expect("the never-ready pod has an IP");
    let published = lab
        .eventually(WAIT, || {
            let v = short(
                lab,
                "+notcp",
                "warming-published.default.svc.cluster.local",
                "A",
            );
            (!v.is_empty()).then_some(v)
        })
        .expect("publishNotReadyAddresses publishes the not-ready endpoint");
    assert_eq!(published, [ip]);
    let hidden = dig(lab, &["warming-hidden.default.svc.cluster.local", "A"]);
    assert_eq!(status(&hidden), "NOERROR", "the Service exists: {hidden}");
    assert!(
        section(&hidden, "ANSWER").is_empty(),
        "not ready, not published: {hidden}"
    );
}

fn negative_answers(lab: &TestLab) {
    for t in TRANSPORTS {
        let missing = dig(lab, &[t, "missing.default.svc.cluster.local", "A"]);
        assert_eq!(status(&missing), "NXDOMAIN", "{missing}");
        let soa = section(&missing, "AUTHORITY");
        assert!(
            soa.iter().any(|r| r.1 == "SOA" && r.0 == "cluster.local."),
            "SOA of the zone in a negative answer: {missing}"
        );
        // Exists without ready endpoints: NODATA — NOERROR, no answer, the SOA. (The
        // specification's "should be NXDOMAIN" would deny the name's children; RFC 8020.)
        let empty = dig(lab, &[t, "empty.default.svc.cluster.local", "A"]);
        assert_eq!(status(&empty), "NOERROR", "{empty}");
        assert!(section(&empty, "ANSWER").is_empty(), "{empty}");
        assert!(
            section(&empty, "AUTHORITY").iter().any(|r| r.1 == "SOA"),
            "{empty}"
        );
        // A name that exists with another type is NODATA too.
        let aaaa = dig(lab, &[t, "web.default.svc.cluster.local", "AAAA"]);
        assert_eq!(status(&aaaa), "NOERROR", "{aaaa}");
        assert!(section(&aaaa, "ANSWER").is_empty(), "{aaaa}");
        assert!(
            section(&aaaa, "AUTHORITY").iter().any(|r| r.1 == "SOA"),
            "{aaaa}"
        );
        let ns = dig(lab, &[t, "missing-namespace.svc.cluster.local", "A"]);
        assert_eq!(status(&ns), "NXDOMAIN", "{ns}");
    }
}

fn external_name_and_names_on_the_internet(lab: &TestLab) {
    for t in TRANSPORTS {
        let ext = dig(lab, &[t, "ext.default.svc.cluster.local", "A"]);
        assert_eq!(status(&ext), "NOERROR", "{ext}");
        let answers = section(&ext, "ANSWER");
        assert_eq!(
            answers.first().map(|r| (r.1.as_str(), r.2.as_str())),
            Some(("CNAME", "www.example.com.")),
            "ExternalName is a CNAME: {ext}"
        );
        // The resolver follows the CNAME to the internet's name server.
        assert!(
            short(lab, t, "ext.default.svc.cluster.local", "A").contains(&EXTERNAL_IP.to_string()),
            "{ext}"
        );
        assert_eq!(short(lab, t, "www.example.com", "A"), [EXTERNAL_IP]);
        assert_eq!(short(lab, t, "www.example.com", "AAAA"), ["2001:db8::10"]);
        assert_eq!(short(lab, t, "example.com", "MX"), ["10 mail.example.com."]);
        assert_eq!(
            short(lab, t, "info.example.com", "TXT"),
            ["\"sarasa lab internet\""]
        );
        let missing = dig(lab, &[t, "nope.example.com", "A"]);
        assert_eq!(status(&missing), "NXDOMAIN", "{missing}");
    }
    // A Default-policy pod resolves the internet directly through the node's resolver.
    let direct = dig_in(
        lab,
        "default",
        "node-dns",
        &["+short", "www.example.com", "A"],
    );
    assert_eq!(direct.trim(), EXTERNAL_IP);
}

fn pod_records(lab: &TestLab) {
    let ip = pod_ip(lab, "default", "db-1");
    let dashed = ip.replace('.', "-");
    for t in TRANSPORTS {
        assert_eq!(
            short(lab, t, &format!("{dashed}.default.pod.cluster.local"), "A"),
            [ip.as_str()],
            "pod A record over {t}"
        );
        // hostname.subdomain.ns.svc.zone for a pod whose subdomain names a headless Service.
        assert_eq!(
            short(lab, t, "db-1.db.default.svc.cluster.local", "A"),
            [ip.as_str()]
        );
    }
}

fn truncation_over_udp_and_the_full_answer_over_tcp(lab: &TestLab) {
    let udp = lab
        .eventually(WAIT, || {
            let a = dig(
                lab,
                &[
                    "+notcp",
                    "+ignore",
                    "+noedns",
                    "big.default.svc.cluster.local",
                    "A",
                ],
            );
            flags(&a).split(' ').any(|f| f == "tc").then_some(a)
        })
        .expect("a 120-endpoint answer over UDP without EDNS sets TC");
    assert!(section(&udp, "ANSWER").len() < 120, "{udp}");
    let edns = dig(
        lab,
        &[
            "+notcp",
            "+ignore",
            "+bufsize=1232",
            "big.default.svc.cluster.local",
            "A",
        ],
    );
    assert!(
        flags(&edns).split(' ').any(|f| f == "tc"),
        "over the EDNS size too: {edns}"
    );
    let tcp = dig(lab, &["+tcp", "big.default.svc.cluster.local", "A"]);
    assert!(!flags(&tcp).split(' ').any(|f| f == "tc"), "{tcp}");
    assert_eq!(section(&tcp, "ANSWER").len(), 120, "all endpoints over TCP");
    // dig's default (retry over TCP on TC) gets everything too.
    assert_eq!(
        short(lab, "+notcp", "big.default.svc.cluster.local", "A").len(),
        120
    );
}

fn short_names_through_the_search_path(lab: &TestLab) {
    let ip = cluster_ip(lab, "web");
    // dig applies resolv.conf's search list with +search.
    assert_eq!(short(lab, "+search", "web", "A"), [ip.as_str()]);
    assert_eq!(short(lab, "+search", "web.default", "A"), [ip.as_str()]);
    let shop = dig_in(
        lab,
        "shop",
        "client",
        &["+search", "+short", "web.default", "A"],
    );
    assert_eq!(shop.trim(), ip);
    // The libc resolver of an application: `sarasa probe` by short name, from another node.
    let reply = lab
        .eventually(WAIT, || lab.probe("client", "http://web/"))
        .expect("sarasa probe http://web/ by short name");
    assert!(
        reply["pod"]
            .as_str()
            .unwrap_or_default()
            .starts_with("web-"),
        "{reply}"
    );
    let bin = sarasa_bin();
    let out = lab.run(&[
        "exec",
        "-n",
        "shop",
        "client",
        "--",
        bin.to_str().unwrap(),
        "probe",
        "--timeout",
        "3s",
        "http://web.default/",
    ]);
    assert!(
        out.status.success(),
        "web.default from namespace shop: {out:?}"
    );
    // A name on the internet through the search list and ndots:5.
    let ext = lab.probe("client", "http://www.example.com/");
    assert!(
        ext.is_some(),
        "http://www.example.com/ through cluster DNS and NSD"
    );
}

fn service_changes_resolve_within_a_second(lab: &TestLab) {
    let name = "fresh.default.svc.cluster.local";
    assert_eq!(status(&dig(lab, &[name, "A"])), "NXDOMAIN");
    let started = Instant::now();
    lab.apply_nowait(
        "apiVersion: v1\nkind: Service\nmetadata: {name: fresh}\nspec:\n  ports: [{name: http, port: 80}]\n",
    );
    let ip = lab
        .eventually(Duration::from_secs(5), || {
            let v = short(lab, "+notcp", name, "A");
            (!v.is_empty()).then_some(v)
        })
        .expect("a new Service resolves");
    let took = started.elapsed();
    eprintln!(
        "Service created → resolvable: {:.0} ms (incl. the apply)",
        took.as_secs_f64() * 1e3
    );
    assert_eq!(ip, [cluster_ip(lab, "fresh")]);
    assert!(took <= Duration::from_secs(1), "took {took:?}");

    let started = Instant::now();
    lab.ok(&["delete", "service", "fresh"]);
    lab.eventually(Duration::from_secs(5), || {
        (status(&dig(lab, &["+notcp", name, "A"])) == "NXDOMAIN").then_some(())
    })
    .expect("a deleted Service stops resolving");
    let took = started.elapsed();
    eprintln!(
        "Service deleted → NXDOMAIN: {:.0} ms (incl. the delete)",
        took.as_secs_f64() * 1e3
    );
    assert!(took <= Duration::from_secs(1), "took {took:?}");
}

fn restarting_a_dns_pod_loses_no_query(lab: &TestLab) {
    let before = lab.pods("kube-system", "k8s-app", "kube-dns");
    assert_eq!(before.len(), 2);
    // dnsperf in a client pod: 20 sockets (so both replicas get flows through the Service's
    // conntrack entries), 400 queries/s, 5000 queries (~12 s), each waited for up to 2 s; it
    // counts every query without an answer as lost.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("queries.txt");
    std::fs::write(&file, "web.default.svc.cluster.local A\n".repeat(QUERIES)).expect("write");
    let mut cmd = Command::new(sarasa_bin());
    cmd.args([
        "--lab", &lab.name, "exec", "client", "--", "dnsperf", "-s", DNS_IP,
    ])
    .args([
        "-d",
        file.to_str().expect("utf8"),
        "-n",
        "1",
        "-c",
        "20",
        "-Q",
        "400",
        "-t",
        "2",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().expect("dnsperf in the client pod");
    std::thread::sleep(Duration::from_secs(3)); // queries flow to both replicas first
    let victim = &before[0].0;
    lab.ok(&["delete", "pod", victim, "-n", "kube-system"]);
    lab.eventually(Duration::from_secs(60), || {
        let now = lab.pods("kube-system", "k8s-app", "kube-dns");
        let ready = lab
            .object("deployments", "kube-system", "sarasa-dns")
            .and_then(|d| d["status"]["readyReplicas"].as_i64())
            .unwrap_or(0);
        (now.len() == 2 && !now.iter().any(|p| &p.0 == victim) && ready == 2).then_some(())
    })
    .expect("the Deployment replaced the deleted DNS pod");
    let out = child.wait_with_output().expect("dnsperf ends");
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |label: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))?
            .split_whitespace()
            .nth(2)?
            .parse()
            .ok()
    };
    let (sent, completed, lost) = (
        count("Queries sent:"),
        count("Queries completed:"),
        count("Queries lost:"),
    );
    eprintln!("during the DNS pod restart: sent {sent:?}, completed {completed:?}, lost {lost:?}");
    assert_eq!(sent, Some(QUERIES as u64), "dnsperf output:\n{text}");
    assert_eq!(
        lost,
        Some(0),
        "every query answered while one DNS pod restarted:\n{text}"
    );
    assert_eq!(completed, sent, "{text}");
    assert!(
        text.contains(&format!("NOERROR {QUERIES} (100.00%)")),
        "every answer NOERROR:\n{text}"
    );
}

/// Queries of the restart test.
const QUERIES: usize = 5000;

fn metrics_count_queries_by_type_and_rcode(lab: &TestLab) {
    let pods = lab.pods("kube-system", "k8s-app", "kube-dns");
    let scrape = |ip: &str| {
        lab.ok(&[
            "exec",
            "client",
            "--",
            "curl",
            "-sf",
            "--max-time",
            "3",
            &format!("http://{ip}:9153/metrics"),
        ])
    };
    let total = |text: &str, qtype: &str, rcode: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.contains(METRIC_QUERIES))
            .filter(|l| {
                l.contains(&format!("type=\"{qtype}\""))
                    && l.contains(&format!("rcode=\"{rcode}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let sum = |qtype: &str, rcode: &str| -> f64 {
        pods.iter()
            .map(|p| total(&scrape(&p.1), qtype, rcode))
            .sum()
    };
    let (srv0, nx0) = (sum("SRV", "NOERROR"), sum("A", "NXDOMAIN"));
    for _ in 0..5 {
        dig(lab, &["_http._tcp.web.default.svc.cluster.local", "SRV"]);
        dig(lab, &["missing.default.svc.cluster.local", "A"]);
    }
    let (srv1, nx1) = (sum("SRV", "NOERROR"), sum("A", "NXDOMAIN"));
    assert!(srv1 - srv0 >= 5.0, "SRV/NOERROR {srv0} → {srv1}");
    assert!(nx1 - nx0 >= 5.0, "A/NXDOMAIN {nx0} → {nx1}");
}

/// The server's query counter (labels `type` and `rcode`).
const METRIC_QUERIES: &str = "sarasa_dns_queries_total";
