//! The sizing controller against synthetic applications: each shape is a service time as a
//! function of the threads at work, driven by a closed loop of clients, sampled as the pool
//! samples (a tick every few milliseconds, every completion with its start).

use super::*;

pub(super) const OPEN: ThreadLimits = ThreadLimits {
    min: 1,
    max: 128,
    pinned: None,
    idle_exit: Duration::from_secs(10),
};

/// An application shape: how long a request holds its thread with `busy` threads at
/// work, and the CPU the process uses then (in cores).
struct Shape {
    service: fn(u16) -> Duration,
    cpu: fn(u16) -> f64,
}

fn io(_: u16) -> f64 {
    0.1
}

/// A remote database with capacity to spare: 10 ms whatever the concurrency.
const SCALABLE_10MS: Shape = Shape {
    service: |_| Duration::from_millis(10),
    cpu: io,
};
const SCALABLE_100MS: Shape = Shape {
    service: |_| Duration::from_millis(100),
    cpu: io,
};
/// A semaphore of 2 around 5 ms of waiting: beyond 2 threads, requests queue on it.
const LOCK_2: Shape = Shape {
    service: |busy| Duration::from_millis(5) * u32::from(busy.max(2)) / 2,
    cpu: io,
};
/// A 5-connection pool around a 10 ms query.
const POOL_5: Shape = Shape {
    service: |busy| Duration::from_millis(10) * u32::from(busy.max(5)) / 5,
    cpu: io,
};
/// CPU-bound: the GIL serialises the work; the process is at a core.
const CPU: Shape = Shape {
    service: |busy| Duration::from_micros(300) * u32::from(busy.max(1)),
    cpu: |_| 0.98,
};

/// A simulated worker: `clients` keep one request each in the worker (or waiting for it).
struct Sim {
    sizing: Sizing,
    now: Instant,
    /// Completions owed, fractional.
    credit: f64,
    last_done: Instant,
    /// The target after each tick.
    trace: Vec<(Instant, u16)>,
    decisions: Vec<Decision>,
    /// The application's speed wanders by up to this share, changing every 50 ms (a
    /// shared host): `noise` of 0.3 runs it between 0.7x and 1.3x.
    noise: f64,
    seed: u64,
    factor: f64,
}

const TICK: Duration = Duration::from_millis(5);

impl Sim {
    fn new(limits: ThreadLimits) -> Sim {
        let t0 = Instant::now();
        let mut sizing = Sizing::new(limits, t0);
        sizing.first_request_done(t0);
        Sim {
            sizing,
            now: t0,
            credit: 0.0,
            last_done: t0,
            trace: Vec::new(),
            decisions: Vec::new(),
            noise: 0.0,
            seed: 0x2545_F491_4F6C_DD1D,
            factor: 1.0,
        }
    }

    fn noisy(mut self, noise: f64) -> Sim {
        self.noise = noise;
        self
    }

