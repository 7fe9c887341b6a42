//! The counters and histograms behind `GET /metrics`: the request path and the supervisor
//! count into plain atomics (a relaxed add per event: no lock, no label lookup on the hot
//! path). `exposition` reads them, with the live server state, when Prometheus scrapes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::error::Origin;

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

    pub(crate) fn encode(
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

pub(crate) const DEATH_CAUSES: [&str; 4] = ["exit", "killed", "crash", "protocol"];

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

pub(crate) const RECYCLE_REASONS: [&str; 4] = ["max_requests", "memory", "stuck", "protocol"];

/// Every status an answer can have, 100–599.
const CODES: usize = 500;
pub(crate) const ORIGINS: [Origin; 3] = [Origin::Client, Origin::Application, Origin::Server];

/// The counters and histograms the server updates as things happen.
pub(crate) struct Metrics {
    /// Responses by origin and status (status − 100).
    pub responses: Box<[[AtomicU64; CODES]; 3]>,
    /// From a complete request head to the last byte of its response.
    pub request_duration: Histogram,
    /// Waiting for a Python thread.
    pub queue_wait: Histogram,
    /// From the request reaching its worker to the response head.
    pub application_time: Histogram,
    pub connections_accepted: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    pub worker_starts: AtomicU64,
    pub worker_deaths: [AtomicU64; DEATH_CAUSES.len()],
    pub recycles: [AtomicU64; RECYCLE_REASONS.len()],
    /// Reloads that succeeded and that failed.
    pub reloads: [AtomicU64; 2],
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
