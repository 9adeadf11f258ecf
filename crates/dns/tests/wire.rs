//! The specification's records on the wire: the real `dig` against `sarasa dns`'s server in a
//! test network namespace, fed by a real (in-process lab) API server, over UDP and TCP.

mod common;

use std::time::Duration;

use common::{dig, poll, Fixture};
use serde_json::json;

fn cluster() -> (Fixture, String) {
    let fx = Fixture::start("wire", common::settings(vec![]));
    fx.create("Namespace", "", json!({"metadata": {"name": "db"}}));
    fx.create(
        "Service",
        "default",
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    );
    fx.create(
        "Service",
        "db",
        json!({"metadata": {"name": "pets"}, "spec": {"clusterIP": "None", "selector": {"app": "pets"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
    );
    fx.create(
        "Service",
        "db",
        json!({"metadata": {"name": "empty"}, "spec": {"clusterIP": "None", "selector": {"app": "none"},
            "ports": [{"port": 80}]}}),
    );
    fx.create(
        "Service",
        "default",
        json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "www.example.com"}}),
    );
    let sub = json!({"hostname": "pet-0", "subdomain": "pets", "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080}]}]});
    fx.pod(
        "db",
        "pet-0",
        "10.244.1.5",
        json!({"app": "pets"}),
        sub,
        true,
    );
    let plain =
        json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080}]}]});
    fx.pod(
        "db",
        "pet-1",
        "10.244.2.6",
        json!({"app": "pets"}),
        plain.clone(),
        true,
    );
    fx.pod(
        "db",
        "sick",
        "10.244.3.7",
        json!({"app": "pets"}),
        plain,
        false,
    );
    let ip = fx.cluster_ip("default", "web");
    // The EndpointSlice controller and the feed are asynchronous: wait for the last object.
    poll(Duration::from_secs(10), "pets endpoints", || {
        dig(&fx.ns, &["pets.db.svc.cluster.local", "A"])
            .answer
            .len()
            == 2
    });
    (fx, ip)
}

fn reverse(ip: &str) -> String {
    let mut o: Vec<&str> = ip.split('.').collect();
    o.reverse();
    format!("{}.in-addr.arpa", o.join("."))
}

