//! `--plot`: the report drawn as one SVG file with two panels, latency by percentile (connect
//! and response) and, per second, throughput, errors and p50/p99 latency.
//!
//! Hand-written rather than drawn with `plotters`: plotters measures text with a font backend
//! that either pulls in system font libraries (fontconfig, freetype) or estimates badly, and
//! these two fixed charts need only lines, rectangles and text, which SVG itself lays out.
//! About 200 lines, no dependency, and the output is stable for tests.

use std::fmt::Write;

use crate::report::{human_us, DistributionPoint, Report};

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 300.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 80.0;
const RESPONSE_COLOUR: &str = "#1f77b4";
const CONNECT_COLOUR: &str = "#ff7f0e";
const ERROR_COLOUR: &str = "#d62728";
const P99_COLOUR: &str = "#9467bd";

/// Renders the report as a complete SVG document.
pub(crate) fn render(r: &Report) -> String {
    let mut s = String::new();
    let height = 60.0 + 2.0 * (PANEL_HEIGHT + 70.0);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        escape(&format!(
            "spillway bench {} ({}): {} responses, {:.1}/s, {} errors",
            r.target.url,
            r.scenario.kind,
            r.responses.total,
            r.responses.per_second,
            r.errors.total
        ))
    );
    percentile_panel(&mut s, r, 60.0);
    timeline_panel(&mut s, r, 60.0 + PANEL_HEIGHT + 70.0);
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Rounds up to 1, 2 or 5 times a power of ten, so axis ticks are round numbers.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * magnitude {
            return m * magnitude;
        }
    }
    10.0 * magnitude
}

fn polyline(s: &mut String, points: &[(f64, f64)], colour: &str, width: f64) {
    if points.is_empty() {
        return;
    }
    let coords: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{}"/>"#,
        coords.join(" ")
    );
}

fn frame(s: &mut String, top: f64, title: &str) {
    let w = WIDTH - LEFT - RIGHT;
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top}" width="{w}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}</text>"#,
        top - 8.0,
        escape(title)
    );
}

/// Horizontal grid lines with latency labels on the given side.
fn latency_axis(s: &mut String, top: f64, max_us: f64, right_side: bool) {
    for i in 0..=5 {
        let v = max_us * f64::from(i) / 5.0;
        let y = top + PANEL_HEIGHT - PANEL_HEIGHT * f64::from(i) / 5.0;
        if !right_side {
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
                WIDTH - RIGHT
            );
        }
        let (x, anchor) = if right_side {
            (WIDTH - RIGHT + 6.0, "start")
        } else {
            (LEFT - 6.0, "end")
        };
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
            y + 4.0,
            human_us(v.round() as u64)
        );
    }
}

fn percentile_panel(s: &mut String, r: &Report, top: f64) {
    frame(s, top, "Latency by percentile");
    let count = r.response.count.max(r.connect.count).max(1) as f64;
    let decades = count.log10().ceil().clamp(1.0, 6.0);
    let max_us = nice_ceiling(
        r.response
            .distribution
            .iter()
            .chain(&r.connect.distribution)
            .map(|p| p.latency_us as f64)
            .fold(0.0, f64::max),
    );
    let w = WIDTH - LEFT - RIGHT;
    let x_of = |p: &DistributionPoint| {
        let tail = 1.0 - p.percentile / 100.0;
        let d = if tail <= 0.0 {
            decades
        } else {
            (-tail.log10()).min(decades)
        };
        LEFT + w * d / decades
    };
    let y_of = |us: u64| top + PANEL_HEIGHT - PANEL_HEIGHT * (us as f64 / max_us).min(1.0);
    latency_axis(s, top, max_us, false);
    for d in 0..=(decades as u32) {
        let x = LEFT + w * f64::from(d) / decades;
        let label = match d {
            0 => "0%".to_string(),
            d => format!("{}%", 100.0 - 100.0 * 10f64.powi(-(d as i32))),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/>"##,
            top + PANEL_HEIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            top + PANEL_HEIGHT + 16.0
        );
    }
    for (name, dist, colour) in [
        ("response", &r.response.distribution, RESPONSE_COLOUR),
        ("connect", &r.connect.distribution, CONNECT_COLOUR),
    ] {
        let points: Vec<(f64, f64)> = dist.iter().map(|p| (x_of(p), y_of(p.latency_us))).collect();
        polyline(s, &points, colour, 2.0);
        let _ = name;
    }
    legend(
        s,
        top + PANEL_HEIGHT + 40.0,
        &[
            ("response time", RESPONSE_COLOUR),
            ("connect time", CONNECT_COLOUR),
        ],
    );
}

