//! How many Python threads a worker runs. Pure decisions over measured samples; the pool
//! applies them.
//!
//! A new worker runs one thread until its first request has finished, or `SETTLE` has
//! passed (warm start: an application's lazy, thread-unsafe first-use initialisation never
//! sees two requests at once). Then, unless `--threads` pins the count:
//!
//! * **Grow** when a request has waited `GROW_WAIT` (in the worker, or in the front's
//!   queue while every worker is full) with every thread busy, and another thread would
//!   help: either most requests spend most of their time blocked outside the GIL
//!   (`IO_SHARE_GROW_MIN`, from each sampled request's thread CPU time against its wall
//!   time: the next request would wait in I/O too, not compete for the GIL), or no
//!   request has finished for `GROW_WAIT` (every thread is held by a slow one while fast
//!   ones wait behind them); and the GIL is mostly free (taking it costs under
//!   `GIL_WAIT_GROW_MAX` on average, and the process uses under `CPU_GROW_MAX` of a
//!   core), the host is not saturated (`HOST_BUSY_MAX`), and
//!   the front takes responses as fast as they come (threads blocked writing to a full
//!   socket look idle, but more of them would only queue more responses). Growth is by half the current count, at most once per
//!   `GROW_INTERVAL`, so a worker reaches a hundred threads in a few hundred milliseconds
//!   when its requests wait on a database.
//! * **Shrink** when threads contend for the GIL: taking it takes longer than
//!   `GIL_WAIT_MAX` on average while the process does real work (at least
//!   `CPU_CONTENDED_MIN` of a core): more threads then only add latency. By an eighth, at
//!   most once per `SHRINK_INTERVAL`. Threads that find no work for the idle timeout
//!   (`--thread-idle-timeout`) also leave, down to the minimum.
//!
//! The signal is the GIL wait, measured each time a thread takes the GIL back at the
//! points where Spillway released it (waiting for a request, for body bytes, for the
//! socket). Why it cannot oscillate: growth needs the average wait below 0.5 ms and
//! shrinking needs it above 2 ms, a dead band neither rule acts in; each rule waits for
//! its own interval before acting again, so it sees the effect of its last step; rates
//! over a window that includes an idle spell are not acted on; and the idle rule only
//! removes threads that found no work for the idle timeout, which cannot happen while
//! requests wait.

use std::time::{Duration, Instant};

/// Longest a new worker runs one thread waiting for its first request to finish.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);
/// Queue wait (all threads busy) that asks for more threads.
pub(crate) const GROW_WAIT: Duration = Duration::from_millis(1);
const GROW_INTERVAL: Duration = Duration::from_millis(10);
const SHRINK_INTERVAL: Duration = Duration::from_millis(500);
/// Growth needs at least this share of the requests to spend most of their time blocked
/// (in I/O or sleeps): the next request a new thread takes would then mostly wait too,
/// leaving the GIL to the others, rather than compete for it.
const IO_SHARE_GROW_MIN: f64 = 0.5;
const HOST_BUSY_MAX: f64 = 0.90;
/// Growth needs the GIL mostly free: taking it costs less than this on average.
const GIL_WAIT_GROW_MAX: Duration = Duration::from_micros(500);
/// Threads waiting longer than this on average to take the GIL are too many.
const GIL_WAIT_MAX: Duration = Duration::from_millis(2);
/// Contention is only acted on while the GIL holder does real work.
const CPU_CONTENDED_MIN: f64 = 0.5;
/// Growth stops once the process uses this much of a core: Python code runs one thread at
/// a time, so the GIL is then the bottleneck. Threads waiting for the GIL inside the
/// interpreter are off the CPU too and would read as blocked in I/O; this keeps a
/// CPU-bound application from growing on that.
const CPU_GROW_MAX: f64 = 0.75;

/// The bounds an operator set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadLimits {
    /// `--min-threads`.
    pub min: u16,
    /// `--max-threads`.
    pub max: u16,
    /// `--threads N`: a fixed pool, no sizing (after warm start).
    pub pinned: Option<u16>,
    /// `--thread-idle-timeout`: a thread that found no work for this long leaves (down
    /// to the minimum).
    pub idle_exit: Duration,
}

