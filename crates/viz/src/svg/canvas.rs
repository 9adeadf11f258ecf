//! A small SVG writer: escaped text and attributes, shapes, groups with `<title>` tooltips, and
//! a record of every text's bounding box (monospace, so its width is known exactly) so tests
//! can check that no two labels overlap.

use std::fmt::Write;

/// Width of one character as a fraction of the font size (monospace fonts are 0.6em wide).
pub const CHAR_EM: f64 = 0.6;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn new(x: f64, y: f64, w: f64, h: f64) -> Rect {
        Rect { x, y, w, h }
    }
    pub fn right(&self) -> f64 {
        self.x + self.w
    }
    pub fn bottom(&self) -> f64 {
        self.y + self.h
    }
    pub fn cx(&self) -> f64 {
        self.x + self.w / 2.0
    }
    pub fn cy(&self) -> f64 {
        self.y + self.h / 2.0
    }
    /// True when the two rectangles share interior area.
    #[cfg(test)]
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.right() && o.x < self.right() && self.y < o.bottom() && o.y < self.bottom()
    }
    /// Where the segment from the centre towards `(tx, ty)` leaves the rectangle.
    pub fn border_towards(&self, tx: f64, ty: f64) -> (f64, f64) {
        let (cx, cy) = (self.cx(), self.cy());
        let (dx, dy) = (tx - cx, ty - cy);
        if dx.abs() < f64::EPSILON && dy.abs() < f64::EPSILON {
            return (cx, cy);
        }
        let sx = if dx.abs() > f64::EPSILON {
            (self.w / 2.0) / dx.abs()
        } else {
            f64::INFINITY
        };
        let sy = if dy.abs() > f64::EPSILON {
            (self.h / 2.0) / dy.abs()
        } else {
            f64::INFINITY
        };
        let s = sx.min(sy).min(1.0);
        (cx + dx * s, cy + dy * s)
    }
}

/// Text escaped for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to at most `max_chars` characters, ending in `…` when cut; and whether it was.
pub fn fit(text: &str, max_chars: usize) -> (String, bool) {
    let n = text.chars().count();
    if n <= max_chars {
        return (text.to_string(), false);
    }
    if max_chars == 0 {
        return (String::new(), true);
    }
    let mut s: String = text.chars().take(max_chars - 1).collect();
    s.push('…');
    (s, true)
}

/// How many characters of font size `size` fit in `width` pixels.
pub fn chars_in(width: f64, size: f64) -> usize {
    if width <= 0.0 {
        0
    } else {
        (width / (size * CHAR_EM)).floor() as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
}

/// The SVG document being written.
#[derive(Debug, Default)]
pub struct Canvas {
    body: String,
    /// Bounding boxes of the labels written (not of path badges, which sit on top on purpose).
    pub text_boxes: Vec<(Rect, String)>,
}

impl Canvas {
    /// Opens a `<g>` with a tooltip (`<title>`) and optional class.
    pub fn group(&mut self, class: &str, title: &str) {
        let _ = writeln!(
            self.body,
            "<g class=\"{}\"><title>{}</title>",
            escape(class),
            escape(title)
        );
    }

    pub fn end_group(&mut self) {
        self.body.push_str("</g>\n");
    }

    pub fn rect(&mut self, r: Rect, rx: f64, style: &str) {
        let _ = writeln!(
            self.body,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"{rx}\" style=\"{}\"/>",
            r.x,
            r.y,
            r.w,
            r.h,
            escape(style)
        );
    }

    pub fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
        let _ = writeln!(
            self.body,
            "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" style=\"{}\"/>",
            escape(style)
        );
    }

    pub fn path(&mut self, d: &str, style: &str, extra: &str) {
        let _ = writeln!(
            self.body,
            "<path d=\"{}\" style=\"{}\"{extra}/>",
            escape(d),
            escape(style)
        );
    }

    pub fn circle(&mut self, (cx, cy): (f64, f64), r: f64, style: &str) {
        let _ = writeln!(
            self.body,
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{r}\" style=\"{}\"/>",
            escape(style)
        );
    }

    /// One line of text with its baseline at `y`; recorded for the overlap check.
    pub fn text(&mut self, (x, y): (f64, f64), size: f64, anchor: Anchor, style: &str, s: &str) {
        let w = s.chars().count() as f64 * size * CHAR_EM;
        let left = match anchor {
            Anchor::Start => x,
            Anchor::Middle => x - w / 2.0,
        };
        self.text_boxes
            .push((Rect::new(left, y - size * 0.8, w, size), s.to_string()));
        self.text_unrecorded((x, y), size, anchor, style, s);
    }

    /// Text that is allowed to sit on top of other things (path badges).
    pub fn text_unrecorded(
        &mut self,
        (x, y): (f64, f64),
        size: f64,
        anchor: Anchor,
        style: &str,
        s: &str,
    ) {
        let anchor = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
        };
        let _ = writeln!(
            self.body,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{size}\" text-anchor=\"{anchor}\" style=\"{}\">{}</text>",
            escape(style),
            escape(s)
        );
    }

    /// The finished document.
    pub fn finish(self, width: f64, height: f64, title: &str, defs: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" \
             viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\">\n\
             <title>{}</title>\n<defs>\n{defs}</defs>\n\
             <rect x=\"0\" y=\"0\" width=\"{w:.0}\" height=\"{h:.0}\" style=\"fill:#ffffff\"/>\n\
             {}</svg>\n",
            escape(title),
            self.body,
            w = width,
            h = height,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_with_an_ellipsis_and_says_so() {
        assert_eq!(fit("abcdef", 6), ("abcdef".to_string(), false));
        assert_eq!(fit("abcdefg", 6), ("abcde…".to_string(), true));
        assert_eq!(fit("abc", 0), (String::new(), true));
    }

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }

    #[test]
    fn border_point_lies_on_the_edge_towards_the_target() {
        let r = Rect::new(0.0, 0.0, 100.0, 20.0);
        assert_eq!(r.border_towards(50.0, 100.0), (50.0, 20.0));
        assert_eq!(r.border_towards(500.0, 10.0), (100.0, 10.0));
    }
}
