//! How many Python threads a worker runs: a controller that adds a thread only when it adds
//! throughput. Pure decisions over measured samples, no I/O; the pool applies them.
//!
//! A new worker runs one thread until its first request has finished, or `SETTLE` has
//! passed (warm start: an application's lazy, thread-unsafe first-use initialisation never
//! sees two requests at once). Then, unless `--threads` pins the count, the controller
//! climbs the curve of throughput against threads, in measured steps:
//!
//! * **Measure a level.** At each thread count it counts completions per second over a
//!   window of at least `WINDOW_MIN` and `MEASURED_MIN` completions (`WINDOW_EARLY` for a
//!   probe that clearly pays: a close call needs more precision), and the mean time a
//!   request held its thread (S). The window opens once the requests the last change let
//!   in have had time to finish (the last level's S, at most `SETTLE_MAX`), so what it
//!   counts is the new level's, and a step costs a few round trips of the application.
//!   (Counting only requests *started* at the level was tried and is biased: the first of
//!   them to finish are the quick ones.)
//! * **Probe up** while requests wait (in the worker, or in the front's queue while every
//!   worker is full) and every thread is busy: T grows by half (doubling below 16).
//! * **Keep the step only if it paid**: the new level must complete at least
//!   `GAIN_MIN` of the gain perfect scaling would give (T'/T), over the best (smoothed)
//!   throughput measured at T or fewer threads, so one unlucky window at T does not make
//!   any probe look like a gain; and by twice the noise between windows at one count (an
//!   application whose throughput swings, as SQLite's under lock contention, needs a gain
//!   that stands out of its swings). A loss within the noise is no loss for a probe down. A thread that waits on
//!   something that scales (a remote database with spare capacity) keeps S flat and
//!   completions rise with the threads; one that waits on contention (a SQLite file lock, a
//!   5-connection pool, an application lock) raises S in proportion and completions stay:
//!   by Little's law, more in flight at the same throughput is only queueing inside the
//!   application. A failed step goes
//!   back to T and holds there for `HOLD_FIRST`, doubling to `HOLD_MAX` while probes keep
//!   failing; meanwhile excess requests wait in the front's queue (fair, visible, with
//!   deadlines and 503 + Retry-After).
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
//! GIL is the bottleneck), a saturated host this worker takes a share of, and a front that
//! does not take responses as fast as they come. GIL contention past `GIL_WAIT_MAX` with the process busy shrinks the
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

#[cfg(test)]
#[path = "sizing_tests.rs"]
mod tests;

/// Longest a new worker runs one thread waiting for its first request to finish.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);
/// Queue wait (all threads busy) that counts as requests waiting.
pub(crate) const GROW_WAIT: Duration = Duration::from_millis(1);
/// Shortest measurement of a level.
const WINDOW_MIN: Duration = Duration::from_millis(200);
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
/// Share of the throughput a smaller pool may lose and still be kept.
const LOSS_MAX: f64 = 0.05;
/// Hold after the first failed probe at a level; doubles up to `HOLD_MAX`.
const HOLD_FIRST: Duration = Duration::from_secs(1);
const HOLD_MAX: Duration = Duration::from_secs(8);
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
}

/// The rule behind a decision, named in the log and in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    WarmStart,
    ProbeUp,
    Gain,
    NoGain,
    ProbeDown,
    FewerSuffice,
    FewerLose,
    Stalled,
    Unused,
    GilContention,
    Idle,
}

impl Rule {
    /// The rule's name, as the log and `/status` show it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::WarmStart => "warm-start",
            Rule::ProbeUp => "probe-up",
            Rule::Gain => "gain",
            Rule::NoGain => "no-gain",
            Rule::ProbeDown => "probe-down",
            Rule::FewerSuffice => "fewer-suffice",
            Rule::FewerLose => "fewer-lose",
            Rule::Stalled => "stalled",
            Rule::Unused => "unused",
            Rule::GilContention => "gil-contention",
            Rule::Idle => "idle",
        }
    }
}

/// A decision: the thread target from one count to another (the same for a verdict that
/// keeps it), the rule, and why in numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub from: u16,
    pub to: u16,
    pub rule: Rule,
    pub why: String,
}

/// What one level (thread count) was measured to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    pub threads: u16,
    /// Requests completed per second over the window.
    pub throughput: f64,
    /// Mean time a request held its thread.
    pub service: Duration,
}