    /// The next pseudo-random number in [0, 1) (xorshift: reproducible runs).
    fn next_random(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Runs `clients` against `shape` for `secs`.
    fn run(&mut self, shape: &Shape, clients: u16, secs: f64) -> &mut Sim {
        let until = self.now + Duration::from_secs_f64(secs);
        let mut ticks = 0u32;
        while self.now < until {
            self.now += TICK;
            ticks += 1;
            if ticks.is_multiple_of(10) {
                self.factor = 1.0 + self.noise * (2.0 * self.next_random() - 1.0);
            }
            let t = self.sizing.target();
            let busy = t.min(clients);
            let s = (shape.service)(busy);
            self.credit += self.factor * f64::from(busy) * TICK.as_secs_f64() / s.as_secs_f64();
            while self.credit >= 1.0 {
                self.credit -= 1.0;
                self.sizing.done(self.now - s, self.now, Route::default());
                self.last_done = self.now;
            }
            let sample = quiet_host(
                self.now,
                self.now - self.last_done,
                busy,
                (clients > t).then_some(Duration::from_millis(5)),
                (shape.cpu)(busy),
            );
            if let Some(d) = self.sizing.decide(&sample) {
                self.decisions.push(d);
            }
            self.trace.push((self.now, self.sizing.target()));
        }
        self
    }

    fn target(&self) -> u16 {
        self.sizing.target()
    }

    /// The largest target over the last `secs`.
    fn max_over(&self, secs: f64) -> u16 {
        self.window(secs).map(|(_, t)| t).max().unwrap_or(0)
    }

    fn min_over(&self, secs: f64) -> u16 {
        self.window(secs).map(|(_, t)| t).min().unwrap_or(0)
    }

    /// Average target over the last `secs`.
    fn mean_over(&self, secs: f64) -> f64 {
        let v: Vec<u16> = self.window(secs).map(|(_, t)| t).collect();
        v.iter().map(|&t| f64::from(t)).sum::<f64>() / v.len().max(1) as f64
    }

    fn window(&self, secs: f64) -> impl Iterator<Item = (Instant, u16)> + '_ {
        let from = self.now - Duration::from_secs_f64(secs);
        self.trace.iter().copied().filter(move |(t, _)| *t > from)
    }

    /// When the target first reached `n`, in seconds since `start` seconds ago.
    fn reached(&self, n: u16, since_secs: f64) -> Option<f64> {
        let from = self.now - Duration::from_secs_f64(since_secs);
        self.window(since_secs)
            .find(|&(_, t)| t >= n)
            .map(|(at, _)| (at - from).as_secs_f64())
    }

    /// Changes of the target over the last `secs`.
    fn changes_over(&self, secs: f64) -> usize {
        let v: Vec<u16> = self.window(secs).map(|(_, t)| t).collect();
        v.windows(2).filter(|w| w[0] != w[1]).count()
    }

    fn log(&self) -> String {
        log(&self.decisions)
    }
}

/// A sample on a host 30 % busy, with no GIL contention and no word from the front.
pub(super) fn quiet_host(
    now: Instant,
    since_done: Duration,
    busy: u16,
    oldest_wait: Option<Duration>,
    cpu: f64,
) -> Sample {
    Sample {
        now,
        fresh: true,
        since_done,
        front_full: false,
        busy,
        oldest_wait,
        cpu,
        host_busy: 0.3,
        gil_wait: Duration::ZERO,
        all_served: None,
    }
}

