//! IP address management for pod attachments: host-local-shaped range sets, one allocation
//! per (container id, ifname), crash-safe on-disk state shared safely by concurrent processes.
//!
//! ```no_run
//! use sarasa_ipam::{Ipam, RangeConfig};
//! let ranges = vec![vec![RangeConfig { subnet: "10.244.1.0/24".into(), ..Default::default() }]];
//! let ipam = Ipam::new("/var/lib/cni/sarasa/k8s-pod-network", &ranges).unwrap();
//! let leases = ipam.allocate("container-id", "eth0", &[]).unwrap();
//! ipam.release("container-id", "eth0").unwrap();
//! # let _ = leases;
//! ```

mod error;
mod hostport;
mod range;
mod store;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use hostport::HostPort;
pub use range::{Range, RangeConfig, RangeSet};
pub use store::{Allocation, Lease, State, Store};

/// An allocator over validated range sets and a store directory.
#[derive(Clone, Debug)]
pub struct Ipam {
    sets: Vec<RangeSet>,
    store: Store,
}

impl Ipam {
    /// Validates `ranges` (`ipam.ranges`) and binds them to the store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>, ranges: &[Vec<RangeConfig>]) -> Result<Ipam> {
        Ok(Ipam {
            sets: RangeSet::parse_all(ranges)?,
            store: Store::new(data_dir),
        })
    }

    /// The validated range sets.
    pub fn sets(&self) -> &[RangeSet] {
        &self.sets
    }

    /// The store directory.
    pub fn data_dir(&self) -> &Path {
        self.store.dir()
    }

    /// Allocates one address from every range set for (container id, ifname).
    ///
    /// `requested` pins addresses (runtimeConfig `ips`): each must be allocatable in one of
    /// the sets and free; sets without a requested address get the next free one. Fails with
    /// [`Error::AlreadyAllocated`] if the attachment already holds addresses (nothing changes)
    /// and [`Error::Exhausted`] naming the set when a set is full.
    pub fn allocate(
        &self,
        container_id: &str,
        ifname: &str,
        requested: &[IpAddr],
    ) -> Result<Vec<Lease>> {
        // Map requested addresses to sets before taking the lock.
        let mut pinned: Vec<Option<IpAddr>> = vec![None; self.sets.len()];
        for ip in requested {
            let Some(i) = self.sets.iter().position(|s| s.range_of(*ip).is_some()) else {
                return Err(Error::Unavailable {
                    ip: ip.to_string(),
                    reason: "not inside any configured range".into(),
                });
            };
            if pinned[i].is_some() {
                return Err(Error::Unavailable {
                    ip: ip.to_string(),
                    reason: format!(
                        "another address was already requested from {}",
                        self.sets[i]
                    ),
                });
            }
            pinned[i] = Some(*ip);
        }

        self.store.transaction(|state| {
            if let Some(kept) = &state.rebuild_pending {
                return Err(Error::NeedsRebuild { kept: kept.clone() });
            }
            if let Some(a) = state.find(container_id, ifname) {
                return Err(Error::AlreadyAllocated {
                    container_id: container_id.into(),
                    ifname: ifname.into(),
                    ips: lease_list(&a.leases),
                });
            }
            let taken: HashSet<IpAddr> = state
                .allocations
                .iter()
                .flat_map(|a| a.leases.iter().map(|l| l.address.addr()))
                .collect();
            let mut leases = Vec::with_capacity(self.sets.len());
            for (set, pin) in self.sets.iter().zip(&pinned) {
                let (ip, range) = match pin {
                    Some(ip) => {
                        if taken.contains(ip) {
                            return Err(Error::Unavailable {
                                ip: ip.to_string(),
                                reason: "already allocated".into(),
                            });
                        }
                        (*ip, set.range_of(*ip).expect("checked above"))
                    }
                    None => {
                        let last = state.last_reserved.get(&set.key()).copied();
                        set.next_free(&taken, last)
                            .ok_or_else(|| Error::Exhausted {
                                ranges: set.to_string(),
                            })?
                    }
                };
                if pin.is_none() {
                    state.last_reserved.insert(set.key(), ip);
                }
                leases.push(Lease {
                    address: range.with_prefix(ip),
                    gateway: range.gateway,
                });
            }
            state.allocations.push(store::Allocation {
                container_id: container_id.into(),
                ifname: ifname.into(),
                leases: leases.clone(),
                host_ports: Vec::new(),
            });
            Ok(leases)
        })
    }

    /// Releases the addresses of (container id, ifname); returns them (empty if none).
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Vec<Lease>> {
        self.store.transaction(|state| {
            let mut released = Vec::new();
            state.allocations.retain(|a| {
                if a.container_id == container_id && a.ifname == ifname {
                    released.extend(a.leases.iter().cloned());
                    false
                } else {
                    true
                }
            });
            Ok(released)
        })
    }

    /// The addresses held by (container id, ifname), if any.
    pub fn lookup(&self, container_id: &str, ifname: &str) -> Result<Option<Allocation>> {
        Ok(self.store.read()?.find(container_id, ifname).cloned())
    }

    /// Every allocation.
    pub fn allocations(&self) -> Result<Vec<Allocation>> {
        Ok(self.store.read()?.allocations)
    }

    /// Releases every allocation whose (container id, ifname) is not in `valid`
    /// (`cni.dev/valid-attachments`); returns what was released.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<Vec<Allocation>> {
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|(c, i)| (c.as_str(), i.as_str()))
            .collect();
        self.store.transaction(|state| {
            let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut state.allocations)
                .into_iter()
                .partition(|a| keep.contains(&(a.container_id.as_str(), a.ifname.as_str())));
            state.allocations = kept;
            Ok(gone)
        })
    }

    /// The first of `ports` another attachment already holds on this node, with its holder
    /// (a check before anything is set up; [`Ipam::set_host_ports`] checks again).
    pub fn host_port_in_use(
        &self,
        container_id: &str,
        ifname: &str,
        ports: &[HostPort],
    ) -> Result<Option<Error>> {
        Ok(conflict(&self.store.read()?, container_id, ifname, ports))
    }

    /// Records `ports` as the node ports of (container id, ifname), which must hold
    /// addresses; fails with [`Error::HostPortInUse`] (nothing changed) when another
    /// attachment holds one of them.
    pub fn set_host_ports(
        &self,
        container_id: &str,
        ifname: &str,
        ports: &[HostPort],
    ) -> Result<()> {
        self.store.transaction(|state| {
            if let Some(e) = conflict(state, container_id, ifname, ports) {
                return Err(e);
            }
            let a = state
                .allocations
                .iter_mut()
                .find(|a| a.container_id == container_id && a.ifname == ifname)
                .ok_or_else(|| Error::Unavailable {
                    ip: format!("{container_id}/{ifname}"),
                    reason: "the attachment holds no addresses to map host ports to".into(),
                })?;
            a.host_ports = ports.to_vec();
            Ok(())
        })
    }

    /// Runs `f` on every allocation under the store's exclusive lock, so what `f` derives
    /// (the node's host-port rules) is never older than what another process derived.
    pub fn with_allocations<T>(&self, f: impl FnOnce(&[Allocation]) -> T) -> Result<T> {
        self.store.transaction(|state| Ok(f(&state.allocations)))
    }

    /// Whether the store waits for a rebuild (it was unreadable and set aside); sets an
    /// unreadable store aside first.
    pub fn needs_rebuild(&self) -> Result<Option<String>> {
        Ok(self.store.read()?.rebuild_pending)
    }

    /// Whether the store's file exists (a store never written, or one deleted, has none).
    pub fn store_file_exists(&self) -> bool {
        self.store.file_exists()
    }

    /// Rebuilds the allocations from the attachments that really exist (`found`: their
    /// addresses as the node shows them), after the store was set aside. Allocations recorded
    /// since are kept; found ones are added (an address held twice keeps its first holder).
    pub fn rebuild(&self, found: &[Allocation]) -> Result<()> {
        self.store.transaction(|state| {
            let mut taken: HashSet<IpAddr> = state
                .allocations
                .iter()
                .flat_map(|a| a.leases.iter().map(|l| l.address.addr()))
                .collect();
            for a in found {
                if state.find(&a.container_id, &a.ifname).is_some()
                    || a.leases.iter().any(|l| taken.contains(&l.address.addr()))
                {
                    continue;
                }
                taken.extend(a.leases.iter().map(|l| l.address.addr()));
                state.allocations.push(a.clone());
            }
            state.rebuild_pending = None;
            Ok(())
        })
    }

    /// Readiness for STATUS: the store is writable, not waiting for a rebuild, and every set
    /// has a free address.
    pub fn status(&self) -> Result<()> {
        self.store.check_writable()?;
        let state = self.store.read()?;
        if let Some(kept) = state.rebuild_pending {
            return Err(Error::NeedsRebuild { kept });
        }
        let taken: HashSet<IpAddr> = state
            .allocations
            .iter()
            .flat_map(|a| a.leases.iter().map(|l| l.address.addr()))
            .collect();
        for set in &self.sets {
            if set.next_free(&taken, None).is_none() {
                return Err(Error::Exhausted {
                    ranges: set.to_string(),
                });
            }
        }
        Ok(())
    }
}

