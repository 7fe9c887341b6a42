//! The sizing controller against request-level simulations, where which requests land in
//! a window matters: fast requests beside slow ones (each window's count swings with the
//! mix), and a lock whose waits grow with the threads (the same requests take longer).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::tests::{quiet_host, OPEN};
use super::*;

const TICK: Duration = Duration::from_millis(5);
const FAST: Duration = Duration::from_micros(200);
const SLOW: Duration = Duration::from_millis(100);
const LOCK_HOLD: Duration = Duration::from_millis(2);

#[derive(Clone, Copy, PartialEq)]
enum App {
    /// Clients below `slow` ask for a 100 ms request, the rest for a 0.2 ms one.
    Mixed { slow: usize },
    /// Every request holds one lock for 2 ms, in turn.
    Lock,
    /// Every request holds one lock for 2 ms, and finding it held sleeps before it looks
    /// again, longer each time (SQLite's busy handler): times of a queue, some long.
    Busy,
}

/// SQLite's busy handler's sleeps, in milliseconds.
const BUSY_SLEEPS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

/// One worker, a closed loop of `clients`. The front hands a worker whichever requests its
/// other workers did not take: here fast ones for 300 ms, slow ones for the next 300 ms
/// (while the other worker drains the fast ones), so a window's count and mean time per
/// request depend on where it falls.
struct Sim {
    sizing: Sizing,
    app: App,
    now: Instant,
    /// Each thread's request: client, started, ends; and when each ends, soonest first.
    threads: Vec<Option<(usize, Instant, Instant)>>,
    ending: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Clients waiting, since when.
    queue: VecDeque<(usize, Instant)>,
    lock_free: Instant,
    last_done: Instant,
    t0: Instant,
    trace: Vec<(Instant, u16)>,
    decisions: Vec<Decision>,
}

impl Sim {
    fn new(app: App, clients: usize) -> Sim {
        let t0 = Instant::now();
        let mut sizing = Sizing::new(OPEN, t0);
        sizing.first_request_done(t0);
        let mut sim = Sim {
            sizing,
            app,
            now: t0,
            threads: Vec::new(),
            ending: BinaryHeap::new(),
            queue: (0..clients).map(|c| (c, t0)).collect(),
            lock_free: t0,
            last_done: t0,
            t0,
            trace: Vec::new(),
            decisions: Vec::new(),
        };
        sim.fill(t0);
        sim
    }

    fn is_slow(&self, client: usize) -> bool {
        matches!(self.app, App::Mixed { slow } if client < slow)
    }

    fn route(&self, client: usize) -> Route {
        match self.app {
            App::Mixed { slow } if client < slow => Route::of(b"GET", b"/slow"),
            _ => Route::of(b"GET", b"/"),
        }
    }

    /// Starts the next waiting request on thread `i` at `at`.
    fn start(&mut self, i: usize, at: Instant) {
        let slow_turn = (at - self.t0).as_millis() / 300 % 2 == 1;
        let pick = self
            .queue
            .iter()
            .position(|&(c, _)| self.is_slow(c) == slow_turn)
            .unwrap_or(0);
        let Some((client, _)) = self.queue.remove(pick) else {
            self.threads[i] = None;
            return;
        };
        let ends = match self.app {
            App::Mixed { slow } => at + if client < slow { SLOW } else { FAST },
            App::Lock => {
                self.lock_free = self.lock_free.max(at) + LOCK_HOLD;
                self.lock_free
            }
            App::Busy => {
                let mut look = at;
                for sleep in BUSY_SLEEPS.iter().cycle() {
                    if look >= self.lock_free {
                        break;
                    }
                    look += Duration::from_millis(*sleep);
                }
                self.lock_free = look + LOCK_HOLD;
                self.lock_free
            }
        };
        self.threads[i] = Some((client, at, ends));
        self.ending.push(Reverse((ends, i)));
    }

    fn busy(&self) -> usize {
        self.threads.iter().filter(|t| t.is_some()).count()
    }

    /// Threads to the target, each new one taking a waiting request.
    fn fill(&mut self, at: Instant) {
        let target = usize::from(self.sizing.target());
        let mut busy = self.busy();
        for i in 0.. {
            if busy >= target || self.queue.is_empty() {
                break;
            }
            if i == self.threads.len() {
                self.threads.push(None);
            }
            if self.threads[i].is_none() {
                self.start(i, at);
                busy += 1;
            }
        }
    }

    fn run(&mut self, secs: f64) -> &mut Sim {
        let until = self.now + Duration::from_secs_f64(secs);
        while self.now < until {
            let tick_end = self.now + TICK;
            // Completions in time order; a finished client asks again at once, and a
            // thread past the target leaves.
            while let Some(&Reverse((ends, i))) = self.ending.peek() {
                if ends > tick_end {
                    break;
                }
                self.ending.pop();
                let Some((client, started, _)) = self.threads[i].take() else {
                    continue;
                };
                self.sizing.done(started, ends, self.route(client));
                self.last_done = ends;
                self.queue.push_back((client, ends));
                if self.busy() < usize::from(self.sizing.target()) {
                    self.start(i, ends);
                }
            }
            self.now = tick_end;
            let busy = self.busy() as u16;
            let oldest_wait = self.queue.iter().map(|&(_, at)| self.now - at).max();
            let sample = quiet_host(self.now, self.now - self.last_done, busy, oldest_wait, 0.1);
            if let Some(d) = self.sizing.decide(&sample) {
                self.decisions.push(d);
            }
            self.fill(self.now);
            self.trace.push((self.now, self.sizing.target()));
        }
        self
    }

    /// The largest target from `from` seconds into the run on.
    fn peak_after(&self, from: f64) -> u16 {
        let t0 = self.trace.first().map_or(self.now, |&(t, _)| t);
        let from = t0 + Duration::from_secs_f64(from);
        self.trace
            .iter()
            .filter(|&&(t, _)| t >= from)
            .map(|&(_, n)| n)
            .max()
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        super::tests::log(&self.decisions)
    }

    /// Runs 100 clients for 15 s and checks the pool stayed at 4 threads or fewer.
    fn stays_small(app: App) {
        let mut sim = Sim::new(app, 100);
        sim.run(15.0);
        assert!(
            sim.peak_after(1.0) <= 4,
            "the pool grew to {}; decisions:\n{}",
            sim.peak_after(1.0),
            sim.log()
        );
    }
}

#[test]
fn fast_requests_beside_slow_ones_get_threads_past_the_slow_ones() {
    // Ten clients wait 100 ms a request, ninety 0.2 ms: below eleven threads the slow
    // requests hold every thread and the fast ones queue behind them.
    let mut sim = Sim::new(App::Mixed { slow: 10 }, 100);
    sim.run(8.0);
    let min_late = sim
        .trace
        .iter()
        .rev()
        .take(400)
        .map(|&(_, n)| n)
        .min()
        .unwrap_or(0);
    assert!(
        min_late >= 11,
        "the pool stayed at {min_late} threads in the last 2 s; decisions:\n{}",
        sim.log()
    );
}

#[test]
fn requests_that_take_longer_with_more_threads_keep_the_pool_small() {
    // Each request holds one lock for 2 ms: more threads only queue on it.
    Sim::stays_small(App::Lock);
}

#[test]
fn requests_that_wait_on_a_busy_handler_keep_the_pool_small() {
    // Most requests find the lock free and take 2 ms; those that find it held sleep and
    // look again, up to 100 ms at a time: widely spread times, longer with more threads.
    Sim::stays_small(App::Busy);
}