fn legend(s: &mut String, y: f64, items: &[(&str, &str)]) {
    let mut x = LEFT;
    for (label, colour) in items {
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="{:.1}" width="14" height="4" fill="{colour}"/>"#,
            y - 6.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
            x + 20.0,
            escape(label)
        );
        x += 30.0 + 8.0 * label.len() as f64;
    }
}

fn timeline_panel(s: &mut String, r: &Report, top: f64) {
    frame(
        s,
        top,
        "Per second: responses and errors (bars, left), p50 and p99 response time (lines, right)",
    );
    let seconds = r.timeline.len().max(1) as f64;
    let w = WIDTH - LEFT - RIGHT;
    let max_count = nice_ceiling(
        r.timeline
            .iter()
            .map(|t| (t.responses + t.errors) as f64)
            .fold(0.0, f64::max),
    );
    let max_us = nice_ceiling(
        r.timeline
            .iter()
            .filter_map(|t| t.p99_us)
            .map(|v| v as f64)
            .fold(0.0, f64::max),
    );
    for i in 0..=5 {
        let v = max_count * f64::from(i) / 5.0;
        let y = top + PANEL_HEIGHT - PANEL_HEIGHT * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            WIDTH - RIGHT
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.0}/s</text>"#,
            LEFT - 6.0,
            y + 4.0
        );
    }
    latency_axis(s, top, max_us, true);
    let bar_w = w / seconds;
    let h_of = |n: u64| PANEL_HEIGHT * (n as f64 / max_count).min(1.0);
    let tick_every = (seconds / 10.0).ceil().max(1.0) as usize;
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for (i, t) in r.timeline.iter().enumerate() {
        let x = LEFT + bar_w * i as f64;
        let ok_h = h_of(t.responses);
        let err_h = h_of(t.errors);
        let base = top + PANEL_HEIGHT;
        let _ = writeln!(
            s,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{ok_h:.1}" fill="#aec7e8"/>"##,
            base - ok_h,
            (bar_w - 1.0).max(0.5)
        );
        if t.errors > 0 {
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{err_h:.1}" fill="{ERROR_COLOUR}"/>"#,
                base - ok_h - err_h,
                (bar_w - 1.0).max(0.5)
            );
        }
        let mid = x + bar_w / 2.0;
        let y_of = |us: u64| base - PANEL_HEIGHT * (us as f64 / max_us).min(1.0);
        if let Some(v) = t.p50_us {
            p50.push((mid, y_of(v)));
        }
        if let Some(v) = t.p99_us {
            p99.push((mid, y_of(v)));
        }
        if i % tick_every == 0 {
            let _ = writeln!(
                s,
                r#"<text x="{mid:.1}" y="{:.1}" text-anchor="middle">{i}s</text>"#,
                base + 16.0
            );
        }
    }
    polyline(s, &p50, RESPONSE_COLOUR, 2.0);
    polyline(s, &p99, P99_COLOUR, 2.0);
    legend(
        s,
        top + PANEL_HEIGHT + 40.0,
        &[
            ("responses/s", "#aec7e8"),
            ("errors/s", ERROR_COLOUR),
            ("p50", RESPONSE_COLOUR),
            ("p99", P99_COLOUR),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1200.0), 2000.0);
        assert_eq!(nice_ceiling(45_000.0), 50_000.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }

    #[test]
    fn escapes_text() {
        assert_eq!(escape("a<b&\"c\">"), "a&lt;b&amp;&quot;c&quot;&gt;");
    }
}
