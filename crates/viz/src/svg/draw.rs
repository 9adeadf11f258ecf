//! Draws the topology onto a [`Canvas`] at the places the [`Layout`] chose: links and tunnel
//! arcs first (underneath), then the boxes, then the Service lanes on top of the node boxes.
//! Every label is cut to the width it has; the full text is in the element's `<title>`.

use crate::model::{join, Topology};

use super::canvas::{chars_in, fit, Anchor, Canvas, Rect};
use super::layout::{Layout, FONT, HEAD_FONT, LINE_H};

/// Service colours: distinct from the path's green, red and orange.
pub const PALETTE: [&str; 8] = [
    "#1f5fbf", "#8e44ad", "#8c564b", "#c2378f", "#138a9e", "#7a7d12", "#4b5563", "#2b2f8f",
];

const HALO: &str = "paint-order:stroke;stroke:#ffffff;stroke-width:3px;stroke-linejoin:round";

pub fn service_color(lane: Option<usize>) -> &'static str {
    lane.map_or("#9ca3af", |l| PALETTE[l % PALETTE.len()])
}

pub fn title(c: &mut Canvas, t: &Topology, l: &Layout) {
    let backend = t.nodes.first().map_or("-", |n| n.backend.as_str());
    let mode = t.nodes.first().map_or("-", |n| n.cni_mode.as_str());
    let pods: usize = t.nodes.iter().map(|n| n.pods.len()).sum();
    let text = format!(
        "lab {} · {} nodes · backend {} · cni {} · {} pods · {} services",
        t.lab,
        t.nodes.len(),
        backend,
        mode,
        pods,
        t.services.len()
    );
    let (s, _) = fit(&text, chars_in(l.width - 40.0, HEAD_FONT));
    c.text(
        (20.0, 24.0),
        HEAD_FONT,
        Anchor::Start,
        "font-weight:bold;fill:#1f2937",
        &s,
    );
}

pub fn links(c: &mut Canvas, t: &Topology, l: &Layout) {
    for g in &l.nodes {
        c.line(
            (g.rect.cx(), l.fabric.bottom()),
            (g.rect.cx(), g.rect.y),
            "stroke:#6b7280;stroke-width:2",
        );
    }
    if let Some(ext) = l.external {
        c.line(
            (l.fabric.right(), l.fabric.cy()),
            (ext.x, ext.cy()),
            "stroke:#6b7280;stroke-width:2",
        );
    }
    let col = |name: &str| t.nodes.iter().position(|n| n.name == name);
    // One label when every tunnel is of one kind (a full mesh would repeat it on every arc);
    // each arc still carries its own in its tooltip.
    let one_kind = t.tunnels.windows(2).all(|w| w[0].kind == w[1].kind);
    if let (true, Some(first)) = (one_kind, t.tunnels.first()) {
        let label = if t.tunnels.len() > 1 {
            format!("{} (between every pair of nodes)", first.kind)
        } else {
            first.kind.clone()
        };
        c.text(
            (l.fabric.x + 4.0, l.fabric.bottom() + 14.0),
            9.0,
            Anchor::Start,
            &format!("fill:#2f5a96;{HALO}"),
            &label,
        );
    }
    for tun in &t.tunnels {
        let (Some(a), Some(b)) = (col(&tun.from), col(&tun.to)) else {
            continue;
        };
        let (a, b) = (a.min(b), a.max(b));
        if a == b {
            continue;
        }
        let d = (b - a) as f64;
        let off = (90.0 - 16.0 * (d - 1.0)).max(8.0);
        let (x1, x2) = (l.nodes[a].rect.cx() + off, l.nodes[b].rect.cx() - off);
        let y = l.node_top;
        let apex = super::layout::TUNNEL_STEP * d + 6.0;
        let hc = apex / 0.75;
        let vxlan = tun.kind.starts_with("vxlan");
        let style = if vxlan {
            "fill:none;stroke:#3b6fb6;stroke-width:1.6;stroke-dasharray:6 3"
        } else {
            "fill:none;stroke:#8b8b8b;stroke-width:1.4;stroke-dasharray:2 3"
        };
        c.group(
            "tunnel",
            &format!("{} <-> {}: {}", tun.from, tun.to, tun.kind),
        );
        c.path(
            &format!(
                "M {x1:.1} {y:.1} C {x1:.1} {:.1}, {x2:.1} {:.1}, {x2:.1} {y:.1}",
                y - hc,
                y - hc
            ),
            style,
            "",
        );
        if !one_kind {
            c.text(
                ((x1 + x2) / 2.0, y - apex - 3.0),
                9.0,
                Anchor::Middle,
                &format!("fill:{};{HALO}", if vxlan { "#2f5a96" } else { "#555555" }),
                &tun.kind,
            );
        }
        c.end_group();
    }
}

