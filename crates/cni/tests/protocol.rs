//! The CNI protocol as the spec (1.1.0) and the reference library define it: environment
//! rules, config decoding, version negotiation, error codes and JSON, result shapes per
//! version, ADD/CHECK/DEL semantics. Runs the built binary inside a test "node" namespace.

mod common;

use common::*;
use serde_json::{json, Value};

const STD_ENV: [(&str, &str); 4] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "ctr1"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];

fn env_with(pod: &Ns, overrides: &[(&'static str, Option<&'static str>)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = STD_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("CNI_NETNS".into(), pod.path()));
    for (k, v) in overrides {
        env.retain(|(ek, _)| ek != k);
        if let Some(v) = v {
            env.push((k.to_string(), v.to_string()));
        }
    }
    env
}

fn run(node: &Node, env: &[(String, String)], stdin: &str) -> Out {
    let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    node.cni(&e, stdin)
}

#[test]
fn version_reports_supported_versions_and_ignores_stdin() {
    for stdin in ["", "{not json", r#"{"cniVersion":"1.1.0"}"#] {
        let out = run_in(None, &[("CNI_COMMAND", "VERSION")], stdin);
        let v = out.ok();
        assert_eq!(v["cniVersion"], "1.1.0");
        let sup: Vec<&str> = v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(sup, ["0.4.0", "1.0.0", "1.1.0"]);
    }
}

#[test]
fn missing_environment_is_code_4_naming_the_variables() {
    let node = Node::new("envm");
    let pod = node.pod(1);
    let conf = node.conf("1.1.0", "bridge", false).to_string();
    // Every variable ADD requires, one at a time.
    for var in [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_PATH",
    ] {
        let out = run(&node, &env_with(&pod, &[(var, None)]), &conf);
        let e = out.err(4);
        assert!(e["msg"].as_str().unwrap().contains(var), "{var}: {e}");
    }
    // Empty is missing too.
    let out = run(&node, &env_with(&pod, &[("CNI_IFNAME", Some(""))]), &conf);
    assert!(out.err(4)["msg"].as_str().unwrap().contains("CNI_IFNAME"));
    // CHECK needs the netns; DEL does not; GC and STATUS need CNI_PATH.
    let out = run(
        &node,
        &env_with(&pod, &[("CNI_COMMAND", Some("CHECK")), ("CNI_NETNS", None)]),
        &conf,
    );
    assert!(out.err(4)["msg"].as_str().unwrap().contains("CNI_NETNS"));
    for cmd in ["GC", "STATUS"] {
        let out = node.cni(&[("CNI_COMMAND", cmd)], &conf);
        assert!(
            out.err(4)["msg"].as_str().unwrap().contains("CNI_PATH"),
            "{cmd}"
        );
    }
    for cmd in ["DEL", "CHECK"] {
        let out = run(
            &node,
            &env_with(
                &pod,
                &[("CNI_COMMAND", Some(cmd)), ("CNI_CONTAINERID", None)],
            ),
            &conf,
        );
        assert!(out.err(4)["msg"]
            .as_str()
            .unwrap()
            .contains("CNI_CONTAINERID"));
    }
    // Unknown command.
    let out = run(
        &node,
        &env_with(&pod, &[("CNI_COMMAND", Some("FROB"))]),
        &conf,
    );
    assert!(out.err(4)["msg"].as_str().unwrap().contains("FROB"));
}

#[test]
fn container_id_and_ifname_rules_are_code_4() {
    let node = Node::new("envv");
    let pod = node.pod(1);
    let conf = node.conf("1.1.0", "bridge", false).to_string();
    for bad in ["-lead", "_lead", "has space", "a/b", "a:b", "ünï"] {
        let out = run(
            &node,
            &env_with(&pod, &[("CNI_CONTAINERID", Some(bad))]),
            &conf,
        );
        let e = out.err(4);
        assert!(
            e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
            "{bad}: {e}"
        );
    }
    for bad in [".", "..", "eth/0", "eth:0", "eth 0", "0123456789abcdef"] {
        let out = run(&node, &env_with(&pod, &[("CNI_IFNAME", Some(bad))]), &conf);
        let e = out.err(4);
        assert!(
            e["msg"].as_str().unwrap().contains("CNI_IFNAME"),
            "{bad:?}: {e}"
        );
    }
    // Nothing was created by any of these.
    assert!(node.host_veths().is_empty());
    assert_eq!(node.allocations(), json!([]));
}

