//! Prometheus metrics for `GET /metrics` on the admin endpoint. The request path and the
//! supervisor count into plain atomics (a relaxed add per event: no lock, no label lookup
//! on the hot path); gauges are read from the live server state when Prometheus scrapes.
//! `prometheus-client` writes the exposition, in the Prometheus 0.0.4 text format that
//! `promtool check metrics` reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::error::Origin;
use crate::state::ServerState;

/// The content type of the exposition.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Histogram bucket bounds, in seconds: from half a millisecond (a hello world) to a minute
/// (the default `--timeout`).
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A latency histogram on atomics. `prometheus-client`'s own takes a lock per
/// observation; three of those per request are measurable on a hello world.
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    fn encode(
        &self,
        e: &mut DescriptorEncoder,
        name: &str,
        help: &str,
    ) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&b, n)| (b, n.load(Ordering::Relaxed)))
            .collect();
        // The count is read last: every observation it includes is in a bucket already.
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let count = self.count.load(Ordering::Relaxed);
        e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Why a worker died.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeathCause {
    /// It exited on its own (`os._exit`, an import-time `sys.exit`).
    Exit,
    /// SIGKILL: the kernel's OOM killer, or an operator.
    Killed,
    /// Any other signal: a crash (SIGSEGV, SIGABRT, …).
    Crash,
    /// It broke the frame protocol or closed its socket while alive.
    Protocol,
}

const DEATH_CAUSES: [&str; 4] = ["exit", "killed", "crash", "protocol"];

/// Why a worker was replaced while healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recycle {
    /// `--max-requests`.
    MaxRequests,
    /// `--max-worker-memory`.
    Memory,
    /// A thread stuck past the request timeout for longer than `--graceful-timeout`.
    Stuck,
    /// It broke the credit rules on a stream (a bug in the worker).
    Protocol,
}

const RECYCLE_REASONS: [&str; 4] = ["max_requests", "memory", "stuck", "protocol"];

/// Every status an answer can have, 100–599.
const CODES: usize = 500;
const ORIGINS: [Origin; 3] = [Origin::Client, Origin::Application, Origin::Server];

/// The counters and histograms the server updates as things happen.
pub(crate) struct Metrics {
    /// Responses by origin and status (status − 100).
    responses: Box<[[AtomicU64; CODES]; 3]>,
    /// From a complete request head to the last byte of its response.
    pub request_duration: Histogram,
    /// Waiting for a Python thread.
    pub queue_wait: Histogram,
    /// From the request reaching its worker to the response head.
    pub application_time: Histogram,
    pub connections_accepted: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub worker_starts: AtomicU64,
    worker_deaths: [AtomicU64; DEATH_CAUSES.len()],
    recycles: [AtomicU64; RECYCLE_REASONS.len()],
    /// Reloads that succeeded and that failed.
    reloads: [AtomicU64; 2],
    /// `TcpExt` ListenOverflows and ListenDrops since the server started.
    pub listen_overflows: AtomicU64,
    pub listen_drops: AtomicU64,
}

impl Metrics {
    /// All zero.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            responses: Box::new(std::array::from_fn(|_| {
                std::array::from_fn(|_| AtomicU64::new(0))
            })),
            request_duration: Histogram::new(),
            queue_wait: Histogram::new(),
            application_time: Histogram::new(),
            connections_accepted: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            worker_starts: AtomicU64::new(0),
            worker_deaths: std::array::from_fn(|_| AtomicU64::new(0)),
            recycles: std::array::from_fn(|_| AtomicU64::new(0)),
            reloads: std::array::from_fn(|_| AtomicU64::new(0)),
            listen_overflows: AtomicU64::new(0),
            listen_drops: AtomicU64::new(0),
        })
    }

    /// Counts a response.
    pub fn response(&self, status: u16, origin: Origin) {
        let o = ORIGINS.iter().position(|&x| x == origin).unwrap_or(2);
        if let Some(c) = self.responses[o].get((status as usize).wrapping_sub(100)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a worker's death.
    pub fn worker_died(&self, cause: DeathCause) {
        self.worker_deaths[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a healthy worker's replacement.
    pub fn recycled(&self, why: Recycle) {
        self.recycles[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reload and its outcome.
    pub fn reloaded(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }
}

/// The whole exposition, read at scrape time.
pub(crate) fn render(state: &Arc<ServerState>) -> String {
    let mut registry = Registry::with_prefix("spillway");
    registry.register_collector(Box::new(Scrape(state.clone())));
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; an encoder error would be a bug in the names.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "could not encode the metrics");
    }
    out
}

/// Reads the server's state into the exposition.
struct Scrape(Arc<ServerState>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, unit, c.metric_type())?)
}

fn gauge<V>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// A counter family with one label, from `(label value, count)` pairs.
fn labelled_counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut fam = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (v, n) in values {
        ConstCounter::new(*n).encode(fam.encode_family(&[(label, *v)])?)?;
    }
    Ok(())
}

