//! The once-a-second watch an operator would otherwise run by hand: the kernel accept
//! queue of each listener and the namespace's `ListenOverflows`/`ListenDrops`, admission
//! rejections, the queue's drain rate, and each worker's memory and stuck threads (which
//! decide when a worker is replaced).

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spillway_netdiag::{listener_queue, read_netstat, ListenQueue};

use crate::admission::dispatch::Workers;
use crate::workers::supervisor::Supervisor;

/// A listener the monitor samples: its name for logs and its socket. The accept task owns
/// the socket; the monitor only looks while it is still open, so it never reads a closed
/// fd number that may already belong to another socket.
pub(crate) struct Watched {
    pub name: String,
    pub listener: std::sync::Weak<crate::listeners::listener::Listener>,
}

/// Latest kernel queue sample of one listener (for status reporting).
#[derive(Debug, Clone)]
pub struct ListenerSample {
    /// Listener address.
    pub name: String,
    /// Accept queue now.
    pub queue: Option<ListenQueue>,
    /// Largest depth seen since start.
    pub max_depth: u32,
}

/// What the monitor last saw, shared with whoever reports status.
#[derive(Default)]
pub struct Observed {
    /// Per listener.
    pub listeners: Mutex<Vec<ListenerSample>>,
}

/// Settings the monitor enforces.
pub(crate) struct MonitorPolicy {
    pub max_worker_memory: Option<u64>,
    pub graceful_timeout: Duration,
}

fn tcp_ext_pair() -> Option<(u64, u64)> {
    let ns = read_netstat().ok()?;
    let ext = ns.tcp_ext();
    Some((*ext.get("ListenOverflows")?, *ext.get("ListenDrops")?))
}

/// Resident set size of a process in bytes, from /proc/<pid>/statm.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// How often overflows of another listener in the namespace are reported (they are not
/// ours to fix, and on a shared host they never stop).
const OTHERS_EVERY: Duration = Duration::from_secs(60);

/// What the monitor carries from one second to the next.
struct Monitor {
    listeners: Vec<Watched>,
    pool: Arc<Workers>,
    sup: Arc<Supervisor>,
    policy: MonitorPolicy,
    observed: Arc<Observed>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    last_at: Instant,
    last_counters: Option<(u64, u64)>,
    last_completed: u64,
    last_refused: (u64, u64),
    max_depth: Vec<u32>,
    /// Overflows of other listeners, summed between reports.
    others: Throttled,
}

/// Counts summed between reports, reported at most once per period.
struct Throttled {
    every: Duration,
    pending: (u64, u64),
    reported: Option<Instant>,
}

impl Throttled {
    fn new(every: Duration) -> Throttled {
        Throttled {
            every,
            pending: (0, 0),
            reported: None,
        }
    }

    /// Adds `delta` at `now`; the sums and the seconds they cover when a report is due
    /// (the first at once, then at most once per period).
    fn add(&mut self, delta: (u64, u64), now: Instant) -> Option<((u64, u64), u64)> {
        self.pending = (self.pending.0 + delta.0, self.pending.1 + delta.1);
        let due = self
            .reported
            .is_none_or(|t| now.duration_since(t) >= self.every);
        if self.pending == (0, 0) || !due {
            return None;
        }
        let period = self.reported.map_or(1, |t| now.duration_since(t).as_secs());
        self.reported = Some(now);
        Some((std::mem::take(&mut self.pending), period))
    }
}

/// Runs forever (until the task is aborted), once a second.
pub(crate) async fn run(
    listeners: Vec<Watched>,
    pool: Arc<Workers>,
    sup: Arc<Supervisor>,
    policy: MonitorPolicy,
    observed: Arc<Observed>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut m = Monitor {
        max_depth: vec![0; listeners.len()],
        last_completed: pool.stats.completed.load(Ordering::Relaxed),
        listeners,
        pool,
        sup,
        policy,
        observed,
        metrics,
        last_at: Instant::now(),
        last_counters: tcp_ext_pair(),
        last_refused: (0, 0),
        others: Throttled::new(OTHERS_EVERY),
    };
    loop {
        tick.tick().await;
        let elapsed = m.last_at.elapsed().as_secs_f64().max(0.001);
        m.last_at = Instant::now();
        let samples = m.sample_listeners();
        m.report_overflows(&samples);
        if let Ok(mut o) = m.observed.listeners.lock() {
            *o = samples;
        }
        m.report_admission(elapsed);
        m.check_workers();
    }
}

