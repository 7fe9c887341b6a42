//! The worker's Python threads and the requests waiting for them. The front may send more
//! requests than there are threads (pipelining: the next request is already here when a
//! thread finishes one), so requests wait here in a FIFO; a thread that finishes a request
//! takes the next one without giving up the GIL, and a sleeping thread is woken only when
//! there is one to wake. How many threads run is `sizing`'s decision, applied here.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::meter::Measured;
use crate::sizing::{Decision, Heard, Rate, Route, Sample, Sizing, ThreadLimits, GROW_WAIT};

/// A request this long is slow: after one, finished responses are not held back for
/// [`SLOW_MEMORY`].
const SLOW: Duration = Duration::from_millis(1);
const SLOW_MEMORY: Duration = Duration::from_secs(1);
/// How often the reader looks for held-back responses while short requests run.
const HELD_CHECK: Duration = Duration::from_millis(1);

/// What a thread looking for work gets.
pub(crate) enum Next<J> {
    /// A request to serve.
    Job(J),
    /// Leave: the pool shrank, or the worker is shutting down.
    Exit,
}

struct State<J> {
    jobs: VecDeque<(J, Instant)>,
    /// Threads alive (started and not yet left).
    threads: u16,
    /// Threads serving a request.
    busy: u16,
    /// When a request last finished: nothing finishing while requests wait means every
    /// thread is held by a slow one.
    last_done: Instant,
    /// When a request last took [`SLOW`] or longer.
    slow_at: Option<Instant>,
    /// Threads asleep waiting for work.
    idle: u16,
    /// Wake-ups sent to sleepers and not yet taken: a burst of requests read at once
    /// wakes as many sleepers as it needs, not one futex call per request (std's
    /// `notify_one` is a syscall whether or not anyone sleeps).
    signalled: u16,
    sizing: Sizing,
    closed: bool,
    /// A change of the target not yet reported.
    changed: Option<Decision>,
    /// Since when the oldest request in the front's queue has waited (every worker is
    /// full), as the front last said.
    backlog_since: Option<Instant>,
    /// The front's count of requests all workers finished, when it arrived, and the
    /// threads the other workers ran then.
    all_served: Option<Heard>,
}

impl<J> State<J> {
    /// No request took [`SLOW`] within [`SLOW_MEMORY`]: the next is likely short too.
    fn short_lately(&self) -> bool {
        self.slow_at.is_none_or(|t| t.elapsed() >= SLOW_MEMORY)
    }
}

/// The thread pool of one worker.
pub(crate) struct Pool<J> {
    state: Mutex<State<J>>,
    work: Condvar,
    /// Requests finished.
    requests: AtomicU64,
}

/// What the pool looks like now, for the front.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub threads: u16,
    pub target: u16,
    pub busy: u16,
    pub queued: u16,
    pub requests: u64,
    /// What the current and the previous thread counts were measured to do.
    pub levels: (Option<Rate>, Option<Rate>),
    /// The sizing's last decision (a change, or a verdict that kept the count).
    pub last: Option<Decision>,
}

