//! What the server knows about itself right now, shared by the admin endpoint, the
//! HAProxy agent-check and shutdown: readiness, draining, and the numbers behind them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::admission::dispatch::Workers;
use crate::ops::monitor::Observed;
use crate::workers::supervisor::Supervisor;

/// Live server state.
pub(crate) struct ServerState {
    pub pool: Arc<Workers>,
    pub sup: Arc<Supervisor>,
    pub observed: Arc<Observed>,
    /// Open client connections.
    pub connections: Arc<crate::listeners::accept::ConnCount>,
    /// Shutting down: readiness and the agent-check say so, serving continues.
    pub draining: AtomicBool,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
}

impl ServerState {
    /// Ready for traffic: at least one worker in service and not draining.
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && self.pool.capacity().workers > 0
    }

    /// The HAProxy agent-check answer: `drain`, `maint`, or `up ready N%` with a weight
    /// that falls as requests queue, so the balancer sends less to a backlogged server.
    pub fn agent_reply(&self) -> String {
        if self.draining.load(Ordering::Acquire) {
            return "drain\n".to_owned();
        }
        let capacity = self.pool.capacity();
        if capacity.workers == 0 {
            return "maint\n".to_owned();
        }
        let capacity = (capacity.slots as usize).max(1);
        let (queued, _) = self.pool.queue_state();
        // Full weight while every request finds a thread; half when the queue is as long
        // as the capacity; never 0 (that would take it out, which `drain` is for).
        let weight = (100 * capacity / (capacity + queued)).max(1);
        format!("up ready {weight}%\n")
    }

    /// The `/status` document.
    pub fn status_json(&self) -> serde_json::Value {
        let (queued, oldest) = self.pool.queue_state();
        let capacity = self.pool.capacity();
        let workers: Vec<serde_json::Value> = self
            .sup
            .workers()
            .iter()
            .map(|w| {
                let (stuck, _) = w.stuck();
                let (stats, reason, limit) = w.pool_stats();
                serde_json::json!({
                    "pid": w.pid,
                    "generation": w.generation,
                    "busy_threads": w.in_flight(),
                    "stuck_threads": stuck,
                    "requests_served": w.served(),
                    "rss_bytes": crate::ops::monitor::rss_bytes(w.pid),
                    "threads": stats.threads,
                    "threads_target": stats.target,
                    "threads_last_change": reason,
                    "sizing": sizing_json(&stats, &reason),
                    "queued_in_worker": stats.queued,
                    "request_limit": limit,
                    "cpu_seconds": stats.cpu_ns as f64 / 1e9,
                    "gil_wait_ms_avg": if stats.gil_takes > 0 {
                        stats.gil_wait_ns as f64 / stats.gil_takes as f64 / 1e6
                    } else {
                        0.0
                    },
                })
            })
            .collect();
        let listeners: Vec<serde_json::Value> = self
            .observed
            .listeners
            .lock()
            .map(|l| {
                l.iter()
                    .map(|s| {
                        serde_json::json!({
                            "listener": s.name,
                            "accept_queue": s.queue.map(|q| q.depth),
                            "accept_queue_limit": s.queue.map(|q| q.limit),
                            "accept_queue_max_seen": s.max_depth,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::json!({
            "ready": self.ready(),
            "draining": self.draining.load(Ordering::Acquire),
            "generation": self.sup.generation(),
            "workers": workers,
            "ready_workers": capacity.workers,
            "threads": workers.iter().map(|w| w["threads"].as_u64().unwrap_or(0)).sum::<u64>(),
            // Requests the workers take at once (threads, plus the pipeline of workers
            // whose requests are short), and how many of those are free.
            "request_slots": capacity.slots,
            "free_request_slots": capacity.free,
            "queue": {
                "length": queued,
                "oldest_age_ms": oldest.as_millis() as u64,
                "rejected_full": self.pool.stats.rejected_full.load(Ordering::Relaxed),
                "rejected_timeout": self.pool.stats.rejected_timeout.load(Ordering::Relaxed),
            },
            "connections": self.connections.open(),
            "listeners": listeners,
        })
    }
}

/// A worker's sizing as `/status` shows it: the rule and reason of its last decision, and
/// what its current and previous thread counts were measured to do.
fn sizing_json(stats: &spillway_proto::WorkerStats, reason: &str) -> serde_json::Value {
    let level = |l: &spillway_proto::LevelStats| {
        (l.threads > 0).then(|| {
            serde_json::json!({
                "threads": l.threads,
                "requests_per_second": l.throughput_milli as f64 / 1e3,
                "ms_per_request": l.service_us as f64 / 1e3,
            })
        })
    };
    serde_json::json!({
        "threads_target": stats.target,
        "rule": String::from_utf8_lossy(&stats.rule),
        "reason": reason,
        "current_level": level(&stats.current),
        "previous_level": level(&stats.previous),
    })
}
