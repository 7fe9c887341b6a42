//! The once-a-second watch an operator would otherwise run by hand: the kernel accept
//! queue of each listener and the namespace's `ListenOverflows`/`ListenDrops`, admission
//! rejections, the queue's drain rate, and each worker's memory and stuck threads (which
//! decide when a worker is replaced).

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spillway_netdiag::{listener_queue, read_netstat, ListenQueue};

use crate::dispatch::Workers;
use crate::supervisor::Supervisor;

/// A listener the monitor samples: its name for logs and its socket. The accept task owns
/// the socket; the monitor only looks while it is still open, so it never reads a closed
/// fd number that may already belong to another socket.
pub(crate) struct Watched {
    pub name: String,
    pub listener: std::sync::Weak<crate::listener::Listener>,
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

/// Runs forever (until the task is aborted), once a second.
pub(crate) async fn run(
    listeners: Vec<Watched>,
    pool: Arc<Workers>,
    sup: Arc<Supervisor>,
    policy: MonitorPolicy,
    observed: Arc<Observed>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_counters = tcp_ext_pair();
    let mut last_completed = pool.stats.completed.load(Ordering::Relaxed);
    let mut last_full = 0;
    let mut last_timeout = 0;
    let mut last_at = Instant::now();
    let mut max_depth = vec![0u32; listeners.len()];
    loop {
        tick.tick().await;
        let elapsed = last_at.elapsed().as_secs_f64().max(0.001);
        last_at = Instant::now();

        // Kernel accept queues and overflow counters.
        let mut samples = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.iter().enumerate() {
            let q = match l.listener.upgrade().as_deref() {
                Some(crate::listener::Listener::Tcp(t)) => listener_queue(t.as_fd()).ok(),
                _ => None,
            };
            if let Some(q) = q {
                max_depth[i] = max_depth[i].max(q.depth);
            }
            samples.push(ListenerSample {
                name: l.name.clone(),
                queue: q,
                max_depth: max_depth[i],
            });
        }
        let counters = tcp_ext_pair();
        if let (Some((o0, d0)), Some((o1, d1))) = (last_counters, counters) {
            let (overflows, drops) = (o1.saturating_sub(o0), d1.saturating_sub(d0));
            if overflows > 0 || drops > 0 {
                let ours: Vec<String> = samples
                    .iter()
                    .filter_map(|s| {
                        s.queue
                            .map(|q| format!("{} {}/{}", s.name, q.depth, q.limit))
                    })
                    .collect();
                let full = samples.iter().any(|s| s.queue.is_some_and(|q| q.is_full()));
                let cause = if full {
                    "our accept queue is full: the front is not accepting fast enough (max-connections reached, or the process is starved of CPU)"
                } else {
                    "our accept queues have room: another listener in this network namespace overflowed (run `spillway doctor`)"
                };
                tracing::warn!(
                    listen_overflows = overflows,
                    listen_drops = drops,
                    accept_queues = %ours.join(", "),
                    "kernel dropped connection attempts (TcpExt counters, whole namespace); {cause}"
                );
            }
        }
        last_counters = counters.or(last_counters);
        if let Ok(mut o) = observed.listeners.lock() {
            *o = samples;
        }

        // Admission: drain rate for Retry-After, and one line for all refusals.
        let completed = pool.stats.completed.load(Ordering::Relaxed);
        pool.set_drain_rate((completed - last_completed) as f64 / elapsed);
        last_completed = completed;
        let full = pool.stats.rejected_full.load(Ordering::Relaxed);
        let timeout = pool.stats.rejected_timeout.load(Ordering::Relaxed);
        if full > last_full || timeout > last_timeout {
            let (queued, oldest) = pool.queue_state();
            tracing::warn!(
                queue_full = full - last_full,
                queue_timeout = timeout - last_timeout,
                queued,
                oldest_queued_ms = oldest.as_millis() as u64,
                retry_after_s = pool.retry_after_secs(),
                "overload: requests refused with 503 in the last second"
            );
        }
        last_full = full;
        last_timeout = timeout;

        // Workers: memory limit and stuck threads decide replacement.
        for w in sup.workers() {
            if let Some(limit) = policy.max_worker_memory {
                if let Some(rss) = rss_bytes(w.pid) {
                    if rss > limit {
                        w.request_retire(format!(
                            "resident memory {} MiB above max-worker-memory {} MiB",
                            rss >> 20,
                            limit >> 20
                        ));
                    }
                }
            }
            let (stuck, oldest) = w.stuck();
            if stuck > 0 && oldest > policy.graceful_timeout {
                w.request_retire(format!(
                    "{stuck} thread(s) stuck past the request timeout for {} s",
                    oldest.as_secs()
                ));
            }
        }
    }
}
