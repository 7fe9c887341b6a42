//! Admission: which worker runs a request, and the one FIFO where requests wait when every
//! Python thread is busy. Dispatch is per request, to the worker with the most free
//! threads. The queue is bounded in length (`--max-queue`) and in time (`--queue-timeout`):
//! a request that cannot be queued or waits too long is refused at once, so clients get a
//! `503` with `Retry-After` instead of a hang. A waiter whose client has gone away is
//! skipped, never run: its receiver is dropped with its future, so handing it a thread
//! fails and the thread goes to the next one.
//!
//! The pool counts claimed threads per worker itself: a [`Claim`] is one thread, given
//! back when dropped. Whoever holds a request's claim (the worker link, until the worker
//! reports the thread free) needs nothing else from this module, and the pool needs nothing
//! from the link: it is generic over the worker handle it hands out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

pub use crate::error::AdmissionError;

/// Bounds of the admission queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Most requests waiting at once.
    pub max_queue: usize,
    /// Longest wait before a request must start.
    pub queue_timeout: Duration,
}

/// Gives a claimed thread back; implemented by [`Pool`], named here so a [`Claim`] need
/// not know the pool's worker type.
trait Release: Send + Sync {
    fn release(&self, worker: u64);
}

/// One claimed Python thread of one worker; dropping it frees the thread.
pub struct Claim {
    pool: Weak<dyn Release>,
    worker: u64,
}

impl Claim {
    /// Detaches the claim: dropping it frees nothing (its worker is gone, or the thread
    /// must not be handed on).
    pub fn forget(&mut self) {
        self.pool = Weak::<Pool<()>>::new();
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.release(self.worker);
        }
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Claim(worker {})", self.worker)
    }
}

/// A claim together with the worker it is on: what admission hands a request.
pub struct Lease<W> {
    /// The worker that runs the request.
    pub worker: W,
    /// The thread, freed when dropped.
    pub claim: Claim,
}

struct Slot<W> {
    id: u64,
    worker: W,
    /// Threads the worker may run at once.
    limit: u32,
    /// Threads claimed (requests in flight and hand-offs on their way).
    claimed: u32,
    /// Takes new requests (false while it drains).
    accepting: bool,
}

impl<W> Slot<W> {
    fn free(&self) -> u32 {
        if self.accepting {
            self.limit.saturating_sub(self.claimed)
        } else {
            0
        }
    }
}

struct Waiter<W> {
    tx: oneshot::Sender<Lease<W>>,
    since: Instant,
}