/// The measurement of the current level under way.
#[derive(Debug, Clone, Copy)]
struct Window {
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
    /// Ticks seen, and how many of them found requests waiting.
    ticks: u32,
    waiting: u32,
}

impl Window {
    fn new(since: Instant) -> Window {
        Window {
            since,
            done: 0,
            service: Duration::ZERO,
            full_at: None,
            early_at: None,
            ticks: 0,
            waiting: 0,
        }
    }
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
    /// Throughput measured at each thread count with requests waiting (smoothed), since
    /// the load or the application last changed: a probe must beat the best of the counts
    /// up to where it started, so one unlucky window does not pass for a gain.
    known: Vec<(u16, f64)>,
    /// Windows in a row whose throughput moved by over `MOVED` from the known one.
    moved: u8,
    /// How far one window's throughput strays from its count's smoothed one (relative,
    /// smoothed): a gain or a change must stand out of it.
    noise: f64,
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
            known: Vec::new(),
            moved: 0,
            noise: 0.0,
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
            // The requests the last level let in finish first.
            since += self
                .current
                .map_or(Duration::ZERO, |r| r.service.min(SETTLE_MAX));
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

    /// A request that started at `started` finished at `now`.
    pub fn done(&mut self, started: Instant, now: Instant) {
        let w = &mut self.window;
        if now >= w.since {
            w.done += 1;
            w.service += now.saturating_duration_since(started);
            if w.done == MEASURED_MIN {
                w.full_at = Some(now - w.since);
            }
            if w.done == EARLY_MIN {
                w.early_at = Some(now - w.since);
            }
        }
    }

