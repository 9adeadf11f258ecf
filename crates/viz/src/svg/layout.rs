//! Where everything goes on the SVG, computed before anything is drawn: the fabric bar at the
//! top with the external host beside it, a band for the tunnel arcs, one column per node with
//! its pods stacked inside, a routing band where each Service has its own horizontal lane, and
//! the Service boxes in rows below. Services reach their endpoint pods through vertical lanes in
//! a gutter on the right of each node column, so lines run beside pod rows, never across them.

use std::collections::BTreeMap;

use crate::model::{join, ElementId, ServiceBox, Topology};

use super::canvas::Rect;

pub const MARGIN: f64 = 20.0;
pub const TITLE_H: f64 = 34.0;
pub const FABRIC_H: f64 = 44.0;
pub const EXT_W: f64 = 200.0;
pub const EXT_GAP: f64 = 40.0;
pub const COL_W: f64 = 270.0;
pub const COL_GAP: f64 = 34.0;
pub const LINE_H: f64 = 15.0;
pub const FONT: f64 = 11.0;
pub const HEAD_FONT: f64 = 13.0;
pub const POD_H: f64 = 32.0;
pub const POD_GAP: f64 = 5.0;
pub const POD_PAD: f64 = 10.0;
pub const LANE_STEP: f64 = 7.0;
/// Lanes per node gutter; further Services share the last lane.
pub const MAX_LANES: usize = 10;
pub const BUS_STEP: f64 = 9.0;
pub const SVC_W: f64 = 260.0;
pub const SVC_GAP: f64 = 26.0;
/// Endpoints listed inside a Service box when they are not pods on the picture.
pub const LISTED_ENDPOINTS: usize = 3;
pub const LEGEND_LINE: f64 = 22.0;

#[derive(Debug, Clone)]
pub struct NodeGeom {
    pub rect: Rect,
    /// The header (name, addresses, vtep, bridge) part of the node box.
    pub header: Rect,
    pub header_lines: Vec<String>,
    /// One per pod, in the node's order.
    pub pods: Vec<Rect>,
    /// (lane index of a Service, x of its vertical lane in this node's gutter).
    pub lanes: Vec<(usize, f64)>,
}

#[derive(Debug, Clone)]
pub struct ServiceGeom {
    pub rect: Rect,
    pub lines: Vec<String>,
    /// Lane of this Service in the routing band (Services with endpoint pods on the picture).
    pub lane: Option<usize>,
    /// y of its lane in the routing band.
    pub bus_y: f64,
    /// x of the vertical that comes down beside the box (in the gap to its left).
    pub entry_x: f64,
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    pub fabric: Rect,
    pub external: Option<Rect>,
    /// Top of the node boxes; tunnel arcs live between the fabric bar and here.
    pub node_top: f64,
    pub nodes: Vec<NodeGeom>,
    pub services: Vec<ServiceGeom>,
    pub legend_top: f64,
}

/// Number of lines of the node header (name first).
fn node_header(t: &Topology, i: usize) -> Vec<String> {
    let n = &t.nodes[i];
    let mut lines = vec![
        n.name.clone(),
        format!("{} {}", n.uplink, n.underlay_ip),
        format!(
            "podCIDR {}",
            if n.pod_cidrs.is_empty() {
                "-".to_string()
            } else {
                join(&n.pod_cidrs)
            }
        ),
    ];
    match &n.vtep {
        Some(v) => {
            lines.push(format!("vtep {} vni {}", v.device, v.vni));
            lines.push(format!("mac {}", v.mac.as_deref().unwrap_or("?")));
        }
        None => lines.push(format!("{}: routes via underlay", n.backend)),
    }
    match &n.bridge {
        Some(b) => lines.push(format!("cni {}: {b}", n.cni_mode)),
        None => lines.push(format!("cni {}", n.cni_mode)),
    }
    lines
}