impl Monitor {
    /// Each listener's kernel accept queue, while the listener is open.
    fn sample_listeners(&mut self) -> Vec<ListenerSample> {
        let mut samples = Vec::with_capacity(self.listeners.len());
        for (i, l) in self.listeners.iter().enumerate() {
            let q = match l.listener.upgrade().as_deref() {
                Some(crate::listeners::listener::Listener::Tcp(t)) => {
                    listener_queue(t.as_fd()).ok()
                }
                _ => None,
            };
            if let Some(q) = q {
                self.max_depth[i] = self.max_depth[i].max(q.depth);
            }
            samples.push(ListenerSample {
                name: l.name.clone(),
                queue: q,
                max_depth: self.max_depth[i],
            });
        }
        samples
    }

    /// `ListenOverflows`/`ListenDrops` grew: at once when our own queue is full, at most
    /// once a minute (with the sums) when another listener's was.
    fn report_overflows(&mut self, samples: &[ListenerSample]) {
        let counters = tcp_ext_pair();
        let delta = match (self.last_counters, counters) {
            (Some((o0, d0)), Some((o1, d1))) => (o1.saturating_sub(o0), d1.saturating_sub(d0)),
            _ => (0, 0),
        };
        self.last_counters = counters.or(self.last_counters);
        self.metrics
            .listen_overflows
            .fetch_add(delta.0, Ordering::Relaxed);
        self.metrics
            .listen_drops
            .fetch_add(delta.1, Ordering::Relaxed);
        let ours: Vec<String> = samples
            .iter()
            .filter_map(|s| {
                s.queue
                    .map(|q| format!("{} {}/{}", s.name, q.depth, q.limit))
            })
            .collect();
        if samples.iter().any(|s| s.queue.is_some_and(|q| q.is_full())) {
            if delta != (0, 0) {
                tracing::warn!(
                    listen_overflows = delta.0,
                    listen_drops = delta.1,
                    accept_queues = %ours.join(", "),
                    "kernel dropped connection attempts (TcpExt counters, whole namespace); our accept queue is full: the front is not accepting fast enough (max-connections reached, or the process is starved of CPU)"
                );
            }
            return;
        }
        if let Some(((overflows, drops), period)) = self.others.add(delta, Instant::now()) {
            tracing::warn!(
                listen_overflows = overflows,
                listen_drops = drops,
                over_s = period,
                accept_queues = %ours.join(", "),
                "kernel dropped connection attempts (TcpExt counters, whole namespace); our accept queues have room: another listener in this network namespace overflowed (run `spillway doctor`); reported at most once a minute"
            );
        }
    }

    /// The drain rate for Retry-After, and one line a second for all refusals.
    fn report_admission(&mut self, elapsed: f64) {
        let stats = &self.pool.stats;
        let completed = stats.completed.load(Ordering::Relaxed);
        self.pool
            .set_drain_rate((completed - self.last_completed) as f64 / elapsed);
        self.last_completed = completed;
        let refused = (
            stats.rejected_full.load(Ordering::Relaxed),
            stats.rejected_timeout.load(Ordering::Relaxed),
        );
        if refused != self.last_refused {
            let (queued, oldest) = self.pool.queue_state();
            tracing::warn!(
                queue_full = refused.0 - self.last_refused.0,
                queue_timeout = refused.1 - self.last_refused.1,
                queued,
                oldest_queued_ms = oldest.as_millis() as u64,
                retry_after_s = self.pool.retry_after_secs(),
                "overload: requests refused with 503 in the last second"
            );
        }
        self.last_refused = refused;
    }

    /// Memory limits and stuck threads decide when a worker is replaced.
    fn check_workers(&self) {
        for w in self.sup.workers() {
            if let Some(limit) = self.policy.max_worker_memory {
                if let Some(rss) = rss_bytes(w.pid) {
                    if rss > limit {
                        w.request_retire(
                            crate::telemetry::metrics::Recycle::Memory,
                            format!(
                                "resident memory {} MiB above max-worker-memory {} MiB",
                                rss >> 20,
                                limit >> 20
                            ),
                        );
                    }
                }
            }
            let (stuck, oldest) = w.stuck();
            if stuck > 0 && oldest > self.policy.graceful_timeout {
                w.request_retire(
                    crate::telemetry::metrics::Recycle::Stuck,
                    format!(
                        "{stuck} thread(s) stuck past the request timeout for {} s",
                        oldest.as_secs()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_overflows_are_reported_at_once_then_once_a_minute_with_the_sums() {
        let start = Instant::now();
        let mut t = Throttled::new(Duration::from_secs(60));
        assert_eq!(t.add((0, 0), start), None, "nothing to report");
        assert_eq!(t.add((3, 1), start), Some(((3, 1), 1)), "the first at once");
        let mut reports = Vec::new();
        for s in 1..=130 {
            if let Some(r) = t.add((2, 0), start + Duration::from_secs(s)) {
                reports.push((s, r));
            }
        }
        assert_eq!(
            reports,
            vec![(60, ((120, 0), 60)), (120, ((120, 0), 60))],
            "one line a minute, summing every second's overflows"
        );
    }
}