impl ThreadLimits {
    /// Whether the application may be called from several threads (`wsgi.multithread`).
    pub fn multithread(&self) -> bool {
        self.pinned.map_or(self.max > 1, |n| n > 1)
    }
}

/// What the pool measured since the last sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub now: Instant,
    /// The rates below cover a recent, busy window (not an idle spell).
    pub fresh: bool,
    /// Share of recently finished requests that spent most of their time off the CPU
    /// (`None`: none finished, every thread is held).
    pub io_share: Option<f64>,
    /// Time since a request last finished.
    pub since_done: Duration,
    /// The socket to the front was full lately: the front, not the threads, is the
    /// bottleneck.
    pub front_full: bool,
    /// Threads serving a request.
    pub busy: u16,
    /// How long the oldest waiting request has waited (None: nothing waits).
    pub oldest_wait: Option<Duration>,
    /// CPU the worker process used, in cores (1.0: one core all the time).
    pub cpu: f64,
    /// Share of the host's CPU time that was busy, 0 to 1.
    pub host_busy: f64,
    /// Average time a thread waited to take the GIL.
    pub gil_wait: Duration,
}

/// A change of the thread target, and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub from: u16,
    pub to: u16,
    pub why: String,
}

/// The thread target of one worker.
#[derive(Debug)]
pub(crate) struct Sizing {
    limits: ThreadLimits,
    target: u16,
    /// Warm start: one thread until this instant, or until a request finishes.
    warm_until: Option<Instant>,
    last_change: Instant,
}

impl Sizing {
    /// A new worker's sizing: one thread, warm.
    pub fn new(limits: ThreadLimits, now: Instant) -> Sizing {
        Sizing {
            limits,
            target: 1,
            warm_until: Some(now + SETTLE),
            last_change: now,
        }
    }

    /// The thread count to run now.
    pub fn target(&self) -> u16 {
        self.target
    }

    /// The count after warm start: the pinned size, or the minimum.
    fn opened(&self) -> u16 {
        self.limits.pinned.unwrap_or(self.limits.min).max(1)
    }

    fn set(&mut self, to: u16, now: Instant, why: String) -> Option<Decision> {
        let from = self.target;
        self.last_change = now;
        if to == from {
            return None;
        }
        self.target = to;
        Some(Decision { from, to, why })
    }

    /// The first request finished: warm start is over.
    pub fn first_request_done(&mut self, now: Instant) -> Option<Decision> {
        self.warm_until.take()?;
        let to = self.opened();
        self.set(
            to,
            now,
            "warm start over: the first request finished".into(),
        )
    }

    /// Decides on a fresh sample.
    pub fn decide(&mut self, s: &Sample) -> Option<Decision> {
        if let Some(until) = self.warm_until {
            if s.now < until {
                return None;
            }
            self.warm_until = None;
            let to = self.opened();
            return self.set(
                to,
                s.now,
                format!("warm start over: {} s passed", SETTLE.as_secs()),
            );
        }
        if self.limits.pinned.is_some() {
            return None;
        }
        let since = s.now.saturating_duration_since(self.last_change);
        let waited = s.oldest_wait.unwrap_or_default();
        let all_busy = s.busy >= self.target;
        if s.fresh
            && !s.front_full
            && waited >= GROW_WAIT
            && all_busy
            && s.gil_wait < GIL_WAIT_GROW_MAX
            && (s.io_share.unwrap_or(1.0) >= IO_SHARE_GROW_MIN || s.since_done >= GROW_WAIT)
            && s.host_busy < HOST_BUSY_MAX
            // Past a core, a second thread still lets short requests take turns with a
            // long CPU-bound one; more than that only adds GIL contention.
            && (s.cpu < CPU_GROW_MAX || (self.target < 2 && s.since_done >= GROW_WAIT))
            && self.target < self.limits.max
            && since >= GROW_INTERVAL
        {
            let to = (self.target + (self.target / 2).max(1)).min(self.limits.max);
            let why = format!(
                "a request waited {:.1} ms with all {} threads busy, the last finished {:.1} ms ago, and {:.0}% of requests spend most of their time blocked outside the GIL ({:.2} ms average wait to take the GIL, process cpu {:.0}% of a core, host {:.0}% busy)",
                ms(waited),
                s.busy,
                ms(s.since_done),
                s.io_share.unwrap_or(1.0) * 100.0,
                ms(s.gil_wait),
                s.cpu * 100.0,
                s.host_busy * 100.0
            );
            return self.set(to, s.now, why);
        }
        if s.fresh
            && s.cpu >= CPU_CONTENDED_MIN
            && s.gil_wait >= GIL_WAIT_MAX
            && self.target > self.limits.min.max(1)
            && since >= SHRINK_INTERVAL
        {
            let to = (self.target - (self.target / 8).max(1)).max(self.limits.min.max(1));
            let why = format!(
                "threads contend for the GIL (process cpu {:.0}% of a core, {:.1} ms average wait to take it)",
                s.cpu * 100.0,
                ms(s.gil_wait)
            );
            return self.set(to, s.now, why);
        }
        None
    }