/// The lines of a Service box (name first).
pub fn service_lines(t: &Topology, s: &ServiceBox) -> Vec<String> {
    let mut lines = vec![format!("svc {}", s.key())];
    if s.cluster_ips.is_empty() {
        lines.push(s.service_type.clone());
    } else {
        lines.push(format!("{} {}", s.service_type, join(&s.cluster_ips)));
    }
    if !s.ports.is_empty() {
        lines.push(format!("ports {}", s.ports.join(",")));
    }
    if !s.node_ports.is_empty() {
        lines.push(format!("nodePort {}", join(&s.node_ports)));
    }
    if !s.lb_ips.is_empty() {
        lines.push(format!("lb {}", join(&s.lb_ips)));
    }
    if s.endpoints.is_empty() {
        lines.push("no endpoints".to_string());
    } else {
        let ready = s.endpoints.iter().filter(|e| e.ready).count();
        lines.push(format!("endpoints {} ({ready} ready)", s.endpoints.len()));
    }
    let off_picture: Vec<String> = s
        .endpoints
        .iter()
        .filter(|e| !endpoint_on_picture(t, e.pod.as_deref()))
        .map(|e| format!("→ {}", std::net::SocketAddr::new(e.ip, e.port)))
        .collect();
    for l in off_picture.iter().take(LISTED_ENDPOINTS) {
        lines.push(l.clone());
    }
    if off_picture.len() > LISTED_ENDPOINTS {
        lines.push(format!("+{} more", off_picture.len() - LISTED_ENDPOINTS));
    }
    lines
}

pub fn endpoint_on_picture(t: &Topology, pod: Option<&str>) -> bool {
    pod.is_some_and(|p| t.find_pod(p).is_some())
}

/// Longest span (in columns) of a tunnel.
fn max_span(t: &Topology) -> usize {
    let col: BTreeMap<&str, usize> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    t.tunnels
        .iter()
        .filter_map(|tun| {
            Some(
                col.get(tun.from.as_str())?
                    .abs_diff(*col.get(tun.to.as_str())?),
            )
        })
        .max()
        .unwrap_or(0)
}

/// Height between two nesting levels of tunnel arcs.
pub const TUNNEL_STEP: f64 = 14.0;

pub fn tunnel_band(span: usize) -> f64 {
    30.0 + TUNNEL_STEP * span as f64
}