struct State<W> {
    slots: Vec<Slot<W>>,
    queue: VecDeque<Waiter<W>>,
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

/// The workers as admission sees them: free threads per worker, and the queue.
pub struct Pool<W> {
    state: Mutex<State<W>>,
    limits: QueueLimits,
    /// Overload counters.
    pub stats: AdmissionStats,
    /// Signalled whenever a claim is released or the queue shrinks, for whoever waits
    /// for a worker or the whole server to become idle.
    changed: Notify,
    /// Signalled when a request joins an empty queue.
    grew: Notify,
    me: Weak<Pool<W>>,
}

impl<W: Clone + Send + Sync + 'static> Pool<W> {
    /// An empty pool: requests queue until a worker is added.
    pub fn new(limits: QueueLimits) -> Arc<Pool<W>> {
        Arc::new_cyclic(|me| Pool {
            state: Mutex::new(State {
                slots: Vec::new(),
                queue: VecDeque::new(),
                closed: false,
            }),
            limits,
            stats: AdmissionStats::default(),
            changed: Notify::new(),
            grew: Notify::new(),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<W>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lease(&self, slot: &mut Slot<W>) -> Lease<W> {
        slot.claimed += 1;
        let pool: Weak<dyn Release> = self.me.clone();
        Lease {
            worker: slot.worker.clone(),
            claim: Claim {
                pool,
                worker: slot.id,
            },
        }
    }

    /// Waits for a free Python thread (FIFO among waiters) and claims it.
    pub async fn acquire(&self) -> Result<Lease<W>, AdmissionError> {
        let rx = {
            let mut st = self.lock();
            if st.closed {
                return Err(AdmissionError::Closed);
            }
            // Never overtake a waiter: only take a thread directly when nobody queues.
            if st.queue.is_empty() {
                let best = st
                    .slots
                    .iter_mut()
                    .filter(|s| s.free() > 0)
                    .max_by_key(|s| s.free());
                if let Some(slot) = best {
                    return Ok(self.lease(slot));
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
            st.queue.push_back(Waiter {
                tx,
                since: Instant::now(),
            });
            if st.queue.len() == 1 {
                self.grew.notify_one();
            }
            rx
        };
        // However this wait ends (a thread, a timeout, the client leaving), whoever waits
        // for the queue to empty must look again.
        let _wake = WakeOnDrop(&self.changed);
        match tokio::time::timeout(self.limits.queue_timeout, rx).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(_)) => Err(AdmissionError::Closed),
            Err(_) => {
                // Our receiver is gone with the timeout: the waiter entry is skipped
                // (and dropped) by the next hand-out, or purged by the monitor.
                self.stats.rejected_timeout.fetch_add(1, Ordering::Relaxed);
                Err(AdmissionError::QueueTimeout)
            }
        }
    }

    /// Gives every free thread of slot `idx` to the oldest live waiters.
    fn hand_out(&self, st: &mut State<W>, idx: usize) {
        while st.slots[idx].free() > 0 {
            let Some(w) = st.queue.pop_front() else {
                return;
            };
            let lease = self.lease(&mut st.slots[idx]);
            if let Err(mut lease) = w.tx.send(lease) {
                // The client left (or timed out) while queued. The returned lease must
                // not run its Drop (that would re-enter this lock): undo it by hand.
                lease.claim.forget();
                st.slots[idx].claimed -= 1;
            }
        }
    }

    /// Adds a worker that takes up to `limit` requests at once, and serves the queue.
    pub fn add(&self, id: u64, worker: W, limit: u32) {
        let mut st = self.lock();
        st.slots.push(Slot {
            id,
            worker,
            limit,
            claimed: 0,
            accepting: true,
        });
        let idx = st.slots.len() - 1;
        self.hand_out(&mut st, idx);
    }

    /// Changes how many requests a worker takes at once (its thread pool grew or shrank,
    /// or its pipeline changed with its service time).
    pub fn set_limit(&self, id: u64, limit: u32) {
        let mut st = self.lock();
        if let Some(idx) = st.slots.iter().position(|s| s.id == id) {
            st.slots[idx].limit = limit;
            self.hand_out(&mut st, idx);
        }
    }

    /// Stops giving a worker new requests; its claims are still counted (it drains).
    pub fn retire(&self, id: u64) {
        if let Some(s) = self.lock().slots.iter_mut().find(|s| s.id == id) {
            s.accepting = false;
        }
    }

    /// Forgets a worker (it died or finished draining); its outstanding claims release
    /// nothing.
    pub fn remove(&self, id: u64) {
        self.lock().slots.retain(|s| s.id != id);
        self.changed.notify_waiters();
    }

    /// Threads claimed on a worker, if it is still in the pool.
    pub fn claimed(&self, id: u64) -> Option<u32> {
        self.lock()
            .slots
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.claimed)
    }

    /// Threads claimed on every worker, plus requests waiting: zero means idle.
    pub fn busy(&self) -> usize {
        let st = self.lock();
        st.slots.iter().map(|s| s.claimed as usize).sum::<usize>()
            + st.queue.iter().filter(|w| !w.tx.is_closed()).count()
    }

    /// Waits until `idle()` holds; re-checked whenever a claim is released, a worker is
    /// removed or the queue changes.
    pub async fn wait_until(&self, mut idle: impl FnMut(&Self) -> bool) {
        loop {
            let changed = self.changed.notified();
            if idle(self) {
                return;
            }
            changed.await;
        }
    }

    /// Completes when a request joined an empty queue (a stored permit: one that joined
    /// while nobody listened is not missed).
    pub async fn queue_grew(&self) {
        self.grew.notified().await
    }

    /// Refuses new requests and fails queued ones (shutdown).
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queue.clear();
        drop(st);
        self.changed.notify_waiters();
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

    /// Workers taking requests, their free threads, and their threads in all.
    pub fn capacity(&self) -> Capacity {
        let st = self.lock();
        let serving = st.slots.iter().filter(|s| s.accepting);
        Capacity {
            workers: serving.clone().count(),
            free: serving.clone().map(|s| s.free()).sum(),
            slots: serving.map(|s| s.limit).sum(),
        }
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

impl<W: Clone + Send + Sync + 'static> Release for Pool<W> {
    /// A thread of worker `id` became free: give it to the oldest live waiter.
    fn release(&self, id: u64) {
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        let mut st = self.lock();
        if let Some(idx) = st.slots.iter().position(|s| s.id == id) {
            st.slots[idx].claimed = st.slots[idx].claimed.saturating_sub(1);
            self.hand_out(&mut st, idx);
        }
        drop(st);
        self.changed.notify_waiters();
    }
}

/// Wakes the waiters of a [`Notify`] when dropped.
struct WakeOnDrop<'a>(&'a Notify);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

/// Serving capacity right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Workers taking requests.
    pub workers: usize,
    /// Request slots free among them.
    pub free: u32,
    /// Request slots among them in all (each worker's limit: its threads, plus its
    /// pipeline).
    pub slots: u32,
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

    fn spawn_acquire(
        pool: &Arc<Pool<&'static str>>,
    ) -> tokio::task::JoinHandle<Result<Lease<&'static str>, AdmissionError>> {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire().await })
    }

