//! GC, STATUS and rollback: a crashed ADD leaves nothing after GC; a failure in the middle of
//! ADD undoes everything it did; STATUS reports 50/51 when the plugin cannot serve.

mod common;

use common::*;
use sarasa_netns::{Route, Scope, Veth};
use serde_json::json;

#[test]
fn gc_releases_invalid_attachments_and_leftover_veths() {
    let node = Node::new("gc");
    let conf = node.conf("1.1.0", "bridge", true);
    let (pa, pb, pc) = (node.pod(1), node.pod(2), node.pod(3));
    let ra = node.add(&conf, "a", &pa, "eth0").ok();
    node.add(&conf, "b", &pb, "eth0").ok();
    // "c" stands for an ADD that crashed after allocating and plumbing: the runtime never
    // learnt of it, so it is not among the valid attachments.
    node.add(&conf, "c", &pc, "eth0").ok();
    // and a veth of this network whose allocation never got written
    let stray = sarasa_cni::naming::host_veth("sarasa-test", "crashed", "eth0");
    node.ns
        .netlink()
        .add_veth(&Veth {
            name: stray.clone(),
            peer_name: "tmp-peer".into(),
            ..Default::default()
        })
        .unwrap();
    // a veth of another network stays
    let other = sarasa_cni::naming::host_veth("other-net", "x", "eth0");
    node.ns
        .netlink()
        .add_veth(&Veth {
            name: other.clone(),
            peer_name: "tmp-peer2".into(),
            ..Default::default()
        })
        .unwrap();

    node.gc(&conf, &[("a", "eth0"), ("b", "eth0")]).ok();
    let left: Vec<String> = node
        .allocations()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["containerId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["a", "b"]);
    let veths = node.host_veths();
    assert_eq!(veths.len(), 3, "{veths:?}");
    assert!(!veths.contains(&stray));
    assert!(
        veths.contains(&other),
        "another network's veth is not ours to collect"
    );
    assert!(pc.netlink().link_by_name("eth0").unwrap().is_none());
    node.check(&conf, &ra, "a", &pa, "eth0").ok();
    // GC is a 1.1.0 operation
    let mut old = conf.clone();
    old["cniVersion"] = json!("1.0.0");
    node.gc(&old, &[]).err(1);
    // the list is required
    let out = node.cni(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf.to_string(),
    );
    let e = out.err(7);
    assert!(e["details"]
        .as_str()
        .unwrap()
        .contains("cni.dev/valid-attachments"));
    assert_eq!(node.allocations().as_array().unwrap().len(), 2);
    // GC with an empty list collects everything of this network
    node.gc(&conf, &[]).ok();
    assert_eq!(node.allocations(), json!([]));
    assert_eq!(node.host_veths(), [other]);
}

#[test]
fn failure_mid_add_rolls_back_routed() {
    let node = Node::new("rbr");
    let conf = node.conf("1.1.0", "routed", true);
    let pod = node.pod(1);
    // Someone else already routes 10.244.7.99/32: the host route step fails after the
    // allocation, the veth pair and the pod's addresses and routes were made.
    let mut nl = node.ns.netlink();
    let lo = nl.link("lo").unwrap();
    nl.route_add(
        &Route::new("10.244.7.99/32".parse().unwrap())
            .dev(lo.index)
            .scope(Scope::Link),
    )
    .unwrap();
    let routes = node.routes();
    let mut c = conf.clone();
    c["runtimeConfig"] = json!({"ips": ["10.244.7.99"]});
    let out = node.add(&c, "c1", &pod, "eth0");
    assert_ne!(out.code, 0);
    out.json();
    assert_eq!(node.allocations(), json!([]), "allocation released");
    assert!(node.host_veths().is_empty(), "veth pair removed");
    assert!(pod.netlink().link_by_name("eth0").unwrap().is_none());
    assert_eq!(node.routes(), routes, "no route left");
    // and the pod can be added normally afterwards
    node.add(&conf, "c1", &pod, "eth0").ok();
}

#[test]
fn failure_mid_add_rolls_back_bridge() {
    let node = Node::new("rbb");
    let conf = node.conf("1.1.0", "bridge", true);
    let pod = node.pod(1);
    // A multicast MAC is well-formed but the kernel refuses it when the pod side is set up,
    // after the allocation and the enslaved veth pair exist.
    let mut c = conf.clone();
    c["runtimeConfig"] = json!({"mac": "01:00:5e:00:00:01"});
    let out = node.add(&c, "c1", &pod, "eth0");
    assert_ne!(out.code, 0);
    assert!(out.json()["code"].as_u64().unwrap() >= 100);
    assert_eq!(node.allocations(), json!([]));
    assert!(node.host_veths().is_empty());
    assert!(pod.netlink().link_by_name("eth0").unwrap().is_none());
    node.add(&conf, "c1", &pod, "eth0").ok();
}

#[test]
fn status_codes() {
    let node = Node::new("st");
    let mut conf = node.conf("1.1.0", "bridge", false);
    // ready: exit 0, nothing printed
    let out = node.status(&conf);
    assert_eq!(out.ok(), serde_json::Value::Null);
    // STATUS is a 1.1.0 operation
    let mut old = conf.clone();
    old["cniVersion"] = json!("1.0.0");
    node.status(&old).err(1);
    // a store that cannot be written: 50
    let mut bad = conf.clone();
    bad["ipam"]["dataDir"] = json!("/proc/sarasa-cannot-write-here");
    node.status(&bad).err(50);
    // unusable ranges: 50
    let mut inval = conf.clone();
    inval["ipam"]["ranges"] = json!([[{"subnet": "10.0.0.1/24"}]]);
    node.status(&inval).err(50);
    // exhausted: /30 has one allocatable address (.2)
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.244.9.0/30"}]]);
    let pod = node.pod(1);
    node.add(&conf, "c1", &pod, "eth0").ok();
    let e = node.status(&conf).err(50);
    assert!(
        e["details"].as_str().unwrap().contains("10.244.9.0/30"),
        "{e}"
    );
    let pod2 = node.pod(2);
    let e = node.add(&conf, "c2", &pod2, "eth0").err(101);
    assert!(
        e["details"].as_str().unwrap().contains("10.244.9.0/30"),
        "names the range: {e}"
    );
    // attachments exist but their bridge is gone: 51
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.244.9.0/29"}]]);
    node.status(&conf).ok();
    let mut nl = node.ns.netlink();
    let br = nl.link("sarasa0").unwrap();
    nl.delete_link(br.index).unwrap();
    node.status(&conf).err(51);
}

#[test]
fn del_detaches_the_pair_at_once_and_a_reaper_unregisters_it() {
    for mode in ["bridge", "routed"] {
        let node = Node::new("reap");
        let conf = node.conf("1.1.0", mode, true);
        let pod = node.pod(1);
        let r = node.add(&conf, "c1", &pod, "eth0").ok();
        let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();
        let index = node.ns.netlink().link(&host).unwrap().index;
        node.del(&conf, "c1", Some(&pod.path()), "eth0").ok();
        // When DEL returns: CNI_IFNAME is free in the pod, the addresses are released, and
        // a host end still unregistering is down, with no route left through it.
        assert!(
            pod.netlink().link_by_name("eth0").unwrap().is_none(),
            "{mode}"
        );
        assert_eq!(node.allocations(), json!([]), "{mode}");
        let routes = node.routes();
        let through = format!("Some({index})");
        assert!(
            !routes.iter().any(|r| r.ends_with(&through)),
            "{mode}: a route through the detached host end: {routes:?}"
        );
        for l in node.host_links() {
            assert!(!l.up, "{mode}: {} still up after DEL", l.name);
        }
        // Then the reaper unregisters the pair: nothing of it on either side, and the node's
        // routes are what they were when DEL returned.
        assert!(node.host_veths().is_empty(), "{mode}");
        assert_eq!(node.routes(), routes, "{mode}");
        assert!(
            node.ns.netlink().link_by_index(index).unwrap().is_none(),
            "{mode}"
        );
        let left: Vec<String> = pod
            .netlink()
            .links()
            .unwrap()
            .into_iter()
            .filter(|l| l.name != "lo")
            .map(|l| l.name)
            .collect();
        assert!(left.is_empty(), "{mode}: {left:?} left in the pod");
        // The same attachment again right after DEL, even with its host end still there.
        node.add(&conf, "c1", &pod, "eth0").ok();
        node.del(&conf, "c1", Some(&pod.path()), "eth0").ok();
        node.add(&conf, "c1", &pod, "eth0").ok();
        node.del(&conf, "c1", Some(&pod.path()), "eth0").ok();
        assert!(node.host_veths().is_empty(), "{mode}");
        assert_eq!(node.allocations(), json!([]), "{mode}");
    }
}

#[test]
fn the_reaper_deletes_only_the_veth_it_was_given() {
    let node = Node::new("reap2");
    let conf = node.conf("1.1.0", "bridge", false);
    let pod = node.pod(1);
    let r = node.add(&conf, "c1", &pod, "eth0").ok();
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    let index = node.ns.netlink().link(&host).unwrap().index;
    let reap = |args: &[&str]| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args);
        sarasa_netns::CommandExt::netns(&mut cmd, &node.ns.ns);
        cmd.output().unwrap()
    };
    // Another name at that index (a later ADD reused the name elsewhere): left alone.
    let out = reap(&["reap-veth", &index.to_string(), "sa-someone-else"]);
    assert!(out.status.success(), "{out:?}");
    assert!(node.ns.netlink().link_by_index(index).unwrap().is_some());
    // Bad arguments: a usage error, nothing deleted.
    for bad in [
        vec!["reap-veth"],
        vec!["reap-veth", "x", &host],
        vec!["reap-veth", "1", "2", "3"],
    ] {
        let out = reap(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("reap-veth"));
    }
    assert!(node.ns.netlink().link_by_index(index).unwrap().is_some());
    // Its own veth: deleted, the pod's end with it; again: nothing to do.
    for _ in 0..2 {
        let out = reap(&["reap-veth", &index.to_string(), &host]);
        assert!(out.status.success(), "{out:?}");
    }
    assert!(node.ns.netlink().link_by_index(index).unwrap().is_none());
    assert!(pod.netlink().link_by_name("eth0").unwrap().is_none());
    node.del(&conf, "c1", Some(&pod.path()), "eth0").ok();
    assert_eq!(node.allocations(), json!([]));
}