#[test]
fn config_decoding_and_validation_codes() {
    let node = Node::new("conf");
    let pod = node.pod(1);
    let env = env_with(&pod, &[]);
    let base = node.conf("1.1.0", "bridge", false);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        f(&mut c);
        c.to_string()
    };
    // malformed JSON: 6
    run(&node, &env, "{\"cniVersion\": ").err(6);
    run(&node, &env, "").err(6);
    // network name: 7
    run(
        &node,
        &env,
        &with(&|c| {
            c.as_object_mut().unwrap().remove("name");
        }),
    )
    .err(7);
    run(&node, &env, &with(&|c| c["name"] = json!("-bad name"))).err(7);
    // versions: unsupported 1, not a version 6, missing means 0.1.0 (unsupported) 1
    for v in ["0.3.1", "0.2.0", "2.0.0"] {
        let e = run(&node, &env, &with(&|c| c["cniVersion"] = json!(v))).err(1);
        assert!(e["details"].as_str().unwrap().contains(v), "{e}");
    }
    run(&node, &env, &with(&|c| c["cniVersion"] = json!("one"))).err(6);
    run(
        &node,
        &env,
        &with(&|c| {
            c.as_object_mut().unwrap().remove("cniVersion");
        }),
    )
    .err(1);
    // wrong JSON types: 6
    run(&node, &env, &with(&|c| c["mtu"] = json!("big"))).err(6);
    run(
        &node,
        &env,
        &with(&|c| c["ipam"]["ranges"] = json!("10.0.0.0/24")),
    )
    .err(6);
    // invalid values: 7 (ranges, mtu, bridge name, missing ipam, missing type)
    run(
        &node,
        &env,
        &with(&|c| c["ipam"]["ranges"] = json!([[{"subnet": "10.0.0.1/24"}]])),
    )
    .err(7);
    run(
        &node,
        &env,
        &with(&|c| c["ipam"]["ranges"] = json!([[{"subnet": "10.0.0.0/31"}]])),
    )
    .err(7);
    run(&node, &env, &with(&|c| c["ipam"]["ranges"] = json!([]))).err(7);
    run(&node, &env, &with(&|c| c["mtu"] = json!(10))).err(7);
    run(
        &node,
        &env,
        &with(&|c| c["bridge"] = json!("bridge/with/slash")),
    )
    .err(7);
    run(
        &node,
        &env,
        &with(&|c| {
            c.as_object_mut().unwrap().remove("ipam");
        }),
    )
    .err(7);
    run(
        &node,
        &env,
        &with(&|c| {
            c.as_object_mut().unwrap().remove("type");
        }),
    )
    .err(7);
    // unsupported field value: 2, naming key and value
    let e = run(&node, &env, &with(&|c| c["mode"] = json!("vxlan"))).err(2);
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("mode") && msg.contains("vxlan"), "{e}");
    // errors are reported in the config's version
    let e = run(&node, &env, &{
        let mut c = node.conf("1.0.0", "bridge", false);
        c["mtu"] = json!(10);
        c.to_string()
    })
    .err(7);
    assert_eq!(e["cniVersion"], "1.0.0");
    // nothing was created
    assert!(node.host_veths().is_empty());
    assert_eq!(node.allocations(), json!([]));
}

#[test]
fn netns_problems() {
    let node = Node::new("nsp");
    let pod = node.pod(1);
    let conf = node.conf("1.1.0", "bridge", false).to_string();
    // does not exist: 3
    let out = run(
        &node,
        &env_with(
            &pod,
            &[("CNI_NETNS", Some("/run/netns/sarasa-does-not-exist"))],
        ),
        &conf,
    );
    out.err(3);
    // not a namespace: 4, naming CNI_NETNS
    let out = run(
        &node,
        &env_with(&pod, &[("CNI_NETNS", Some("/etc/hostname"))]),
        &conf,
    );
    assert!(out.err(4)["details"]
        .as_str()
        .unwrap()
        .contains("CNI_NETNS"));
    // the plugin's own namespace: 4
    let own = node.ns.path();
    let mut env = env_with(&pod, &[]);
    env.retain(|(k, _)| k != "CNI_NETNS");
    env.push(("CNI_NETNS".into(), own));
    run(&node, &env, &conf).err(4);
    assert_eq!(node.allocations(), json!([]), "failed ADDs hold no address");
}

