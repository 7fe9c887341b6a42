//! Everything a run measures, collected in one place as it happens: connect and response
//! histograms, SYN retransmits per connect, error and status classes, and per-second buckets.
//!
//! Tasks record through one mutex: an update is a few histogram increments, far cheaper than
//! the socket work around it, so contention stays negligible even at 100k requests/s, and a
//! single collector keeps per-second buckets exact without merging per-task copies.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::conn::{ErrorClass, RequestError};
use crate::verdict::{Sample, Samples};

/// Highest latency a histogram holds exactly (one hour, in microseconds); longer ones saturate.
const MAX_MICROS: u64 = 3_600_000_000;

/// A histogram of microseconds, 1 µs .. 1 h, with 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant bounds are valid")
}

/// Two significant digits are plenty for one second's percentiles and keep a long run small.
fn new_second_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("constant bounds are valid")
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One second of the run, by completion time.
pub(crate) struct Second {
    pub responses: u64,
    pub errors: u64,
    pub connects: u64,
    pub latency: Histogram<u32>,
}

impl Second {
    fn new() -> Second {
        Second {
            responses: 0,
            errors: 0,
            connects: 0,
            latency: new_second_histogram(),
        }
    }
}

/// The collected measurements.
pub(crate) struct Collector {
    pub connect: Histogram<u64>,
    pub response: Histogram<u64>,
    /// Completed connects by SYN retransmit count (0 included).
    pub connect_retrans: BTreeMap<u32, u64>,
    /// Failed connects by SYN retransmit count (0 included).
    pub failed_connect_retrans: BTreeMap<u32, u64>,
    /// Longest failed connect attempt.
    pub failed_connect_max: Duration,
    pub errors: [u64; ErrorClass::ALL.len()],
    pub error_examples: [Option<String>; ErrorClass::ALL.len()],
    pub status: BTreeMap<u16, u64>,
    pub responses: u64,
    pub timeline: Vec<Second>,
    /// Connections the server ended by answering `Connection: close` or close-delimited,
    /// when the client meant to keep them.
    pub closed_by_server: u64,
    /// Keep-alive idle timeouts the server announced, by value.
    pub keep_alive_timeouts: BTreeMap<u64, u64>,
    /// Requests as the client lived them, for the verdict.
    pub samples: Samples,
}

/// The collector shared by all tasks of a run.
pub(crate) struct Shared {
    pub start: Instant,
    inner: Mutex<Collector>,
}

impl Shared {
    pub(crate) fn new(start: Instant) -> Shared {
        Shared {
            start,
            inner: Mutex::new(Collector {
                connect: new_histogram(),
                response: new_histogram(),
                connect_retrans: BTreeMap::new(),
                failed_connect_retrans: BTreeMap::new(),
                failed_connect_max: Duration::ZERO,
                errors: [0; ErrorClass::ALL.len()],
                error_examples: Default::default(),
                status: BTreeMap::new(),
                responses: 0,
                timeline: Vec::new(),
                closed_by_server: 0,
                keep_alive_timeouts: BTreeMap::new(),
                samples: Samples::new(),
            }),
        }
    }

    /// The collector; a panic in another task cannot leave it half-updated in a way that
    /// matters more than losing the run, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Collector> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn second(c: &mut Collector, at: Instant, start: Instant) -> &mut Second {
        let index = at.saturating_duration_since(start).as_secs() as usize;
        if c.timeline.len() <= index {
            c.timeline.resize_with(index + 1, Second::new);
        }
        &mut c.timeline[index]
    }

    pub(crate) fn connected(&self, elapsed: Duration, retrans: Option<u32>) {
        let now = Instant::now();
        let mut c = self.lock();
        c.connect.saturating_record(micros(elapsed));
        if let Some(r) = retrans {
            *c.connect_retrans.entry(r).or_default() += 1;
        }
        Self::second(&mut c, now, self.start).connects += 1;
    }

    pub(crate) fn connect_failed(
        &self,
        error: &RequestError,
        elapsed: Duration,
        retrans: Option<u32>,
    ) {
        {
            let mut c = self.lock();
            if let Some(r) = retrans {
                *c.failed_connect_retrans.entry(r).or_default() += 1;
            }
            c.failed_connect_max = c.failed_connect_max.max(elapsed);
        }
        self.failed(error);
    }

    pub(crate) fn response(&self, latency: Duration, status: u16, keep_alive_timeout: Option<u64>) {
        let now = Instant::now();
        let us = micros(latency);
        let mut c = self.lock();
        c.response.saturating_record(us);
        c.responses += 1;
        *c.status.entry(status).or_default() += 1;
        if let Some(t) = keep_alive_timeout {
            *c.keep_alive_timeouts.entry(t).or_default() += 1;
        }
        let s = Self::second(&mut c, now, self.start);
        s.responses += 1;
        s.latency.saturating_record(us);
    }

    /// One request for the verdict (besides its [`Shared::response`]).
    pub(crate) fn sample(&self, s: Sample) {
        self.lock().samples.add(s);
    }

    pub(crate) fn failed(&self, error: &RequestError) {
        let now = Instant::now();
        let class = error.class().index();
        let mut c = self.lock();
        c.errors[class] += 1;
        if c.error_examples[class].is_none() {
            c.error_examples[class] = Some(error.to_string());
        }
        Self::second(&mut c, now, self.start).errors += 1;
    }

    pub(crate) fn closed_by_server(&self) {
        self.lock().closed_by_server += 1;
    }

    /// Responses and errors so far, for the progress bar.
    pub(crate) fn progress(&self) -> (u64, u64) {
        let c = self.lock();
        (c.responses, c.errors.iter().sum())
    }
}
