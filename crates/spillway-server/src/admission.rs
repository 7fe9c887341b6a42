//! Admission: which worker runs a request, and the one FIFO where requests wait when every
//! Python thread is busy. Dispatch is per request, to the ready worker with the most free
//! threads. A waiter whose client has gone away is skipped, never run: its receiver is
//! dropped with its future, so handing it a slot fails and the slot goes to the next one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::worker::WorkerLink;

/// A claim on one Python thread of one worker; dropping it frees the thread.
pub struct Lease {
    pool: Weak<Pool>,
    /// The worker that runs the request.
    pub worker: Arc<WorkerLink>,
    /// Time spent in the admission queue.
    pub queued: Duration,
}

impl Lease {
    /// Detaches the lease from the pool: dropping it frees nothing (its worker is gone).
    pub(crate) fn forget(&mut self) {
        self.pool = Weak::new();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
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

/// The worker pool as admission sees it: free threads per ready worker, and the queue.
#[derive(Default)]
pub struct Pool {
    state: Mutex<State>,
}

impl Pool {
    /// An empty pool: requests queue until a worker is added.
    pub fn new() -> Arc<Pool> {
        Arc::new(Pool::default())
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
                    return Ok(Lease {
                        pool: Arc::downgrade(self),
                        worker: slot.worker.clone(),
                        queued: Duration::ZERO,
                    });
                }
            }
            let (tx, rx) = oneshot::channel();
            st.queue.push_back(Waiter { tx, since });
            rx
        };
        rx.await.map_err(|_| AdmissionError::Closed)
    }

    /// A thread of worker `id` became free: give it to the oldest live waiter.
    fn release(self: &Arc<Self>, id: u64) {
        let mut st = self.lock();
        let Some(idx) = st.slots.iter().position(|s| s.worker.id == id) else {
            return; // the worker was removed (died or retired): nothing to hand out
        };
        let worker = st.slots[idx].worker.clone();
        while let Some(w) = st.queue.pop_front() {
            let lease = Lease {
                pool: Arc::downgrade(self),
                worker: worker.clone(),
                queued: w.since.elapsed(),
            };
            match w.tx.send(lease) {
                Ok(()) => return,
                // The client left while queued. The returned lease must not run its
                // Drop (that would re-enter this lock): forget its pool link first.
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
            self.release(id);
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

    /// Requests waiting now.
    pub fn queue_len(&self) -> usize {
        self.lock().queue.len()
    }
}