/// Decisions one per line, for a failed assertion.
pub(super) fn log(decisions: &[Decision]) -> String {
    decisions
        .iter()
        .map(|d| format!("{} -> {} [{}] {}", d.from, d.to, d.rule.name(), d.why))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_scalable_10ms_application_grows_in_measured_steps_to_its_clients() {
    let mut sim = Sim::new(OPEN);
    sim.run(&SCALABLE_10MS, 100, 10.0);
    let at = sim.reached(100, 10.0).unwrap_or(f64::MAX);
    assert!(at < 3.0, "reached 100 threads after {at} s\n{}", sim.log());
    assert!(sim.min_over(5.0) >= 100, "{}", sim.log());
    assert_eq!(sim.changes_over(5.0), 0, "settled: {}", sim.log());
}

#[test]
fn a_scalable_100ms_application_grows_to_the_maximum_within_seconds() {
    let mut sim = Sim::new(OPEN);
    sim.run(&SCALABLE_100MS, 200, 12.0);
    let at = sim.reached(128, 12.0).unwrap_or(f64::MAX);
    assert!(at < 6.0, "reached 128 threads after {at} s\n{}", sim.log());
    assert_eq!(sim.target(), 128, "{}", sim.log());
}

#[test]
fn a_lock_bound_application_holds_at_the_lock_width() {
    let mut sim = Sim::new(OPEN);
    sim.run(&LOCK_2, 100, 30.0);
    assert!(
        sim.max_over(30.0) <= 4,
        "probes stay one step away: {}",
        sim.log()
    );
    let mean = sim.mean_over(20.0);
    assert!(mean <= 2.6, "mean {mean} threads\n{}", sim.log());
    assert!(
        sim.decisions
            .iter()
            .any(|d| d.rule == Rule::NoGain && d.why.contains("added no throughput")),
        "{}",
        sim.log()
    );
    // Probes become rarer as they keep failing: a few per 20 s, not one per window.
    let changes = sim.changes_over(20.0);
    assert!(changes <= 12, "{changes} changes\n{}", sim.log());
}

#[test]
fn a_lock_bound_application_under_bursts_holds_too() {
    // Waves of clients: the queue empties at the end of each, in the middle of a probe.
    let mut sim = Sim::new(OPEN);
    for _ in 0..20 {
        sim.run(&LOCK_2, 40, 1.0).run(&LOCK_2, 3, 0.3);
    }
    assert!(sim.max_over(20.0) <= 4, "{}", sim.log());
}

#[test]
fn a_plateau_at_the_floor_is_probed_up_again() {
    // A lock around the whole request: one thread does as much as two. Then the lock
    // goes, at the same throughput for one thread: only a probe up can find out.
    const LOCK_1: Shape = Shape {
        service: |busy| Duration::from_millis(10) * u32::from(busy.max(1)),
        cpu: io,
    };
    let mut sim = Sim::new(OPEN);
    sim.run(&LOCK_1, 100, 10.0);
    assert!(sim.max_over(8.0) <= 2, "{}", sim.log());
    sim.run(&SCALABLE_10MS, 100, 15.0);
    assert!(sim.target() >= 64, "{}", sim.log());
}

#[test]
fn a_connection_pool_bound_application_stops_near_its_pool() {
    let mut sim = Sim::new(OPEN);
    sim.run(&POOL_5, 100, 30.0);
    assert!(sim.max_over(25.0) <= 12, "{}", sim.log());
    let mean = sim.mean_over(20.0);
    assert!((4.0..=9.0).contains(&mean), "mean {mean}\n{}", sim.log());
}

#[test]
fn on_a_noisy_host_contention_bound_pools_stay_near_their_knee() {
    // The speed wanders by ±50 % every 50 ms: one lucky window must not pass for a gain,
    // nor one unlucky window for a change of the application.
    let mut sim = Sim::new(OPEN).noisy(0.5);
    sim.run(&POOL_5, 100, 60.0);
    let mean = sim.mean_over(50.0);
    assert!(mean <= 10.0, "mean {mean}\n{}", sim.log());
    assert!(sim.max_over(50.0) <= 24, "{}", sim.log());
    let mut sim = Sim::new(OPEN).noisy(0.5);
    sim.run(&LOCK_2, 100, 60.0);
    let mean = sim.mean_over(50.0);
    assert!(mean <= 4.0, "mean {mean}\n{}", sim.log());
    // A scalable one still climbs, more slowly (each step must stand out of the noise).
    let mut sim = Sim::new(OPEN).noisy(0.5);
    sim.run(&SCALABLE_10MS, 100, 20.0);
    assert!(sim.min_over(5.0) >= 90, "{}", sim.log());
    let mut sim = Sim::new(OPEN).noisy(0.2);
    sim.run(&SCALABLE_10MS, 100, 10.0);
    let at = sim.reached(100, 10.0).unwrap_or(f64::MAX);
    assert!(
        at < 4.0,
        "±20 %: reached 100 threads after {at} s\n{}",
        sim.log()
    );
}

#[test]
fn a_cpu_bound_application_does_not_grow() {
    let mut sim = Sim::new(OPEN);
    sim.run(&CPU, 50, 10.0);
    assert!(sim.max_over(10.0) <= 2, "{}", sim.log());
}

#[test]
fn the_pool_follows_a_load_change_within_seconds() {
    let mut sim = Sim::new(OPEN);
    sim.run(&SCALABLE_10MS, 10, 5.0);
    let low = sim.target();
    assert!((10..=24).contains(&low), "c10: {low}\n{}", sim.log());
    sim.run(&SCALABLE_10MS, 100, 5.0);
    let at = sim.reached(100, 5.0).unwrap_or(f64::MAX);
    assert!(at < 2.0, "c100 reached after {at} s\n{}", sim.log());
    sim.run(&SCALABLE_10MS, 10, 5.0);
    assert!(
        sim.target() <= 24,
        "back at c10: {} threads\n{}",
        sim.target(),
        sim.log()
    );
    assert!(
        sim.decisions.iter().any(|d| d.rule == Rule::Unused),
        "{}",
        sim.log()
    );
}

#[test]
fn a_plateau_that_lifts_is_climbed_again() {
    // The lock goes away (a deploy, a faster backend): the level's capacity moves and the
    // hold resets.
    let mut sim = Sim::new(OPEN);
    sim.run(&LOCK_2, 100, 20.0);
    assert!(sim.target() <= 4);
    sim.run(&SCALABLE_10MS, 100, 10.0);
    assert!(sim.target() >= 100, "{}", sim.log());
}

/// A sample where `busy` threads work and the oldest request waited `wait_ms`.
fn sample(now: Instant, busy: u16, wait_ms: u64, cpu: f64) -> Sample {
    Sample {
        now,
        fresh: true,
        since_done: Duration::ZERO,
        front_full: false,
        busy,
        oldest_wait: (wait_ms > 0).then(|| Duration::from_millis(wait_ms)),
        cpu,
        host_busy: 0.3,
        gil_wait: Duration::ZERO,
        all_served: None,
    }
}

#[test]
fn warm_start_holds_one_thread_until_a_request_finishes_or_settle_passes() {
    let t0 = Instant::now();
    let mut s = Sizing::new(OPEN, t0);
    assert_eq!(s.target(), 1, "a new worker runs one thread");
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
    assert_eq!((d.from, d.to, d.rule), (1, 8, Rule::WarmStart));
    assert!(d.why.contains("warm start"));
}

#[test]
fn pinned_pools_never_change_after_warm_start() {
    let pinned = ThreadLimits {
        pinned: Some(4),
        ..OPEN
    };
    let mut sim = Sim::new(pinned);
    assert_eq!(sim.target(), 4);
    sim.run(&SCALABLE_10MS, 100, 5.0);
    assert_eq!(sim.max_over(5.0), 4);
    assert_eq!(sim.min_over(5.0), 4);
    assert_eq!(
        sim.sizing.idle_exit(sim.now + Duration::from_secs(60)),
        None
    );
}

#[test]
fn the_fast_paths_veto_growth() {
    // A 10 ms request finishing every `every` ticks of 5 ms, requests waiting: the most
    // threads tried.
    let run = |every: u32, tweak: fn(&mut Sample)| {
        let mut sim = Sim::new(OPEN);
        let t0 = sim.now;
        let mut peak = 1;
        for i in 1..=400u32 {
            let now = t0 + TICK * i;
            if i % every == 0 {
                sim.sizing
                    .done(now - Duration::from_millis(10), now, Route::default());
            }
            let mut s = sample(now, sim.target(), 20, 0.1);
            tweak(&mut s);
            sim.sizing.decide(&s);
            peak = peak.max(sim.target());
        }
        peak
    };
    let vetoed = |tweak| run(2, tweak);
    assert!(vetoed(|_| {}) > 1, "no veto: it grows");
    assert_eq!(
        vetoed(|s| s.front_full = true),
        1,
        "the front is the bottleneck"
    );
    assert!(
        vetoed(|s| s.host_busy = 0.95) > 1,
        "a busy host is no reason when the threads only wait"
    );
    // Past a few threads; below, the measurement decides.
    let past_few = |tweak: fn(&mut Sample)| {
        let limits = ThreadLimits {
            min: CPU_BOUND_POOL,
            ..OPEN
        };
        let mut sim = Sim::new(limits);
        let t0 = sim.now;
        let mut peak = 0;
        for i in 1..=400u32 {
            let now = t0 + TICK * i;
            // Every thread busy with 10 ms requests: half of them finish per tick.
            for _ in 0..sim.target() / 2 {
                sim.sizing
                    .done(now - Duration::from_millis(10), now, Route::default());
            }
            let mut s = sample(now, sim.target(), 20, 0.1);
            tweak(&mut s);
            sim.sizing.decide(&s);
            peak = peak.max(sim.target());
        }
        peak
    };
    assert!(past_few(|_| {}) > CPU_BOUND_POOL, "no veto: it grows");
    assert_eq!(
        past_few(|s| s.cpu = 0.9),
        CPU_BOUND_POOL,
        "the GIL is the bottleneck"
    );
    assert_eq!(
        past_few(|s| {
            s.host_busy = 0.95;
            s.cpu = 0.4;
        }),
        CPU_BOUND_POOL,
        "no CPU left on the host, and this worker uses its share"
    );
    assert_eq!(
        vetoed(|s| s.gil_wait = Duration::from_millis(1)),
        1,
        "threads already wait for the GIL"
    );
    assert_eq!(vetoed(|s| s.oldest_wait = None), 1, "nothing waits");
    assert_eq!(
        run(4, |_| {}),
        1,
        "half the thread is busy (Little's law): a free thread will take the request"
    );
}

#[test]
fn a_long_request_holding_every_thread_earns_one_more_up_to_a_few() {
    let mut sim = Sim::new(OPEN);
    let t0 = sim.now;
    let mut stalled = sample(t0 + STALL, 1, 50, 0.9);
    stalled.since_done = STALL;
    let d = sim.sizing.decide(&stalled).expect("a second thread");
    assert_eq!((d.from, d.to, d.rule), (1, 2, Rule::Stalled));
    let mut now = stalled.now;
    for _ in 0..10 {
        now += STALL;
        let mut s = sample(now, sim.target(), 50, 0.1);
        s.since_done = STALL;
        sim.sizing.decide(&s);
    }
    assert_eq!(sim.target(), STALL_MAX, "beyond a few, only measured steps");
}

#[test]
fn contention_for_the_gil_shrinks_and_the_dead_band_holds_still() {
    let mut sim = Sim::new(OPEN);
    sim.run(&SCALABLE_10MS, 20, 3.0);
    let grown = sim.target();
    assert!(grown >= 16, "{grown}");
    let mut hot = sample(sim.now + SHRINK_INTERVAL, grown, 0, 0.95);
    hot.gil_wait = Duration::from_millis(4);
    let d = sim.sizing.decide(&hot).expect("shrinks");
    assert!(d.to < d.from && d.rule == Rule::GilContention, "{d:?}");
    assert!(d.why.contains("contend for the GIL"), "{d:?}");
    // Between 0.5 and 2 ms of GIL wait neither rule acts.
    let mut band = sample(hot.now + SHRINK_INTERVAL, sim.target(), 0, 0.6);
    band.gil_wait = Duration::from_millis(1);
    assert_eq!(sim.sizing.decide(&band), None);
}

#[test]
fn idle_threads_leave_down_to_the_minimum() {
    let limits = ThreadLimits { min: 2, ..OPEN };
    let mut sim = Sim::new(limits);
    assert_eq!(sim.target(), 2);
    sim.run(&SCALABLE_10MS, 30, 3.0);
    let grown = sim.target();
    assert!(grown > 2);
    let mut left = 0;
    while let Some(d) = sim.sizing.idle_exit(sim.now) {
        assert_eq!(d.rule, Rule::Idle);
        left += 1;
    }
    assert_eq!(sim.target(), 2);
    assert_eq!(left, grown - 2);
}
