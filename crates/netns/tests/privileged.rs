//! Privileged tests: real namespaces, veths, bridges, addresses, routes and sysctls.
//! They need root (CAP_SYS_ADMIN + CAP_NET_ADMIN) and fail loudly without it. Every namespace
//! is named `sarasa-t<pid>-...` and removed by a Drop guard.

use std::net::IpAddr;
use std::process::Command;

use sarasa_netns::{CommandExt, Family, NetNs, Netlink, Route, Scope, Veth};

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
        mac: Some([0x0a, 0x58, 0, 0, 0, 1]),
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
    assert_eq!(va.mac_string(), "0a:58:00:00:00:01");
    assert!(na.link_by_name("vb").unwrap().is_none());
    let vb = nb.link("vb").unwrap();
    assert_eq!(vb.mtu, 1400);
    assert_eq!(na.link_by_index(va.index).unwrap().unwrap().name, "va");

    nb.set_mac(vb.index, [0x0a, 0x58, 0, 0, 0, 2]).unwrap();
    nb.set_mtu(vb.index, 1300).unwrap();
    let vb = nb.link("vb").unwrap();
    assert_eq!(vb.mtu, 1300);
    assert_eq!(vb.mac_string(), "0a:58:00:00:00:02");

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
    na.neigh_add(
        br.index,
        "10.99.0.50".parse().unwrap(),
        &[2, 0, 0, 0, 0, 0x50],
    )
    .unwrap();
    let n = na.neighs(Some(Family::V4), false).unwrap();
    assert!(n
        .iter()
        .any(|n| n.ip.to_string() == "10.99.0.50" && n.permanent));
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
