//! The report of one run: built once from the collected measurements, written as the terminal
//! summary and as the `--json` document described in `SCHEMA.md`, and drawn by the SVG plot.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{Config, Scenario};
use crate::conn::ErrorClass;
use crate::scenario::{GeneratorStats, IdleProbe, Outcome};

/// Version of the JSON layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole report; its JSON form is documented in `SCHEMA.md`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: String,
    pub target: TargetReport,
    pub scenario: ScenarioReport,
    pub elapsed_s: f64,
    pub responses: ResponsesReport,
    pub errors: ErrorsReport,
    pub connect: ConnectReport,
    pub response: LatencyReport,
    pub connections: ConnectionsReport,
    pub generator: Option<GeneratorStats>,
    pub idle_probe: Option<Vec<IdleProbe>>,
    pub timeline: Vec<SecondReport>,
    pub abandoned_tasks: u64,
}

/// Where the requests went.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub url: String,
    pub address: String,
}

/// The options that shaped the run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub kind: &'static str,
    pub connections: Option<usize>,
    pub keep_alive: bool,
    pub requests_per_connection: Option<u64>,
    pub rate: Option<f64>,
    pub idle_gaps_s: Option<Vec<f64>>,
    pub duration_s: f64,
    pub requests_limit: Option<u64>,
    pub method: String,
    pub body_bytes: usize,
    pub timeout_s: f64,
    pub threads: usize,
}

/// Complete responses, by status.
#[derive(Debug, Clone, Serialize)]
pub struct ResponsesReport {
    pub total: u64,
    pub per_second: f64,
    pub status_classes: BTreeMap<&'static str, u64>,
    pub status_codes: BTreeMap<String, u64>,
}

/// Failed requests and connects, by class.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorsReport {
    pub total: u64,
    pub by_class: BTreeMap<&'static str, u64>,
    pub examples: BTreeMap<&'static str, String>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

/// One point of a latency distribution.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DistributionPoint {
    pub percentile: f64,
    pub latency_us: u64,
}

/// One latency histogram, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub count: u64,
    pub latency_us: Option<Percentiles>,
    pub distribution: Vec<DistributionPoint>,
}

/// Connect times and the SYN retransmits behind them.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectReport {
    pub count: u64,
    pub latency_us: Option<Percentiles>,
    pub distribution: Vec<DistributionPoint>,
    pub syn_retransmits: SynReport,
}

/// SYN retransmits per connect attempt, read from `TCP_INFO` right after `connect()`.
#[derive(Debug, Clone, Serialize)]
pub struct SynReport {
    pub measured: bool,
    pub connects_with_retransmits: u64,
    pub min: Option<u32>,
    pub max: Option<u32>,
    pub by_count: BTreeMap<String, u64>,
    pub failed_connects_with_retransmits: u64,
    pub failed_by_count: BTreeMap<String, u64>,
    pub failed_connect_max_us: u64,
}

/// Connection counts.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsReport {
    pub opened: u64,
    pub max_open: u64,
    pub closed_by_server: u64,
    pub announced_keep_alive_timeouts_s: BTreeMap<String, u64>,
    pub nofile_limit: Option<u64>,
}

