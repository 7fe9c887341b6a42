//! How many Python threads a worker runs: a controller that adds a thread only when it adds
//! throughput. Pure decisions over measured samples, no I/O; the pool applies them.
//!
//! A new worker runs one thread until its first request has finished, or `SETTLE` has
//! passed (warm start: an application's lazy, thread-unsafe first-use initialisation never
//! sees two requests at once). Then, unless `--threads` pins the count, the controller
//! climbs the curve of throughput against threads, in measured steps:
//!
//! * **Measure a level.** At each thread count it counts completions per second over a
//!   window of at least `WINDOW_MIN`, `WAVES` service times (threads started together
//!   finish together) and `MEASURED_MIN` completions (`WINDOW_EARLY` for a probe that
//!   clearly pays: a close call needs more precision), and the mean time a
//!   request held its thread (S). The window opens once the requests the last change let
//!   in have had time to finish (1.5 × the last level's S, at most `SETTLE_MAX`), so what it
//!   counts is the new level's, and a step costs a few round trips of the application.
//!   (Counting only requests *started* at the level was tried and is biased: the first of
//!   them to finish are the quick ones.)
//! * **Probe up** while requests wait (in the worker, or in the front's queue while every
//!   worker is full) and every thread is busy: T grows by half (doubling below 16). A
//!   step that paid while requests still wait is followed by the next at once, measured
//!   against the step's own window: a double if the step scaled almost perfectly, two
//!   steps at once after two such steps in a row.
//! * **Keep the step only if it paid**: the new level must complete at least
//!   `GAIN_MIN` of the gain perfect scaling would give (T'/T), over the best (smoothed)
//!   throughput measured at T or fewer threads, so one unlucky window at T does not make
//!   any probe look like a gain; and by twice the noise between windows at one count (an
//!   application whose throughput swings, as SQLite's under lock contention, needs a gain
//!   that stands out of its swings). Or, with every thread busy and requests waiting,
//!   the same requests took as long, route by route (`routes`: at a few threads, fast
//!   requests beside slow ones make a window's count hinge on how many slow ones landed
//!   in it; by Little's law, more threads busy at the same time per request complete
//!   more in proportion). A loss within the noise is no loss for a probe down. A thread that waits on
//!   something that scales (a remote database with spare capacity) keeps S flat and
//!   completions rise with the threads; one that waits on contention (a SQLite file lock, a
//!   5-connection pool, an application lock) raises S in proportion and completions stay:
//!   by Little's law, more in flight at the same throughput is only queueing inside the
//!   application. Workers that share a resource (one SQLite file, one remote service, the
//!   clients themselves) make a worker's own count misleading: a bigger pool takes a
//!   bigger share from the other workers and completes more while they complete less. So
//!   a change counts only as far as the front's count of all workers' completions
//!   (`Served`, every 20 ms) moved the same way, unless the other workers changed their
//!   own threads meanwhile (the step is then retried soon; see `verdicts::counted`). A
//!   failed step goes back to T and holds there for `HOLD_FIRST`, doubling to `HOLD_MAX`
//!   while probes keep failing; meanwhile excess requests wait in the front's queue
//!   (fair, visible, with deadlines and 503 + Retry-After).
//! * **Probe down** at a plateau: after an upward probe failed, the next probe removes a
//!   quarter of the threads and keeps the smaller pool if it completes within `LOSS_MAX` as
//!   much (fewer threads, the same throughput: less queueing inside the application).
//! * **Follow the load down**: when no request waited and at most half the threads were
//!   busy (Little's law again: completions per second × S) for `UNUSED_FOR`, the pool
//!   shrinks to twice what was busy. Threads that find no work for the idle timeout
//!   (`--thread-idle-timeout`) also leave.
//!
//! Fast paths veto growth before any measurement: threads that contend for the GIL
//! (taking it costs over `GIL_WAIT_GROW_MAX`), a process at `CPU_GROW_MAX` of a core (the
//! GIL is the bottleneck) or a saturated host this worker takes a share of, once the pool
//! has `CPU_BOUND_POOL` threads (below, a few threads still let the front hand over
//! batches; the measurement decides), and a front that does not take responses as fast as
//! they come. GIL contention past `GIL_WAIT_MAX` with the process busy shrinks the
//! pool by an eighth. A request that held every thread for `STALL` while others wait (no
//! completion to measure) earns one more thread, up to `STALL_MAX`.
//!
//! Why it converges and cannot oscillate: every change is followed by a measurement at the
//! new level before the next one (no step acts on numbers from before it); growth happens
//! only while it is measured to pay, so on a concave throughput curve it stops at the knee;
//! a failed probe returns to a level already measured and waits at least `HOLD_FIRST`,
//! doubling, so the perturbation is one step every few seconds at most and settles to one
//! every `HOLD_MAX`; a probe's result is kept or undone, never compounded; the shrink on
//! unused threads leaves twice the busy count, so the threads it leaves are never all busy
//! and do not ask to grow back; the GIL rules have a dead band (grow below 0.5 ms, shrink
//! above 2 ms). After a change in the load or the application (the level's throughput moves
//! by over `MOVED` from its smoothed value two windows in a row: one is noise) the hold and
//! the measurements reset, so a load change is followed within a few seconds.

