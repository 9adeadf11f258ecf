//! An unreadable or deleted IPAM store (emptied, garbage, truncated, deleted) on a node with running pods: it is
//! set aside (kept), rebuilt from the attachments the node's host veths record, and no address
//! in use is handed out again; DEL stays idempotent and GC works on the rebuilt store.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use common::*;

fn damage(node: &Node, how: &str) {
    let p = PathBuf::from(node.data_dir()).join("allocations.json");
    let good = std::fs::read(&p).unwrap();
    let bytes = match how {
        "empty" => Vec::new(),
        "garbage" => b"\x00\x00garbage{".to_vec(),
        "truncated" => good[..good.len() / 2].to_vec(),
        "deleted" => {
            std::fs::remove_file(&p).unwrap();
            return;
        }
        _ => unreachable!(),
    };
    std::fs::write(&p, bytes).unwrap();
}

fn kept_copies(node: &Node) -> usize {
    std::fs::read_dir(node.data_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("allocations.json.corrupt-")
        })
        .count()
}

fn ids(node: &Node) -> Vec<String> {
    let mut v: Vec<String> = node
        .allocations()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["containerId"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn add_after_damage_never_reuses_an_address() {
    for (mode, how) in [
        ("bridge", "empty"),
        ("routed", "garbage"),
        ("bridge", "truncated"),
        ("routed", "deleted"),
    ] {
        let node = Node::new(&format!("sr{}", &how[..2]));
        let conf = node.conf("1.1.0", mode, true);
        let (pa, pb, pc) = (node.pod(1), node.pod(2), node.pod(3));
        let mut in_use: HashSet<IpAddr> = HashSet::new();
        for (id, pod) in [("a", &pa), ("b", &pb)] {
            let r = node.add(&conf, id, pod, "eth0").ok();
            in_use.extend(result_ips(&r));
        }
        damage(&node, how);
        // The round-robin cursor is lost with the store: without the rebuild, ADD would
        // hand out a's address again.
        let r = node.add(&conf, "c", &pc, "eth0").ok();
        for ip in result_ips(&r) {
            assert!(!in_use.contains(&ip), "{mode}/{how}: {ip} handed out twice");
        }
        // A deleted store has nothing to keep; it is rebuilt all the same.
        let kept = usize::from(how != "deleted");
        assert_eq!(kept_copies(&node), kept, "{mode}/{how}: damaged store kept");
        assert_eq!(ids(&node), ["a", "b", "c"], "{mode}/{how}");
        node.del(&conf, "b", Some(&pb.path()), "eth0").ok();
        node.del(&conf, "b", Some(&pb.path()), "eth0").ok();
        assert_eq!(ids(&node), ["a", "c"], "{mode}/{how}");
        node.status(&conf).ok();
    }
}

#[test]
fn gc_and_del_after_damage_rebuild_first() {
    let node = Node::new("srgc");
    let conf = node.conf("1.1.0", "routed", false);
    let (pa, pb) = (node.pod(1), node.pod(2));
    node.add(&conf, "a", &pa, "eth0").ok();
    node.add(&conf, "b", &pb, "eth0").ok();
    damage(&node, "empty");
    // GC: the store is rebuilt from the node, then b (not valid) is released and its veth
    // removed.
    node.gc(&conf, &[("a", "eth0")]).ok();
    assert_eq!(ids(&node), ["a"]);
    assert_eq!(node.host_veths().len(), 1);
    // DEL on a damaged store: rebuilt, then released; idempotent.
    damage(&node, "garbage");
    node.del(&conf, "a", Some(&pa.path()), "eth0").ok();
    node.del(&conf, "a", Some(&pa.path()), "eth0").ok();
    assert!(ids(&node).is_empty());
    assert!(node.host_veths().is_empty());
    assert_eq!(kept_copies(&node), 2);
}
