//! Concurrent allocators sharing one store directory. Each thread opens its own lock file
//! description, so `flock` serialises them exactly as it serialises separate plugin processes.

use std::collections::HashSet;

use sarasa_ipam::{Ipam, RangeConfig};

#[test]
fn fifty_concurrent_allocations_are_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let ranges = vec![
        vec![RangeConfig {
            subnet: "10.244.3.0/24".into(),
            ..Default::default()
        }],
        vec![RangeConfig {
            subnet: "fd00:3::/64".into(),
            ..Default::default()
        }],
    ];
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let ipam = Ipam::new(dir.path(), &ranges).unwrap();
            std::thread::spawn(move || ipam.allocate(&format!("ctr-{i}"), "eth0", &[]).unwrap())
        })
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        for lease in h.join().unwrap() {
            assert!(
                seen.insert(lease.address.addr()),
                "duplicate {}",
                lease.address
            );
        }
    }
    assert_eq!(seen.len(), 100);
    let ipam = Ipam::new(dir.path(), &ranges).unwrap();
    assert_eq!(ipam.allocations().unwrap().len(), 50);

    // and 50 concurrent releases leave nothing
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let ipam = ipam.clone();
            std::thread::spawn(move || ipam.release(&format!("ctr-{i}"), "eth0").unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().len(), 2);
    }
    assert!(ipam.allocations().unwrap().is_empty());
}
