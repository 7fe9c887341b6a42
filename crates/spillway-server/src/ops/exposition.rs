//! `GET /metrics`: the Prometheus exposition, read at scrape time from the counters in
//! `metrics` and the live server state (queue, workers, listeners). `prometheus-client`
//! writes it, in the Prometheus 0.0.4 text format that `promtool check metrics` reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::ops::state::ServerState;
use crate::telemetry::metrics::{Metrics, DEATH_CAUSES, ORIGINS, RECYCLE_REASONS};

/// The content type of the exposition.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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
                crate::ops::monitor::rss_bytes(w.pid),
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
        "worker_level_throughput",
        "Requests per second each self-sizing worker measured at its current thread count (0: not measured yet)",
        None,
        MetricType::Gauge,
        &|i| rows[i].1.current.throughput_milli as f64 / 1e3,
    )?;
    each(
        e,
        "worker_previous_level_throughput",
        "Requests per second each self-sizing worker measured at its previous thread count",
        None,
        MetricType::Gauge,
        &|i| rows[i].1.previous.throughput_milli as f64 / 1e3,
    )?;
    each(
        e,
        "worker_previous_level_threads",
        "The thread count each self-sizing worker had before its last change (0: none)",
        None,
        MetricType::Gauge,
        &|i| rows[i].1.previous.threads as f64,
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