#[test]
fn specification_records_over_udp_and_tcp() {
    let (fx, web_ip) = cluster();
    for transport in ["+notcp", "+tcp"] {
        let q = |args: &[&str]| {
            let mut a = args.to_vec();
            a.push(transport);
            dig(&fx.ns, &a)
        };
        let t = transport;

        let d = q(&["dns-version.cluster.local", "TXT"]);
        assert_eq!(d.data("TXT"), ["\"1.1.0\""], "{t} {}", d.raw);

        // ClusterIP Service: A, authoritative, the configured TTL; case-insensitive, the
        // question echoed in the client's case.
        let d = q(&["web.default.svc.cluster.local", "A"]);
        assert_eq!(
            (d.status.as_str(), d.data("A")),
            ("NOERROR", vec![web_ip.clone()]),
            "{t} {}",
            d.raw
        );
        assert!(d.has_flag("aa") && d.has_flag("qr"), "{t} {:?}", d.flags);
        assert_eq!(d.answer[0].ttl, 30);
        let d = q(&["WeB.DeFault.SVC.Cluster.Local", "A"]);
        assert_eq!(d.data("A"), std::slice::from_ref(&web_ip), "{t}");
        assert!(
            d.question[0].starts_with("WeB.DeFault.SVC.Cluster.Local."),
            "{t} {:?}",
            d.question
        );

        // SRV for named ports (protocol in the name), the Service's A in Additional.
        let d = q(&["_http._tcp.web.default.svc.cluster.local", "SRV"]);
        assert_eq!(
            d.data("SRV"),
            ["0 100 80 web.default.svc.cluster.local."],
            "{t} {}",
            d.raw
        );
        assert!(
            d.additional
                .iter()
                .any(|r| r.rtype == "A" && r.data == web_ip),
            "{t} {}",
            d.raw
        );
        let d = q(&["_dns._udp.web.default.svc.cluster.local", "SRV"]);
        assert_eq!(
            d.data("SRV"),
            ["0 100 53 web.default.svc.cluster.local."],
            "{t}"
        );
        assert_eq!(
            q(&["_dns._tcp.web.default.svc.cluster.local", "SRV"]).status,
            "NXDOMAIN"
        );

        // PTR of the ClusterIP and of a headless endpoint.
        let d = q(&[&reverse(&web_ip), "PTR"]);
        assert_eq!(
            d.data("PTR"),
            ["web.default.svc.cluster.local."],
            "{t} {}",
            d.raw
        );
        let d = q(&["-x", "10.244.1.5"]);
        assert_eq!(
            d.data("PTR"),
            ["pet-0.pets.db.svc.cluster.local."],
            "{t} {}",
            d.raw
        );

        // Headless: ready endpoints only; hostname records; SRV per endpoint and port.
        let d = q(&["pets.db.svc.cluster.local", "A"]);
        assert_eq!(d.data("A"), ["10.244.1.5", "10.244.2.6"], "{t} {}", d.raw);
        let d = q(&["pet-0.pets.db.svc.cluster.local", "A"]);
        assert_eq!(d.data("A"), ["10.244.1.5"], "{t} {}", d.raw);
        let d = q(&["_http._tcp.pets.db.svc.cluster.local", "SRV"]);
        assert_eq!(
            d.data("SRV"),
            [
                "0 100 8080 10-244-2-6.pets.db.svc.cluster.local.",
                "0 100 8080 pet-0.pets.db.svc.cluster.local."
            ],
            "{t} {}",
            d.raw
        );
        let mut extra: Vec<String> = d
            .additional
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        extra.sort();
        assert_eq!(
            extra,
            [
                "10-244-2-6.pets.db.svc.cluster.local. 10.244.2.6",
                "pet-0.pets.db.svc.cluster.local. 10.244.1.5"
            ],
            "{t}"
        );
        assert_eq!(
            q(&["sick.pets.db.svc.cluster.local", "A"]).status,
            "NXDOMAIN",
            "{t}"
        );

        // NODATA vs NXDOMAIN, with the SOA (minimum = negative TTL) in Authority.
        for (name, qtype, status) in [
            ("empty.db.svc.cluster.local", "A", "NOERROR"),
            ("web.default.svc.cluster.local", "MX", "NOERROR"),
            ("web.default.svc.cluster.local", "TYPE65280", "NOERROR"),
            ("db.svc.cluster.local", "A", "NOERROR"),
            ("svc.cluster.local", "A", "NOERROR"),
            ("nope.db.svc.cluster.local", "A", "NXDOMAIN"),
            ("nope.svc.cluster.local", "A", "NXDOMAIN"),
        ] {
            let d = q(&[name, qtype]);
            assert_eq!(d.status, status, "{t} {name} {qtype} {}", d.raw);
            assert!(d.answer.is_empty(), "{t} {name} {}", d.raw);
            let soa = d
                .authority
                .iter()
                .find(|r| r.rtype == "SOA")
                .unwrap_or_else(|| panic!("{t} {name}: no SOA {}", d.raw));
            assert_eq!(soa.name, "cluster.local.");
            assert!(soa.data.ends_with(" 30"), "SOA minimum {}", soa.data);
            assert!(d.has_flag("aa"), "{t} {name}");
        }

        // ExternalName: a CNAME (no upstream here, so nothing follows it).
        let d = q(&["ext.default.svc.cluster.local", "A"]);
        assert_eq!(d.data("CNAME"), ["www.example.com."], "{t} {}", d.raw);

        // Pod records (verified: the pod exists in that namespace).
        let d = q(&["10-244-1-5.db.pod.cluster.local", "A"]);
        assert_eq!(d.data("A"), ["10.244.1.5"], "{t} {}", d.raw);
        assert_eq!(
            q(&["10-244-1-5.default.pod.cluster.local", "A"]).status,
            "NXDOMAIN",
            "{t}"
        );

        // No upstreams: names outside the zone are refused, recursion not offered.
        let d = q(&["example.com", "A"]);
        assert_eq!(d.status, "REFUSED", "{t} {}", d.raw);
        assert!(!d.has_flag("ra"), "{t}");
    }
    let (code, metrics) = fx.http_get("/metrics");
    assert_eq!(code, 200);
    for want in [
        "sarasa_dns_queries_total{type=\"SRV\",rcode=\"NOERROR\",source=\"cluster\"}",
        "sarasa_dns_queries_total{type=\"A\",rcode=\"NXDOMAIN\",source=\"cluster\"}",
        "sarasa_dns_snapshot_generation ",
        "sarasa_dns_snapshot_records ",
        "sarasa_dns_upstream_duration_seconds_bucket",
        "sarasa_dns_cache_hits_total",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    assert_eq!(fx.http_get("/healthz").0, 200);

    // The fast path counts what it answers: five UDP queries, five more on the counter.
    let counter = |fx: &Fixture| -> u64 {
        let key = "sarasa_dns_queries_total{type=\"SRV\",rcode=\"NOERROR\",source=\"cluster\"} ";
        let (_, text) = fx.http_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} missing:\n{text}"))
    };
    let before = counter(&fx);
    for _ in 0..5 {
        let d = common::dig(
            &fx.ns,
            &["_http._tcp.web.default.svc.cluster.local", "SRV", "+notcp"],
        );
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
    }
    assert_eq!(counter(&fx), before + 5);
}