pub fn fabric(c: &mut Canvas, t: &Topology, l: &Layout) {
    let f = &t.fabric;
    c.group(
        "fabric",
        &format!("{} {} (underlay {})", f.name, f.address, f.underlay),
    );
    c.rect(
        l.fabric,
        6.0,
        "fill:#e8eef7;stroke:#4a6fa5;stroke-width:1.5",
    );
    let text = format!(
        "{} · router {} · underlay {}",
        f.name, f.address, f.underlay
    );
    let (s, _) = fit(&text, chars_in(l.fabric.w - 20.0, 12.0));
    c.text(
        (l.fabric.x + 12.0, l.fabric.y + 27.0),
        12.0,
        Anchor::Start,
        "font-weight:bold;fill:#1e3a5f",
        &s,
    );
    c.end_group();
    if let (Some(ext), Some(r)) = (&t.external, l.external) {
        c.group(
            "external",
            &format!("external host {} {}", ext.name, ext.address),
        );
        c.rect(r, 6.0, "fill:#f6efe1;stroke:#a0782d;stroke-width:1.5");
        let max = chars_in(r.w - 20.0, FONT);
        let (name, _) = fit(&crate::text::external_name(&ext.name), max);
        c.text(
            (r.x + 10.0, r.y + 18.0),
            FONT,
            Anchor::Start,
            "font-weight:bold;fill:#5c4413",
            &name,
        );
        let (addr, _) = fit(&ext.address.to_string(), max);
        c.text(
            (r.x + 10.0, r.y + 34.0),
            FONT,
            Anchor::Start,
            "fill:#5c4413",
            &addr,
        );
        c.end_group();
    }
}

pub fn nodes(c: &mut Canvas, t: &Topology, l: &Layout) {
    for (node, g) in t.nodes.iter().zip(&l.nodes) {
        c.group("node", &g.header_lines.join("\n"));
        c.rect(g.rect, 8.0, "fill:#f3f6ec;stroke:#5b7a2a;stroke-width:1.5");
        for (k, line) in g.header_lines.iter().enumerate() {
            let (size, style) = if k == 0 {
                (HEAD_FONT, "font-weight:bold;fill:#2f4214")
            } else {
                (FONT, "fill:#374151")
            };
            let (s, _) = fit(line, chars_in(g.rect.w - 20.0, size));
            c.text(
                (g.rect.x + 10.0, g.rect.y + 22.0 + k as f64 * LINE_H),
                size,
                Anchor::Start,
                style,
                &s,
            );
        }
        c.end_group();
        for (p, r) in node.pods.iter().zip(&g.pods) {
            let mut tip = format!("pod {}\n{}", p.key(), join(&p.ips));
            if p.host_network {
                tip.push_str("\nhostNetwork");
            }
            if let Some(i) = &p.interface {
                tip.push_str(&format!("\ninterface {i}"));
            }
            tip.push_str(&format!("\nnode {}", node.name));
            c.group("pod", &tip);
            let style = if p.host_network {
                "fill:#ececec;stroke:#8a8a8a;stroke-dasharray:3 2"
            } else {
                "fill:#ffffff;stroke:#9aa88a"
            };
            c.rect(*r, 4.0, style);
            let (name, _) = fit(&p.name, chars_in(r.w - 12.0, FONT));
            c.text(
                (r.x + 6.0, r.y + 13.0),
                FONT,
                Anchor::Start,
                "font-weight:bold;fill:#111827",
                &name,
            );
            let ip = match p.ips.as_slice() {
                [] => "no IP".to_string(),
                [one] => one.to_string(),
                [first, rest @ ..] => format!("{first} +{}", rest.len()),
            };
            let second = if p.host_network {
                format!("{ip} · hostNetwork · {}", p.namespace)
            } else {
                format!("{ip} · {}", p.namespace)
            };
            let (second, _) = fit(&second, chars_in(r.w - 12.0, 10.0));
            c.text(
                (r.x + 6.0, r.y + 26.0),
                10.0,
                Anchor::Start,
                "fill:#4b5563",
                &second,
            );
            c.end_group();
        }
    }
}