use std::time::{Duration, Instant};

mod changelog;
mod decision;
mod measure;
#[cfg(test)]
mod request_tests;
mod routes;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
mod verdicts;

pub(crate) use changelog::ChangeLog;
pub(crate) use decision::{Decision, Rule};
pub(crate) use measure::{Heard, Rate};
use measure::{Known, Window};
pub(crate) use routes::Route;

/// Longest a new worker runs one thread waiting for its first request to finish.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);
/// Queue wait (all threads busy) that counts as requests waiting.
pub(crate) const GROW_WAIT: Duration = Duration::from_millis(1);
/// Shortest measurement of a level.
const WINDOW_MIN: Duration = Duration::from_millis(200);
/// A window spans at least this many service times (up to `WINDOW_MAX`).
const WAVES: u32 = 3;
/// Shortest measurement of a probe that clearly pays (`CLEAR_GAIN` of perfect scaling).
const WINDOW_EARLY: Duration = Duration::from_millis(50);
const CLEAR_GAIN: f64 = 0.75;
/// Completions a level's measurement needs (fewer after `WINDOW_MAX`): enough that one
/// more or less moves the rate by a few per cent.
const MEASURED_MIN: u32 = 16;
/// Completions a probe that clearly pays needs.
const EARLY_MIN: u32 = 8;
/// Longest wait after a change before completions count for the new level.
const SETTLE_MAX: Duration = Duration::from_secs(1);
/// Longest measurement of a level; one with no completion at all is extended.
const WINDOW_MAX: Duration = Duration::from_secs(2);
/// Share of the perfect-scaling gain a step must deliver to be kept.
const GAIN_MIN: f64 = 0.2;
/// A step whose time per request rose by less than this share of what queueing inside the
/// application would add (T'/T - 1) is kept if its throughput did not fall, whatever the
/// noise in it or the demand left: by Little's law its extra threads carry requests, not a
/// queue.
const SERVICE_RISE_MAX: f64 = 0.25;
/// Above this spread (coefficient of variation) of one route's times, they are a queue's
/// and their mean over a window is too uncertain to judge a step by.
const ROUTE_SPREAD_MAX: f64 = 1.0;
/// A window whose completions account for less than this share of its threads' busy time
/// missed requests still in flight: its time per request is understated.
const ACCOUNTED_MIN: f64 = 0.7;
/// Share of the throughput a smaller pool may lose and still be kept.
const LOSS_MAX: f64 = 0.05;
/// However noisy the application, a smaller pool that loses more than this is not kept.
const LOSS_NOISY_MAX: f64 = 0.1;
/// Hold after the first failed probe at a level; doubles up to `HOLD_MAX`.
const HOLD_FIRST: Duration = Duration::from_secs(1);
/// At most this long between probes: a load change is followed within a few seconds.
const HOLD_MAX: Duration = Duration::from_secs(4);
/// A level's throughput moving by this share means the load or the application changed.
const MOVED: f64 = 0.3;
/// Unused threads (nothing waits, at most half busy) this long are let go.
const UNUSED_FOR: Duration = Duration::from_secs(1);
/// No completion for this long with every thread busy and requests waiting: one more.
const STALL: Duration = Duration::from_secs(1);
/// The stall rule adds threads up to this many (beyond, only measured steps).
const STALL_MAX: u16 = 4;
const SHRINK_INTERVAL: Duration = Duration::from_millis(500);
const HOST_BUSY_MAX: f64 = 0.90;
/// A busy host vetoes growth only when this worker takes a share of it: threads that wait
/// (on a database, a sleep) cost no CPU, and on a host shared with other work the host
/// is busy whatever the pool does. (Whether more threads pay is measured anyway.)
const CPU_HOST_SHARE_MIN: f64 = 0.25;
/// Growth needs the GIL mostly free: taking it costs less than this on average.
const GIL_WAIT_GROW_MAX: Duration = Duration::from_micros(500);
/// Threads waiting longer than this on average to take the GIL are too many.
const GIL_WAIT_MAX: Duration = Duration::from_millis(2);
/// Contention is only acted on while the GIL holder does real work.
const CPU_CONTENDED_MIN: f64 = 0.5;
/// Growth stops once the process uses this much of a core: Python code runs one thread at
/// a time, so the GIL is then the bottleneck.
const CPU_GROW_MAX: f64 = 0.75;
/// Thread counts below this are grown by measurement alone, whatever the CPU.
const CPU_BOUND_POOL: u16 = 4;

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