fn lease_list(leases: &[Lease]) -> String {
    leases
        .iter()
        .map(|l| l.address.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first of `ports` that an attachment other than (container id, ifname) holds, or that
/// appears twice in `ports`.
fn conflict(state: &State, container_id: &str, ifname: &str, ports: &[HostPort]) -> Option<Error> {
    for (i, p) in ports.iter().enumerate() {
        if let Some(q) = ports[..i].iter().find(|q| q.overlaps(p)) {
            return Some(Error::HostPortInUse {
                port: p.to_string(),
                holder: format!("the same request ({q})"),
            });
        }
        for a in &state.allocations {
            if a.container_id == container_id && a.ifname == ifname {
                continue;
            }
            if let Some(q) = a.host_ports.iter().find(|q| q.overlaps(p)) {
                return Some(Error::HostPortInUse {
                    port: p.to_string(),
                    holder: format!("container {} interface {} ({q})", a.container_id, a.ifname),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(v4: &str, v6: Option<&str>) -> Vec<Vec<RangeConfig>> {
        let mut r = vec![vec![RangeConfig {
            subnet: v4.into(),
            ..Default::default()
        }]];
        if let Some(v6) = v6 {
            r.push(vec![RangeConfig {
                subnet: v6.into(),
                ..Default::default()
            }]);
        }
        r
    }

    #[test]
    fn host_ports_are_held_once_per_node_and_go_with_the_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), &ranges("10.244.1.0/24", None)).unwrap();
        let web = HostPort {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: None,
        };
        ipam.allocate("c1", "eth0", &[]).unwrap();
        ipam.allocate("c2", "eth0", &[]).unwrap();
        // Ports need addresses to map to.
        assert!(ipam
            .set_host_ports("c3", "eth0", std::slice::from_ref(&web))
            .is_err());
        ipam.set_host_ports("c1", "eth0", std::slice::from_ref(&web))
            .unwrap();
        assert!(ipam
            .host_port_in_use("c1", "eth0", std::slice::from_ref(&web))
            .unwrap()
            .is_none());
        let err = ipam
            .set_host_ports("c2", "eth0", std::slice::from_ref(&web))
            .unwrap_err();
        assert!(
            err.to_string().contains("8080/tcp") && err.to_string().contains("c1"),
            "{err}"
        );
        assert!(ipam
            .host_port_in_use("c2", "eth0", std::slice::from_ref(&web))
            .unwrap()
            .is_some());
        // Twice in one request.
        let err = ipam.set_host_ports("c2", "eth0", &[web.clone(), web.clone()]);
        assert!(matches!(err, Err(Error::HostPortInUse { .. })));
        // UDP on the same port is another port.
        let dns = HostPort {
            protocol: "udp".into(),
            ..web.clone()
        };
        ipam.set_host_ports("c2", "eth0", &[dns]).unwrap();
        // Released with the addresses (DEL), and by GC.
        ipam.release("c1", "eth0").unwrap();
        ipam.allocate("c4", "eth0", &[]).unwrap();
        ipam.set_host_ports("c4", "eth0", std::slice::from_ref(&web))
            .unwrap();
        let gone = ipam.gc(&[("c2".into(), "eth0".into())]).unwrap();
        assert!(gone
            .iter()
            .any(|a| a.container_id == "c4" && a.host_ports == vec![web.clone()]));
        let held = ipam.with_allocations(|a| a.iter().map(|a| a.host_ports.len()).sum::<usize>());
        assert_eq!(held.unwrap(), 1);
    }

    #[test]
    fn allocate_release_dual_stack() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), &ranges("10.244.1.0/24", Some("fd00:1::/64"))).unwrap();
        let l = ipam.allocate("c1", "eth0", &[]).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].address.to_string(), "10.244.1.2/24");
        assert_eq!(l[0].gateway.to_string(), "10.244.1.1");
        assert_eq!(l[1].address.to_string(), "fd00:1::2/64");
        // one allocation per (container, ifname)
        let err = ipam.allocate("c1", "eth0", &[]).unwrap_err();
        assert!(matches!(err, Error::AlreadyAllocated { .. }), "{err}");
        // a second interface of the same container is another attachment
        let l2 = ipam.allocate("c1", "net1", &[]).unwrap();
        assert_eq!(l2[0].address.to_string(), "10.244.1.3/24");
        assert_eq!(
            ipam.lookup("c1", "eth0").unwrap().unwrap().leases,
            l,
            "the failed duplicate changed nothing"
        );
        assert_eq!(ipam.release("c1", "eth0").unwrap(), l);
        assert!(ipam.release("c1", "eth0").unwrap().is_empty(), "idempotent");
        assert!(ipam.lookup("c1", "eth0").unwrap().is_none());
        // round robin: the next allocation does not reuse .2 at once
        let l3 = ipam.allocate("c2", "eth0", &[]).unwrap();
        assert_eq!(l3[0].address.to_string(), "10.244.1.4/24");
    }

    #[test]
    fn exhaustion_names_the_range() {
        let dir = tempfile::tempdir().unwrap();
        // /29: .0 network, .1 gateway, .7 broadcast -> .2-.6 = 5 addresses
        let ipam = Ipam::new(dir.path(), &ranges("10.9.0.0/29", None)).unwrap();
        let mut got = HashSet::new();
        for i in 0..5 {
            let l = ipam.allocate(&format!("c{i}"), "eth0", &[]).unwrap();
            assert!(got.insert(l[0].address.addr()));
        }
        for ip in ["10.9.0.0", "10.9.0.1", "10.9.0.7"] {
            assert!(!got.contains(&ip.parse::<IpAddr>().unwrap()));
        }
        let err = ipam.allocate("c9", "eth0", &[]).unwrap_err();
        assert!(err.to_string().contains("10.9.0.0/29"), "{err}");
        assert!(matches!(err, Error::Exhausted { .. }));
        assert!(ipam.status().is_err(), "exhausted -> not ready");
        ipam.release("c3", "eth0").unwrap();
        ipam.status().unwrap();
        let l = ipam.allocate("c9", "eth0", &[]).unwrap();
        assert_eq!(l[0].address.to_string(), "10.9.0.5/29");
    }

    #[test]
    fn requested_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), &ranges("10.9.0.0/24", Some("fd00:9::/64"))).unwrap();
        let want: IpAddr = "10.9.0.77".parse().unwrap();
        let l = ipam.allocate("c1", "eth0", &[want]).unwrap();
        assert_eq!(l[0].address.addr(), want);
        assert!(l[1].address.addr().is_ipv6(), "v6 set still gets one");
        let err = ipam.allocate("c2", "eth0", &[want]).unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        for bad in ["10.9.0.1", "10.9.0.0", "10.9.0.255", "10.10.0.5"] {
            let err = ipam
                .allocate("c3", "eth0", &[bad.parse().unwrap()])
                .unwrap_err();
            assert!(matches!(err, Error::Unavailable { .. }), "{bad}: {err}");
        }
        assert!(ipam.lookup("c2", "eth0").unwrap().is_none());
    }

    #[test]
    fn gc_keeps_only_valid_attachments() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), &ranges("10.9.0.0/24", None)).unwrap();
        for c in ["a", "b", "c"] {
            ipam.allocate(c, "eth0", &[]).unwrap();
        }
        let gone = ipam
            .gc(&[("b".into(), "eth0".into()), ("zzz".into(), "eth0".into())])
            .unwrap();
        let mut ids: Vec<_> = gone.iter().map(|a| a.container_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "c"]);
        let left = ipam.allocations().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].container_id, "b");
    }

    #[test]
    fn state_survives_reopen_and_is_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = ranges("10.9.0.0/24", None);
        let a = Ipam::new(dir.path(), &r).unwrap();
        let l = a.allocate("c1", "eth0", &[]).unwrap();
        let b = Ipam::new(dir.path(), &r).unwrap();
        assert_eq!(b.lookup("c1", "eth0").unwrap().unwrap().leases, l);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["allocations.json", "lock"]);
    }

    #[test]
    fn crashed_writer_leftover_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), &ranges("10.9.0.0/24", None)).unwrap();
        ipam.allocate("c1", "eth0", &[]).unwrap();
        std::fs::write(dir.path().join("allocations.json.tmp"), b"{half").unwrap();
        ipam.gc(&[("c1".into(), "eth0".into())]).unwrap();
        assert!(!dir.path().join("allocations.json.tmp").exists());
        assert_eq!(ipam.allocations().unwrap().len(), 1);
    }

    /// Empty, garbage and truncated stores: set aside (kept), nothing allocated until a
    /// rebuild, which restores the addresses in use so none is handed out twice; DEL stays
    /// idempotent meanwhile.
    #[test]
    fn unreadable_store_is_quarantined_and_rebuilt() {
        let r = ranges("10.9.0.0/24", None);
        let good = {
            let dir = tempfile::tempdir().unwrap();
            let ipam = Ipam::new(dir.path(), &r).unwrap();
            ipam.allocate("c1", "eth0", &[]).unwrap();
            ipam.allocate("c2", "eth0", &[]).unwrap();
            std::fs::read(dir.path().join("allocations.json")).unwrap()
        };
        let damaged: [(&str, Vec<u8>); 3] = [
            ("empty", Vec::new()),
            ("garbage", b"\x00\x7f{not json".to_vec()),
            ("truncated", good[..good.len() / 2].to_vec()),
        ];
        for (what, bytes) in damaged {
            let dir = tempfile::tempdir().unwrap();
            let ipam = Ipam::new(dir.path(), &r).unwrap();
            let in_use = ipam.allocate("c1", "eth0", &[]).unwrap();
            std::fs::write(dir.path().join("allocations.json"), &bytes).unwrap();
            let err = ipam.allocate("c3", "eth0", &[]).unwrap_err();
            assert!(matches!(err, Error::NeedsRebuild { .. }), "{what}: {err}");
            assert!(
                err.to_string().contains("allocations.json.corrupt-"),
                "{err}"
            );
            // The damaged file is kept for inspection.
            let kept: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with("allocations.json.corrupt-"))
                .collect();
            assert_eq!(kept.len(), 1, "{what}");
            assert_eq!(std::fs::read(dir.path().join(&kept[0])).unwrap(), bytes);
            // Still refused, STATUS not ready, DEL fine.
            assert!(matches!(
                ipam.allocate("c3", "eth0", &[]).unwrap_err(),
                Error::NeedsRebuild { .. }
            ));
            assert!(ipam.status().is_err());
            assert!(ipam.release("c9", "eth0").unwrap().is_empty());
            // Rebuilt from what the node shows: c1 holds its address.
            ipam.rebuild(&[Allocation {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                leases: in_use.clone(),
                host_ports: Vec::new(),
            }])
            .unwrap();
            ipam.status().unwrap();
            let l = ipam.allocate("c3", "eth0", &[]).unwrap();
            assert_ne!(l[0].address.addr(), in_use[0].address.addr(), "{what}");
            assert_eq!(ipam.release("c1", "eth0").unwrap(), in_use);
        }
    }

    #[test]
    fn read_only_calls_quarantine_too() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(dir.path(), &ranges("10.9.0.0/24", None)).unwrap();
        std::fs::write(dir.path().join("allocations.json"), b"").unwrap();
        assert!(ipam.needs_rebuild().unwrap().is_some());
        assert!(ipam.lookup("c1", "eth0").unwrap().is_none());
    }

    #[test]
    fn status_fails_when_store_unwritable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        // a data dir below a regular file can never be created
        let ipam = Ipam::new(file.join("sub"), &ranges("10.9.0.0/24", None)).unwrap();
        assert!(matches!(ipam.status().unwrap_err(), Error::Io { .. }));
    }
}
