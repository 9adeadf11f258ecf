//! A traced path drawn over the topology: one curved arrow per leg, coloured by its outcome
//! (green forwarded, red dropped, orange rejected), with a numbered badge on the curve, and a
//! legend below the picture that spells each numbered leg out (labels there never collide with
//! the drawing). A dropped leg ends in a cross, a rejected one in a bar.

use std::collections::HashMap;

use crate::model::{ElementId, LegOutcome, PathLeg, Topology};

use super::canvas::{chars_in, fit, Anchor, Canvas, Rect};
use super::layout::{Layout, FONT, LEGEND_LINE};

pub fn color(o: LegOutcome) -> &'static str {
    match o {
        LegOutcome::Forwarded => "#1e9e3a",
        LegOutcome::Dropped => "#d62728",
        LegOutcome::Rejected => "#f28c00",
    }
}

/// Arrowhead markers, one per outcome.
pub fn defs() -> String {
    [
        LegOutcome::Forwarded,
        LegOutcome::Dropped,
        LegOutcome::Rejected,
    ]
    .iter()
    .map(|o| {
        format!(
            "<marker id=\"arrow-{}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" \
             markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" \
             style=\"fill:{}\"/></marker>\n",
            o.as_str(),
            color(*o)
        )
    })
    .collect()
}

/// The legend's lines, one per leg (also used to size the canvas).
pub fn legend_lines(t: &Topology, path: &[PathLeg]) -> Vec<String> {
    path.iter()
        .enumerate()
        .map(|(i, leg)| {
            let missing = !t.contains(&leg.from) || !t.contains(&leg.to);
            format!(
                "{}. {} — {}{}",
                i + 1,
                leg.label,
                leg.outcome.as_str(),
                if missing { " (not on the picture)" } else { "" }
            )
        })
        .collect()
}

/// Where a leg attaches to an element: the fabric bar is wide, so a leg meets it straight
/// above (or below) the other end; anything else where the line between centres leaves it.
fn attach(id: &ElementId, r: Rect, other: (f64, f64)) -> (f64, f64) {
    if *id == ElementId::Fabric {
        // Beside the bar (the external host): meet its end.
        if other.0 > r.right() {
            return (r.right(), r.cy());
        }
        if other.0 < r.x {
            return (r.x, r.cy());
        }
        let x = other.0.clamp(r.x + 10.0, r.right() - 10.0);
        let y = if other.1 > r.cy() { r.bottom() } else { r.y };
        return (x, y);
    }
    r.border_towards(other.0, other.1)
}

fn centre(id: &ElementId, r: Rect, other: Rect) -> (f64, f64) {
    if *id == ElementId::Fabric {
        (other.cx().clamp(r.x, r.right()), r.cy())
    } else {
        (r.cx(), r.cy())
    }
}

pub fn draw(c: &mut Canvas, t: &Topology, l: &Layout, path: &[PathLeg]) {
    if path.is_empty() {
        return;
    }
    let mut bends: HashMap<(String, String), usize> = HashMap::new();
    for (i, leg) in path.iter().enumerate() {
        let (Some(ra), Some(rb)) = (l.element_rect(t, &leg.from), l.element_rect(t, &leg.to))
        else {
            continue;
        };
        let col = color(leg.outcome);
        let (ca, cb) = (centre(&leg.from, ra, rb), centre(&leg.to, rb, ra));
        let p0 = attach(&leg.from, ra, cb);
        let p1 = attach(&leg.to, rb, ca);
        let key = (format!("{:?}", leg.from), format!("{:?}", leg.to));
        let k = bends.entry(key).or_insert(0);
        let bend = 36.0 + 26.0 * *k as f64;
        *k += 1;
        let (dx, dy) = (p1.0 - p0.0, p1.1 - p0.1);
        let len = (dx * dx + dy * dy).sqrt();
        let (d, mid) = if len < 1.0 {
            // A leg from an element to itself: a loop out to the right.
            let (x, y) = (ra.right(), ra.cy());
            (
                format!(
                    "M {x:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {x:.1} {:.1}",
                    y - 6.0,
                    x + 40.0,
                    y - 30.0,
                    x + 40.0,
                    y + 30.0,
                    y + 6.0
                ),
                (x + 30.0, y),
            )
        } else {
            let (nx, ny) = (-dy / len, dx / len);
            let ctrl = (
                (p0.0 + p1.0) / 2.0 + nx * bend,
                (p0.1 + p1.1) / 2.0 + ny * bend,
            );
            let mid = (
                0.25 * p0.0 + 0.5 * ctrl.0 + 0.25 * p1.0,
                0.25 * p0.1 + 0.5 * ctrl.1 + 0.25 * p1.1,
            );
            (
                format!(
                    "M {:.1} {:.1} Q {:.1} {:.1} {:.1} {:.1}",
                    p0.0, p0.1, ctrl.0, ctrl.1, p1.0, p1.1
                ),
                mid,
            )
        };
        c.group(
            &format!("path-leg {}", leg.outcome.as_str()),
            &format!("{}. {} ({})", i + 1, leg.label, leg.outcome.as_str()),
        );
        c.path(
            &d,
            "fill:none;stroke:#ffffff;stroke-width:6;stroke-opacity:0.8",
            "",
        );
        c.path(
            &d,
            &format!("fill:none;stroke:{col};stroke-width:3"),
            &format!(" marker-end=\"url(#arrow-{})\"", leg.outcome.as_str()),
        );
        match leg.outcome {
            LegOutcome::Forwarded => {}
            LegOutcome::Dropped => {
                let s = format!("stroke:{col};stroke-width:3.5;stroke-linecap:round");
                c.line((p1.0 - 7.0, p1.1 - 7.0), (p1.0 + 7.0, p1.1 + 7.0), &s);
                c.line((p1.0 - 7.0, p1.1 + 7.0), (p1.0 + 7.0, p1.1 - 7.0), &s);
            }
            LegOutcome::Rejected => {
                let s = format!("stroke:{col};stroke-width:3.5;stroke-linecap:round");
                c.line((p1.0 - 8.0, p1.1), (p1.0 + 8.0, p1.1), &s);
            }
        }
        badge(c, mid, i + 1, col);
        c.end_group();
    }
}

fn badge(c: &mut Canvas, at: (f64, f64), n: usize, col: &str) {
    c.circle(
        at,
        9.5,
        &format!("fill:{col};stroke:#ffffff;stroke-width:1.5"),
    );
    c.text_unrecorded(
        (at.0, at.1 + 4.0),
        11.0,
        Anchor::Middle,
        "font-weight:bold;fill:#ffffff",
        &n.to_string(),
    );
}

pub fn legend(c: &mut Canvas, l: &Layout, path: &[PathLeg], lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let y0 = l.legend_top;
    c.text(
        (20.0, y0 + 12.0),
        12.0,
        Anchor::Start,
        "font-weight:bold;fill:#1f2937",
        "path",
    );
    for (i, (leg, line)) in path.iter().zip(lines).enumerate() {
        let y = y0 + LEGEND_LINE * (i + 1) as f64 + 12.0;
        let col = color(leg.outcome);
        c.group("legend", line);
        badge(c, (30.0, y - 4.0), i + 1, col);
        let (text, _) = fit(
            line.split_once(". ")
                .map_or(line.as_str(), |(_, rest)| rest),
            chars_in(l.width - 70.0, FONT),
        );
        c.text(
            (46.0, y),
            FONT,
            Anchor::Start,
            &format!("fill:{col}"),
            &text,
        );
        c.end_group();
    }
}