pub fn layout(t: &Topology, legend_lines: &[String]) -> Layout {
    let n = t.nodes.len().max(1);
    let nodes_w = n as f64 * COL_W + (n - 1) as f64 * COL_GAP;
    let top_w = nodes_w
        + if t.external.is_some() {
            EXT_GAP + EXT_W
        } else {
            0.0
        };

    // Lanes: Services with at least one endpoint pod on the picture, in order.
    let mut lane_of = Vec::with_capacity(t.services.len());
    let mut lanes = 0usize;
    for s in &t.services {
        if s.endpoints
            .iter()
            .any(|e| endpoint_on_picture(t, e.pod.as_deref()))
        {
            lane_of.push(Some(lanes));
            lanes += 1;
        } else {
            lane_of.push(None);
        }
    }
    // Per node: the lanes whose Services have endpoints among its pods.
    let node_lanes: Vec<Vec<usize>> = t
        .nodes
        .iter()
        .map(|node| {
            t.services
                .iter()
                .zip(&lane_of)
                .filter_map(|(s, lane)| {
                    let here = s.endpoints.iter().any(|e| {
                        e.pod
                            .as_deref()
                            .is_some_and(|p| node.pods.iter().any(|pb| pb.key() == p))
                    });
                    lane.filter(|_| here)
                })
                .collect()
        })
        .collect();
    let widest_gutter = node_lanes
        .iter()
        .map(|l| l.len().min(MAX_LANES))
        .max()
        .unwrap_or(0);
    let gutter = if widest_gutter == 0 {
        0.0
    } else {
        (widest_gutter - 1) as f64 * LANE_STEP + 10.0
    };
    let pod_w = COL_W - 2.0 * POD_PAD - gutter;

    let fabric = Rect::new(MARGIN, TITLE_H + 6.0, nodes_w, FABRIC_H);
    let external = t
        .external
        .as_ref()
        .map(|_| Rect::new(MARGIN + nodes_w + EXT_GAP, fabric.y, EXT_W, FABRIC_H));
    let node_top = fabric.bottom() + tunnel_band(max_span(t));

    let headers: Vec<Vec<String>> = (0..t.nodes.len()).map(|i| node_header(t, i)).collect();
    let header_h = headers
        .iter()
        .map(|h| 12.0 + h.len() as f64 * LINE_H + 4.0)
        .fold(0.0, f64::max);
    let most_pods = t.nodes.iter().map(|n| n.pods.len()).max().unwrap_or(0);
    let node_h = header_h + most_pods as f64 * (POD_H + POD_GAP) + POD_PAD;

    let nodes: Vec<NodeGeom> = t
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let x = MARGIN + i as f64 * (COL_W + COL_GAP);
            let rect = Rect::new(x, node_top, COL_W, node_h);
            let pods = (0..node.pods.len())
                .map(|j| {
                    Rect::new(
                        x + POD_PAD,
                        node_top + header_h + j as f64 * (POD_H + POD_GAP),
                        pod_w,
                        POD_H,
                    )
                })
                .collect();
            let lanes = node_lanes[i]
                .iter()
                .enumerate()
                .map(|(j, lane)| {
                    let j = j.min(MAX_LANES - 1) as f64;
                    (*lane, rect.right() - POD_PAD - gutter + 6.0 + j * LANE_STEP)
                })
                .collect();
            NodeGeom {
                rect,
                header: Rect::new(x, node_top, COL_W, header_h),
                header_lines: headers[i].clone(),
                pods,
                lanes,
            }
        })
        .collect();

    let band_top = node_top + node_h;
    let band_h = 16.0 + lanes as f64 * BUS_STEP;
    let per_row = (((top_w + SVC_GAP) / (SVC_W + SVC_GAP)).floor() as usize).max(1);
    let mut services = Vec::with_capacity(t.services.len());
    let mut row_top = band_top + band_h;
    let mut row_h: f64 = 0.0;
    for (i, s) in t.services.iter().enumerate() {
        let (row, col) = (i / per_row, i % per_row);
        if col == 0 && i > 0 {
            row_top += row_h + SVC_GAP;
            row_h = 0.0;
        }
        let lines = service_lines(t, s);
        let h = 10.0 + lines.len() as f64 * LINE_H + 4.0;
        row_h = row_h.max(h);
        let x = MARGIN + col as f64 * (SVC_W + SVC_GAP);
        services.push(ServiceGeom {
            rect: Rect::new(x, row_top, SVC_W, h),
            lines,
            lane: lane_of[i],
            bus_y: band_top + 12.0 + lane_of[i].unwrap_or(0) as f64 * BUS_STEP,
            entry_x: x - 6.0 - 3.0 * row.min(5) as f64,
        });
    }
    let services_bottom = if t.services.is_empty() {
        band_top
    } else {
        row_top + row_h
    };
    let legend_top = services_bottom + 24.0;
    let legend_w = legend_lines
        .iter()
        .map(|l| 40.0 + l.chars().count() as f64 * FONT * super::canvas::CHAR_EM)
        .fold(0.0, f64::max);
    let width = 2.0 * MARGIN + top_w.max(legend_w.min(top_w.max(900.0)));
    let height = legend_top
        + if legend_lines.is_empty() {
            0.0
        } else {
            LEGEND_LINE * (legend_lines.len() + 1) as f64
        }
        + MARGIN;
    Layout {
        width,
        height,
        fabric,
        external,
        node_top,
        nodes,
        services,
        legend_top,
    }
}

impl Layout {
    /// The rectangle a path leg attaches to.
    pub fn element_rect(&self, t: &Topology, id: &ElementId) -> Option<Rect> {
        match id {
            ElementId::Fabric => Some(self.fabric),
            ElementId::External => self.external,
            ElementId::Node(name) => t
                .nodes
                .iter()
                .position(|n| &n.name == name)
                .map(|i| self.nodes[i].header),
            ElementId::Pod(key) => t.nodes.iter().enumerate().find_map(|(i, n)| {
                n.pods
                    .iter()
                    .position(|p| &p.key() == key)
                    .map(|j| self.nodes[i].pods[j])
            }),
            ElementId::Service(key) => t
                .services
                .iter()
                .position(|s| &s.key() == key)
                .map(|i| self.services[i].rect),
        }
    }
}