fn assert_result_shape(r: &Value, version: &str, pod: &Ns, dual: bool) {
    assert_eq!(r["cniVersion"], version);
    let ifaces = r["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 2);
    let host = &ifaces[0];
    let ctr = &ifaces[1];
    assert_eq!(host["name"].as_str().unwrap().len(), 15);
    assert!(host.get("sandbox").is_none());
    assert_eq!(ctr["name"], "eth0");
    assert_eq!(ctr["sandbox"], pod.path());
    for i in [host, ctr] {
        let mac = i["mac"].as_str().unwrap();
        assert!(mac.parse::<sarasa_model::MacAddr>().is_ok(), "{mac}");
        assert_eq!(i.get("mtu").is_some(), version == "1.1.0", "{i}");
    }
    let ips = r["ips"].as_array().unwrap();
    assert_eq!(ips.len(), if dual { 2 } else { 1 });
    for ip in ips {
        assert_eq!(ip["interface"], 1);
        assert!(ip["gateway"].is_string());
        assert_eq!(ip.get("version").is_some(), version == "0.4.0", "{ip}");
        if version == "0.4.0" {
            let fam = if ip["address"].as_str().unwrap().contains(':') {
                "6"
            } else {
                "4"
            };
            assert_eq!(ip["version"], fam);
        }
    }
    assert_eq!(r["routes"].as_array().unwrap().len(), ips.len());
    assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
}

#[test]
fn add_check_del_for_every_version_and_mode() {
    let node = Node::new("acd");
    let mut n = 0;
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        for mode in ["bridge", "routed"] {
            n += 1;
            let pod = node.pod(n);
            let conf = node.conf(version, mode, true);
            let id = format!("ctr-{n}");
            let r = node.add(&conf, &id, &pod, "eth0").ok();
            assert_result_shape(&r, version, &pod, true);
            // the interface is in the pod with the result's MAC and addresses
            let mut pnl = pod.netlink();
            let eth0 = pnl.link("eth0").unwrap();
            assert_eq!(
                eth0.mac.map(|m| m.to_string()).unwrap_or_default(),
                r["interfaces"][1]["mac"]
            );
            assert_eq!(eth0.mtu, 1450);
            let addrs: Vec<String> = pnl
                .addrs(Some(eth0.index), None)
                .unwrap()
                .iter()
                .map(|a| a.net.to_string())
                .collect();
            for ip in r["ips"].as_array().unwrap() {
                assert!(addrs.contains(&ip["address"].as_str().unwrap().to_string()));
            }
            let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();
            assert!(node.host_veths().contains(&host));

            node.check(&conf, &r, &id, &pod, "eth0").ok();
            // DEL with prevResult, then again: both succeed
            let mut del_conf = conf.clone();
            del_conf["prevResult"] = r.clone();
            assert_eq!(
                node.del(&del_conf, &id, Some(&pod.path()), "eth0").ok(),
                Value::Null
            );
            node.del(&del_conf, &id, Some(&pod.path()), "eth0").ok();
            assert!(pod.netlink().link_by_name("eth0").unwrap().is_none());
            assert!(!node.host_veths().contains(&host));
        }
    }
    assert_eq!(node.allocations(), json!([]));
}