    /// Decides on a sample: a change of the target, or a verdict on a probe.
    pub fn decide(&mut self, s: &Sample) -> Option<Decision> {
        if let Some(until) = self.warm_until {
            if s.now < until {
                return None;
            }
            self.warm_until = None;
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
        self.window.ticks += 1;
        self.window.waiting += u32::from(waiting);
        if let Some(d) = self.stalled(s, waiting) {
            return Some(d);
        }
        let rate = self.measured(s.now)?;
        let busy_avg = rate.throughput * rate.service.as_secs_f64();
        let mostly_waiting = self.window.waiting * 2 >= self.window.ticks.max(1);
        let d = match self.phase {
            Phase::Up { from } => Some(self.judge_up(from, rate, mostly_waiting, s.now)),
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
        let w = self.window;
        let elapsed = now.saturating_duration_since(w.since);
        let throughput = f64::from(w.done) / elapsed.as_secs_f64().max(1e-9);
        // A probe that clearly pays needs less precision than a close call: it is judged
        // early, so growth on a scalable application costs little time per step.
        let clear_gain = match self.phase {
            Phase::Up { from } => {
                let ideal = f64::from(self.target) / f64::from(from.threads);
                let clear = (CLEAR_GAIN * (ideal - 1.0)).max(2.0 * self.noise);
                throughput >= from.throughput * (1.0 + clear)
            }
            _ => false,
        };
        // A count seen for the first time needs only a first look before a probe up from
        // it (whose verdict needs a clear gain or a full window): growth from one thread
        // on a slow application takes seconds, not tens of them.
        let first_look = self.phase == Phase::Settled && self.best_known(self.target, false) == 0.0;
        let enough = if first_look { w.early_at } else { w.full_at };
        let full = enough.is_some_and(|f| elapsed >= f + f / 4);
        let complete = (elapsed >= WINDOW_MIN && full)
            || (elapsed >= WINDOW_EARLY && w.done >= EARLY_MIN && clear_gain)
            || (elapsed >= WINDOW_MAX && w.done > 0);
        if !complete {
            return None;
        }
        let rate = Rate {
            threads: self.target,
            throughput,
            service: w.service / w.done,
        };
        let saturated = w.waiting * 2 >= w.ticks.max(1);
        let known = self.best_known(rate.threads, false);
        if saturated && known > 0.0 {
            // Two windows in a row far from what this count did: the load or the
            // application changed (one is noise), and probing may pay again.
            let dev = (rate.throughput / known - 1.0).abs();
            let moved = dev > MOVED.max(3.0 * self.noise);
            self.noise = 0.7 * self.noise + 0.3 * dev.min(1.0);
            self.moved = if moved { self.moved + 1 } else { 0 };
            if self.moved >= 2 {
                self.moved = 0;
                self.hold = HOLD_FIRST;
                self.plateau = false;
                self.hold_until = now;
                self.known.clear();
            }
        }
        if saturated {
            match self.known.iter_mut().find(|(t, _)| *t == rate.threads) {
                Some((_, x)) => *x = 0.5 * *x + 0.5 * rate.throughput,
                None => self.known.push((rate.threads, rate.throughput)),
            }
        }
        self.current = Some(rate);
        Some(rate)
    }

    /// The best smoothed throughput known at `threads` or fewer (what a probe from there
    /// must beat), or at exactly `threads`.
    fn best_known(&self, threads: u16, at_or_below: bool) -> f64 {
        self.known
            .iter()
            .filter(|(t, _)| *t == threads || (at_or_below && *t < threads))
            .map(|(_, x)| *x)
            .fold(0.0, f64::max)
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
            if self.plateau && t > self.floor() {
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
                let to = step_up(t).min(self.limits.max);
                self.phase = Phase::Up { from: rate };
                let why = format!(
                    "requests waited {:.1} ms with all {t} threads busy ({}); trying {to}",
                    ms(s.oldest_wait.unwrap_or_default()),
                    describe(&rate)
                );
                return Some(self.set(to, s.now, Rule::ProbeUp, why));
            }
        }
        if self.window.waiting > 0 || busy_avg * 2.0 > f64::from(t) || t <= self.floor() {
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

    /// The verdict on a probe up from `from` to the current level: what each completed.
    /// (If the queue emptied meanwhile, demand was met or the load left: the count alone
    /// says which.)
    fn judge_up(&mut self, from: Rate, rate: Rate, saturated: bool, now: Instant) -> Decision {
        self.phase = Phase::Settled;
        let t = self.target;
        let ideal = f64::from(t) / f64::from(from.threads);
        let before = if saturated {
            from.throughput.max(self.best_known(from.threads, true))
        } else {
            from.throughput
        };
        let after = rate.throughput;
        let gain = after / before.max(1e-9);
        // The gain must also stand out of the noise between windows at one count.
        if gain >= 1.0 + (GAIN_MIN * (ideal - 1.0)).max(2.0 * self.noise) {
            self.hold = HOLD_FIRST;
            self.plateau = false;
            let why = format!(
                "{t} threads raised throughput: {before:.0} -> {after:.0} req/s ({:+.0}%; {:+.0}% if it scaled), {:.1} -> {:.1} ms per request{}",
                (gain - 1.0) * 100.0,
                (ideal - 1.0) * 100.0,
                ms(from.service),
                ms(rate.service),
                if saturated { "" } else { "; no request waits any more" }
            );
            return self.set(t, now, Rule::Gain, why);
        }
        self.plateau = true;
        let hold = self.hold;
        self.hold_until = now + hold;
        self.hold = (hold * 2).min(HOLD_MAX);
        let why = format!(
            "{t} threads added no throughput: {before:.0} -> {after:.0} req/s ({:+.0}%; {:+.0}% if it scaled, noise ±{:.0}%) while time per request rose {:.1} -> {:.1} ms (the extra requests only queue inside the application); back to {}, next try in {:.0} s",
            (gain - 1.0) * 100.0,
            (ideal - 1.0) * 100.0,
            self.noise * 100.0,
            ms(from.service),
            ms(rate.service),
            from.threads,
            hold.as_secs_f64()
        );
        let d = self.set(from.threads, now, Rule::NoGain, why);
        // Back at a measured level: its numbers stand, the probe's are the previous.
        self.previous = Some(rate);
        self.current = Some(from);
        d
    }

    /// The verdict on a probe down from `from` to the current level.
    fn judge_down(&mut self, from: Rate, rate: Rate, now: Instant) -> Decision {
        self.phase = Phase::Settled;
        let t = self.target;
        let hold = self.hold;
        self.hold_until = now + hold;
        self.hold = (hold * 2).min(HOLD_MAX);
        // Smoothed over the level's measurements with requests waiting.
        let before = match self.best_known(from.threads, false) {
            x if x > 0.0 => x,
            _ => from.throughput,
        };
        // A loss that does not stand out of the noise is no loss: fewer threads then.
        if rate.throughput >= (1.0 - LOSS_MAX.max(self.noise)) * before {
            let why = format!(
                "{t} threads complete as much as {}: {before:.0} -> {:.0} req/s, {:.1} -> {:.1} ms per request; staying at {t}, next try in {:.0} s",
                from.threads,
                rate.throughput,
                ms(from.service),
                ms(rate.service),
                hold.as_secs_f64()
            );
            return self.set(t, now, Rule::FewerSuffice, why);
        }
        self.plateau = false;
        let why = format!(
            "{t} threads lost throughput: {before:.0} -> {:.0} req/s; back to {}, next try in {:.0} s",
            rate.throughput,
            from.threads,
            hold.as_secs_f64()
        );
        let d = self.set(from.threads, now, Rule::FewerLose, why);
        self.previous = Some(rate);
        self.current = Some(from);
        d
    }

    /// Why more threads cannot help now, if one of the fast paths says so.
    fn veto(&self, s: &Sample) -> Option<String> {
        if !s.fresh {
            return Some("rates cover an idle spell".into());
        }
        if s.front_full {
            return Some("the front is not taking responses as fast as they come".into());
        }
        if s.gil_wait >= GIL_WAIT_GROW_MAX {
            return Some(format!(
                "threads wait {:.2} ms on average to take the GIL",
                ms(s.gil_wait)
            ));
        }
        if s.cpu >= CPU_GROW_MAX {
            return Some(format!(
                "the process uses {:.0}% of a core: the GIL is the bottleneck",
                s.cpu * 100.0
            ));
        }
        if s.host_busy >= HOST_BUSY_MAX && s.cpu >= CPU_HOST_SHARE_MIN {
            return Some(format!(
                "the host is {:.0}% busy and this worker uses {:.0}% of a core",
                s.host_busy * 100.0,
                s.cpu * 100.0
            ));
        }
        None
    }

    /// Every thread held with nothing finishing while requests wait: one more thread, up
    /// to `STALL_MAX`, so short requests get past long ones. (A CPU-bound long request
    /// still lets short ones take turns at the GIL with a second thread.)
    fn stalled(&mut self, s: &Sample, waiting: bool) -> Option<Decision> {
        let t = self.target;
        let since = s.now.saturating_duration_since(self.last_change);
        if !waiting
            || s.busy < t
            || s.since_done < STALL
            || since < STALL
            || t >= STALL_MAX.min(self.limits.max)
            || s.now < self.hold_until
            || s.front_full
            || (t >= 2 && s.cpu >= CPU_GROW_MAX)
        {
            return None;
        }
        self.phase = Phase::Settled;
        let why = format!(
            "no request finished for {:.1} s with all {t} threads busy while requests wait",
            s.since_done.as_secs_f64()
        );
        Some(self.set(t + 1, s.now, Rule::Stalled, why))
    }

    /// GIL contention while the process does real work: a smaller pool.
    fn gil_contention(&mut self, s: &Sample) -> Option<Decision> {
        let since = s.now.saturating_duration_since(self.last_change);
        if !s.fresh
            || s.cpu < CPU_CONTENDED_MIN
            || s.gil_wait < GIL_WAIT_MAX
            || self.target <= self.floor()
            || since < SHRINK_INTERVAL
        {
            return None;
        }
        let t = self.target;
        let to = (t - (t / 8).max(1)).max(self.floor());
        self.phase = Phase::Settled;
        let why = format!(
            "threads contend for the GIL (process cpu {:.0}% of a core, {:.1} ms average wait to take it)",
            s.cpu * 100.0,
            ms(s.gil_wait)
        );
        Some(self.set(to, s.now, Rule::GilContention, why))
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

/// Changes waiting to be logged: consecutive changes by the same rule are logged as one
/// (growth can take several steps a second), a change by another rule first logs what
/// was pending, so a line never names a rule that did not make its change.
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    pending: Option<Decision>,
}

impl ChangeLog {
    /// Adds a decision; returns the lines due now (at most two). `quiet` says whether a
    /// line was logged too recently to log a same-rule change yet.
    pub fn push(&mut self, d: Decision, quiet: bool) -> Vec<Decision> {
        let mut out = Vec::new();
        match self.pending.take() {
            Some(mut p) if p.rule == d.rule => {
                p.to = d.to;
                p.why = d.why;
                self.pending = Some(p);
            }
            Some(p) => {
                out.push(p);
                self.pending = Some(d);
            }
            None => self.pending = Some(d),
        }
        if !quiet || !out.is_empty() {
            out.extend(self.pending.take());
        }
        out
    }

    /// The pending line, once the rate limit allows it.
    pub fn flush(&mut self) -> Option<Decision> {
        self.pending.take()
    }
}