fn load_all<const N: usize>(a: &[AtomicU64; N]) -> [u64; N] {
    std::array::from_fn(|i| a[i].load(Ordering::Relaxed))
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = &self.0;
        let m = &state.metrics;
        encode_requests(&mut e, m)?;
        encode_admission(&mut e, state)?;
        encode_workers(&mut e, state)?;
        encode_lifecycle(&mut e, state)?;
        encode_listeners(&mut e, state)
    }
}

fn encode_requests(e: &mut DescriptorEncoder, m: &Metrics) -> Result<(), std::fmt::Error> {
    let mut fam = e.encode_descriptor(
        "http_responses",
        "HTTP responses by status code and by whose doing the status was: the application's response or failure (502 worker died, 504 timed out), the client's (a request refused as malformed, too large or too slow) or the server's (503 overload)",
        None,
        MetricType::Counter,
    )?;
    for (o, origin) in ORIGINS.iter().enumerate() {
        for (i, c) in m.responses[o].iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                let code = (i + 100).to_string();
                ConstCounter::new(n).encode(
                    fam.encode_family(&[("code", code.as_str()), ("origin", origin.as_str())])?,
                )?;
            }
        }
    }
    m.request_duration.encode(
        e,
        "http_request_duration",
        "Time from a complete request head to the last byte of its response",
    )?;
    m.queue_wait.encode(
        e,
        "queue_wait",
        "Time requests waited in the admission queue for a Python thread",
    )?;
    m.application_time.encode(
        e,
        "application_duration",
        "Time from a request reaching its worker to the application's response head",
    )?;
    counter(
        e,
        "connections_accepted",
        "Client connections accepted",
        None,
        m.connections_accepted.load(Ordering::Relaxed),
    )?;
    counter(
        e,
        "tls_handshake_failures",
        "TLS handshakes that failed or timed out",
        None,
        m.tls_handshake_failures.load(Ordering::Relaxed),
    )
}

fn encode_admission(e: &mut DescriptorEncoder, state: &ServerState) -> Result<(), std::fmt::Error> {
    let (queued, oldest) = state.pool.queue_state();
    let capacity = state.pool.capacity();
    gauge(
        e,
        "queue_requests",
        "Requests waiting in the admission queue",
        None,
        queued as i64,
    )?;
    gauge(
        e,
        "queue_oldest_age",
        "How long the oldest queued request has waited",
        Some(&Unit::Seconds),
        oldest.as_secs_f64(),
    )?;
    let stats = &state.pool.stats;
    labelled_counters(
        e,
        "queue_refusals",
        "Requests refused with 503 by admission, by reason: the queue was full (--max-queue) or the wait too long (--queue-timeout)",
        "reason",
        &[
            ("queue_full", stats.rejected_full.load(Ordering::Relaxed)),
            ("queue_timeout", stats.rejected_timeout.load(Ordering::Relaxed)),
        ],
    )?;
    gauge(
        e,
        "request_slots",
        "Requests the workers take at once (threads, plus the pipeline of workers whose requests are short)",
        None,
        capacity.slots as i64,
    )?;
    gauge(
        e,
        "request_slots_free",
        "Request slots free now",
        None,
        capacity.free as i64,
    )?;
    gauge(
        e,
        "connections_open",
        "Client connections open",
        None,
        state.connections.open() as i64,
    )
}

fn encode_workers(e: &mut DescriptorEncoder, state: &ServerState) -> Result<(), std::fmt::Error> {
    let workers = state.sup.workers();
    let rows: Vec<_> = workers
        .iter()
        .map(|w| {
            let (stats, _, _) = w.pool_stats();
            (
                [
                    ("pid", w.pid.to_string()),
                    ("generation", w.generation.to_string()),
                ],
                stats,
                w.in_flight(),
                w.stuck().0,
                w.served(),
                crate::monitor::rss_bytes(w.pid),
            )
        })
        .collect();
    let each = |e: &mut DescriptorEncoder,
                name: &str,
                help: &str,
                unit: Option<&Unit>,
                kind: MetricType,
                value: &dyn Fn(usize) -> f64|
     -> Result<(), std::fmt::Error> {
        let mut fam = e.encode_descriptor(name, help, unit, kind)?;
        for (i, row) in rows.iter().enumerate() {
            let v = value(i);
            let enc = fam.encode_family(&row.0)?;
            match kind {
                MetricType::Counter => ConstCounter::new(v).encode(enc)?,
                _ => ConstGauge::new(v).encode(enc)?,
            }
        }
        Ok(())
    };
    each(
        e,
        "worker_threads",
        "Python threads of each worker",
        None,
        MetricType::Gauge,
        &|i| rows[i].1.threads as f64,
    )?;
    each(
        e,
        "worker_threads_target",
        "Python threads each self-sizing worker is sizing itself towards",
        None,
        MetricType::Gauge,
        &|i| rows[i].1.target as f64,
    )?;
    each(
        e,
        "worker_busy_threads",
        "Requests each worker is serving now",
        None,
        MetricType::Gauge,
        &|i| rows[i].2 as f64,
    )?;
    each(
        e,
        "worker_stuck_threads",
        "Threads of each worker still running a request that timed out",
        None,
        MetricType::Gauge,
        &|i| rows[i].3 as f64,
    )?;
    each(
        e,
        "worker_requests",
        "Requests each worker has served",
        None,
        MetricType::Counter,
        &|i| rows[i].4 as f64,
    )?;
    each(
        e,
        "worker_resident_memory",
        "Resident memory of each worker",
        Some(&Unit::Bytes),
        MetricType::Gauge,
        &|i| rows[i].5.unwrap_or(0) as f64,
    )?;
    each(
        e,
        "worker_cpu",
        "CPU time of each worker",
        Some(&Unit::Seconds),
        MetricType::Counter,
        &|i| rows[i].1.cpu_ns as f64 / 1e9,
    )?;
    each(
        e,
        "worker_gil_wait",
        "Time each worker's threads waited to take the GIL",
        Some(&Unit::Seconds),
        MetricType::Counter,
        &|i| rows[i].1.gil_wait_ns as f64 / 1e9,
    )
}