    /// How long a thread may find no work before it leaves.
    pub fn idle_exit_after(&self) -> Duration {
        self.limits.idle_exit
    }

    /// A thread found no work for the idle timeout: whether it may leave.
    pub fn idle_exit(&mut self, now: Instant) -> Option<Decision> {
        if self.limits.pinned.is_some()
            || self.warm_until.is_some()
            || self.target <= self.limits.min.max(1)
        {
            return None;
        }
        let to = self.target - 1;
        self.set(
            to,
            now,
            format!(
                "a thread found no work for {} s",
                self.limits.idle_exit.as_secs()
            ),
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: ThreadLimits = ThreadLimits {
        min: 1,
        max: 128,
        pinned: None,
        idle_exit: Duration::from_secs(10),
    };

    /// A sample where the busy threads are on the CPU `cpu` of their time per thread.
    fn sample(now: Instant, busy: u16, wait_ms: u64, cpu: f64) -> Sample {
        Sample {
            now,
            fresh: true,
            io_share: Some(if cpu < 0.5 { 1.0 } else { 0.0 }),
            since_done: Duration::ZERO,
            front_full: false,
            busy,
            oldest_wait: (wait_ms > 0).then(|| Duration::from_millis(wait_ms)),
            cpu,
            host_busy: 0.3,
            gil_wait: Duration::ZERO,
        }
    }

    fn warmed(limits: ThreadLimits) -> (Sizing, Instant) {
        let t0 = Instant::now();
        let mut s = Sizing::new(limits, t0);
        assert_eq!(s.target(), 1, "a new worker runs one thread");
        s.first_request_done(t0);
        (s, t0)
    }

    #[test]
    fn warm_start_holds_one_thread_until_a_request_finishes_or_settle_passes() {
        let t0 = Instant::now();
        let mut s = Sizing::new(OPEN, t0);
        // Requests pile up, threads idle in I/O: still one thread while warm.
        assert_eq!(
            s.decide(&sample(t0 + Duration::from_millis(500), 1, 50, 0.01)),
            None
        );
        assert_eq!(s.target(), 1);
        assert!(
            s.first_request_done(t0 + Duration::from_secs(1)).is_none(),
            "min is 1: no change"
        );
        let pinned = ThreadLimits {
            pinned: Some(8),
            ..OPEN
        };
        let mut s = Sizing::new(pinned, t0);
        let d = s.decide(&sample(t0 + SETTLE, 0, 0, 0.0)).unwrap();
        assert_eq!((d.from, d.to), (1, 8));
        assert!(d.why.contains("warm start"));
    }

    #[test]
    fn threads_grow_while_requests_wait_on_io_up_to_the_maximum() {
        let (mut s, t0) = warmed(OPEN);
        let mut now = t0;
        let mut steps = 0;
        while s.target() < OPEN.max {
            now += GROW_INTERVAL;
            let busy = s.target();
            let d = s.decide(&sample(now, busy, 5, 0.2)).expect("grows");
            assert!(d.to > d.from && d.why.contains("waited"), "{d:?}");
            steps += 1;
        }
        assert!(steps <= 13, "reaching 128 took {steps} steps");
        now += GROW_INTERVAL;
        assert_eq!(
            s.decide(&sample(now, 128, 50, 0.2)),
            None,
            "never past --max-threads"
        );
    }

    #[test]
    fn no_growth_when_the_gil_or_the_host_is_the_bottleneck() {
        let (mut s, t0) = warmed(OPEN);
        let now = t0 + Duration::from_secs(1);
        assert_eq!(
            s.decide(&sample(now, 1, 50, 0.8)),
            None,
            "GIL busy: more threads do not help"
        );
        let mut busy_host = sample(now, 1, 50, 0.3);
        busy_host.host_busy = 0.95;
        assert_eq!(s.decide(&busy_host), None, "no CPU left on the host");
        // Threads waiting for the GIL inside the interpreter look blocked; a process at
        // most of a core says otherwise.
        let mut gil_bound = sample(now, 1, 50, 0.3);
        gil_bound.cpu = 0.9;
        assert_eq!(s.decide(&gil_bound), None, "the GIL is the bottleneck");
        assert_eq!(
            s.decide(&sample(now, 0, 50, 0.1)),
            None,
            "a free thread will take it"
        );
        let mut stalled = sample(now, 1, 50, 0.9);
        stalled.since_done = Duration::from_millis(30);
        assert!(
            s.decide(&stalled).is_some(),
            "held by a slow request: a second thread, CPU-bound or not"
        );
        let later = now + Duration::from_secs(1);
        let mut stalled = sample(later, 2, 50, 0.9);
        stalled.since_done = Duration::from_millis(30);
        assert_eq!(
            s.decide(&stalled),
            None,
            "two threads already take turns at the GIL"
        );
        assert_eq!(
            s.decide(&sample(now, 1, 1, 0.1)),
            None,
            "a short wait is not a queue"
        );
        let mut contended = sample(now, 1, 50, 0.3);
        contended.gil_wait = Duration::from_millis(1);
        assert_eq!(
            s.decide(&contended),
            None,
            "threads already wait for the GIL"
        );
        let mut backpressure = sample(now, 1, 50, 0.1);
        backpressure.front_full = true;
        assert_eq!(s.decide(&backpressure), None, "the front is the bottleneck");
    }

    #[test]
    fn contention_shrinks_and_the_dead_band_holds_still() {
        let (mut s, t0) = warmed(OPEN);
        let mut now = t0;
        for _ in 0..6 {
            now += GROW_INTERVAL;
            let busy = s.target();
            s.decide(&sample(now, busy, 5, 0.2));
        }
        let grown = s.target();
        assert!(grown >= 8, "{grown}");
        let mut hot = sample(now + SHRINK_INTERVAL, grown, 0, 0.95);
        hot.gil_wait = Duration::from_millis(4);
        let d = s.decide(&hot).expect("shrinks");
        assert!(d.to < d.from && d.why.contains("GIL"), "{d:?}");
        // With the GIL wait between 0.5 and 2 ms neither rule acts, whatever waits.
        let mut band = sample(hot.now + SHRINK_INTERVAL, s.target(), 20, 0.6);
        band.gil_wait = Duration::from_millis(1);
        assert_eq!(s.decide(&band), None);
        let mut stale = sample(band.now + SHRINK_INTERVAL, s.target(), 20, 0.1);
        stale.fresh = false;
        assert_eq!(
            s.decide(&stale),
            None,
            "rates over an idle spell are not acted on"
        );
    }

    #[test]
    fn pinned_pools_never_change_after_warm_start() {
        let pinned = ThreadLimits {
            pinned: Some(4),
            ..OPEN
        };
        let (mut s, t0) = warmed(pinned);
        assert_eq!(s.target(), 4);
        assert_eq!(
            s.decide(&sample(t0 + Duration::from_secs(5), 4, 100, 0.0)),
            None
        );
        assert_eq!(s.idle_exit(t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn idle_threads_leave_down_to_the_minimum() {
        let limits = ThreadLimits { min: 2, ..OPEN };
        let (mut s, t0) = warmed(limits);
        assert_eq!(s.target(), 2);
        let mut now = t0;
        for _ in 0..3 {
            now += GROW_INTERVAL;
            let busy = s.target();
            s.decide(&sample(now, busy, 5, 0.1));
        }
        let grown = s.target();
        let mut left = 0;
        while s.idle_exit(now).is_some() {
            left += 1;
        }
        assert_eq!(s.target(), 2);
        assert_eq!(left, grown - 2);
    }
}
