//! The reconcile diff: desired vs current fabric → the minimal list of kernel operations.
//! Additions and replacements come first, deletions last, so a change of a remote node never
//! leaves a moment without a path; entries that are already right produce no operation.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::plan::{Fabric, FdbEntry, Neighbour, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FabricOp {
    AddFdb(FdbEntry),
    AddNeighbour(Neighbour),
    ReplaceNeighbour(Neighbour),
    AddRoute(Route),
    ReplaceRoute(Route),
    DelRoute(Route),
    DelNeighbour(Neighbour),
    DelFdb(FdbEntry),
}

/// diff: what to do to turn `current` into `desired`.
pub fn diff(desired: &Fabric, current: &Fabric) -> Vec<FabricOp> {
    let mut adds = Vec::new();
    let mut dels = Vec::new();

    // FDB entries are keyed by (mac, dst) in the kernel (a MAC may have several remotes).
    for e in desired.fdb.difference(&current.fdb) {
        adds.push(FabricOp::AddFdb(*e));
    }

    let cur_neigh: BTreeMap<IpAddr, &Neighbour> =
        current.neighbours.iter().map(|n| (n.ip, n)).collect();
    let want_neigh: BTreeMap<IpAddr, &Neighbour> =
        desired.neighbours.iter().map(|n| (n.ip, n)).collect();
    for (ip, n) in &want_neigh {
        match cur_neigh.get(ip) {
            None => adds.push(FabricOp::AddNeighbour(**n)),
            Some(c) if c != n => adds.push(FabricOp::ReplaceNeighbour(**n)),
            Some(_) => {}
        }
    }

    let cur_routes: BTreeMap<IpNet, &Route> = current.routes.iter().map(|r| (r.dst, r)).collect();
    let want_routes: BTreeMap<IpNet, &Route> = desired.routes.iter().map(|r| (r.dst, r)).collect();
    for (dst, r) in &want_routes {
        match cur_routes.get(dst) {
            None => adds.push(FabricOp::AddRoute(**r)),
            Some(c) if c != r => adds.push(FabricOp::ReplaceRoute(**r)),
            Some(_) => {}
        }
    }
    for (dst, r) in &cur_routes {
        if !want_routes.contains_key(dst) {
            dels.push(FabricOp::DelRoute(**r));
        }
    }
    for (ip, n) in &cur_neigh {
        if !want_neigh.contains_key(ip) {
            dels.push(FabricOp::DelNeighbour(**n));
        }
    }
    for e in current.fdb.difference(&desired.fdb) {
        dels.push(FabricOp::DelFdb(*e));
    }
    adds.extend(dels);
    adds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;
    use crate::plan::tests::{local, mac, state_with};
    use crate::plan::{compile, RouteDev};

    fn plan_fabric(nodes: &[(&str, Option<&str>, &str, Option<sarasa_model::MacAddr>)]) -> Fabric {
        compile(&state_with(nodes), &local(Backend::Vxlan))
            .unwrap()
            .fabric
    }

    const N1: (&str, Option<&str>, &str, Option<sarasa_model::MacAddr>) =
        ("n1", Some("10.244.1.0/24"), "192.168.33.11", None);

    fn with_macs() -> Vec<(
        &'static str,
        Option<&'static str>,
        &'static str,
        Option<sarasa_model::MacAddr>,
    )> {
        vec![
            (N1.0, N1.1, N1.2, Some(mac(1))),
            ("n2", Some("10.244.2.0/24"), "192.168.33.12", Some(mac(2))),
            ("n3", Some("10.244.3.0/24"), "192.168.33.13", Some(mac(3))),
        ]
    }

    #[test]
    fn nothing_to_do_when_current_matches() {
        let f = plan_fabric(&with_macs());
        assert!(diff(&f, &f).is_empty());
    }

    #[test]
    fn empty_kernel_gets_everything_in_order() {
        let f = plan_fabric(&with_macs());
        let ops = diff(&f, &Fabric::default());
        assert_eq!(ops.len(), 6);
        assert!(matches!(ops[0], FabricOp::AddFdb(_)));
        assert!(matches!(ops[2], FabricOp::AddNeighbour(_)));
        assert!(matches!(ops[5], FabricOp::AddRoute(_)));
    }

    #[test]
    fn removed_node_only_deletes_its_entries() {
        let before = plan_fabric(&with_macs());
        let after = plan_fabric(&with_macs()[..2]);
        let ops = diff(&after, &before);
        assert_eq!(
            ops,
            vec![
                FabricOp::DelRoute(Route {
                    dst: "10.244.3.0/24".parse().unwrap(),
                    gateway: "10.244.3.0".parse().unwrap(),
                    dev: RouteDev::Vxlan,
                    onlink: true
                }),
                FabricOp::DelNeighbour(Neighbour {
                    ip: "10.244.3.0".parse().unwrap(),
                    mac: mac(3)
                }),
                FabricOp::DelFdb(FdbEntry {
                    mac: mac(3),
                    dst: "192.168.33.13".parse().unwrap()
                }),
            ]
        );
    }

    #[test]
    fn changed_vtep_mac_replaces_neighbour_and_swaps_fdb() {
        let before = plan_fabric(&with_macs());
        let mut nodes = with_macs();
        nodes[2].3 = Some(mac(9));
        let after = plan_fabric(&nodes);
        let ops = diff(&after, &before);
        assert_eq!(
            ops,
            vec![
                FabricOp::AddFdb(FdbEntry {
                    mac: mac(9),
                    dst: "192.168.33.13".parse().unwrap()
                }),
                FabricOp::ReplaceNeighbour(Neighbour {
                    ip: "10.244.3.0".parse().unwrap(),
                    mac: mac(9)
                }),
                FabricOp::DelFdb(FdbEntry {
                    mac: mac(3),
                    dst: "192.168.33.13".parse().unwrap()
                }),
            ]
        );
    }

    #[test]
    fn route_with_wrong_gateway_or_device_is_replaced_not_deleted() {
        let want = plan_fabric(&with_macs());
        let mut cur = want.clone();
        let r = *cur.routes.iter().next().unwrap();
        cur.routes.remove(&r);
        cur.routes.insert(Route {
            dev: RouteDev::Other(42),
            ..r
        });
        assert_eq!(diff(&want, &cur), vec![FabricOp::ReplaceRoute(r)]);
    }

    #[test]
    fn backend_switch_replaces_routes_and_drops_vxlan_entries() {
        let vx = plan_fabric(&with_macs());
        let gw = compile(&state_with(&with_macs()), &local(Backend::HostGw))
            .unwrap()
            .fabric;
        let ops = diff(&gw, &vx);
        assert_eq!(
            ops.iter()
                .filter(|o| matches!(o, FabricOp::ReplaceRoute(_)))
                .count(),
            2
        );
        assert_eq!(
            ops.iter()
                .filter(|o| matches!(o, FabricOp::DelFdb(_)))
                .count(),
            2
        );
        assert_eq!(
            ops.iter()
                .filter(|o| matches!(o, FabricOp::DelNeighbour(_)))
                .count(),
            2
        );
        assert_eq!(ops.len(), 6);
    }
}
