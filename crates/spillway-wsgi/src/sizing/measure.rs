//! Measuring a thread count: a window of completions after a change, and what the counts
//! measured with requests waiting did, smoothed, with the noise between windows.

use std::time::{Duration, Instant};

use super::routes::{Route, Routes};
use super::{EARLY_MIN, MEASURED_MIN, MOVED};

/// What one level (thread count) was measured to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    pub threads: u16,
    /// Requests completed per second over the window.
    pub throughput: f64,
    /// Mean time a request held its thread.
    pub service: Duration,
    /// This worker's and all the front's workers' completions per second over the part of
    /// the window the front's count covers, if it reported it.
    pub all: Option<Shared>,
    /// Time per request route by route.
    pub routes: Routes,
    /// Share of the time threads were busy in the window that its completions account
    /// for: well below one, threads were held by requests that had not finished (a window
    /// that missed the long ones).
    pub accounted: f64,
}

/// Completions per second over one span: this worker's, and all workers' by the front's
/// count. (Both over the same span: completions come in bursts, and a worker's rate over
/// its whole window beside all workers' over part of it compares two different things.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Shared {
    pub own: f64,
    pub all: f64,
    /// The threads the other workers ran over the span, if that stayed the same (None:
    /// they changed, and their throughput with them).
    pub others: Option<u32>,
}

/// The front's count of requests all workers finished, as a worker heard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heard {
    pub requests: u64,
    /// When it arrived.
    pub at: Instant,
    /// The threads the other workers ran then.
    pub other_threads: u32,
}

/// The measurement of the current level under way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    /// Completions count from here: after the change, once the requests it let in had
    /// time to finish (the last level's service time), so the count is the new level's.
    since: Instant,
    /// Requests finished in the window, and the time they held their threads.
    done: u32,
    service: Duration,
    /// When (after `since`) the `MEASURED_MIN`th finished: the window runs a quarter
    /// longer, so it does not end on a completion (which would overstate the rate).
    full_at: Option<Duration>,
    /// The same for the `EARLY_MIN`th.
    early_at: Option<Duration>,
    routes: Routes,
    /// Thread-seconds busy since `since`, and the last tick's time and busy threads.
    busy_secs: f64,
    last_tick: Option<(Instant, u16)>,
    /// Ticks seen, and how many of them found requests waiting.
    ticks: u32,
    waiting: u32,
    /// The front's count of requests all workers finished, first and last heard in the
    /// window, with this worker's count then; and whether the other workers' threads
    /// stayed the same in between.
    all_first: Option<(Heard, u32)>,
    all_last: Option<(Heard, u32)>,
    others_steady: bool,
}

/// Shortest span of the front's count that gives a rate (it arrives every 20 ms).
const ALL_SPAN_MIN: Duration = Duration::from_millis(60);

impl Window {
    pub fn new(since: Instant) -> Window {
        Window {
            since,
            done: 0,
            service: Duration::ZERO,
            full_at: None,
            early_at: None,
            routes: Routes::default(),
            busy_secs: 0.0,
            last_tick: None,
            ticks: 0,
            waiting: 0,
            all_first: None,
            all_last: None,
            others_steady: true,
        }
    }
}

impl Window {
    /// A request of `route` that started at `started` finished at `now`.
    pub fn done(&mut self, started: Instant, now: Instant, route: Route) {
        if now >= self.since {
            let held = now.saturating_duration_since(started);
            self.done += 1;
            self.service += held;
            self.routes.add(route, held.as_secs_f64());
            if self.done == MEASURED_MIN {
                self.full_at = Some(now - self.since);
            }
            if self.done == EARLY_MIN {
                self.early_at = Some(now - self.since);
            }
        }
    }

    /// A tick at `now`, the threads busy then, and whether requests waited.
    pub fn tick(&mut self, now: Instant, busy: u16, waiting: bool) {
        if let Some((at, was)) = self.last_tick {
            let span = now.saturating_duration_since(at.max(self.since));
            self.busy_secs += f64::from(was) * span.as_secs_f64();
        }
        self.last_tick = Some((now, busy));
        self.ticks += 1;
        self.waiting += u32::from(waiting);
    }