#[test]
fn check_requires_prev_result_and_detects_drift() {
    let node = Node::new("chk");
    let pod = node.pod(1);
    let conf = node.conf("1.1.0", "bridge", true);
    let r = node.add(&conf, "c1", &pod, "eth0").ok();
    node.check(&conf, &r, "c1", &pod, "eth0").ok();
    // no prevResult: invalid config
    let out = node.cni(
        &[
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", &pod.path()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &conf.to_string(),
    );
    out.err(7);
    // CHECK is not defined before 0.4.0 (and 0.3.x is not accepted at all)
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.3.1");
    node.check(&old, &r, "c1", &pod, "eth0").err(1);
    // drift: an address removed from the pod
    let v4 = r["ips"][0]["address"].as_str().unwrap().parse().unwrap();
    let mut pnl = pod.netlink();
    let eth0 = pnl.link("eth0").unwrap();
    pnl.addr_del(eth0.index, v4).unwrap();
    let e = node.check(&conf, &r, "c1", &pod, "eth0").err(104);
    assert!(e["details"].as_str().unwrap().contains("missing"), "{e}");
    pnl.addr_add(eth0.index, v4).unwrap();
    // the default route was removed when the address went; CHECK sees the missing route
    let e = node.check(&conf, &r, "c1", &pod, "eth0").err(104);
    assert!(e["details"].as_str().unwrap().contains("route"), "{e}");
    // drift: host veth detached from the bridge
    let mut pnl2 = pod.netlink();
    let gw = r["ips"][0]["gateway"].as_str().unwrap().parse().unwrap();
    pnl2.route_add(&sarasa_netns::Route::default_via(gw).dev(eth0.index))
        .unwrap();
    node.check(&conf, &r, "c1", &pod, "eth0").ok();
    let mut nnl = node.ns.netlink();
    let host = nnl
        .link(r["interfaces"][0]["name"].as_str().unwrap())
        .unwrap();
    nnl.set_master(host.index, 0).unwrap();
    node.check(&conf, &r, "c1", &pod, "eth0").err(104);
    // drift: the reservation is gone
    let bridge = nnl.link("sarasa0").unwrap();
    nnl.set_master(host.index, bridge.index).unwrap();
    node.check(&conf, &r, "c1", &pod, "eth0").ok();
    node.gc(&conf, &[]).ok();
    let e = node.check(&conf, &r, "c1", &pod, "eth0").err(104);
    assert!(!e["details"].as_str().unwrap().is_empty());
}

#[test]
fn add_twice_fails_and_changes_nothing() {
    let node = Node::new("twice");
    let pod = node.pod(1);
    let conf = node.conf("1.1.0", "bridge", true);
    let r = node.add(&conf, "c1", &pod, "eth0").ok();
    let before = node.allocations();
    let veths = node.host_veths();
    let out = node.add(&conf, "c1", &pod, "eth0");
    assert_ne!(out.code, 0);
    let e = out.json();
    assert!(e["code"].as_u64().unwrap() >= 100, "{e}");
    assert_eq!(node.allocations(), before);
    assert_eq!(node.host_veths(), veths);
    node.check(&conf, &r, "c1", &pod, "eth0").ok();
    // the same container on another interface is a separate attachment
    let r2 = node.add(&conf, "c1", &pod, "net1").ok();
    assert_eq!(r2["interfaces"][1]["name"], "net1");
    assert_ne!(r2["ips"][0]["address"], r["ips"][0]["address"]);
    assert_ne!(r2["interfaces"][0]["name"], r["interfaces"][0]["name"]);
}

#[test]
fn del_is_idempotent_without_add_netns_or_prev_result() {
    let node = Node::new("delidem");
    let conf = node.conf("1.1.0", "routed", true);
    // never added
    node.del(&conf, "ghost", None, "eth0").ok();
    node.del(&conf, "ghost", Some("/run/netns/sarasa-no-such-ns"), "eth0")
        .ok();
    // netns deleted before DEL: resources are still released
    let pod = node.pod(1);
    let r = node.add(&conf, "c1", &pod, "eth0").ok();
    let path = pod.path();
    drop(pod);
    node.del(&conf, "c1", Some(&path), "eth0").ok();
    node.del(&conf, "c1", Some(&path), "eth0").ok();
    assert_eq!(node.allocations(), json!([]));
    assert!(!node
        .host_veths()
        .contains(&r["interfaces"][0]["name"].as_str().unwrap().to_string()));
    // DEL without CNI_NETNS releases too
    let pod = node.pod(2);
    node.add(&conf, "c2", &pod, "eth0").ok();
    node.del(&conf, "c2", None, "eth0").ok();
    assert_eq!(node.allocations(), json!([]));
    assert!(node.host_veths().is_empty());
    assert!(pod.netlink().link_by_name("eth0").unwrap().is_none());
}

#[test]
fn prev_result_is_passed_through_and_extended() {
    let node = Node::new("chain");
    let pod = node.pod(1);
    let mut conf = node.conf("1.0.0", "bridge", false);
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "sandbox": pod.path()}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}],
        "dns": {"nameservers": ["1.1.1.1"]}
    });
    let r = node.add(&conf, "c1", &pod, "eth0").ok();
    let ifaces = r["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3);
    assert_eq!(ifaces[0]["name"], "lo");
    assert_eq!(r["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(
        r["ips"][1]["interface"], 2,
        "our indexes shift past prevResult's"
    );
    assert_eq!(r["ips"][1]["gateway"], "10.244.7.1");
    assert_eq!(r["dns"]["nameservers"][0], "1.1.1.1", "earlier DNS kept");
}

#[test]
fn runtime_config_ips_mac_and_dns() {
    let node = Node::new("rtc");
    let pod = node.pod(1);
    let mut conf = node.conf("1.1.0", "bridge", true);
    conf["capabilities"] = json!({"ips": true, "mac": true, "dns": true});
    conf["runtimeConfig"] = json!({
        "ips": ["10.244.7.77/24", "fd00:10:244:7::77"],
        "mac": "0a:58:0a:f4:07:4d",
        "dns": {"servers": ["10.96.0.53"], "searches": ["ns.svc.cluster.local"]},
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    });
    let r = node.add(&conf, "c1", &pod, "eth0").ok();
    assert_eq!(r["ips"][0]["address"], "10.244.7.77/24");
    assert_eq!(r["ips"][1]["address"], "fd00:10:244:7::77/64");
    assert_eq!(r["interfaces"][1]["mac"], "0a:58:0a:f4:07:4d");
    assert_eq!(
        pod.netlink()
            .link("eth0")
            .unwrap()
            .mac
            .map(|m| m.to_string())
            .unwrap_or_default(),
        "0a:58:0a:f4:07:4d"
    );
    assert_eq!(r["dns"]["nameservers"][0], "10.96.0.53");
    assert_eq!(r["dns"]["search"][0], "ns.svc.cluster.local");
    // the same address for another pod: refused, nothing held
    let pod2 = node.pod(2);
    let mut c2 = conf.clone();
    c2["runtimeConfig"] = json!({"ips": ["10.244.7.77"]});
    node.add(&c2, "c2", &pod2, "eth0").err(102);
    assert_eq!(node.allocations().as_array().unwrap().len(), 1);
    assert!(pod2.netlink().link_by_name("eth0").unwrap().is_none());
}

#[test]
fn errors_go_to_stdout_as_json_logs_never() {
    let node = Node::new("io");
    let pod = node.pod(1);
    let conf = node.conf("1.1.0", "bridge", false);
    let ok = node.add(&conf, "c1", &pod, "eth0");
    // stdout is exactly one JSON document
    let _: Value = serde_json::from_str(ok.stdout.trim()).unwrap();
    assert_eq!(ok.stdout.trim().lines().count(), 1);
    let bad = node.add(&conf, "c1", &pod, "eth0");
    let _: Value = serde_json::from_str(bad.stdout.trim()).unwrap();
    assert!(!bad.stderr.is_empty(), "the error is also logged on stderr");
    // GC and STATUS print nothing on success
    assert!(node.status(&conf).stdout.is_empty());
    assert!(node.gc(&conf, &[("c1", "eth0")]).stdout.is_empty());
}

#[test]
fn example_conflist_works_as_a_runtime_uses_it() {
    let node = Node::new("example");
    let pod = node.pod(1);
    let list: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/cni/10-sarasa.conflist"
        ))
        .unwrap(),
    )
    .unwrap();
    // What libcni sends: the plugin object plus the list's name and chosen version.
    let mut conf = list["plugins"][0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["ipam"]["dataDir"] = json!(node.data_dir());
    let r = node.add(&conf, "c1", &pod, "eth0").ok();
    assert_eq!(r["ips"][0]["address"], "10.244.1.2/24");
    assert_eq!(r["ips"][1]["address"], "fd00:10:244:1::2/64");
    assert_eq!(r["dns"]["options"][0], "ndots:5");
    node.check(&conf, &r, "c1", &pod, "eth0").ok();
    node.status(&conf).ok();
    node.del(&conf, "c1", Some(&pod.path()), "eth0").ok();
}
