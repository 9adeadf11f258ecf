//! The topology as Graphviz DOT (`dot -Tsvg` input) for those who prefer Graphviz's layout or
//! want to post-process the graph: one cluster per node holding its pods, the fabric and the
//! external host above, tunnels as dashed edges, Services as their own shapes with edges to
//! their endpoint pods. Every ID and label is quoted and escaped.

use std::fmt::Write;

use crate::model::{join, ElementId, Topology};

/// The DOT node ID of an element (`fabric`, `external`, `node/NAME`, `pod/NS/NAME`,
/// `svc/NS/NAME`), quoted.
pub fn dot_id(id: &ElementId) -> String {
    let raw = match id {
        ElementId::Fabric => "fabric".to_string(),
        ElementId::External => "external".to_string(),
        ElementId::Node(n) => format!("node/{n}"),
        ElementId::Pod(k) => format!("pod/{k}"),
        ElementId::Service(k) => format!("svc/{k}"),
    };
    quote(&raw)
}

/// A DOT double-quoted string: `"` and `\` escaped, newlines as `\n` (centred lines).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn render_dot(t: &Topology) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "digraph {} {{", quote(&format!("lab {}", t.lab)));
    let _ = writeln!(
        s,
        "  graph [rankdir=TB, labelloc=t, fontname=\"monospace\", label={}];",
        quote(&format!("lab {}", t.lab))
    );
    let _ = writeln!(
        s,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"monospace\", fontsize=10];"
    );
    let _ = writeln!(s, "  edge [dir=none, fontname=\"monospace\", fontsize=9];");
    let _ = writeln!(
        s,
        "  {} [label={}, fillcolor=\"#e8eef7\"];",
        dot_id(&ElementId::Fabric),
        quote(&format!(
            "{} {}\nunderlay {}",
            t.fabric.name, t.fabric.address, t.fabric.underlay
        ))
    );
    if let Some(ext) = &t.external {
        let _ = writeln!(
            s,
            "  {} [label={}, fillcolor=\"#f3ecdf\"];",
            dot_id(&ElementId::External),
            quote(&format!("{}\n{}", ext.name, ext.address))
        );
        let _ = writeln!(
            s,
            "  {} -> {};",
            dot_id(&ElementId::External),
            dot_id(&ElementId::Fabric)
        );
    }
    for (i, n) in t.nodes.iter().enumerate() {
        let node_id = dot_id(&ElementId::Node(n.name.clone()));
        let _ = writeln!(s, "  subgraph cluster_{i} {{");
        let _ = writeln!(s, "    label={}; style=rounded;", quote(&n.name));
        let mut label = format!(
            "{}\n{} {}\npodCIDR {}",
            n.name,
            n.uplink,
            n.underlay_ip,
            join(&n.pod_cidrs)
        );
        if let Some(v) = &n.vtep {
            let _ = write!(
                label,
                "\nvtep {} vni {}\nmac {}",
                v.device,
                v.vni,
                v.mac.as_deref().unwrap_or("?")
            );
        } else {
            let _ = write!(label, "\n{}", n.backend);
        }
        match &n.bridge {
            Some(b) => {
                let _ = write!(label, "\nbridge {b}");
            }
            None => {
                let _ = write!(label, "\ncni {}", n.cni_mode);
            }
        }
        let _ = writeln!(
            s,
            "    {node_id} [label={}, fillcolor=\"#eef3e6\"];",
            quote(&label)
        );
        for p in &n.pods {
            let pod_id = dot_id(&ElementId::Pod(p.key()));
            let mut label = format!("{}\n{}", p.key(), join(&p.ips));
            if p.host_network {
                label.push_str("\nhostNetwork");
            }
            let _ = writeln!(
                s,
                "    {pod_id} [label={}, shape=ellipse, style=filled, fillcolor=\"#fbfbf4\"];",
                quote(&label)
            );
            let _ = writeln!(s, "    {node_id} -> {pod_id} [color=gray60];");
        }
        let _ = writeln!(s, "  }}");
        let _ = writeln!(
            s,
            "  {} -> {node_id} [label={}];",
            dot_id(&ElementId::Fabric),
            quote(&format!("{} {}", n.uplink, n.underlay_ip))
        );
    }
    for tun in &t.tunnels {
        let _ = writeln!(
            s,
            "  {} -> {} [style=dashed, color=\"#3b6fb6\", constraint=false, label={}];",
            dot_id(&ElementId::Node(tun.from.clone())),
            dot_id(&ElementId::Node(tun.to.clone())),
            quote(&tun.kind)
        );
    }
    for svc in &t.services {
        let svc_id = dot_id(&ElementId::Service(svc.key()));
        let mut label = format!(
            "svc {}\n{} {}",
            svc.key(),
            svc.service_type,
            join(&svc.cluster_ips)
        );
        if !svc.ports.is_empty() {
            let _ = write!(label, "\n{}", svc.ports.join(","));
        }
        if !svc.node_ports.is_empty() {
            let _ = write!(label, "\nnodePort {}", join(&svc.node_ports));
        }
        if !svc.lb_ips.is_empty() {
            let _ = write!(label, "\nlb {}", join(&svc.lb_ips));
        }
        if svc.endpoints.is_empty() {
            label.push_str("\n(no endpoints)");
        }
        let _ = writeln!(
            s,
            "  {svc_id} [label={}, shape=hexagon, style=filled, fillcolor=\"#f6e7f0\"];",
            quote(&label)
        );
        let mut seen = std::collections::BTreeSet::new();
        for e in &svc.endpoints {
            // One edge per endpoint pod (a pod serving several ports gets one edge).
            let target = match &e.pod {
                Some(p) if t.find_pod(p).is_some() => dot_id(&ElementId::Pod(p.clone())),
                _ => {
                    let id = quote(&format!("ip/{}", e.ip));
                    if seen.insert(id.clone()) {
                        let _ = writeln!(
                            s,
                            "  {id} [label={}, shape=plain];",
                            quote(&e.ip.to_string())
                        );
                    }
                    id
                }
            };
            if seen.insert(format!("edge {target}")) {
                let style = if e.ready { "solid" } else { "dotted" };
                let _ = writeln!(
                    s,
                    "  {svc_id} -> {target} [dir=forward, color=\"#a0457a\", style={style}, label={}];",
                    quote(&e.port.to_string())
                );
            }
        }
    }
    if !t.services.is_empty() {
        // Services below the nodes, as on the SVG.
        let ids: Vec<String> = t
            .services
            .iter()
            .map(|svc| dot_id(&ElementId::Service(svc.key())))
            .collect();
        let _ = writeln!(s, "  {{ rank=sink; {}; }}", ids.join("; "));
    }
    let _ = writeln!(s, "}}");
    s
}