    /// The front's count of requests all workers finished, as last heard.
    pub fn all(&mut self, heard: Option<Heard>) {
        let Some(h) = heard else { return };
        if h.at < self.since || self.all_last.is_some_and(|(last, _)| last.at == h.at) {
            return;
        }
        if let Some((last, _)) = self.all_last {
            self.others_steady &= last.other_threads == h.other_threads;
        }
        self.all_first.get_or_insert((h, self.done));
        self.all_last = Some((h, self.done));
    }

    /// Requests waited at half the ticks or more.
    pub fn mostly_waiting(&self) -> bool {
        self.waiting * 2 >= self.ticks.max(1)
    }

    /// Completions per second so far.
    pub fn throughput(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.since);
        f64::from(self.done) / elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether the window has counted enough: `early` needs only `EARLY_MIN`
    /// completions. It then runs a quarter longer than it took to count them.
    pub fn counted(&self, now: Instant, early: bool) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        let at = if early { self.early_at } else { self.full_at };
        at.is_some_and(|f| elapsed >= f + f / 4)
    }

    /// Requests counted.
    pub fn count(&self) -> u32 {
        self.done
    }

    /// How long the window has run.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }

    /// This worker's and all workers' completions per second between the first and last
    /// count heard.
    fn all_rate(&self) -> Option<Shared> {
        let ((h0, own0), (h1, own1)) = (self.all_first?, self.all_last?);
        let span = h1.at.saturating_duration_since(h0.at);
        (span >= ALL_SPAN_MIN && h1.requests >= h0.requests).then(|| Shared {
            own: f64::from(own1.saturating_sub(own0)) / span.as_secs_f64(),
            all: (h1.requests - h0.requests) as f64 / span.as_secs_f64(),
            others: self.others_steady.then_some(h1.other_threads),
        })
    }

    /// The window's measurement of `threads` (at least one completion).
    pub fn rate(&self, threads: u16, now: Instant) -> Rate {
        Rate {
            threads,
            throughput: self.throughput(now),
            service: self.service / self.done.max(1),
            all: self.all_rate(),
            routes: self.routes,
            accounted: self.service.as_secs_f64() / self.busy_secs.max(1e-9),
        }
    }
}

/// Throughput measured at each thread count with requests waiting (smoothed), since the
/// load or the application last changed: a probe must beat the best of the counts up to
/// where it started, so one unlucky window does not pass for a gain.
#[derive(Debug, Default)]
pub(super) struct Known {
    levels: Vec<(u16, f64)>,
    /// Windows in a row whose throughput moved by over `MOVED` from the known one.
    moved: u8,
    /// How far one window's throughput strays from its count's smoothed one (relative,
    /// smoothed): a gain or a change must stand out of it.
    noise: f64,
}

impl Known {
    /// Records a window with requests waiting; true if the load or the application
    /// changed (two windows in a row far from what the count did: one is noise), and
    /// what was known is forgotten.
    pub fn record(&mut self, rate: &Rate) -> bool {
        let known = self.best(rate.threads, false);
        let mut changed = false;
        if known > 0.0 {
            let dev = (rate.throughput / known - 1.0).abs();
            let moved = dev > MOVED.max(3.0 * self.noise);
            self.noise = 0.7 * self.noise + 0.3 * dev.min(1.0);
            self.moved = if moved { self.moved + 1 } else { 0 };
            if self.moved >= 2 {
                self.moved = 0;
                self.levels.clear();
                changed = true;
            }
        }
        match self.levels.iter_mut().find(|(t, _)| *t == rate.threads) {
            Some((_, x)) => *x = 0.5 * *x + 0.5 * rate.throughput,
            None => self.levels.push((rate.threads, rate.throughput)),
        }
        changed
    }

    /// The best smoothed throughput known at `threads` or fewer (what a probe from there
    /// must beat), or at exactly `threads`; 0 if none.
    pub fn best(&self, threads: u16, at_or_below: bool) -> f64 {
        self.levels
            .iter()
            .filter(|(t, _)| *t == threads || (at_or_below && *t < threads))
            .map(|(_, x)| *x)
            .fold(0.0, f64::max)
    }

    /// The relative noise between windows at one count.
    pub fn noise(&self) -> f64 {
        self.noise
    }
}
