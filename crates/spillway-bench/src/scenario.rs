//! The four ways of loading a target: closed loop, open loop (`--rate`), storm and idle probe.
//! Every scenario ends by itself: no new request starts after `--duration`, every step has
//! `--timeout`, and a hard stop abandons whatever is still running after that.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::args::{Config, Scenario};
use crate::conn::{self, Conn, ErrorClass, IdleState, RequestError};
use crate::http1::EofError;
use crate::progress::Progress;
use crate::stats::{micros, Shared};
use crate::verdict::Sample;

/// A scheduled send later than this counts as the generator falling behind.
const LATE_SEND: Duration = Duration::from_millis(10);
/// Extra time granted past every step's own timeout before tasks are abandoned.
const HARD_STOP_SLACK: Duration = Duration::from_secs(1);

/// What a finished run hands to the report.
pub(crate) struct Outcome {
    pub shared: Arc<Shared>,
    pub elapsed: Duration,
    pub connections_opened: u64,
    pub max_open: u64,
    /// Tasks still running at the hard stop.
    pub abandoned: u64,
    pub nofile_limit: Option<u64>,
    pub generator: Option<GeneratorStats>,
    pub idle: Option<Vec<IdleProbe>>,
}

/// Whether the open-loop generator kept its schedule.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GeneratorStats {
    /// Requests scheduled.
    pub scheduled: u64,
    /// Sends that left more than 10 ms after their intended time (generator short of CPU).
    pub late_sends: u64,
    /// Largest delay between intended and actual dispatch, in microseconds.
    pub max_lag_us: u64,
    /// Requests that had to wait for a connection because the cap (--connections) was reached.
    pub queued_for_connection: u64,
    /// Queued requests dropped because they waited longer than --timeout for a connection.
    pub expired_in_queue: u64,
    /// Queued requests never sent because the run ended.
    pub unsent_at_end: u64,
    /// Idle connections found closed by the server just before reuse, replaced by new ones.
    pub stale_connections_replaced: u64,
}

impl GeneratorStats {
    /// True when the generator itself, not the target, delayed or dropped requests.
    pub fn was_bottleneck(&self) -> bool {
        self.late_sends > 0
            || self.queued_for_connection > 0
            || self.expired_in_queue > 0
            || self.unsent_at_end > 0
    }
}

/// What happened to one idle-probe connection.
#[derive(Debug, Clone, Serialize)]
pub struct IdleProbe {
    /// The gap, in seconds.
    pub gap_s: f64,
    /// `survived`, `closed_idle`, `reset_idle`, `unsolicited_data`, `not_kept_alive`,
    /// `closed_mid_request`, `reset_mid_request`, `first_request_failed` or `failed`.
    pub outcome: &'static str,
    /// When the server ended the connection during the gap: seconds into the gap.
    pub ended_after_s: Option<f64>,
    /// Response time of the first request, in microseconds.
    pub first_response_us: Option<u64>,
    /// Response time of the request after the gap, in microseconds.
    pub second_response_us: Option<u64>,
    /// `Keep-Alive: timeout=N` the server announced on the first response.
    pub announced_keep_alive_timeout_s: Option<u64>,
    /// The error, for failed outcomes.
    pub detail: Option<String>,
}

/// State shared by the tasks of one run.
struct Ctx {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    deadline: Instant,
    tickets: Option<AtomicU64>,
    open: AtomicU64,
    max_open: AtomicU64,
    opened: AtomicU64,
}

