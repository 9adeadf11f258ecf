//! Volume: 200 sequential ADD+DEL leave nothing behind; 50 concurrent ADDs get 50 distinct
//! addresses without error (separate plugin processes sharing the IPAM store).

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::json;

fn files_in(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sequential(mode: &str, tag: &str) {
    let node = Node::new(tag);
    let conf = node.conf("1.1.0", mode, true);
    let pod = node.pod(1);
    // Warm up once so shared node state (the bridge in bridge mode) exists in the baseline.
    node.add(&conf, "warm", &pod, "eth0").ok();
    node.del(&conf, "warm", Some(&pod.path()), "eth0").ok();
    // (DEL's reaper unregisters the warm-up pair off its path: wait for it.)
    assert!(node.host_veths().is_empty());
    let routes = node.routes();
    let links: Vec<String> = node
        .ns
        .netlink()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    let mut seen = HashSet::new();
    for i in 0..200 {
        let id = format!("seq-{i}");
        let r = node.add(&conf, &id, &pod, "eth0").ok();
        seen.insert(r["ips"][0]["address"].as_str().unwrap().to_string());
        node.del(&conf, &id, Some(&pod.path()), "eth0").ok();
    }
    assert!(seen.len() > 1, "round-robin allocation");
    assert_eq!(node.allocations(), json!([]), "no allocation left");
    assert!(node.host_veths().is_empty(), "no host interface left");
    let links_after: Vec<String> = node
        .ns
        .netlink()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(links_after, links, "no interface left");
    assert_eq!(node.routes(), routes, "no route left");
    assert!(pod.netlink().link_by_name("eth0").unwrap().is_none());
    assert_eq!(
        files_in(&node.data_dir()),
        ["allocations.json", "lock"],
        "no stray file"
    );
}

#[test]
fn two_hundred_sequential_add_del_bridge() {
    sequential("bridge", "seqb");
}

#[test]
fn two_hundred_sequential_add_del_routed() {
    sequential("routed", "seqr");
}

#[test]
fn fifty_concurrent_adds_get_distinct_addresses() {
    let node = Node::new("conc");
    let conf = node.conf("1.1.0", "bridge", true);
    let pods: Vec<Ns> = (0..50).map(|i| node.pod(i)).collect();
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let node = &node;
                let conf = &conf;
                s.spawn(move || node.add(conf, &format!("conc-{i}"), pod, "eth0"))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().ok())
            .collect()
    });
    let mut addrs = HashSet::new();
    for r in &results {
        for ip in result_ips(r) {
            assert!(addrs.insert(ip), "duplicate address {ip}");
        }
    }
    assert_eq!(addrs.len(), 100, "50 v4 + 50 v6");
    assert_eq!(node.allocations().as_array().unwrap().len(), 50);
    assert_eq!(node.host_veths().len(), 50);
    // and 50 concurrent DELs leave nothing
    std::thread::scope(|s| {
        for (i, pod) in pods.iter().enumerate() {
            let node = &node;
            let conf = &conf;
            s.spawn(move || {
                node.del(conf, &format!("conc-{i}"), Some(&pod.path()), "eth0")
                    .ok()
            });
        }
    });
    assert_eq!(node.allocations(), json!([]));
    assert!(node.host_veths().is_empty());
}