fn encode_lifecycle(e: &mut DescriptorEncoder, state: &ServerState) -> Result<(), std::fmt::Error> {
    let m = &state.metrics;
    counter(
        e,
        "worker_starts",
        "Worker processes started",
        None,
        m.worker_starts.load(Ordering::Relaxed),
    )?;
    let deaths = load_all(&m.worker_deaths);
    let rows: Vec<(&str, u64)> = DEATH_CAUSES.iter().copied().zip(deaths).collect();
    labelled_counters(
        e,
        "worker_deaths",
        "Workers that died, by cause: exit (it exited), killed (SIGKILL: the OOM killer or an operator), crash (another signal), protocol (it broke the frame protocol)",
        "cause",
        &rows,
    )?;
    let recycles = load_all(&m.recycles);
    let rows: Vec<(&str, u64)> = RECYCLE_REASONS.iter().copied().zip(recycles).collect();
    labelled_counters(
        e,
        "worker_recycles",
        "Workers replaced while serving (their successor starts first), by reason: --max-requests, --max-worker-memory, a thread stuck past the timeout, or a broken credit rule",
        "reason",
        &rows,
    )?;
    let [ok, failed] = load_all(&m.reloads);
    labelled_counters(
        e,
        "reloads",
        "Reloads (SIGHUP, POST /reload), by outcome",
        "outcome",
        &[("success", ok), ("failure", failed)],
    )?;
    gauge(
        e,
        "generation",
        "The worker generation serving now (it grows by one per successful reload)",
        None,
        state.sup.generation() as i64,
    )?;
    gauge(
        e,
        "ready",
        "1 when a worker is in service and the server is not draining",
        None,
        i64::from(state.ready()),
    )
}

fn encode_listeners(e: &mut DescriptorEncoder, state: &ServerState) -> Result<(), std::fmt::Error> {
    let samples = state
        .observed
        .listeners
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    for (name, help, pick) in [
        (
            "listener_accept_queue",
            "Connections in each listener's kernel accept queue, waiting for accept()",
            0,
        ),
        (
            "listener_accept_queue_limit",
            "Each listener's kernel accept queue limit (the effective listen() backlog)",
            1,
        ),
    ] {
        let mut fam = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for s in &samples {
            if let Some(q) = s.queue {
                let v = if pick == 0 { q.depth } else { q.limit };
                ConstGauge::new(v as i64)
                    .encode(fam.encode_family(&[("listener", s.name.as_str())])?)?;
            }
        }
    }
    let m = &state.metrics;
    counter(
        e,
        "listen_overflows",
        "Increase of the network namespace's TcpExt ListenOverflows since start: connection attempts dropped because an accept queue was full (any listener in the namespace)",
        None,
        m.listen_overflows.load(Ordering::Relaxed),
    )?;
    counter(
        e,
        "listen_drops",
        "Increase of the network namespace's TcpExt ListenDrops since start",
        None,
        m.listen_drops.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_hold_each_observation_once() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(200));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(120));
        let counts: Vec<u64> = h
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 1, "0.2 ms is in the 0.5 ms bucket");
        assert_eq!(counts[3], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(counts.iter().sum::<u64>(), 2, "120 s is only in +Inf");
        assert_eq!(h.count.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn responses_outside_the_status_range_are_not_counted() {
        let m = Metrics::new();
        m.response(200, Origin::Application);
        m.response(503, Origin::Server);
        m.response(99, Origin::Client);
        m.response(600, Origin::Client);
        assert_eq!(m.responses[1][100].load(Ordering::Relaxed), 1);
        assert_eq!(m.responses[2][403].load(Ordering::Relaxed), 1);
        let total: u64 = m
            .responses
            .iter()
            .flat_map(|r| r.iter())
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        assert_eq!(total, 2);
    }
}