/// What the pool sees at one tick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub now: Instant,
    /// The CPU and GIL rates below cover a recent, busy window (not an idle spell).
    pub fresh: bool,
    /// Time since a request last finished.
    pub since_done: Duration,
    /// The socket to the front was full lately: the front, not the threads, is the
    /// bottleneck.
    pub front_full: bool,
    /// Threads serving a request.
    pub busy: u16,
    /// How long the oldest waiting request has waited, here or in the front's queue
    /// (None: nothing waits).
    pub oldest_wait: Option<Duration>,
    /// CPU the worker process used, in cores (1.0: one core all the time).
    pub cpu: f64,
    /// Share of the host's CPU time that was busy, 0 to 1.
    pub host_busy: f64,
    /// Average time a thread waited to take the GIL.
    pub gil_wait: Duration,
    /// The front's count of requests all its workers finished, as last heard.
    pub all_served: Option<Heard>,
}

/// What the current level is for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Serving at a measured level.
    Settled,
    /// Trying more threads than the level `from` measured.
    Up { from: Rate },
    /// Trying fewer threads than the level `from` measured.
    Down { from: Rate },
}

/// The thread target of one worker.
#[derive(Debug)]
pub(crate) struct Sizing {
    limits: ThreadLimits,
    target: u16,
    /// Warm start: one thread until this instant, or until a request finishes.
    warm_until: Option<Instant>,
    last_change: Instant,
    window: Window,
    phase: Phase,
    /// The last measurement at the current level, and the one at the level before.
    current: Option<Rate>,
    previous: Option<Rate>,
    /// No probe before this instant; the next hold after a failed probe.
    hold_until: Instant,
    hold: Duration,
    /// A probe up failed at this level: the next probe goes down.
    plateau: bool,
    /// Steps in a row, up to the one just kept, that scaled almost perfectly (`CLEAR_GAIN`
    /// of it): after one the climb doubles however large the pool, after two it takes two
    /// steps at once.
    scaled: u8,
    known: Known,
    /// Since when threads went unused, and the most that were busy meanwhile.
    unused: Option<(Instant, f64)>,
    /// The last decision (changes and verdicts), for `/status`.
    last: Option<Decision>,
}

impl Sizing {
    /// A new worker's sizing: one thread, warm.
    pub fn new(limits: ThreadLimits, now: Instant) -> Sizing {
        Sizing {
            limits,
            target: 1,
            warm_until: Some(now + SETTLE),
            last_change: now,
            window: Window::new(now),
            phase: Phase::Settled,
            current: None,
            previous: None,
            hold_until: now,
            hold: HOLD_FIRST,
            plateau: false,
            scaled: 0,
            known: Known::default(),
            unused: None,
            last: None,
        }
    }

    /// The thread count to run now.
    pub fn target(&self) -> u16 {
        self.target
    }

    /// The measurements at the current and the previous level.
    pub fn levels(&self) -> (Option<Rate>, Option<Rate>) {
        (self.current, self.previous)
    }

    /// The last decision, change or verdict.
    pub fn last(&self) -> Option<&Decision> {
        self.last.as_ref()
    }

    fn floor(&self) -> u16 {
        self.limits.min.max(1)
    }

    /// The count after warm start: the pinned size, or the minimum.
    fn opened(&self) -> u16 {
        self.limits.pinned.unwrap_or(self.limits.min).max(1)
    }

    /// Moves the target (or records a verdict, `to == target`), and starts measuring
    /// the level afresh.
    fn set(&mut self, to: u16, now: Instant, rule: Rule, why: String) -> Decision {
        let from = self.target;
        let mut since = now;
        if to != from {
            // The requests the last level let in finish first, and half a service time
            // more: threads started together finish together, in waves one service time
            // apart, and a window that opens on a wave counts one wave too many (measured
            // with 100 ms requests: 16 threads "did" 256 req/s, and every larger pool
            // then looked like a loss).
            since += self
                .current
                .map_or(Duration::ZERO, |r| r.service.mul_f64(1.5).min(SETTLE_MAX));
            self.previous = self.current.take();
            self.last_change = now;
            self.target = to;
        }
        self.window = Window::new(since);
        self.unused = None;
        let d = Decision {
            from,
            to,
            rule,
            why,
        };
        self.last = Some(d.clone());
        d
    }

