//! Pictures of a lab: the topology as plain data ([`Topology`]: fabric, external host, nodes
//! with their pods, tunnels, Services with their endpoints) and three renderers of it — text
//! for terminals, Graphviz DOT, and an SVG laid out here (no Graphviz needed) that can carry a
//! traced path on top (`sarasa trace -o svg`). No I/O and no Kubernetes types: the CLI builds
//! the topology from the lab spec and API objects, trace from the node plans.

mod dot;
mod model;
mod svg;
mod text;

pub use dot::{dot_id, render_dot};
pub use model::{
    ElementId, EndpointRef, Fabric, Host, LegOutcome, NodeBox, PathLeg, PodBox, ServiceBox,
    Topology, Tunnel, VtepBox,
};
pub use svg::render_svg;
pub use text::render_text;

#[cfg(test)]
mod tests;