/// One second of the run, by completion time.
#[derive(Debug, Clone, Serialize)]
pub struct SecondReport {
    pub second: u64,
    pub responses: u64,
    pub errors: u64,
    pub connects: u64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

fn percentiles<T: hdrhistogram::Counter>(h: &Histogram<T>) -> Option<Percentiles> {
    (!h.is_empty()).then(|| Percentiles {
        min: h.min(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p99_9: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean(),
    })
}

/// Percentiles at 0, 90, 99, 99.9 … in tenth-of-a-decade steps, as far as the sample count
/// carries them, then the maximum: the usual HdrHistogram latency-by-percentile curve.
fn distribution(h: &Histogram<u64>) -> Vec<DistributionPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    for step in 0..=60 {
        let tail = 10f64.powf(-f64::from(step) / 10.0);
        if step > 0 && 1.0 / tail > h.len() as f64 {
            break;
        }
        let q = 1.0 - tail;
        points.push(DistributionPoint {
            percentile: q * 100.0,
            latency_us: h.value_at_quantile(q),
        });
    }
    points.push(DistributionPoint {
        percentile: 100.0,
        latency_us: h.max(),
    });
    points
}

fn count_map(m: &BTreeMap<u32, u64>) -> BTreeMap<String, u64> {
    m.iter()
        .filter(|(r, _)| **r > 0)
        .map(|(r, n)| (r.to_string(), *n))
        .collect()
}

impl Report {
    /// Builds the report from a finished run.
    pub(crate) fn build(cfg: &Config, outcome: &Outcome) -> Report {
        let c = outcome.shared.lock();
        let elapsed = outcome.elapsed.as_secs_f64();
        let mut classes: BTreeMap<&'static str, u64> = ["1xx", "2xx", "3xx", "4xx", "5xx", "503"]
            .iter()
            .map(|k| (*k, 0))
            .collect();
        for (&code, &n) in &c.status {
            let class = match code {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            };
            *classes.entry(class).or_default() += n;
            if code == 503 {
                *classes.entry("503").or_default() += n;
            }
        }
        let by_class = ErrorClass::ALL
            .iter()
            .map(|k| (k.name(), c.errors[k.index()]))
            .collect();
        let examples = ErrorClass::ALL
            .iter()
            .filter_map(|k| c.error_examples[k.index()].clone().map(|e| (k.name(), e)))
            .collect();
        let retrans_ok: Vec<u32> = c
            .connect_retrans
            .keys()
            .copied()
            .filter(|r| *r > 0)
            .collect();
        let syn = SynReport {
            measured: !c.connect_retrans.is_empty() || !c.failed_connect_retrans.is_empty(),
            connects_with_retransmits: c
                .connect_retrans
                .iter()
                .filter(|(r, _)| **r > 0)
                .map(|(_, n)| n)
                .sum(),
            min: retrans_ok.first().copied(),
            max: retrans_ok.last().copied(),
            by_count: count_map(&c.connect_retrans),
            failed_connects_with_retransmits: c
                .failed_connect_retrans
                .iter()
                .filter(|(r, _)| **r > 0)
                .map(|(_, n)| n)
                .sum(),
            failed_by_count: count_map(&c.failed_connect_retrans),
            failed_connect_max_us: crate::stats::micros(c.failed_connect_max),
        };
        let (connections, keep_alive, per_connection, rate) = match &cfg.scenario {
            Scenario::Closed {
                connections,
                per_connection,
            } => (
                Some(*connections),
                *per_connection != Some(1),
                *per_connection,
                None,
            ),
            Scenario::Open {
                rate,
                max_connections,
                per_connection,
            } => (
                Some(*max_connections),
                *per_connection != Some(1),
                *per_connection,
                Some(*rate),
            ),
            Scenario::Storm { connections } => (Some(*connections), false, Some(1), None),
            Scenario::Idle { gaps } => (Some(gaps.len()), true, Some(2), None),
        };
        Report {
            schema_version: SCHEMA_VERSION,
            tool: concat!("spillway-bench ", env!("CARGO_PKG_VERSION")).to_string(),
            target: TargetReport {
                url: cfg.target.url.clone(),
                address: cfg.target.addr.to_string(),
            },
            scenario: ScenarioReport {
                kind: cfg.scenario.kind(),
                connections,
                keep_alive,
                requests_per_connection: per_connection,
                rate,
                idle_gaps_s: match &cfg.scenario {
                    Scenario::Idle { gaps } => {
                        Some(gaps.iter().map(Duration::as_secs_f64).collect())
                    }
                    _ => None,
                },
                duration_s: cfg.duration.as_secs_f64(),
                requests_limit: cfg.requests,
                method: cfg.request.method.clone(),
                body_bytes: cfg.request.body_len,
                timeout_s: cfg.timeout.as_secs_f64(),
                threads: cfg.threads,
            },
            elapsed_s: elapsed,
            responses: ResponsesReport {
                total: c.responses,
                per_second: if elapsed > 0.0 {
                    c.responses as f64 / elapsed
                } else {
                    0.0
                },
                status_classes: classes,
                status_codes: c.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            },
            errors: ErrorsReport {
                total: c.errors.iter().sum(),
                by_class,
                examples,
            },
            connect: ConnectReport {
                count: c.connect.len(),
                latency_us: percentiles(&c.connect),
                distribution: distribution(&c.connect),
                syn_retransmits: syn,
            },
            response: LatencyReport {
                count: c.response.len(),
                latency_us: percentiles(&c.response),
                distribution: distribution(&c.response),
            },
            connections: ConnectionsReport {
                opened: outcome.connections_opened,
                max_open: outcome.max_open,
                closed_by_server: c.closed_by_server,
                announced_keep_alive_timeouts_s: c
                    .keep_alive_timeouts
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                nofile_limit: outcome.nofile_limit,
            },
            generator: outcome.generator.clone(),
            idle_probe: outcome.idle.clone(),
            timeline: c
                .timeline
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let p = percentiles(&s.latency);
                    SecondReport {
                        second: i as u64,
                        responses: s.responses,
                        errors: s.errors,
                        connects: s.connects,
                        p50_us: p.map(|p| p.p50),
                        p99_us: p.map(|p| p.p99),
                        max_us: p.map(|p| p.max),
                    }
                })
                .collect(),
            abandoned_tasks: outcome.abandoned,
        }
    }
}

/// Formats microseconds for people: `850µs`, `12.3ms`, `3.02s`.
pub(crate) fn human_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
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
    )?;
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
    let syn = &r.connect.syn_retransmits;
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
    writeln!(
        out,
        "  conns      {} opened, at most {} open, {} closed by the server",
        r.connections.opened, r.connections.max_open, r.connections.closed_by_server
    )?;
    if let Some(g) = &r.generator {
        if g.was_bottleneck() {
            writeln!(
                out,
                "  WARNING    the generator was the bottleneck: {} late sends (max lag {}), {} waited for a connection at the cap, {} expired in its queue, {} unsent at the end",
                g.late_sends,
                human_us(g.max_lag_us),
                g.queued_for_connection,
                g.expired_in_queue,
                g.unsent_at_end
            )?;
        } else {
            writeln!(
                out,
                "  generator  kept its schedule: {} requests sent, max lag {}",
                g.scheduled,
                human_us(g.max_lag_us)
            )?;
        }
    }
    if let Some(probes) = &r.idle_probe {
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
    }
    if r.abandoned_tasks > 0 {
        writeln!(
            out,
            "  abandoned  {} tasks still running at the hard stop",
            r.abandoned_tasks
        )?;
    }
    Ok(())
}