    #[tokio::test]
    async fn no_workers_means_queue_then_refusal() {
        let pool = Pool::<&str>::new(limits(1, 50));
        let first = spawn_acquire(&pool);
        tokio::task::yield_now().await;
        // The queue holds one: the second is refused at once.
        assert!(matches!(
            pool.acquire().await,
            Err(AdmissionError::QueueFull)
        ));
        assert!(matches!(
            first.await.unwrap(),
            Err(AdmissionError::QueueTimeout)
        ));
        assert_eq!(pool.stats.rejected_full.load(Ordering::Relaxed), 1);
        assert_eq!(pool.stats.rejected_timeout.load(Ordering::Relaxed), 1);
        assert_eq!(pool.queue_state().0, 0, "timed-out waiter purged");
    }

    #[tokio::test]
    async fn departed_waiters_do_not_fill_the_queue() {
        let pool = Pool::<&str>::new(limits(1, 10_000));
        let gone = spawn_acquire(&pool);
        tokio::task::yield_now().await;
        gone.abort(); // the client left while queued
        let _ = gone.await;
        let live = spawn_acquire(&pool);
        tokio::task::yield_now().await;
        assert!(
            !live.is_finished(),
            "a live request must queue, not be refused"
        );
        assert_eq!(pool.stats.rejected_full.load(Ordering::Relaxed), 0);
        live.abort();
    }

    #[tokio::test]
    async fn requests_go_to_the_worker_with_most_free_threads() {
        let pool = Pool::new(limits(10, 1000));
        pool.add(1, "a", 1);
        pool.add(2, "b", 3);
        let l1 = pool.acquire().await.unwrap();
        let l2 = pool.acquire().await.unwrap();
        assert_eq!((l1.worker, l2.worker), ("b", "b"));
        let l3 = pool.acquire().await.unwrap();
        // a: 1 free, b: 1 free — either; both are then full.
        let l4 = pool.acquire().await.unwrap();
        let mut got = [l3.worker, l4.worker];
        got.sort();
        assert_eq!(got, ["a", "b"]);
        assert_eq!(pool.capacity().free, 0);
        assert_eq!(pool.busy(), 4);
    }

    #[tokio::test]
    async fn a_released_thread_goes_to_the_oldest_waiter() {
        let pool = Pool::new(limits(10, 5000));
        pool.add(7, "w", 1);
        let held = pool.acquire().await.unwrap();
        let first = spawn_acquire(&pool);
        tokio::task::yield_now().await;
        let second = spawn_acquire(&pool);
        tokio::task::yield_now().await;
        assert_eq!(pool.queue_state().0, 2);
        drop(held);
        let got = first.await.unwrap().unwrap();
        assert_eq!(got.worker, "w");
        assert!(!second.is_finished(), "FIFO: the second still waits");
        drop(got);
        let last = second.await.unwrap().unwrap();
        assert_eq!(pool.stats.completed.load(Ordering::Relaxed), 2);
        drop(last);
    }

    #[tokio::test]
    async fn a_retired_worker_takes_nothing_new_but_counts_its_claims() {
        let pool = Pool::new(limits(10, 50));
        pool.add(1, "old", 2);
        let l = pool.acquire().await.unwrap();
        pool.retire(1);
        assert_eq!(pool.capacity().workers, 0);
        assert_eq!(pool.claimed(1), Some(1));
        assert!(matches!(
            pool.acquire().await,
            Err(AdmissionError::QueueTimeout)
        ));
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.wait_until(|p| p.claimed(1) == Some(0)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(l);
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn claims_of_a_removed_worker_free_nothing() {
        let pool = Pool::new(limits(10, 50));
        pool.add(1, "dead", 1);
        let l = pool.acquire().await.unwrap();
        pool.remove(1);
        drop(l);
        assert_eq!(pool.capacity().free, 0);
        assert_eq!(pool.claimed(1), None);
    }

    #[tokio::test]
    async fn close_fails_the_queue_and_refuses_new_requests() {
        let pool = Pool::<&str>::new(limits(10, 5000));
        let waiting = spawn_acquire(&pool);
        tokio::task::yield_now().await;
        pool.close();
        assert!(matches!(
            waiting.await.unwrap(),
            Err(AdmissionError::Closed)
        ));
        assert!(matches!(pool.acquire().await, Err(AdmissionError::Closed)));
    }

    #[test]
    fn retry_after_follows_the_drain_rate() {
        let pool = Pool::<()>::new(limits(10, 30_000));
        assert_eq!(
            pool.retry_after_secs(),
            30,
            "no rate yet: the queue timeout"
        );
        pool.set_drain_rate(0.5);
        assert_eq!(pool.retry_after_secs(), 2);
        let pool = Pool::<()>::new(limits(10, 30_000));
        pool.set_drain_rate(1000.0);
        assert_eq!(pool.retry_after_secs(), 1);
    }
}
