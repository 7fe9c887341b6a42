//! `spillway doctor plot FILE.jsonl -o FILE.svg`: accept-queue depth, overflow rate and
//! connections over time, as three stacked line charts.
//!
//! The SVG is written by hand rather than with `plotters`: three line charts need
//! polylines, axes and labels (~200 lines), while plotters brings its own dependency tree
//! and text layout for a feature only this subcommand uses. Hand-written output is also
//! deterministic and annotated (`data-series` on every line), which the tests rely on.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use crate::record::read_records;
use crate::report::Report;

/// At most this many listeners get their own lines (the ones with the deepest queues).
const MAX_LISTENERS: usize = 6;
const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 210.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
];

/// What was drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlotSummary {
    /// Samples read from the recording.
    pub samples: usize,
    /// Lines drawn over all panels.
    pub series: usize,
}

/// One named line of (seconds, value) points.
#[derive(Debug, Clone)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
    color: &'static str,
}

/// Reads a --record file and writes the SVG.
pub fn plot_file(input: &Path, output: &Path) -> anyhow::Result<PlotSummary> {
    let reports = read_records(input)?;
    if reports.is_empty() {
        anyhow::bail!("{} has no samples to plot", input.display());
    }
    let (svg, summary) = render_svg(&reports);
    std::fs::write(output, svg).with_context(|| format!("writing {}", output.display()))?;
    Ok(summary)
}

/// Builds the SVG document for a recording.
pub fn render_svg(reports: &[Report]) -> (String, PlotSummary) {
    let t0 = reports.first().map_or(0, |r| r.taken_at_unix_ms);
    let t = |r: &Report| r.taken_at_unix_ms.saturating_sub(t0) as f64 / 1000.0;

    // Listeners ranked by the deepest queue they reached, then by connections.
    let mut addrs: Vec<(String, u32, u32)> = Vec::new();
    for r in reports {
        for l in &r.listeners {
            let peak = l.accept_queue.peak_depth.max(l.accept_queue.depth);
            match addrs.iter_mut().find(|(a, _, _)| *a == l.address) {
                Some(e) => {
                    e.1 = e.1.max(peak);
                    e.2 = e.2.max(l.total_connections());
                }
                None => addrs.push((l.address.clone(), peak, l.total_connections())),
            }
        }
    }
    addrs.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then(a.0.cmp(&b.0)));
    addrs.truncate(MAX_LISTENERS);

    let per_listener = |f: &dyn Fn(&crate::report::ListenerView) -> f64, prefix: &str, dashed| {
        addrs
            .iter()
            .enumerate()
            .map(|(i, (addr, _, _))| Series {
                name: format!("{prefix} {addr}"),
                points: reports
                    .iter()
                    .filter_map(|r| {
                        r.listeners
                            .iter()
                            .find(|l| &l.address == addr)
                            .map(|l| (t(r), f(l)))
                    })
                    .collect(),
                dashed,
                color: COLORS[i % COLORS.len()],
            })
            .collect::<Vec<_>>()
    };
    let mut queue = per_listener(&|l| f64::from(l.accept_queue.depth), "queue depth", false);
    queue.extend(per_listener(
        &|l| f64::from(l.accept_queue.limit),
        "queue limit",
        true,
    ));
    let overflow = vec![Series {
        name: "ListenOverflows/s".into(),
        points: reports
            .iter()
            .map(|r| {
                (
                    t(r),
                    r.counters.get("ListenOverflows").map_or(0.0, |c| c.per_sec),
                )
            })
            .collect(),
        dashed: false,
        color: COLORS[1],
    }];
    let conns = per_listener(&|l| f64::from(l.total_connections()), "connections", false);

    let panels = [
        ("Accept queue depth (dashed: limit)", queue),
        ("ListenOverflows per second (whole namespace)", overflow),
        ("Connections per listener (all states)", conns),
    ];
    let t_max = reports.iter().map(t).fold(1.0, f64::max);
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">spillway doctor: {} samples over {:.1} s</text>"#,
        reports.len(),
        t_max
    );
    let mut drawn = 0;
    for (i, (title, series)) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_H + GAP) + 20.0;
        drawn += panel(&mut o, title, series, top, t_max);
    }
    o.push_str("</svg>\n");
    (
        o,
        PlotSummary {
            samples: reports.len(),
            series: drawn,
        },
    )
}

/// Draws one chart with its axes and legend; returns the number of lines drawn.
fn panel(o: &mut String, title: &str, series: &[Series], top: f64, t_max: f64) -> usize {
    let plot_w = WIDTH - LEFT - RIGHT;
    let bottom = top + PANEL_H;
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let x = |t: f64| LEFT + t / t_max * plot_w;
    let y = |v: f64| bottom - v / y_max * PANEL_H;
    let _ = writeln!(
        o,
        r#"<g class="panel" data-title="{}"><text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
        esc(title),
        top - 8.0,
        esc(title)
    );
    let _ = writeln!(
        o,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
    );
    for k in 0..=4 {
        let v = y_max * f64::from(k) / 4.0;
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y(v) + 4.0,
            fmt_num(v),
            y = y(v)
        );
    }
    for k in 0..=5 {
        let tv = t_max * f64::from(k) / 5.0;
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{} s</text>"#,
            x(tv),
            bottom + 16.0,
            fmt_num(tv)
        );
    }
    let mut drawn = 0;
    for (i, s) in series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = writeln!(
            o,
            r#"<polyline class="series" data-series="{}" fill="none" stroke="{}" stroke-width="2"{} points="{}"><title>{}</title></polyline>"#,
            esc(&s.name),
            s.color,
            if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            pts.join(" "),
            esc(&s.name)
        );
        let ly = top + 14.0 + i as f64 * 16.0;
        let lx = LEFT + plot_w + 12.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"{}/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            s.color,
            if s.dashed {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            },
            lx + 24.0,
            ly + 4.0,
            esc(&s.name)
        );
        drawn += 1;
    }
    o.push_str("</g>\n");
    drawn
}

/// Rounds an axis maximum up to 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else {
        format!("{v:.1}")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(6.0), 10.0);
        assert_eq!(nice_max(4.2), 5.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
