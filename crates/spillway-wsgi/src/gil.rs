//! Releasing the GIL around blocking Rust code, and measuring how long taking it back
//! takes: the sizing signal that tells threads contending for the GIL from threads blocked
//! in I/O. Counters are process-wide (one worker per process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pyo3::prelude::*;

static WAIT_NS: AtomicU64 = AtomicU64::new(0);
static TAKES: AtomicU64 = AtomicU64::new(0);

/// Records one taking of the GIL that waited `since.elapsed()`.
pub(crate) fn taken(since: Instant) {
    WAIT_NS.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    TAKES.fetch_add(1, Ordering::Relaxed);
}

/// Total time waited to take the GIL (ns) and how many times it was taken.
pub(crate) fn totals() -> (u64, u64) {
    (
        WAIT_NS.load(Ordering::Relaxed),
        TAKES.load(Ordering::Relaxed),
    )
}

/// Runs `f` with the GIL released and measures taking it back.
pub(crate) fn detach<T: Send, F: Send + FnOnce() -> T>(py: Python<'_>, f: F) -> T {
    let mut wanted = None;
    let r = py.detach(|| {
        let r = f();
        wanted = Some(Instant::now());
        r
    });
    if let Some(t) = wanted {
        taken(t);
    }
    r
}