    /// The first request finished: warm start is over.
    pub fn first_request_done(&mut self, now: Instant) -> Option<Decision> {
        self.warm_until.take()?;
        // The level is measured from here: the window so far spans the import and the
        // wait for the first request (a throughput of nothing, and then a full window at
        // 16 requests: two seconds at one thread and 100 ms a request).
        self.window = Window::new(now);
        let to = self.opened();
        (to != self.target).then(|| {
            self.set(
                to,
                now,
                Rule::WarmStart,
                "warm start over: the first request finished".into(),
            )
        })
    }

    /// A request of `route` that started at `started` finished at `now`.
    pub fn done(&mut self, started: Instant, now: Instant, route: Route) {
        self.window.done(started, now, route);
    }

    /// Decides on a sample: a change of the target, or a verdict on a probe.
    pub fn decide(&mut self, s: &Sample) -> Option<Decision> {
        if let Some(until) = self.warm_until {
            if s.now < until {
                return None;
            }
            self.warm_until = None;
            self.window = Window::new(s.now);
            let to = self.opened();
            let why = format!("warm start over: {} s passed", SETTLE.as_secs());
            return (to != self.target).then(|| self.set(to, s.now, Rule::WarmStart, why));
        }
        if self.limits.pinned.is_some() {
            return None;
        }
        if let Some(d) = self.gil_contention(s) {
            return Some(d);
        }
        let waiting = s.oldest_wait.is_some_and(|w| w >= GROW_WAIT);
        if s.busy == 0 && s.oldest_wait.is_none() && self.window.count() == 0 {
            // Idle: the next level's window starts with its first request, not in the lull.
            self.window = Window::new(s.now);
        }
        self.window.tick(s.now, s.busy, waiting);
        self.window.all(s.all_served);
        if let Some(d) = self.stalled(s, waiting) {
            return Some(d);
        }
        let rate = self.measured(s.now)?;
        let busy_avg = rate.throughput * rate.service.as_secs_f64();
        let mostly_waiting = self.window.mostly_waiting();
        let d = match self.phase {
            Phase::Up { from } => {
                let d = self.judge_up(from, rate, mostly_waiting, s.now);
                if d.rule != Rule::Gain || !mostly_waiting {
                    self.scaled = 0;
                    return Some(d);
                }
                // It paid and requests still wait: climb on from the count just measured.
                let next = self.settled(rate, s, mostly_waiting, busy_avg);
                if next.is_none() {
                    self.scaled = 0;
                }
                Some(next.map_or(d.clone(), |n| Decision {
                    why: format!("{}; {}", d.why, n.why),
                    ..n
                }))
            }
            Phase::Down { from } => Some(self.judge_down(from, rate, s.now)),
            Phase::Settled => self.settled(rate, s, mostly_waiting, busy_avg),
        };
        if d.is_none() {
            // Keep measuring this level in a fresh window.
            self.window = Window::new(s.now);
        }
        d
    }

    /// The current level's measurement, once its window is complete.
    fn measured(&mut self, now: Instant) -> Option<Rate> {
        let w = &self.window;
        // A probe that clearly pays needs less precision than a close call: it is judged
        // early, so growth on a scalable application costs little time per step.
        let clear_gain = match self.phase {
            Phase::Up { from } => {
                let ideal = f64::from(self.target) / f64::from(from.threads);
                let clear = (CLEAR_GAIN * (ideal - 1.0)).max(2.0 * self.known.noise());
                w.throughput(now) >= from.throughput * (1.0 + clear)
            }
            _ => false,
        };
        // A count seen for the first time needs only a first look before a probe up from
        // it (whose verdict needs a clear gain or a full window): growth from one thread
        // on a slow application takes seconds, not tens of them.
        let first_look = self.phase == Phase::Settled && self.known.best(self.target, false) == 0.0;
        let elapsed = w.elapsed(now);
        // Threads started together finish together: over fewer than a few service times,
        // a window counts whole or missing waves of completions.
        let service = w.rate(self.target, now).service;
        let waves = (service * WAVES).min(WINDOW_MAX);
        // A first look at a slow application needs only `WAVES` completions per thread:
        // at one thread and 100 ms a request, `EARLY_MIN` took most of a second.
        let first_waves = first_look && w.count() >= u32::from(self.target) * WAVES;
        let complete = (elapsed >= WINDOW_MIN.max(waves)
            && (w.counted(now, first_look) || first_waves))
            || (elapsed >= WINDOW_EARLY.max(service) && w.count() >= EARLY_MIN && clear_gain)
            || (elapsed >= WINDOW_MAX && w.count() > 0);
        if !complete {
            return None;
        }
        let rate = w.rate(self.target, now);
        if w.mostly_waiting() && self.known.record(&rate) {
            // The load or the application changed: probing may pay again.
            self.hold = HOLD_FIRST;
            self.plateau = false;
            self.hold_until = now;
        }
        self.current = Some(rate);
        Some(rate)
    }

