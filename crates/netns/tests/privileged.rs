//! Privileged tests: real namespaces, veths, bridges, addresses, routes and sysctls.
//! They need root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and fail loudly without it. Every namespace
//! is named `sarasa-t<pid>-...` and removed by a Drop guard.

use std::net::IpAddr;
use std::process::Command;

use sarasa_model::MacAddr;
use sarasa_netns::{CommandExt, Family, NetNs, Netlink, Route, Scope, Veth, VxlanSpec};

struct TestNs(NetNs, String);

impl TestNs {
    fn new(tag: &str) -> TestNs {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "privileged netns tests need root"
        );
        let name = format!("sarasa-t{}-{tag}", std::process::id());
        let _ = NetNs::delete(&name);
        TestNs(NetNs::create(&name).expect("create netns"), name)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = NetNs::delete(&self.1);
    }
}

#[test]
fn create_open_run_delete() {
    let before = NetNs::current().unwrap().id().unwrap();
    let t = TestNs::new("life");
    assert!(NetNs::exists(&t.1));
    assert!(NetNs::list().unwrap().contains(&t.1));
    let inside = t.0.run(|| NetNs::current().unwrap().id().unwrap()).unwrap();
    assert_eq!(inside, t.0.id().unwrap());
    assert_ne!(inside, before);
    // the calling thread did not move
    assert_eq!(NetNs::current().unwrap().id().unwrap(), before);
    // open by name and by path give the same namespace
    assert_eq!(NetNs::open(&t.1).unwrap().id().unwrap(), inside);
    assert_eq!(NetNs::open(t.0.path()).unwrap().id().unwrap(), inside);
    // duplicate create fails with EEXIST
    assert!(NetNs::create(&t.1).unwrap_err().is_exists());
    NetNs::delete(&t.1).unwrap();
    assert!(!NetNs::exists(&t.1));
    NetNs::delete(&t.1).unwrap(); // absent is fine
    assert!(NetNs::open(&t.1).is_err());
}

#[test]
fn open_rejects_non_namespace_files() {
    let err = NetNs::open("/etc/hostname").unwrap_err();
    assert!(matches!(err, sarasa_netns::Error::NotNetNs(_)), "{err}");
    let err = NetNs::open("/nonexistent/ns").unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[test]
fn command_runs_inside_namespace() {
    let t = TestNs::new("cmd");
    let out = Command::new("readlink")
        .arg("/proc/self/ns/net")
        .netns(&t.0)
        .output()
        .unwrap();
    let (_, ino) = t.0.id().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("net:[{ino}]")
    );
}

#[test]
fn sysctl_is_per_namespace() {
    let t = TestNs::new("sysctl");
    let u = TestNs::new("sysctl2");
    let before = u.0.sysctl_read("net.ipv4.ip_forward").unwrap();
    let flipped = if t.0.sysctl_read("net.ipv4.ip_forward").unwrap() == "1" {
        "0"
    } else {
        "1"
    };
    t.0.sysctl_write("net.ipv4.ip_forward", flipped).unwrap();
    assert_eq!(t.0.sysctl_read("net.ipv4.ip_forward").unwrap(), flipped);
    // another namespace is unaffected
    assert_eq!(u.0.sysctl_read("net.ipv4.ip_forward").unwrap(), before);
}