/// Keeps the count of open connections right however a task ends.
struct OpenGuard(Arc<Ctx>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection plus its place in the open count.
struct Live {
    conn: Conn,
    /// When its connect started, how long it took and the SYN retransmits it needed: part
    /// of the wait of the first request on it.
    connect: Option<(Instant, Duration, u32)>,
    _guard: OpenGuard,
}

impl Ctx {
    /// Takes one request from the `--requests` budget.
    fn claim(&self) -> bool {
        match &self.tickets {
            None => true,
            Some(t) => t
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    /// Connects and records the attempt, success or failure.
    async fn open_connection(self: &Arc<Self>) -> Result<Live, RequestError> {
        let started = Instant::now();
        match conn::connect(self.cfg.target.addr, self.cfg.timeout).await {
            Ok(c) => {
                self.shared.connected(c.elapsed, c.syn_retransmits);
                self.opened.fetch_add(1, Ordering::Relaxed);
                let now_open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
                self.max_open.fetch_max(now_open, Ordering::Relaxed);
                Ok(Live {
                    conn: c.conn,
                    connect: Some((started, c.elapsed, c.syn_retransmits.unwrap_or(0))),
                    _guard: OpenGuard(Arc::clone(self)),
                })
            }
            Err(f) => {
                self.shared
                    .connect_failed(&f.error, f.elapsed, f.syn_retransmits);
                // A refused connect can fail without ever waiting; let other tasks run.
                tokio::task::yield_now().await;
                Err(f.error)
            }
        }
    }

    /// Sends one request on `live` and records the result; returns the connection if it can
    /// carry another request. `since` is where latency counts from.
    async fn request(&self, mut live: Live, last: bool, since: Instant) -> Option<Live> {
        let req = &self.cfg.request;
        match live
            .conn
            .exchange(req.bytes(last), req.is_head, self.cfg.timeout)
            .await
        {
            Ok(resp) => {
                let latency = since.elapsed();
                self.shared
                    .response(latency, resp.status, resp.keep_alive_timeout);
                // The first request on a connection waited for its connect too, unless its
                // latency already counts from before it (the open loop's intended time).
                let (total, connect, syn) = match live.connect.take() {
                    Some((at, took, r)) if since > at => (latency + took, took, r),
                    Some((_, took, r)) => (latency, took, r),
                    None => (latency, Duration::ZERO, 0),
                };
                // The first request's own retransmits: on a connection the client thinks
                // open, the server's kernel ignored it (the handshake's last ACK was dropped
                // at a full accept queue) or the network lost it.
                let (connect_us, data) = if connect.is_zero() {
                    (0, 0)
                } else {
                    let all = live.conn.retransmits().unwrap_or(syn);
                    (micros(connect), all.saturating_sub(syn))
                };
                self.shared.sample(Sample {
                    total_us: micros(total),
                    connect_us,
                    syn_retransmits: syn,
                    data_retransmits: data,
                    timing: resp.timing,
                });
                if last {
                    None
                } else if resp.reusable {
                    Some(live)
                } else {
                    self.shared.closed_by_server();
                    None
                }
            }
            Err(e) => {
                self.shared.failed(&e);
                None
            }
        }
    }
}

/// Runs the configured scenario to its end.
pub(crate) async fn run(
    cfg: Arc<Config>,
    show_progress: bool,
    nofile_limit: Option<u64>,
) -> Outcome {
    let start = Instant::now();
    let shared = Arc::new(Shared::new(start));
    let ctx = Arc::new(Ctx {
        cfg: Arc::clone(&cfg),
        shared: Arc::clone(&shared),
        deadline: start + cfg.duration,
        tickets: cfg.requests.map(AtomicU64::new),
        open: AtomicU64::new(0),
        max_open: AtomicU64::new(0),
        opened: AtomicU64::new(0),
    });
    let progress = Progress::start(&cfg, Arc::clone(&shared), show_progress);
    let t = cfg.timeout;
    let mut generator = None;
    let mut idle = None;
    let abandoned = match cfg.scenario.clone() {
        Scenario::Closed {
            connections,
            per_connection,
        } => {
            let mut set = JoinSet::new();
            for _ in 0..connections {
                set.spawn(closed_connection(Arc::clone(&ctx), per_connection));
            }
            join_until(&mut set, ctx.deadline + t * 2 + HARD_STOP_SLACK).await
        }
        Scenario::Open {
            rate,
            max_connections,
            per_connection,
        } => {
            let (stats, abandoned) =
                open_loop(Arc::clone(&ctx), rate, max_connections, per_connection).await;
            generator = Some(stats);
            abandoned
        }
        Scenario::Storm { connections } => {
            let barrier = Arc::new(tokio::sync::Barrier::new(connections));
            let mut set = JoinSet::new();
            for _ in 0..connections {
                let ctx = Arc::clone(&ctx);
                let barrier = Arc::clone(&barrier);
                set.spawn(async move {
                    barrier.wait().await;
                    if let Ok(live) = ctx.open_connection().await {
                        ctx.request(live, true, Instant::now()).await;
                    }
                });
            }
            join_until(
                &mut set,
                Instant::now() + t * 2 + HARD_STOP_SLACK + Duration::from_secs(5),
            )
            .await
        }
        Scenario::Idle { gaps } => {
            let longest = gaps.iter().copied().max().unwrap_or_default();
            let mut set = JoinSet::new();
            for (i, gap) in gaps.into_iter().enumerate() {
                let ctx = Arc::clone(&ctx);
                set.spawn(async move { (i, idle_probe(ctx, gap).await) });
            }
            let hard = Instant::now() + longest + t * 3 + HARD_STOP_SLACK;
            let mut probes = Vec::new();
            let finished = tokio::time::timeout_at(hard.into(), async {
                while let Some(joined) = set.join_next().await {
                    if let Ok(probe) = joined {
                        probes.push(probe);
                    }
                }
            })
            .await;
            let abandoned = if finished.is_err() {
                set.len() as u64
            } else {
                0
            };
            set.abort_all();
            probes.sort_by_key(|(i, _)| *i);
            idle = Some(probes.into_iter().map(|(_, p)| p).collect());
            abandoned
        }
    };
    progress.finish();
    Outcome {
        shared,
        elapsed: start.elapsed(),
        connections_opened: ctx.opened.load(Ordering::Relaxed),
        max_open: ctx.max_open.load(Ordering::Relaxed),
        abandoned,
        nofile_limit,
        generator,
        idle,
    }
}

/// Waits for all tasks until `hard`, then aborts the rest and returns how many there were.
async fn join_until(set: &mut JoinSet<()>, hard: Instant) -> u64 {
    let all = async { while set.join_next().await.is_some() {} };
    if tokio::time::timeout_at(hard.into(), all).await.is_ok() {
        return 0;
    }
    let left = set.len() as u64;
    set.abort_all();
    left
}

/// One closed-loop connection: send, wait for the whole response, send again; reconnect when
/// the connection ends.
async fn closed_connection(ctx: Arc<Ctx>, per_connection: Option<u64>) {
    let mut current: Option<Live> = None;
    while Instant::now() < ctx.deadline && ctx.claim() {
        let live = match current.take() {
            Some(live) => live,
            None => match ctx.open_connection().await {
                Ok(live) => live,
                Err(_) => continue,
            },
        };
        let last = per_connection.is_some_and(|k| live.conn.requests + 1 >= k);
        current = ctx.request(live, last, Instant::now()).await;
    }
}

/// One request of the open loop: when it should have been sent.
struct Job {
    intended: Instant,
}

/// The open loop: a scheduler sends jobs at fixed intervals to idle connections, opening a new
/// connection whenever none is idle (up to the cap). Latency counts from the intended time.
///
/// `idle` is the number of connections waiting for a job minus the jobs queued for them; the
/// scheduler takes one from it for each job it sends, so it knows without a lock whether a
/// job will find a waiting connection or needs a new one.
async fn open_loop(
    ctx: Arc<Ctx>,
    rate: f64,
    max_connections: usize,
    per_connection: Option<u64>,
) -> (GeneratorStats, u64) {
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let gen = Arc::new(GenCounters::default());
    let scheduler = {
        let ctx = Arc::clone(&ctx);
        let rx = Arc::clone(&rx);
        let gen = Arc::clone(&gen);
        let handle = tokio::runtime::Handle::current();
        // The schedule runs on an OS thread of its own: tokio timers tick in whole
        // milliseconds, which would add up to 1 ms of generator lag to every latency at high
        // rates, while thread::sleep wakes within tens of microseconds.
        tokio::task::spawn_blocking(move || {
            schedule(
                &ctx,
                &handle,
                rate,
                max_connections,
                per_connection,
                tx,
                rx,
                gen,
            )
        })
    };
    let (mut stats, mut set) = match scheduler.await {
        Ok(done) => done,
        Err(_) => (GeneratorStats::default(), JoinSet::new()),
    };
    let t = ctx.cfg.timeout;
    let abandoned = join_until(&mut set, ctx.deadline + t * 3 + HARD_STOP_SLACK).await;
    let mut rx = rx.lock().await;
    while rx.try_recv().is_ok() {
        stats.unsent_at_end += 1;
    }
    stats.expired_in_queue = gen.expired.load(Ordering::Relaxed);
    stats.stale_connections_replaced = gen.stale.load(Ordering::Relaxed);
    (stats, abandoned)
}

/// The open-loop schedule, on a blocking thread: dispatches job `i` at `start + i / rate`.
#[allow(clippy::too_many_arguments)]
fn schedule(
    ctx: &Arc<Ctx>,
    handle: &tokio::runtime::Handle,
    rate: f64,
    max_connections: usize,
    per_connection: Option<u64>,
    tx: mpsc::UnboundedSender<Job>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    gen: Arc<GenCounters>,
) -> (GeneratorStats, JoinSet<()>) {
    let idle = Arc::new(AtomicI64::new(0));
    let live_tasks = Arc::new(AtomicUsize::new(0));
    let mut stats = GeneratorStats::default();
    let mut set = JoinSet::new();
    let start = ctx.shared.start;
    let mut i: u64 = 0;
    loop {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if intended >= ctx.deadline || !ctx.claim() {
            break;
        }
        let now = Instant::now();
        if intended > now {
            std::thread::sleep(intended - now);
        }
        let lag = Instant::now().saturating_duration_since(intended);
        stats.max_lag_us = stats.max_lag_us.max(micros(lag));
        if lag > LATE_SEND {
            stats.late_sends += 1;
        }
        stats.scheduled += 1;
        i += 1;
        let job = Job { intended };
        if idle.fetch_sub(1, Ordering::AcqRel) > 0 {
            // A waiting connection will take it.
            let _ = tx.send(job);
            continue;
        }
        idle.fetch_add(1, Ordering::AcqRel);
        if live_tasks.load(Ordering::Acquire) < max_connections {
            live_tasks.fetch_add(1, Ordering::AcqRel);
            set.spawn_on(
                open_connection_task(
                    Arc::clone(ctx),
                    job,
                    Arc::clone(&rx),
                    Arc::clone(&idle),
                    Arc::clone(&live_tasks),
                    Arc::clone(&gen),
                    per_connection,
                ),
                handle,
            );
        } else {
            idle.fetch_sub(1, Ordering::AcqRel);
            stats.queued_for_connection += 1;
            let _ = tx.send(job);
        }
        while set.try_join_next().is_some() {}
    }
    (stats, set)
}

#[derive(Default)]
struct GenCounters {
    expired: AtomicU64,
    stale: AtomicU64,
}

/// Decrements the live-task count however the task ends.
struct TaskGuard(Arc<AtomicUsize>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One open-loop connection: opened for a job, then serving jobs from the queue while it
/// stays usable.
async fn open_connection_task(
    ctx: Arc<Ctx>,
    first: Job,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    idle: Arc<AtomicI64>,
    live_tasks: Arc<AtomicUsize>,
    gen: Arc<GenCounters>,
    per_connection: Option<u64>,
) {
    let _task = TaskGuard(live_tasks);
    let mut job = first;
    let mut current: Option<Live> = None;
    loop {
        let live = match current.take() {
            Some(live) => live,
            None => match ctx.open_connection().await {
                Ok(live) => live,
                // The failure is this job's result; the scheduler opens others as needed.
                Err(_) => return,
            },
        };
        let last = per_connection.is_some_and(|k| live.conn.requests + 1 >= k);
        current = ctx.request(live, last, job.intended).await;
        if current.is_none() {
            return;
        }
        loop {
            idle.fetch_add(1, Ordering::AcqRel);
            let next = rx.lock().await.recv().await;
            let Some(next) = next else { return };
            if next.intended.elapsed() > ctx.cfg.timeout {
                // It waited in the generator's queue longer than any client would.
                gen.expired.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            job = next;
            break;
        }
        // A pooled connection the server closed while it sat idle would fail at once; real
        // clients check before reuse, so do the same and open a fresh one.
        if let Some(live) = current.as_mut() {
            if !matches!(live.conn.idle_state(), IdleState::Open) {
                gen.stale.fetch_add(1, Ordering::Relaxed);
                current = None;
            }
        }
    }
}

/// One idle probe: request, stay idle for `gap` watching the socket, request again.
async fn idle_probe(ctx: Arc<Ctx>, gap: Duration) -> IdleProbe {
    let mut probe = IdleProbe {
        gap_s: gap.as_secs_f64(),
        outcome: "first_request_failed",
        ended_after_s: None,
        first_response_us: None,
        second_response_us: None,
        announced_keep_alive_timeout_s: None,
        detail: None,
    };
    let mut live = match ctx.open_connection().await {
        Ok(live) => live,
        Err(e) => {
            probe.detail = Some(e.to_string());
            return probe;
        }
    };
    let req = &ctx.cfg.request;
    let t = ctx.cfg.timeout;
    let sent = Instant::now();
    match live.conn.exchange(req.bytes(false), req.is_head, t).await {
        Ok(resp) => {
            ctx.shared
                .response(sent.elapsed(), resp.status, resp.keep_alive_timeout);
            probe.first_response_us = Some(micros(sent.elapsed()));
            probe.announced_keep_alive_timeout_s = resp.keep_alive_timeout;
            if !resp.reusable {
                probe.outcome = "not_kept_alive";
                probe.detail =
                    Some("the server closed the connection after the first response".into());
                return probe;
            }
        }
        Err(e) => {
            ctx.shared.failed(&e);
            probe.detail = Some(e.to_string());
            return probe;
        }
    }
    let idle_start = Instant::now();
    loop {
        let remaining = gap.saturating_sub(idle_start.elapsed());
        if remaining.is_zero() || live.conn.wait_idle(remaining).await.is_none() {
            break;
        }
        let outcome = match live.conn.idle_state() {
            IdleState::Open => continue,
            IdleState::Closed => "closed_idle",
            IdleState::Reset => "reset_idle",
            IdleState::Unsolicited(n) => {
                probe.detail = Some(format!("the server sent {n} bytes nobody asked for"));
                "unsolicited_data"
            }
        };
        probe.outcome = outcome;
        probe.ended_after_s = Some(idle_start.elapsed().as_secs_f64());
        return probe;
    }
    let sent = Instant::now();
    match live.conn.exchange(req.bytes(true), req.is_head, t).await {
        Ok(resp) => {
            ctx.shared
                .response(sent.elapsed(), resp.status, resp.keep_alive_timeout);
            probe.second_response_us = Some(micros(sent.elapsed()));
            probe.outcome = "survived";
        }
        Err(e) => {
            ctx.shared.failed(&e);
            probe.outcome = match (&e, e.class()) {
                (RequestError::Closed(EofError::BeforeResponse), _) => "closed_mid_request",
                (_, ErrorClass::Reset) => "reset_mid_request",
                _ => "failed",
            };
            probe.detail = Some(e.to_string());
        }
    }
    probe
}