    fn settled(
        &mut self,
        rate: Rate,
        s: &Sample,
        mostly_waiting: bool,
        busy_avg: f64,
    ) -> Option<Decision> {
        let t = self.target;
        let probe_due = s.now >= self.hold_until;
        if mostly_waiting && probe_due && busy_avg >= 0.75 * f64::from(t) {
            // At the floor there is nothing below to try: a plateau there is probed up.
            if self.plateau && t <= self.floor() {
                self.plateau = false;
            }
            if self.plateau {
                let to = (t - (t / 4).max(1)).max(self.floor());
                self.phase = Phase::Down { from: rate };
                let why = format!(
                    "{t} threads are at the top of the curve ({}); trying {to}",
                    describe(&rate)
                );
                return Some(self.set(to, s.now, Rule::ProbeDown, why));
            }
            if !self.plateau && t < self.limits.max {
                if let Some(veto) = self.veto(s) {
                    self.hold_until = s.now + HOLD_FIRST;
                    tracing::debug!("no growth: {veto}");
                    return None;
                }
                // After steps that scaled almost perfectly, longer ones: a cold worker in
                // front of a 100 ms backend reaches 128 threads in five measured steps
                // instead of seven. Two steps at once only after two perfect ones: a
                // semaphore of 2 scales perfectly from 1 to 2, and a probe to 8 would
                // put four times its width inside the application.
                let to = match self.scaled {
                    0 => step_up(t),
                    1 => t.saturating_mul(2),
                    _ => step_up(step_up(t)),
                };
                let to = to.min(self.limits.max);
                self.phase = Phase::Up { from: rate };
                let why = format!(
                    "requests waited {:.1} ms with all {t} threads busy ({}); trying {to}",
                    ms(s.oldest_wait.unwrap_or_default()),
                    describe(&rate)
                );
                return Some(self.set(to, s.now, Rule::ProbeUp, why));
            }
        }
        // (Sporadic waits, a thread slow to wake up behind the GIL, do not count.)
        if self.window.mostly_waiting() || busy_avg * 2.0 > f64::from(t) || t <= self.floor() {
            self.unused = None;
            return None;
        }
        let (since, peak) = self.unused.get_or_insert((s.now, 0.0));
        *peak = peak.max(busy_avg);
        let (since, peak) = (*since, *peak);
        if s.now.saturating_duration_since(since) < UNUSED_FOR {
            return None;
        }
        let to = ((peak * 2.0).ceil() as u16).clamp(self.floor(), t);
        if to >= t {
            // A peak from the load's last second (a window that straddled a drop) says
            // nothing of the next: look at a fresh second.
            self.unused = Some((s.now, busy_avg));
            return None;
        }
        self.phase = Phase::Settled;
        self.plateau = false;
        let why = format!(
            "no request waited and {peak:.1} of {t} threads were busy on average for {:.1} s ({})",
            UNUSED_FOR.as_secs_f64(),
            describe(&rate)
        );
        Some(self.set(to, s.now, Rule::Unused, why))
    }

    /// How long a thread may find no work before it leaves.
    pub fn idle_exit_after(&self) -> Duration {
        self.limits.idle_exit
    }

    /// A thread found no work for the idle timeout: whether it may leave.
    pub fn idle_exit(&mut self, now: Instant) -> Option<Decision> {
        if self.limits.pinned.is_some() || self.warm_until.is_some() || self.target <= self.floor()
        {
            return None;
        }
        let to = self.target - 1;
        self.phase = Phase::Settled;
        let why = format!(
            "a thread found no work for {} s",
            self.limits.idle_exit.as_secs()
        );
        Some(self.set(to, now, Rule::Idle, why))
    }
}

/// The next count to try: double while small, then half again.
fn step_up(t: u16) -> u16 {
    if t < 16 {
        t * 2
    } else {
        t + t / 2
    }
}

fn describe(r: &Rate) -> String {
    format!(
        "{:.0} req/s, {:.1} ms per request",
        r.throughput,
        ms(r.service)
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
