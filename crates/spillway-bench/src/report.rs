//! The report of one run: built once from the collected measurements, written as the `--json`
//! document described in `SCHEMA.md`, and read by the terminal summary and the SVG plot.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{Config, Scenario};
use crate::conn::ErrorClass;
use crate::scenario::{GeneratorStats, IdleProbe, Outcome};
use crate::stats::{Collector, Second};
use crate::verdict::Verdict;

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
    /// Where the p99 went.
    pub verdict: Verdict,
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

/// Sum of the counts with at least one retransmit.
fn with_retransmits(m: &BTreeMap<u32, u64>) -> u64 {
    m.iter().filter(|(r, _)| **r > 0).map(|(_, n)| n).sum()
}

fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Responses per status class; every class is present, even at zero, so the JSON always
/// has the same keys, and 503 is counted again on its own beside `5xx`.
fn status_classes(status: &BTreeMap<u16, u64>) -> BTreeMap<&'static str, u64> {
    let mut classes: BTreeMap<&'static str, u64> = ["1xx", "2xx", "3xx", "4xx", "5xx", "503"]
        .iter()
        .map(|k| (*k, 0))
        .collect();
    for (&code, &n) in status {
        *classes.entry(status_class(code)).or_default() += n;
        if code == 503 {
            *classes.entry("503").or_default() += n;
        }
    }
    classes
}

impl Report {
    /// Builds the report from a finished run.
    pub(crate) fn build(cfg: &Config, outcome: &Outcome) -> Report {
        let c = outcome.shared.lock();
        let elapsed = outcome.elapsed.as_secs_f64();
        Report {
            schema_version: SCHEMA_VERSION,
            tool: concat!("spillway-bench ", env!("CARGO_PKG_VERSION")).to_string(),
            target: TargetReport {
                url: cfg.target.url.clone(),
                address: cfg.target.addr.to_string(),
            },
            scenario: ScenarioReport::from_config(cfg),
            elapsed_s: elapsed,
            responses: ResponsesReport::from_collector(&c, elapsed),
            errors: ErrorsReport::from_collector(&c),
            connect: ConnectReport::from_collector(&c),
            response: LatencyReport::of(&c.response),
            connections: ConnectionsReport::from_run(&c, outcome),
            generator: outcome.generator.clone(),
            idle_probe: outcome.idle.clone(),
            timeline: c
                .timeline
                .iter()
                .enumerate()
                .map(|(i, s)| SecondReport::from_second(i, s))
                .collect(),
            abandoned_tasks: outcome.abandoned,
            verdict: if matches!(cfg.scenario, Scenario::Idle { .. }) {
                Verdict::not_judged(
                    "an idle probe measures how long connections live, not where latency goes",
                )
            } else {
                Verdict::judge(&c.samples, c.errors.iter().sum())
            },
        }
    }
}

impl ScenarioReport {
    fn from_config(cfg: &Config) -> ScenarioReport {
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
        ScenarioReport {
            kind: cfg.scenario.kind(),
            connections,
            keep_alive,
            requests_per_connection: per_connection,
            rate,
            idle_gaps_s: match &cfg.scenario {
                Scenario::Idle { gaps } => Some(gaps.iter().map(Duration::as_secs_f64).collect()),
                _ => None,
            },
            duration_s: cfg.duration.as_secs_f64(),
            requests_limit: cfg.requests,
            method: cfg.request.method.clone(),
            body_bytes: cfg.request.body_len,
            timeout_s: cfg.timeout.as_secs_f64(),
            threads: cfg.threads,
        }
    }
}

impl ResponsesReport {
    fn from_collector(c: &Collector, elapsed: f64) -> ResponsesReport {
        ResponsesReport {
            total: c.responses,
            per_second: if elapsed > 0.0 {
                c.responses as f64 / elapsed
            } else {
                0.0
            },
            status_classes: status_classes(&c.status),
            status_codes: c.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }
}

impl ErrorsReport {
    fn from_collector(c: &Collector) -> ErrorsReport {
        ErrorsReport {
            total: c.errors.iter().sum(),
            by_class: ErrorClass::ALL
                .iter()
                .map(|k| (k.name(), c.errors[k.index()]))
                .collect(),
            examples: ErrorClass::ALL
                .iter()
                .filter_map(|k| c.error_examples[k.index()].clone().map(|e| (k.name(), e)))
                .collect(),
        }
    }
}

impl LatencyReport {
    fn of(h: &Histogram<u64>) -> LatencyReport {
        LatencyReport {
            count: h.len(),
            latency_us: percentiles(h),
            distribution: distribution(h),
        }
    }
}

impl ConnectReport {
    fn from_collector(c: &Collector) -> ConnectReport {
        ConnectReport {
            count: c.connect.len(),
            latency_us: percentiles(&c.connect),
            distribution: distribution(&c.connect),
            syn_retransmits: SynReport::from_collector(c),
        }
    }
}

impl SynReport {
    fn from_collector(c: &Collector) -> SynReport {
        let retrans_ok: Vec<u32> = c
            .connect_retrans
            .keys()
            .copied()
            .filter(|r| *r > 0)
            .collect();
        SynReport {
            measured: !c.connect_retrans.is_empty() || !c.failed_connect_retrans.is_empty(),
            connects_with_retransmits: with_retransmits(&c.connect_retrans),
            min: retrans_ok.first().copied(),
            max: retrans_ok.last().copied(),
            by_count: count_map(&c.connect_retrans),
            failed_connects_with_retransmits: with_retransmits(&c.failed_connect_retrans),
            failed_by_count: count_map(&c.failed_connect_retrans),
            failed_connect_max_us: crate::stats::micros(c.failed_connect_max),
        }
    }
}

impl ConnectionsReport {
    fn from_run(c: &Collector, outcome: &Outcome) -> ConnectionsReport {
        ConnectionsReport {
            opened: outcome.connections_opened,
            max_open: outcome.max_open,
            closed_by_server: c.closed_by_server,
            announced_keep_alive_timeouts_s: c
                .keep_alive_timeouts
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            nofile_limit: outcome.nofile_limit,
        }
    }
}

impl SecondReport {
    fn from_second(index: usize, s: &Second) -> SecondReport {
        let p = percentiles(&s.latency);
        SecondReport {
            second: index as u64,
            responses: s.responses,
            errors: s.errors,
            connects: s.connects,
            p50_us: p.map(|p| p.p50),
            p99_us: p.map(|p| p.p99),
            max_us: p.map(|p| p.max),
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