impl<J> Pool<J> {
    /// A pool with no threads yet (the caller starts the first one).
    pub fn new(limits: ThreadLimits, now: Instant) -> Pool<J> {
        Pool {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                threads: 0,
                busy: 0,
                last_done: now,
                slow_at: None,
                idle: 0,
                signalled: 0,
                sizing: Sizing::new(limits, now),
                closed: false,
                changed: None,
                backlog_since: None,
                all_served: None,
            }),
            work: Condvar::new(),
            requests: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a request; false after shutdown.
    pub fn push(&self, job: J) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.jobs.push_back((job, Instant::now()));
        // A sleeping thread takes it at once. (Leaving it for a busy thread to take when
        // it finishes saves a wake-up for short requests, but measured with slow and fast
        // requests mixed, fast ones then waited behind slow ones: 4x their p99.) With no
        // sleeper, a busy thread takes it when it finishes, without giving up the GIL.
        let wake = st.idle > st.signalled;
        if wake {
            st.signalled += 1;
        }
        drop(st);
        if wake {
            self.work.notify_one();
        }
        true
    }

    /// The next request if one waits and this thread may stay: the hot path, taken while
    /// still holding the GIL.
    pub fn try_take(&self) -> Option<J> {
        let mut st = self.lock();
        if st.threads > st.sizing.target() {
            return None;
        }
        let (job, _) = st.jobs.pop_front()?;
        st.busy += 1;
        Some(job)
    }

    /// Whether a thread that just finished a response may hold it back (see
    /// `Link::write_end`): a request waits, which the thread takes next, and no request
    /// took long lately, so the next one is likely short too. (An unexpectedly slow one
    /// delays what is held back by its duration, once: then holding back stops.)
    pub fn may_hold_response(&self) -> bool {
        let st = self.lock();
        !st.jobs.is_empty() && st.short_lately()
    }

    /// Waits (without the GIL) for the next request, or for a reason to leave.
    pub fn take(&self) -> Next<J> {
        let mut st = self.lock();
        loop {
            if st.threads > st.sizing.target() {
                st.threads -= 1;
                self.pass_on_wakeup(&mut st);
                return Next::Exit;
            }
            if let Some((job, _)) = st.jobs.pop_front() {
                st.busy += 1;
                return Next::Job(job);
            }
            if st.closed {
                st.threads -= 1;
                self.work.notify_all();
                return Next::Exit;
            }
            st.idle += 1;
            let idle_exit = st.sizing.idle_exit_after();
            let (next, waited) = self
                .work
                .wait_timeout(st, idle_exit)
                .unwrap_or_else(|p| p.into_inner());
            st = next;
            st.idle -= 1;
            // Woken, timed out or spurious: either way this thread looks at the queue now,
            // which is what the wake-up was for.
            st.signalled = st.signalled.saturating_sub(1);
            if waited.timed_out() && st.jobs.is_empty() {
                if let Some(d) = st.sizing.idle_exit(Instant::now()) {
                    st.threads -= 1;
                    st.changed = Some(d);
                    return Next::Exit;
                }
            }
        }
    }

    /// A thread leaving while requests wait makes sure a sleeper looks at them: the
    /// wake-up that brought it here may have been the only one sent for them.
    fn pass_on_wakeup(&self, st: &mut State<J>) {
        if !st.jobs.is_empty() && st.idle > st.signalled {
            st.signalled += 1;
            self.work.notify_one();
        }
    }

    /// A request of `route` that a thread took at `started` finished; returns how many
    /// threads to start (warm start may just have ended).
    pub fn done(&self, started: Instant, route: Route) -> u16 {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut st = self.lock();
        st.busy -= 1;
        st.last_done = now;
        if now.duration_since(started) >= SLOW {
            st.slow_at = Some(now);
        }
        st.sizing.done(started, now, route);
        match st.sizing.first_request_done(now) {
            Some(d) => self.apply(&mut st, d),
            None => 0,
        }
    }

    /// Records that a thread was started.
    pub fn started(&self) {
        self.lock().threads += 1;
    }

    /// Records that a thread could not be started after all.
    pub fn exited(&self) {
        let mut st = self.lock();
        st.threads = st.threads.saturating_sub(1);
    }

    fn apply(&self, st: &mut State<J>, d: Decision) -> u16 {
        if d.to == d.from {
            // A verdict that keeps the count: shown in /status, not logged.
            return 0;
        }
        let spawn = d.to.saturating_sub(st.threads);
        if d.to < st.threads {
            // Sleepers look again and the extra ones leave; busy ones leave when done.
            self.work.notify_all();
        }
        st.changed = Some(d);
        spawn
    }

    /// The front's queue: `waiting` requests, the oldest for `oldest`.
    pub fn backlog(&self, waiting: u32, oldest: Duration) {
        self.lock().backlog_since = (waiting > 0).then(|| Instant::now() - oldest);
    }

    /// The front's count of requests all workers finished, and the others' threads.
    pub fn served_all(&self, requests: u64, other_threads: u32) {
        self.lock().all_served = Some(Heard {
            requests,
            at: Instant::now(),
            other_threads,
        });
    }

    /// Measures, decides, and returns how many threads to start.
    pub fn tick(&self, front_full: bool, measure: impl FnOnce() -> Measured) -> u16 {
        let now = Instant::now();
        let (busy, oldest_wait, since_done, all_served) = {
            let st = self.lock();
            // A request waits here, or in the front (sent to no worker: all are full).
            let here = st.jobs.front().map(|(_, t)| now.duration_since(*t));
            let there = st.backlog_since.map(|t| now.duration_since(t));
            let done = now.duration_since(st.last_done);
            (st.busy, here.max(there), done, st.all_served)
        };
        let Measured {
            cpu,
            host_busy,
            gil_wait,
            fresh,
        } = measure();
        let sample = Sample {
            now,
            fresh,
            since_done,
            front_full,
            busy,
            oldest_wait,
            cpu,
            host_busy,
            gil_wait,
            all_served,
        };
        let mut st = self.lock();
        match st.sizing.decide(&sample) {
            Some(d) => self.apply(&mut st, d),
            None => 0,
        }
    }

    /// How long the reader may block before the pool needs another look: soon while
    /// requests wait (they may ask for a thread), every millisecond while short requests
    /// run (held-back responses), every 100 ms while slow ones do (fresh numbers for the
    /// front), once a second while idle (to report threads that left).
    pub fn tick_in(&self) -> Option<Duration> {
        let st = self.lock();
        if let Some((_, since)) = st.jobs.front() {
            return Some(
                GROW_WAIT
                    .saturating_sub(since.elapsed())
                    .max(Duration::from_micros(100)),
            );
        }
        if st.backlog_since.is_some() {
            return Some(Duration::from_millis(5));
        }
        if st.busy > 0 && st.short_lately() {
            // A thread may hold back finished responses and then meet an unexpectedly
            // slow request: the reader sends them on within about a millisecond.
            return Some(HELD_CHECK);
        }
        Some(if st.busy > 0 || st.changed.is_some() {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        })
    }

    /// The pool now, and the change not yet reported (taken).
    pub fn snapshot(&self) -> (Snapshot, Option<Decision>) {
        let mut st = self.lock();
        let snap = Snapshot {
            threads: st.threads,
            target: st.sizing.target(),
            busy: st.busy,
            queued: st.jobs.len().min(u16::MAX as usize) as u16,
            requests: self.requests.load(Ordering::Relaxed),
            levels: st.sizing.levels(),
            last: st.sizing.last().cloned(),
        };
        (snap, st.changed.take())
    }

    /// No more requests: threads finish what is queued, then leave.
    pub fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
    }

    /// Waits until every thread has left (after `close`), at most `limit`.
    pub fn wait_empty(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut st = self.lock();
        while st.threads > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            st = self
                .work
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn worker(pool: Arc<Pool<u32>>, served: Arc<AtomicU64>) {
        while let Next::Job(_) = pool.take() {
            served.fetch_add(1, Ordering::Relaxed);
            let spawn = pool.done(Instant::now(), Route::default());
            for _ in 0..spawn {
                pool.started();
                let (p, s) = (pool.clone(), served.clone());
                std::thread::spawn(move || worker(p, s));
            }
        }
    }

    fn pool_of(threads: u16) -> Arc<Pool<u32>> {
        let limits = ThreadLimits {
            min: threads,
            max: threads,
            pinned: Some(threads),
            idle_exit: Duration::from_secs(60),
        };
        Arc::new(Pool::new(limits, Instant::now()))
    }

    fn wait_served(served: &AtomicU64, want: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while served.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        served.load(Ordering::Relaxed)
    }

    #[test]
    fn a_sleeping_thread_is_woken_for_each_lone_request() {
        let pool = pool_of(1);
        let served = Arc::new(AtomicU64::new(0));
        pool.started();
        let (p, s) = (pool.clone(), served.clone());
        std::thread::spawn(move || worker(p, s));
        for n in 1..=20 {
            // The thread is asleep (nothing queued) when each request arrives.
            std::thread::sleep(Duration::from_millis(2));
            assert!(pool.push(n));
            assert_eq!(
                wait_served(&served, u64::from(n)),
                u64::from(n),
                "request {n} was never taken"
            );
        }
        pool.close();
        pool.wait_empty(Duration::from_secs(5));
    }

    #[test]
    fn bursts_reach_every_sleeper_without_one_wakeup_per_request() {
        let pool = pool_of(4);
        let served = Arc::new(AtomicU64::new(0));
        pool.started();
        let (p, s) = (pool.clone(), served.clone());
        std::thread::spawn(move || worker(p, s));
        // Bursts of 1..7 requests with pauses: threads fall asleep between them, and a
        // burst arrives while some are still waking up.
        let mut sent = 0u64;
        for burst in 0..2_000u32 {
            for _ in 0..=burst % 7 {
                assert!(pool.push(burst));
                sent += 1;
            }
            if burst % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(
            wait_served(&served, sent),
            sent,
            "requests were left waiting with threads asleep"
        );
        pool.close();
        pool.wait_empty(Duration::from_secs(5));
        assert_eq!(pool.snapshot().0.threads, 0);
    }

    #[test]
    fn responses_are_held_back_only_while_requests_are_short_and_queued() {
        let pool = pool_of(1);
        pool.started();
        assert!(
            !pool.may_hold_response(),
            "nothing queued: nothing to hold back for"
        );
        assert!(pool.push(1));
        assert!(pool.may_hold_response());
        assert!(matches!(pool.take(), Next::Job(1)));
        pool.done(
            Instant::now() - Duration::from_micros(100),
            Route::default(),
        );
        assert!(pool.push(2));
        assert!(pool.may_hold_response(), "a short request changes nothing");
        assert!(matches!(pool.take(), Next::Job(2)));
        pool.done(Instant::now() - SLOW, Route::default());
        assert!(pool.push(3));
        assert!(
            !pool.may_hold_response(),
            "after a slow request the next may be slow too"
        );
        assert!(matches!(pool.take(), Next::Job(3)));
        assert_eq!(
            pool.tick_in(),
            Some(Duration::from_millis(100)),
            "no need to look every ms"
        );
    }

    #[test]
    fn while_short_requests_run_the_reader_looks_every_millisecond() {
        let pool = pool_of(1);
        pool.started();
        assert!(pool.push(1));
        assert!(matches!(pool.take(), Next::Job(1)));
        assert_eq!(pool.tick_in(), Some(HELD_CHECK));
    }
}
