//! The terminal summary of a run: the lines `spillway bench` prints to stdout, rendered from
//! the finished [`Report`].

use std::io::{self, Write};

use crate::report::{human_us, Report, ScenarioReport, SynReport};
use crate::scenario::{GeneratorStats, IdleProbe};

/// Writes the terminal summary.
pub fn write_summary(r: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "spillway bench {}  ({})",
        r.target.url,
        describe(&r.scenario)
    )?;
    writeln!(
        out,
        "  responses  {} in {:.2}s = {:.1}/s",
        r.responses.total, r.elapsed_s, r.responses.per_second
    )?;
    write_status(r, out)?;
    write_errors(r, out)?;
    write_latencies(r, out)?;
    write_syn(&r.connect.syn_retransmits, out)?;
    writeln!(
        out,
        "  conns      {} opened, at most {} open, {} closed by the server",
        r.connections.opened, r.connections.max_open, r.connections.closed_by_server
    )?;
    if let Some(g) = &r.generator {
        write_generator(g, out)?;
    }
    if let Some(probes) = &r.idle_probe {
        write_idle_probe(probes, out)?;
    }
    write_verdict(r, out)?;
    if r.abandoned_tasks > 0 {
        writeln!(
            out,
            "  abandoned  {} tasks still running at the hard stop",
            r.abandoned_tasks
        )?;
    }
    Ok(())
}

fn range(min: Option<u32>, max: Option<u32>) -> String {
    match (min, max) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}–{b}"),
        _ => "?".into(),
    }
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn describe(s: &ScenarioReport) -> String {
    let ka = if s.keep_alive {
        match s.requests_per_connection {
            Some(k) => format!("keep-alive ({k} requests per connection)"),
            None => "keep-alive".into(),
        }
    } else {
        "no keep-alive".into()
    };
    match s.kind {
        "closed" => format!(
            "closed loop, {}, {ka}, {}s",
            plural(s.connections.unwrap_or(0) as u64, "connection"),
            s.duration_s
        ),
        "open" => format!(
            "open loop, {} requests/s, up to {} connections, {ka}, {}s",
            s.rate.unwrap_or(0.0),
            s.connections.unwrap_or(0),
            s.duration_s
        ),
        "storm" => format!(
            "storm of {}, one request each",
            plural(s.connections.unwrap_or(0) as u64, "connection")
        ),
        _ => "idle probe".into(),
    }
}

/// Status classes that occurred; 503 is already inside `5xx`, so it goes in brackets.
fn write_status(r: &Report, out: &mut impl Write) -> io::Result<()> {
    let classes: Vec<String> = r
        .responses
        .status_classes
        .iter()
        .filter(|(k, n)| **n > 0 && **k != "503")
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let s503 = r.responses.status_classes.get("503").copied().unwrap_or(0);
    writeln!(
        out,
        "  status     {}{}",
        if classes.is_empty() {
            "-".to_string()
        } else {
            classes.join("  ")
        },
        if s503 > 0 {
            format!("  (503: {s503})")
        } else {
            String::new()
        }
    )
}

fn write_errors(r: &Report, out: &mut impl Write) -> io::Result<()> {
    let errors: Vec<String> = r
        .errors
        .by_class
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    writeln!(
        out,
        "  errors     {}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join("  ")
        }
    )?;
    for (class, example) in &r.errors.examples {
        writeln!(out, "             {class}: {example}")?;
    }
    Ok(())
}

/// The connect and response percentile table.
fn write_latencies(r: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "p50", "p90", "p99", "p99.9", "max", "count"
    )?;
    for (name, count, p) in [
        ("connect", r.connect.count, r.connect.latency_us),
        ("response", r.response.count, r.response.latency_us),
    ] {
        match p {
            Some(p) => writeln!(
                out,
                "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                human_us(p.p50),
                human_us(p.p90),
                human_us(p.p99),
                human_us(p.p99_9),
                human_us(p.max),
                count
            )?,
            None => writeln!(out, "  {name:<10} {:>9}", "-")?,
        }
    }
    Ok(())
}

/// SYN retransmits, only when some happened: they are the trace of a full accept queue.
fn write_syn(syn: &SynReport, out: &mut impl Write) -> io::Result<()> {
    if syn.connects_with_retransmits > 0 {
        writeln!(
            out,
            "  SYN        {} waited on {} SYN retransmit{} (the accept queue was full or SYNs were dropped)",
            plural(syn.connects_with_retransmits, "connection"),
            range(syn.min, syn.max),
            if syn.max == Some(1) { "" } else { "s" }
        )?;
    }
    if syn.failed_connects_with_retransmits > 0 {
        let counts: Vec<u32> = syn
            .failed_by_count
            .keys()
            .filter_map(|k| k.parse().ok())
            .collect();
        writeln!(
            out,
            "  SYN        {} failed after {} SYN retransmit{} (waited up to {})",
            plural(syn.failed_connects_with_retransmits, "connect attempt"),
            range(counts.iter().min().copied(), counts.iter().max().copied()),
            if counts.iter().max() == Some(&1) {
                ""
            } else {
                "s"
            },
            human_us(syn.failed_connect_max_us)
        )?;
    }
    Ok(())
}

fn write_generator(g: &GeneratorStats, out: &mut impl Write) -> io::Result<()> {
    if g.was_bottleneck() {
        writeln!(
            out,
            "  WARNING    the generator was the bottleneck: {} late sends (max lag {}), {} waited for a connection at the cap, {} expired in its queue, {} unsent at the end",
            g.late_sends,
            human_us(g.max_lag_us),
            g.queued_for_connection,
            g.expired_in_queue,
            g.unsent_at_end
        )
    } else {
        writeln!(
            out,
            "  generator  kept its schedule: {} requests sent, max lag {}",
            g.scheduled,
            human_us(g.max_lag_us)
        )
    }
}

fn write_idle_probe(probes: &[IdleProbe], out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "  idle probe")?;
    for p in probes {
        let mut line = format!("    gap {:>7.2}s  {:<22}", p.gap_s, p.outcome);
        if let Some(after) = p.ended_after_s {
            line.push_str(&format!(" ended by the server after {after:.2}s idle"));
        }
        if let Some(t) = p.announced_keep_alive_timeout_s {
            line.push_str(&format!(" (announced Keep-Alive timeout={t})"));
        }
        if let Some(d) = &p.detail {
            line.push_str(&format!(" {d}"));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Where the p99 went: the layer, how sure, and the evidence.
fn write_verdict(r: &Report, out: &mut impl Write) -> io::Result<()> {
    let v = &r.verdict;
    writeln!(
        out,
        "  verdict    {} ({} confidence): {}",
        v.layer.replace('_', " "),
        v.confidence,
        v.summary
    )?;
    for e in &v.evidence {
        writeln!(out, "             - {e}")?;
    }
    Ok(())
}
