//! The human-readable report of a one-shot `spillway doctor`.

use std::fmt::Write;

use crate::report::{Report, SpillwayView, KEY_COUNTERS};

/// Renders the report as plain text, findings first.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail; the results below are ignored for that reason.
    let _ = writeln!(
        o,
        "spillway doctor: {} listener(s), counters over {:.1} s",
        r.listeners.len(),
        r.window_secs
    );
    o.push('\n');
    if r.findings.is_empty() {
        o.push_str("No findings: nothing is queueing, overflowing or leaking.\n");
    } else {
        let _ = writeln!(o, "Findings ({}):", r.findings.len());
        for f in &r.findings {
            let _ = writeln!(o, "  {:<8} [{}] {}", f.severity.label(), f.id, f.message);
        }
    }
    o.push('\n');
    for l in &r.listeners {
        let _ = writeln!(o, "{}", l.label());
        let q = l.accept_queue;
        let _ = writeln!(
            o,
            "    accept queue {}/{}{} (peak {})   SYN queue {}",
            q.depth,
            q.limit,
            if q.full { " FULL" } else { "" },
            q.peak_depth,
            l.syn_queue
        );
        if !l.connections.is_empty() {
            let states: Vec<String> = l
                .connections
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect();
            let _ = writeln!(o, "    connections: {}", states.join(", "));
        }
        if !l.top_remotes.is_empty() {
            let top: Vec<String> = l
                .top_remotes
                .iter()
                .map(|a| format!("{} ({})", a.address, a.connections))
                .collect();
            let _ = writeln!(o, "    top remotes: {}", top.join(", "));
        }
        if let Some(v) = &l.spillway {
            let _ = writeln!(o, "    spillway: {}", spillway_line(v));
        }
    }
    if r.listeners.is_empty() {
        o.push_str("No listening TCP sockets matched.\n");
    }
    o.push('\n');
    let _ = writeln!(
        o,
        "TcpExt counters (whole network namespace), change over {:.1} s:",
        r.window_secs
    );
    for name in KEY_COUNTERS {
        if let Some(c) = r.counters.get(*name) {
            let _ = writeln!(
                o,
                "    {name:<22} +{:<8} {:>9.1}/s   total {}",
                c.delta, c.per_sec, c.value
            );
        }
    }
    let sysctls: Vec<String> = r
        .sysctls
        .iter()
        .map(|(k, v)| format!("{}={v}", k.trim_start_matches("net.")))
        .collect();
    let _ = writeln!(o, "sysctls: {}", sysctls.join("  "));
    if let Some(note) = &r.visibility.note {
        let _ = writeln!(o, "note: {note}");
    }
    o
}

/// The user-space layer of a Spillway front in one line (also the `--watch` panel's).
pub fn spillway_line(v: &SpillwayView) -> String {
    if !v.is_read() {
        return format!(
            "metrics not read: {}",
            v.error.as_deref().unwrap_or(&v.found_by)
        );
    }
    let (busy, threads) = v.threads();
    let mut line = format!(
        "queue {} (oldest {:.2} s)   threads busy {busy}/{threads}",
        v.queue_depth, v.queue_oldest_wait_secs
    );
    let per_worker: Vec<String> = v
        .workers
        .iter()
        .map(|w| format!("{}: {}/{}", w.pid, w.busy, w.threads))
        .collect();
    if !per_worker.is_empty() {
        line.push_str(&format!(" ({})", per_worker.join(", ")));
    }
    if let Some(p) = v.app_p99_secs {
        line.push_str(&format!(
            "   app p99 {:.3} s{}",
            p,
            if v.app_p99_in_window {
                ""
            } else {
                " (since start)"
            }
        ));
    }
    let refused: Vec<String> = v
        .refusals
        .iter()
        .map(|(k, n)| format!("{k} +{n}"))
        .collect();
    line.push_str(&format!(
        "   503s {}",
        if refused.is_empty() {
            "none".to_string()
        } else {
            refused.join(", ")
        }
    ));
    let errors: Vec<String> = v
        .errors_by_origin
        .iter()
        .map(|(k, n)| format!("{k} +{n}"))
        .collect();
    if !errors.is_empty() {
        line.push_str(&format!("   5xx {}", errors.join(", ")));
    }
    line
}
