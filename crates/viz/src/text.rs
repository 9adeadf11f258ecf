//! The topology as indented text for a terminal: the fabric, each node with its pods, the
//! tunnels, and each Service with its endpoints (pod names resolved). Stable ordering (as
//! given), so it works as golden output.

use std::fmt::Write;

use crate::model::{join, NodeBox, ServiceBox, Topology};

pub fn render_text(t: &Topology) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "lab {}", t.lab);
    let _ = writeln!(
        s,
        "{}  {} (underlay {})",
        t.fabric.name, t.fabric.address, t.fabric.underlay
    );
    if let Some(ext) = &t.external {
        let _ = writeln!(s, "{}  {}", external_name(&ext.name), ext.address);
    }
    for n in &t.nodes {
        node(&mut s, n);
    }
    if !t.tunnels.is_empty() {
        let _ = writeln!(s, "tunnels");
        for tun in &t.tunnels {
            let _ = writeln!(s, "  {} <-> {}  {}", tun.from, tun.to, tun.kind);
        }
    }
    if !t.services.is_empty() {
        let _ = writeln!(s, "services");
        for svc in &t.services {
            service(&mut s, svc);
        }
    }
    s
}

/// `external` or `external NAME` (the lab's host is just called `external`).
pub(crate) fn external_name(name: &str) -> String {
    if name == "external" {
        name.to_string()
    } else {
        format!("external {name}")
    }
}

fn node(s: &mut String, n: &NodeBox) {
    let _ = writeln!(
        s,
        "node {}  {} {}  podCIDR {}",
        n.name,
        n.uplink,
        n.underlay_ip,
        if n.pod_cidrs.is_empty() {
            "-".to_string()
        } else {
            join(&n.pod_cidrs)
        }
    );
    let mut datapath = format!("  backend {}", n.backend);
    if let Some(v) = &n.vtep {
        let _ = write!(
            datapath,
            "  vtep {} vni {} mac {}",
            v.device,
            v.vni,
            v.mac.as_deref().unwrap_or("?")
        );
    }
    let _ = write!(datapath, "  cni {}", n.cni_mode);
    if let Some(b) = &n.bridge {
        let _ = write!(datapath, "  bridge {b}");
    }
    let _ = writeln!(s, "{datapath}");
    for p in &n.pods {
        let mut line = format!("  pod {}  {}", p.key(), join(&p.ips));
        if p.host_network {
            line.push_str("  hostNetwork");
        } else if let Some(i) = &p.interface {
            let _ = write!(line, "  {i}");
        }
        let _ = writeln!(s, "{line}");
    }
}

fn service(s: &mut String, svc: &ServiceBox) {
    let mut line = format!("  svc {}  {}", svc.key(), svc.service_type);
    if !svc.cluster_ips.is_empty() {
        let _ = write!(line, "  {}", join(&svc.cluster_ips));
    }
    if !svc.ports.is_empty() {
        let _ = write!(line, "  {}", svc.ports.join(","));
    }
    if !svc.node_ports.is_empty() {
        let _ = write!(line, "  nodePort {}", join(&svc.node_ports));
    }
    if !svc.lb_ips.is_empty() {
        let _ = write!(line, "  lb {}", join(&svc.lb_ips));
    }
    let _ = writeln!(s, "{line}");
    if svc.endpoints.is_empty() {
        let _ = writeln!(s, "    (no endpoints)");
    }
    for e in &svc.endpoints {
        let addr = std::net::SocketAddr::new(e.ip, e.port);
        let _ = writeln!(
            s,
            "    -> {addr}  {}  {}",
            e.pod.as_deref().unwrap_or("-"),
            if e.ready { "ready" } else { "not-ready" }
        );
    }
}