#[test]
fn service_changes_are_answered_within_a_second() {
    let fx = Fixture::start("change", common::settings(vec![]));
    let name = "late.default.svc.cluster.local";
    assert_eq!(dig(&fx.ns, &[name, "A"]).status, "NXDOMAIN");
    let t = std::time::Instant::now();
    fx.create(
        "Service",
        "default",
        json!({"metadata": {"name": "late"}, "spec": {"ports": [{"port": 80}]}}),
    );
    let created = t.elapsed();
    let ip = fx.cluster_ip("default", "late");
    poll(Duration::from_secs(1), "created Service resolves", || {
        dig(&fx.ns, &[name, "A"]).data("A") == [ip.clone()]
    });
    let appeared = t.elapsed();
    let t = std::time::Instant::now();
    fx.delete_service("default", "late");
    poll(
        Duration::from_secs(1),
        "deleted Service stops resolving",
        || dig(&fx.ns, &[name, "A"]).status == "NXDOMAIN",
    );
    let gone = t.elapsed();
    assert!(appeared < Duration::from_secs(1) && gone < Duration::from_secs(1));
    eprintln!(
        "API write → answer: created {appeared:?} (create call {created:?}), deleted {gone:?}; \
         each includes dig process runs"
    );
}

#[test]
fn readyz_is_503_until_the_first_sync_and_healthz_200_while_serving() {
    // An API server that is not there: the server runs, answers, but is never ready.
    let ns = common::TestNs::new("unready");
    let rt = ns.enter(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.spawn(async {
            let client = sarasa_dns::server::client(Some("http://127.0.0.1:1"))
                .await
                .unwrap();
            sarasa_dns::server::run(common::settings(vec![]), client).await
        });
        rt
    });
    let get = |path: &'static str| {
        let h = rt.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(mut s) = tokio::net::TcpStream::connect("127.0.0.1:9153").await else {
                return String::new();
            };
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        });
        rt.block_on(h).unwrap()
    };
    poll(Duration::from_secs(10), "healthz", || {
        get("/healthz").starts_with("HTTP/1.0 200")
    });
    assert!(
        get("/readyz").starts_with("HTTP/1.0 503"),
        "{}",
        get("/readyz")
    );
    // It serves the zone's fixed names meanwhile.
    let d = dig(&ns, &["dns-version.cluster.local", "TXT"]);
    assert_eq!(d.data("TXT"), ["\"1.1.0\""], "{}", d.raw);
    rt.shutdown_timeout(Duration::from_secs(2));
}
