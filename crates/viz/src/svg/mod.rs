//! The topology as a self-laid-out SVG (no Graphviz at run time): fabric bar on top with the
//! external host beside it, one column per node with its pods, tunnel arcs between nodes,
//! Services in a band below with lanes to their endpoint pods, and an optional traced path on
//! top. Text is monospace so every label's width is known and cut to fit; full names are in
//! `<title>` tooltips.

mod canvas;
mod draw;
mod layout;
mod path;

use crate::model::{PathLeg, Topology};

pub use canvas::Rect;

pub fn render_svg(t: &Topology, path: &[PathLeg]) -> String {
    render(t, path).0
}

/// The SVG and the bounding box of every label on it (for the overlap tests).
pub(crate) fn render(t: &Topology, path: &[PathLeg]) -> (String, Vec<(Rect, String)>) {
    let legend = path::legend_lines(t, path);
    let l = layout::layout(t, &legend);
    let mut c = canvas::Canvas::default();
    draw::title(&mut c, t, &l);
    draw::links(&mut c, t, &l);
    draw::fabric(&mut c, t, &l);
    draw::nodes(&mut c, t, &l);
    draw::service_routes(&mut c, t, &l);
    draw::services(&mut c, t, &l);
    path::draw(&mut c, t, &l, path);
    path::legend(&mut c, &l, path, &legend);
    let boxes = c.text_boxes.clone();
    let svg = c.finish(l.width, l.height, &format!("lab {}", t.lab), &path::defs());
    (svg, boxes)
}