#[test]
fn veth_bridge_addresses_routes_neighbours() {
    let a = TestNs::new("nla");
    let b = TestNs::new("nlb");
    let mut na = Netlink::open_in(&a.0).unwrap();
    let mut nb = Netlink::open_in(&b.0).unwrap();

    na.add_veth(&Veth {
        name: "va".into(),
        peer_name: "vb".into(),
        peer_netns: Some(b.0.fd()),
        mtu: Some(1400),
        mac: Some(MacAddr([0x0a, 0x58, 0, 0, 0, 1])),
        ..Default::default()
    })
    .unwrap();
    // same name again: EEXIST
    let err = na
        .add_veth(&Veth {
            name: "va".into(),
            peer_name: "vb2".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.is_exists(), "{err}");

    let va = na.link("va").unwrap();
    assert_eq!(va.kind.as_deref(), Some("veth"));
    assert_eq!(va.mtu, 1400);
    assert_eq!(va.mac, Some(MacAddr([0x0a, 0x58, 0, 0, 0, 1])));
    assert_eq!(va.vxlan, None);
    assert!(na.link_by_name("vb").unwrap().is_none());
    let vb = nb.link("vb").unwrap();
    assert_eq!(vb.mtu, 1400);
    assert_eq!(na.link_by_index(va.index).unwrap().unwrap().name, "va");

    nb.set_mac(vb.index, MacAddr([0x0a, 0x58, 0, 0, 0, 2]))
        .unwrap();
    nb.set_mtu(vb.index, 1300).unwrap();
    let vb = nb.link("vb").unwrap();
    assert_eq!(vb.mtu, 1300);
    assert_eq!(
        vb.mac.map(|m| m.to_string()).as_deref(),
        Some("0a:58:00:00:00:02")
    );

    // bridge in a, va enslaved
    na.add_bridge("br-t", Some(1400)).unwrap();
    let br = na.link("br-t").unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    na.set_master(va.index, br.index).unwrap();
    assert_eq!(na.link("va").unwrap().master, Some(br.index));
    na.set_up(br.index).unwrap();
    na.set_up(va.index).unwrap();
    assert!(na.link("va").unwrap().up);
    let lo_a = na.link("lo").unwrap();
    na.set_up(lo_a.index).unwrap();

    // addresses, both families
    na.addr_add(br.index, "10.99.0.1/24".parse().unwrap())
        .unwrap();
    na.addr_add(br.index, "fd99::1/64".parse().unwrap())
        .unwrap();
    let err = na
        .addr_add(br.index, "10.99.0.1/24".parse().unwrap())
        .unwrap_err();
    assert!(err.is_exists());
    let addrs = na.addrs(Some(br.index), None).unwrap();
    assert!(addrs.iter().any(|a| a.net.to_string() == "10.99.0.1/24"));
    assert!(addrs.iter().any(|a| a.net.to_string() == "fd99::1/64"));
    assert!(na
        .addrs(Some(br.index), Some(Family::V4))
        .unwrap()
        .iter()
        .all(|a| a.net.addr().is_ipv4()));

    nb.set_up(vb.index).unwrap();
    nb.addr_add(vb.index, "10.99.0.2/24".parse().unwrap())
        .unwrap();
    nb.addr_add(vb.index, "fd99::2/64".parse().unwrap())
        .unwrap();
    // routes: default via gateway, onlink route, device route
    nb.route_add(&Route::default_via("10.99.0.1".parse().unwrap()).dev(vb.index))
        .unwrap();
    nb.route_add(
        &Route::new("10.98.0.0/16".parse().unwrap())
            .via("10.97.0.1".parse().unwrap())
            .dev(vb.index)
            .onlink(),
    )
    .unwrap();
    nb.route_add(
        &Route::new("10.96.5.5/32".parse().unwrap())
            .dev(vb.index)
            .scope(Scope::Link),
    )
    .unwrap();
    nb.route_add(&Route::default_via("fd99::1".parse().unwrap()).dev(vb.index))
        .unwrap();
    let routes = nb.routes(None).unwrap();
    let def4 = routes
        .iter()
        .find(|r| r.dst.to_string() == "0.0.0.0/0")
        .expect("v4 default");
    assert_eq!(def4.gateway, Some("10.99.0.1".parse::<IpAddr>().unwrap()));
    assert_eq!(def4.oif, Some(vb.index));
    let onl = routes
        .iter()
        .find(|r| r.dst.to_string() == "10.98.0.0/16")
        .unwrap();
    assert!(onl.onlink);
    let host = routes
        .iter()
        .find(|r| r.dst.to_string() == "10.96.5.5/32")
        .unwrap();
    assert_eq!(host.scope, Some(Scope::Link));
    assert!(nb
        .routes(Some(Family::V6))
        .unwrap()
        .iter()
        .any(|r| r.dst.to_string() == "::/0"));

    // traffic flows across the bridge (busybox ping from b to a's gateway address)
    let ping = Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "2", "10.99.0.1"])
        .netns(&b.0)
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");

    nb.route_del(&Route::new("10.96.5.5/32".parse().unwrap()).dev(vb.index))
        .unwrap();
    let err = nb
        .route_del(&Route::new("10.96.5.5/32".parse().unwrap()).dev(vb.index))
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!nb
        .routes(None)
        .unwrap()
        .iter()
        .any(|r| r.dst.to_string() == "10.96.5.5/32"));

    // neighbours: permanent and proxy
    let nmac = MacAddr([2, 0, 0, 0, 0, 0x50]);
    na.neigh_add(br.index, "10.99.0.50".parse().unwrap(), nmac)
        .unwrap();
    let n = na.neighs(Some(Family::V4), false).unwrap();
    assert!(n
        .iter()
        .any(|n| n.ip.to_string() == "10.99.0.50" && n.permanent && n.mac == Some(nmac)));
    na.neigh_add_proxy(va.index, "fe80::1".parse().unwrap())
        .unwrap();
    let p = na.neighs(Some(Family::V6), true).unwrap();
    assert!(p.iter().any(|n| n.ip.to_string() == "fe80::1" && n.proxy));
    na.neigh_del_proxy(va.index, "fe80::1".parse().unwrap())
        .unwrap();
    na.neigh_del(br.index, "10.99.0.50".parse().unwrap())
        .unwrap();

    // address removal, detach, move to another namespace, delete
    na.addr_del(br.index, "10.99.0.1/24".parse().unwrap())
        .unwrap();
    assert!(na
        .addr_del(br.index, "10.99.0.1/24".parse().unwrap())
        .unwrap_err()
        .is_not_found());
    na.set_master(va.index, 0).unwrap();
    assert_eq!(na.link("va").unwrap().master, None);
    na.add_veth(&Veth {
        name: "mv1".into(),
        peer_name: "mv2".into(),
        ..Default::default()
    })
    .unwrap();
    let mv = na.link("mv1").unwrap();
    na.set_netns(mv.index, b.0.fd()).unwrap();
    assert!(na.link_by_name("mv1").unwrap().is_none());
    assert!(nb.link_by_name("mv1").unwrap().is_some());
    na.delete_link(va.index).unwrap();
    assert!(nb.link_by_name("vb").unwrap().is_none(), "peer goes too");
    assert!(!na.delete_link_by_name("va").unwrap());
    assert!(na.delete_link(va.index).unwrap_err().is_not_found());
    assert!(na.links().unwrap().iter().any(|l| l.name == "br-t"));
}

