//! Admission: which worker runs a request, and the one FIFO where requests wait when every
//! Python thread is busy. Dispatch is per request, to the ready worker with the most free
//! threads. The queue is bounded in length (`--max-queue`) and in time (`--queue-timeout`):
//! a request that cannot be queued or waits too long is refused at once, so clients get a
//! `503` with `Retry-After` instead of a hang. A waiter whose client has gone away is
//! skipped, never run: its receiver is dropped with its future, so handing it a slot fails
//! and the slot goes to the next one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::worker::WorkerLink;

/// A claim on one Python thread of one worker; dropping it frees the thread.
pub struct Lease {
    pool: Weak<Pool>,
    /// The worker that runs the request.
    pub worker: Arc<WorkerLink>,
}

impl Lease {
    /// A claim on a thread of `worker`, counted on the worker until dropped: a drain waits
    /// for leases, not only for started requests, since a queued request holds its lease
    /// a moment before its frames reach the worker.
    fn new(pool: &Arc<Pool>, worker: Arc<WorkerLink>) -> Lease {
        worker.leases.fetch_add(1, Ordering::AcqRel);
        Lease {
            pool: Arc::downgrade(pool),
            worker,
        }
    }

    /// Detaches the lease from the pool: dropping it frees nothing (its worker is gone).
    pub(crate) fn forget(&mut self) {
        self.pool = Weak::new();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.worker.leases.fetch_sub(1, Ordering::AcqRel);
        if let Some(pool) = self.pool.upgrade() {
            pool.release(self.worker.id);
        }
    }
}

/// Why a request could not be admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The server is shutting down and will not start new requests.
    #[error("server is shutting down")]
    Closed,
    /// `--max-queue` requests are already waiting.
    #[error("admission queue full")]
    QueueFull,
    /// The request waited `--queue-timeout` without getting a thread.
    #[error("waited too long in the admission queue")]
    QueueTimeout,
}

/// Bounds of the admission queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most requests waiting at once.
    pub max_queue: usize,
    /// Longest wait before a request must start.
    pub queue_timeout: Duration,
}

struct Slot {
    worker: Arc<WorkerLink>,
    free: u32,
}

struct Waiter {
    tx: oneshot::Sender<Lease>,
    since: Instant,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    queue: VecDeque<Waiter>,
    closed: bool,
}

/// Counters an operator reads to understand overload.
#[derive(Debug, Default)]
pub struct AdmissionStats {
    /// Requests refused because the queue was full.
    pub rejected_full: AtomicU64,
    /// Requests refused because they waited too long.
    pub rejected_timeout: AtomicU64,
    /// Threads released (requests finished), for the drain rate.
    pub completed: AtomicU64,
    /// Requests finished per second, smoothed (f64 bits), updated by the monitor.
    drain_rate: AtomicU64,
}

/// The worker pool as admission sees it: free threads per ready worker, and the queue.
pub struct Pool {
    state: Mutex<State>,
    limits: QueueLimits,
    /// Overload counters.
    pub stats: AdmissionStats,
}