/// Each Service's lines to its endpoint pods: stubs from the pods to the node gutter, down to
/// the Service's lane in the routing band, along it, and down beside the Service box.
pub fn service_routes(c: &mut Canvas, t: &Topology, l: &Layout) {
    for (s, g) in t.services.iter().zip(&l.services) {
        let Some(lane) = g.lane else { continue };
        let color = service_color(Some(lane));
        let style = format!("fill:none;stroke:{color};stroke-width:1.4;stroke-opacity:0.9");
        c.group("service-route", &format!("svc {} endpoints", s.key()));
        let mut xs = vec![g.entry_x];
        for (node, ng) in t.nodes.iter().zip(&l.nodes) {
            let Some(&(_, lx)) = ng.lanes.iter().find(|(ln, _)| *ln == lane) else {
                continue;
            };
            let ends: Vec<(Rect, bool)> = node
                .pods
                .iter()
                .zip(&ng.pods)
                .filter_map(|(p, r)| {
                    let key = p.key();
                    let mine: Vec<bool> = s
                        .endpoints
                        .iter()
                        .filter(|e| e.pod.as_deref() == Some(&key))
                        .map(|e| e.ready)
                        .collect();
                    (!mine.is_empty()).then(|| (*r, mine.iter().any(|r| *r)))
                })
                .collect();
            let Some(top) = ends.iter().map(|(r, _)| r.cy()).reduce(f64::min) else {
                continue;
            };
            c.line((lx, top), (lx, g.bus_y), &style);
            for (r, ready) in &ends {
                c.line((lx, r.cy()), (r.right(), r.cy()), &style);
                // Filled: a ready endpoint; hollow: not ready (kept out of load balancing).
                let fill = if *ready { color } else { "#ffffff" };
                c.circle(
                    (r.right(), r.cy()),
                    2.8,
                    &format!("fill:{fill};stroke:{color};stroke-width:1.2"),
                );
            }
            xs.push(lx);
        }
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        c.line((lo, g.bus_y), (hi, g.bus_y), &style);
        let entry_y = g.rect.y + 12.0;
        c.path(
            &format!(
                "M {:.1} {:.1} L {:.1} {entry_y:.1} L {:.1} {entry_y:.1}",
                g.entry_x, g.bus_y, g.entry_x, g.rect.x
            ),
            &style,
            "",
        );
        c.end_group();
    }
}

pub fn services(c: &mut Canvas, t: &Topology, l: &Layout) {
    for (s, g) in t.services.iter().zip(&l.services) {
        let color = service_color(g.lane);
        let mut tip = g.lines.join("\n");
        for e in &s.endpoints {
            tip.push_str(&format!(
                "\n  {} {}{}",
                std::net::SocketAddr::new(e.ip, e.port),
                e.pod.as_deref().unwrap_or("-"),
                if e.ready { "" } else { " (not ready)" }
            ));
        }
        c.group("service", &tip);
        c.rect(
            g.rect,
            6.0,
            &format!("fill:#fbf6fa;stroke:{color};stroke-width:1.5"),
        );
        c.rect(
            Rect::new(g.rect.x, g.rect.y, 5.0, g.rect.h),
            2.0,
            &format!("fill:{color};stroke:none"),
        );
        for (k, line) in g.lines.iter().enumerate() {
            let (size, style) = match (k, line.as_str()) {
                (0, _) => (12.0, "font-weight:bold;fill:#3b0a2a"),
                (_, "no endpoints") => (FONT, "font-weight:bold;fill:#b42318"),
                _ => (FONT, "fill:#374151"),
            };
            let (text, _) = fit(line, chars_in(g.rect.w - 20.0, size));
            c.text(
                (g.rect.x + 12.0, g.rect.y + 21.0 + k as f64 * LINE_H),
                size,
                Anchor::Start,
                style,
                &text,
            );
        }
        c.end_group();
    }
}