#[test]
fn concurrent_creates_from_threads() {
    let names: Vec<String> = (0..16)
        .map(|i| format!("sarasa-t{}-conc{i}", std::process::id()))
        .collect();
    std::thread::scope(|s| {
        for n in &names {
            s.spawn(move || NetNs::create(n).expect("create"));
        }
    });
    for n in &names {
        assert!(NetNs::open(n).is_ok(), "{n}");
        NetNs::delete(n).unwrap();
    }
}

/// A VXLAN device is created with the given parameters and read back from its link info; FDB
/// entries are replaced (not duplicated), listed and deleted; a route's protocol number is set
/// on create, read back by a dump, and a delete naming another protocol leaves the route alone.
#[test]
fn vxlan_fdb_and_route_protocol() {
    let t = TestNs::new("vx");
    let mut nl = Netlink::open_in(&t.0).unwrap();
    nl.add_veth(&Veth {
        name: "up0".into(),
        peer_name: "up1".into(),
        ..Default::default()
    })
    .unwrap();
    let up = nl.link("up0").unwrap();
    nl.set_up(up.index).unwrap();
    nl.addr_add(up.index, "192.168.77.1/24".parse().unwrap())
        .unwrap();

    let vtep_mac = MacAddr([0x0a, 0x58, 0xaa, 0, 0, 1]);
    let spec = VxlanSpec {
        name: "vx-t".into(),
        vni: 4242,
        port: 4789,
        local: "192.168.77.1".parse().unwrap(),
        uplink: up.index,
        mtu: Some(1450),
        mac: Some(vtep_mac),
        up: true,
    };
    nl.add_vxlan(&spec).unwrap();
    assert!(nl.add_vxlan(&spec).unwrap_err().is_exists());
    let vx = nl.link("vx-t").unwrap();
    assert_eq!(vx.kind.as_deref(), Some("vxlan"));
    assert_eq!(vx.mtu, 1450);
    assert_eq!(vx.mac, Some(vtep_mac));
    assert!(vx.up);
    let info = vx.vxlan.expect("vxlan info");
    assert_eq!(info.vni, Some(4242));
    assert_eq!(info.port, Some(4789));
    assert_eq!(info.local, Some(spec.local));
    assert_eq!(info.uplink, Some(up.index));
    assert_eq!(info.learning, Some(false));
    // `ip -d link` agrees with what the link info parser read.
    let out = Command::new("ip")
        .args(["-d", "link", "show", "vx-t"])
        .netns(&t.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("vxlan id 4242"), "{text}");
    assert!(text.contains("nolearning"), "{text}");

    // FDB: replacing twice is one entry; replacing with another remote moves the MAC there
    // (the kernel's replace rewrites the entry's remote, as `bridge fdb replace` does).
    let remote_mac = MacAddr([0x0a, 0x58, 0xaa, 0, 0, 2]);
    let r1: IpAddr = "192.168.77.2".parse().unwrap();
    let r2: IpAddr = "192.168.77.3".parse().unwrap();
    let remotes = |nl: &mut Netlink| -> Vec<IpAddr> {
        nl.fdbs(vx.index)
            .unwrap()
            .iter()
            .filter(|f| f.mac == remote_mac && f.permanent && f.index == vx.index)
            .filter_map(|f| f.dst)
            .collect()
    };
    nl.fdb_replace(vx.index, remote_mac, r1).unwrap();
    nl.fdb_replace(vx.index, remote_mac, r1).unwrap();
    assert_eq!(remotes(&mut nl), vec![r1]);
    let out = Command::new("bridge")
        .args(["fdb", "show", "dev", "vx-t"])
        .netns(&t.0)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0a:58:aa:00:00:02 dst 192.168.77.2"),
        "{text}"
    );
    nl.fdb_replace(vx.index, remote_mac, r2).unwrap();
    assert_eq!(remotes(&mut nl), vec![r2]);
    // The FDB entry is not reported as a neighbour.
    assert!(!nl
        .neighs(None, false)
        .unwrap()
        .iter()
        .any(|n| n.mac == Some(remote_mac)));
    // A delete naming another remote leaves the entry (the kernel answers OK regardless).
    nl.fdb_del(vx.index, remote_mac, r1).unwrap();
    assert_eq!(remotes(&mut nl), vec![r2]);
    nl.fdb_del(vx.index, remote_mac, r2).unwrap();
    assert!(remotes(&mut nl).is_empty());
    assert!(nl
        .fdb_del(vx.index, remote_mac, r2)
        .unwrap_err()
        .is_not_found());

    // Route protocol: set, read back, matched on delete.
    nl.addr_add(vx.index, "10.244.9.0/32".parse().unwrap())
        .unwrap();
    let route = Route::new("10.244.7.0/24".parse().unwrap())
        .via("10.244.7.0".parse().unwrap())
        .dev(vx.index)
        .onlink()
        .protocol(83);
    nl.route_add(&route).unwrap();
    let read = nl
        .routes(Some(Family::V4))
        .unwrap()
        .into_iter()
        .find(|r| r.dst == route.dst)
        .expect("route present");
    assert_eq!(read.protocol, Some(83));
    assert!(read.onlink);
    assert_eq!(read.gateway, route.gateway);
    let out = Command::new("ip")
        .args(["route", "show", "proto", "83"])
        .netns(&t.0)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("10.244.7.0/24"));
    // A device route (protocol kernel) is reported with its own number.
    assert!(nl
        .routes(Some(Family::V4))
        .unwrap()
        .iter()
        .any(|r| r.dst.to_string() == "192.168.77.0/24" && r.protocol == Some(2)));
    let other = Route {
        gateway: None,
        onlink: false,
        protocol: Some(84),
        ..route.clone()
    };
    assert!(nl.route_del(&other).unwrap_err().is_not_found());
    assert!(nl.routes(None).unwrap().iter().any(|r| r.dst == route.dst));
    nl.route_del(&Route {
        gateway: None,
        onlink: false,
        ..route.clone()
    })
    .unwrap();
    assert!(!nl.routes(None).unwrap().iter().any(|r| r.dst == route.dst));

    nl.delete_link(vx.index).unwrap();
    assert!(nl.link_by_name("vx-t").unwrap().is_none());
}
