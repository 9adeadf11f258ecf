//! Lab end-to-end (issue 14): the lab runtime runs CNI GC periodically, as container runtimes
//! do, so an address left allocated by a pod whose DEL never ran is released without a
//! control-plane restart, and the running pods keep theirs. The period comes from the lab
//! spec (`cni_gc_interval_secs`, 60 s by default); the test sets it to 2 s.

mod common;

use std::time::Duration;

use common::TestLab;
use sarasa_ipam::{Ipam, RangeConfig};
use sarasa_lab::LabPaths;

fn allocated_ids(paths: &LabPaths) -> Vec<String> {
    let text = std::fs::read_to_string(paths.ipam_dir("node-1").join("allocations.json"))
        .expect("node-1 has an IPAM store");
    let v: serde_json::Value = serde_json::from_str(&text).expect("IPAM store is JSON");
    v["allocations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["containerId"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn periodic_cni_gc_releases_a_leaked_address() {
    let lab = TestLab::up(&["--nodes", "1"]);
    let paths = LabPaths::new(&lab.name);

    // GC every 2 s: the spec's setting, read when the control plane starts.
    let spec_file = paths.spec_file();
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_file).expect("lab.json")).expect("json");
    assert_eq!(spec["cni_gc_interval_secs"], 60, "the default is recorded");
    spec["cni_gc_interval_secs"] = 2.into();
    std::fs::write(&spec_file, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    lab.ok(&["lab", "control-plane", "restart"]);

    // An allocation whose DEL never ran, made by the IPAM code the plugin uses, on the
    // node's own store and ranges.
    let conflist = paths.cni_conf_dir("node-1").join("10-sarasa.conflist");
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conflist).expect("conflist")).expect("json");
    let ipam_conf = conf["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["ipam"].is_object())
        .map(|p| p["ipam"].clone())
        .expect("a plugin with ipam");
    let ranges: Vec<Vec<RangeConfig>> =
        serde_json::from_value(ipam_conf["ranges"].clone()).expect("ipam ranges");
    let pods = allocated_ids(&paths);
    assert!(!pods.is_empty(), "the DNS pods hold addresses on node-1");
    let ipam = Ipam::new(paths.ipam_dir("node-1"), &ranges).expect("ipam");
    let leases = ipam
        .allocate("leaked-by-lab-cni-gc-test", "eth0", &[])
        .expect("allocate");
    assert!(!leases.is_empty());
    assert!(allocated_ids(&paths).contains(&"leaked-by-lab-cni-gc-test".to_string()));

    // Released by the periodic GC (well within a minute's default period).
    let released = lab.eventually(Duration::from_secs(20), || {
        (!allocated_ids(&paths).contains(&"leaked-by-lab-cni-gc-test".to_string())).then_some(())
    });
    assert!(
        released.is_some(),
        "the leaked address is still allocated: {:?}\n{}",
        allocated_ids(&paths),
        lab.logs()
    );
    // The pods' own addresses stay.
    let now = allocated_ids(&paths);
    for p in &pods {
        assert!(now.contains(p), "{p} was released by GC: {now:?}");
    }
}