impl Pool {
    /// An empty pool: requests queue until a worker is added.
    pub fn new(limits: QueueLimits) -> Arc<Pool> {
        Arc::new(Pool {
            state: Mutex::new(State::default()),
            limits,
            stats: AdmissionStats::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free Python thread (FIFO among waiters) and claims it.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, AdmissionError> {
        let since = Instant::now();
        let rx = {
            let mut st = self.lock();
            if st.closed {
                return Err(AdmissionError::Closed);
            }
            // Never overtake a waiter: only take a thread directly when nobody queues.
            if st.queue.is_empty() {
                if let Some(slot) = st
                    .slots
                    .iter_mut()
                    .filter(|s| s.free > 0)
                    .max_by_key(|s| s.free)
                {
                    slot.free -= 1;
                    return Ok(Lease::new(self, slot.worker.clone()));
                }
            }
            if st.queue.len() >= self.limits.max_queue {
                // Waiters whose clients left (or timed out) are removed lazily; they must
                // not make a live request look like overflow.
                st.queue.retain(|w| !w.tx.is_closed());
            }
            if st.queue.len() >= self.limits.max_queue {
                self.stats.rejected_full.fetch_add(1, Ordering::Relaxed);
                return Err(AdmissionError::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            st.queue.push_back(Waiter { tx, since });
            rx
        };
        match tokio::time::timeout(self.limits.queue_timeout, rx).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(_)) => Err(AdmissionError::Closed),
            Err(_) => {
                // Our receiver is gone with the timeout: the waiter entry is skipped
                // (and dropped) by the next release, or purged by the monitor.
                self.stats.rejected_timeout.fetch_add(1, Ordering::Relaxed);
                Err(AdmissionError::QueueTimeout)
            }
        }
    }

    /// A thread of worker `id` became free: give it to the oldest live waiter.
    fn release(self: &Arc<Self>, id: u64) {
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        self.hand_out(id);
    }

    fn hand_out(self: &Arc<Self>, id: u64) {
        let mut st = self.lock();
        let Some(idx) = st.slots.iter().position(|s| s.worker.id == id) else {
            return; // the worker was removed (died or retired): nothing to hand out
        };
        let worker = st.slots[idx].worker.clone();
        while let Some(w) = st.queue.pop_front() {
            let lease = Lease::new(self, worker.clone());
            match w.tx.send(lease) {
                Ok(()) => return,
                // The client left (or timed out) while queued. The returned lease must
                // not run its Drop (that would re-enter this lock): forget it first.
                Err(mut lease) => lease.forget(),
            }
        }
        st.slots[idx].free += 1;
    }

    /// Adds a ready worker with `threads` free threads and serves queued requests.
    pub fn add(self: &Arc<Self>, worker: Arc<WorkerLink>, threads: u32) {
        let id = worker.id;
        self.lock().slots.push(Slot { worker, free: 0 });
        for _ in 0..threads {
            self.hand_out(id);
        }
    }

    /// Removes a worker; its outstanding leases release nothing.
    pub fn remove(&self, id: u64) {
        self.lock().slots.retain(|s| s.worker.id != id);
    }

    /// Refuses new requests and fails queued ones (shutdown).
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue.clear();
    }

    /// Requests waiting now, and how long the oldest has waited. Drops entries whose
    /// clients left, so the numbers are live ones.
    pub fn queue_state(&self) -> (usize, Duration) {
        let mut st = self.lock();
        st.queue.retain(|w| !w.tx.is_closed());
        let oldest = st
            .queue
            .front()
            .map_or(Duration::ZERO, |w| w.since.elapsed());
        (st.queue.len(), oldest)
    }

    /// Ready workers and their free threads.
    pub fn capacity(&self) -> (usize, u32) {
        let st = self.lock();
        (st.slots.len(), st.slots.iter().map(|s| s.free).sum())
    }

    /// Records the drain rate measured over the last interval (requests per second).
    pub fn set_drain_rate(&self, per_second: f64) {
        let old = f64::from_bits(self.stats.drain_rate.load(Ordering::Relaxed));
        let smoothed = if old == 0.0 {
            per_second
        } else {
            0.7 * old + 0.3 * per_second
        };
        self.stats
            .drain_rate
            .store(smoothed.to_bits(), Ordering::Relaxed);
    }

    /// Seconds a refused client should wait: how long the current queue takes to drain
    /// at the measured rate, between 1 and 60.
    pub fn retry_after_secs(&self) -> u64 {
        let queued = self.lock().queue.len() as f64;
        let rate = f64::from_bits(self.stats.drain_rate.load(Ordering::Relaxed));
        let secs = if rate >= 0.1 {
            ((queued + 1.0) / rate).ceil()
        } else {
            self.limits.queue_timeout.as_secs_f64().ceil()
        };
        secs.clamp(1.0, 60.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_queue: usize, ms: u64) -> QueueLimits {
        QueueLimits {
            max_queue,
            queue_timeout: Duration::from_millis(ms),
        }
    }

    #[tokio::test]
    async fn no_workers_means_queue_then_refusal() {
        let pool = Pool::new(limits(1, 50));
        let first = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire().await.err() })
        };
        tokio::task::yield_now().await;
        // The queue holds one: the second is refused at once.
        assert!(matches!(
            pool.acquire().await,
            Err(AdmissionError::QueueFull)
        ));
        assert!(matches!(
            first.await.unwrap(),
            Some(AdmissionError::QueueTimeout)
        ));
        assert_eq!(pool.stats.rejected_full.load(Ordering::Relaxed), 1);
        assert_eq!(pool.stats.rejected_timeout.load(Ordering::Relaxed), 1);
        assert_eq!(pool.queue_state().0, 0, "timed-out waiter purged");
    }

    #[tokio::test]
    async fn departed_waiters_do_not_fill_the_queue() {
        let pool = Pool::new(limits(1, 10_000));
        let gone = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire().await.err() })
        };
        tokio::task::yield_now().await;
        gone.abort(); // the client left while queued
        let _ = gone.await;
        let live = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire().await.err() })
        };
        tokio::task::yield_now().await;
        assert!(
            !live.is_finished(),
            "a live request must queue, not be refused"
        );
        assert_eq!(pool.stats.rejected_full.load(Ordering::Relaxed), 0);
        live.abort();
    }

    #[test]
    fn retry_after_follows_the_drain_rate() {
        let pool = Pool::new(limits(10, 30_000));
        assert_eq!(
            pool.retry_after_secs(),
            30,
            "no rate yet: the queue timeout"
        );
        pool.set_drain_rate(0.5);
        assert_eq!(pool.retry_after_secs(), 2);
        let pool = Pool::new(limits(10, 30_000));
        pool.set_drain_rate(1000.0);
        assert_eq!(pool.retry_after_secs(), 1);
    }
}
