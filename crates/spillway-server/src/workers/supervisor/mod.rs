//! Supervision: keeps `--workers` worker processes running. Each slot starts a worker,
//! waits for it to import the application, and puts it into the pool. A worker that dies
//! fails exactly its in-flight requests and is replaced, with a backoff that grows while
//! workers keep dying (a crash loop is reported, not hidden). A worker that must be
//! retired (max-requests, memory, stuck threads) is replaced first and drained after, so
//! no client sees the change. A reload starts a whole new generation the same way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

mod reap;

use crate::admission::dispatch::Workers;
use crate::admission::link::WorkerLink;
use crate::config::{ServerConfig, WorkerCommand};
use crate::telemetry::metrics::Metrics;
use crate::workers::spawn::{self, StartError};
use reap::{reap, Exit, Killer};

/// What the supervisor reports to the server's main task.
#[derive(Debug)]
pub(crate) enum SlotEvent {
    /// A worker imported the application and takes requests.
    Ready,
    /// A worker could not import the application.
    AppLoadFailed,
    /// A worker could not be started or broke the handshake.
    StartFailed(String),
}

/// Why a reload did not take over.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// A worker of the new generation did not come up.
    #[error("{0}")]
    Start(#[from] StartError),
    /// A start-up task failed (it panicked or was cancelled).
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The server began stopping meanwhile.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// A worker that passed its handshake, with a way to learn that its process exited.
pub(crate) struct Running {
    link: Arc<WorkerLink>,
    /// Becomes `Some` when the process has exited.
    exited: watch::Receiver<Option<Exit>>,
}

/// Worker-lifecycle settings taken from the server configuration.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub command: WorkerCommand,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub graceful_timeout: Duration,
    /// Workers size their threads by load (no `--threads`), so they may be pipelined.
    pub pipelined: bool,
}

impl Policy {
    pub fn from_config(cfg: &ServerConfig) -> Policy {
        Policy {
            command: cfg.worker_command.clone(),
            max_requests: cfg.max_requests,
            max_requests_jitter: cfg.max_requests_jitter,
            graceful_timeout: cfg.graceful_timeout,
            pipelined: cfg.threads.pinned.is_none(),
        }
    }
}

/// Shared state of all worker slots.
pub(crate) struct Supervisor {
    pool: Arc<Workers>,
    policy: Policy,
    workers: usize,
    /// Generation new workers belong to; bumped only by a successful reload.
    generation: AtomicU64,
    /// Generation numbers handed out to reload attempts.
    next_generation: AtomicU64,
    reloading: tokio::sync::Mutex<()>,
    adopt: Mutex<Vec<mpsc::UnboundedSender<Running>>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// Some worker has been ready once: from then on, load failures are retried.
    ever_ready: AtomicBool,
    links: Mutex<HashMap<u64, Arc<WorkerLink>>>,
    /// How to kill each worker in `links`.
    killers: Mutex<HashMap<u64, Killer>>,
    deaths: Mutex<VecDeque<Instant>>,
    events: mpsc::UnboundedSender<SlotEvent>,
    metrics: Arc<Metrics>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A worker that lived this long is healthy: the next death starts backoff afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// This many deaths within [`CRASH_WINDOW`] is a crash loop.
const CRASH_LOOP_DEATHS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Supervisor {
    pub fn new(
        pool: Arc<Workers>,
        policy: Policy,
        workers: usize,
        events: mpsc::UnboundedSender<SlotEvent>,
        metrics: Arc<Metrics>,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            metrics,
            pool,
            policy,
            workers,
            generation: AtomicU64::new(1),
            next_generation: AtomicU64::new(2),
            reloading: tokio::sync::Mutex::new(()),
            adopt: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            ever_ready: AtomicBool::new(false),
            links: Mutex::new(HashMap::new()),
            killers: Mutex::new(HashMap::new()),
            deaths: Mutex::new(VecDeque::new()),
            events,
        })
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Per-worker request limit: `--max-requests` plus a random share of the jitter, so
    /// workers started together do not all retire together.
    fn request_limit(&self, id: u64) -> u64 {
        if self.policy.max_requests == 0 {
            return 0;
        }
        let jitter = self.policy.max_requests_jitter;
        if jitter == 0 {
            return self.policy.max_requests;
        }
        // Not cryptographic: spread only. Mix the id with the clock's nanoseconds.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        let mix = (id ^ nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
        self.policy.max_requests + mix % (jitter + 1)
    }

    /// The generation serving now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts one worker of `generation` and waits for its handshake. The caller decides
    /// when it joins the pool.
    async fn start(self: &Arc<Self>, slot: usize, generation: u64) -> Result<Running, StartError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let pool = self.pool.clone();
        let on_limit = Box::new(move |limit| pool.set_limit(id, limit));
        let started = spawn::start(
            &self.policy.command,
            id,
            generation,
            self.request_limit(id),
            self.policy.pipelined,
            on_limit,
        )
        .await?;
        let spawn::Started {
            child,
            link,
            reader,
            threads,
        } = started;
        self.metrics.worker_starts.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            worker = link.pid,
            generation = link.generation,
            slot,
            threads,
            "worker ready"
        );
        lock(&self.links).insert(id, link.clone());
        let killer = Killer::default();
        lock(&self.killers).insert(id, killer.clone());
        let (tx, rx) = watch::channel(None);
        let pool = self.pool.clone();
        let sup = Arc::downgrade(self);
        tokio::spawn(async move {
            let exit = reap(child, reader, &killer, &pool, id).await;
            if let Some(sup) = sup.upgrade() {
                lock(&sup.killers).remove(&id);
            }
            let _ = tx.send(Some(exit));
        });
        Ok(Running { link, exited: rx })
    }

    /// Records a death; returns how many happened within the crash window.
    fn record_death(&self) -> usize {
        let mut d = lock(&self.deaths);
        let now = Instant::now();
        d.push_back(now);
        while d
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            d.pop_front();
        }
        d.len()
    }

    /// Puts a started worker into service.
    fn activate(&self, r: &Running) {
        let (_, _, limit) = r.link.pool_stats();
        self.pool.add(r.link.id, r.link.clone(), limit);
        self.ever_ready.store(true, Ordering::Release);
        let _ = self.events.send(SlotEvent::Ready);
    }

    /// Puts `next` into service and drains `old` in the background.
    fn take_over(self: &Arc<Self>, old: Running, next: Running) -> Running {
        self.activate(&next);
        tokio::spawn(self.clone().drain(old));
        next
    }

    /// Starts a worker for `slot`, retrying with backoff; `None` once stopping or when a
    /// start-up load failure ends the server.
    async fn start_with_backoff(
        self: &Arc<Self>,
        slot: usize,
        backoff: &mut Duration,
    ) -> Option<Running> {
        loop {
            if self.stopping() {
                return None;
            }
            match self.start(slot, self.generation()).await {
                Ok(r) => return Some(r),
                Err(e) => {
                    if self.stopping() {
                        return None;
                    }
                    if let StartError::AppLoad(_) = e {
                        let _ = self.events.send(SlotEvent::AppLoadFailed);
                        if !self.ever_ready.load(Ordering::Acquire) {
                            // At start-up a load failure ends the server: do not respawn.
                            return None;
                        }
                    } else if let Some(hint) = out_of_descriptors(&e) {
                        // Not the application's doing: no death, no crash loop.
                        tracing::error!(slot, reason = %e, "cannot start a worker, {hint}; retrying");
                        let _ = self.events.send(SlotEvent::StartFailed(e.to_string()));
                        wait_backoff(backoff).await;
                        continue;
                    } else {
                        tracing::error!(slot, reason = %e, "worker failed to start");
                        let _ = self.events.send(SlotEvent::StartFailed(e.to_string()));
                    }
                    self.died_then_wait(slot, backoff).await;
                }
            }
        }
    }

    /// Runs one worker slot until shutdown: keeps one worker in service, replaces it when
    /// it dies or retires, and adopts workers of a new generation on reload.
    pub async fn run_slot(self: Arc<Self>, slot: usize) {
        let (tx, mut adopt) = mpsc::unbounded_channel();
        {
            let mut a = lock(&self.adopt);
            if a.len() <= slot {
                a.resize_with(slot + 1, || mpsc::unbounded_channel().0);
            }
            a[slot] = tx;
        }
        let mut backoff = MIN_BACKOFF;
        let mut current: Option<Running> = None;
        loop {
            let running = match current.take() {
                Some(r) => r,
                None => match self.start_with_backoff(slot, &mut backoff).await {
                    Some(r) => {
                        self.activate(&r);
                        r
                    }
                    None => return,
                },
            };
            let since = Instant::now();
            let link = running.link.clone();
            let mut exited = running.exited.clone();
            tokio::select! {
                exit = async { exited.wait_for(|s| s.is_some()).await.map(|s| s.clone().unwrap_or_default()) } => {
                    let Exit { status, cause } = exit.unwrap_or_default();
                    lock(&self.links).remove(&link.id);
                    if self.stopping() {
                        tracing::info!(worker = link.pid, generation = link.generation, status = %status, "worker exited");
                        return;
                    }
                    self.metrics.worker_died(cause);
                    tracing::warn!(
                        worker = link.pid,
                        generation = link.generation,
                        slot,
                        status = %status,
                        lived_s = since.elapsed().as_secs(),
                        served = link.served(),
                        "worker died; its in-flight requests got 502; starting another"
                    );
                    if since.elapsed() >= HEALTHY_AFTER {
                        backoff = MIN_BACKOFF;
                    }
                    self.died_then_wait(slot, &mut backoff).await;
                }
                (why, reason) = link.retired() => {
                    self.metrics.recycled(why);
                    current = self.replace(slot, running, &reason, &mut backoff).await;
                }
                Some(next) = adopt.recv() => current = Some(self.take_over(running, next)),
            }
            if self.stopping() {
                if let Some(r) = current.take() {
                    let mut exited = r.exited.clone();
                    let _ = exited.wait_for(|s| s.is_some()).await;
                }
                return;
            }
        }
    }

    /// Replaces a retiring worker: its successor first, then it drains. If no successor
    /// can start, it keeps serving.
    async fn replace(
        self: &Arc<Self>,
        slot: usize,
        running: Running,
        reason: &str,
        backoff: &mut Duration,
    ) -> Option<Running> {
        let link = &running.link;
        if self.stopping() {
            let mut exited = running.exited.clone();
            let _ = exited.wait_for(|s| s.is_some()).await;
            return None;
        }
        tracing::info!(
            worker = link.pid,
            generation = link.generation,
            slot,
            reason = %reason,
            served = link.served(),
            "replacing worker: starting its successor, then draining it"
        );
        match self.start(slot, self.generation()).await {
            Ok(next) => Some(self.take_over(running, next)),
            Err(e) => {
                tracing::error!(slot, reason = %e, "could not start a successor; the worker keeps serving");
                match out_of_descriptors(&e) {
                    Some(hint) => {
                        tracing::error!(slot, "{hint}");
                        wait_backoff(backoff).await;
                    }
                    None => self.died_then_wait(slot, backoff).await,
                }
                Some(running)
            }
        }
    }

    /// Starts a new generation of workers; when every one has imported the application,
    /// they take over and the old generation drains. If any fails, the new ones are
    /// stopped and the old generation keeps serving.
    pub async fn reload(self: Arc<Self>) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.generation();
        let generation = self.next_generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!(
            from = old,
            generation,
            workers = self.workers,
            "reload: starting a new generation"
        );
        let started = Instant::now();
        let mut tasks = Vec::new();
        for slot in 0..self.workers {
            let me = self.clone();
            tasks.push(tokio::spawn(
                async move { me.start(slot, generation).await },
            ));
        }
        let mut ready = Vec::new();
        let mut failure = None;
        for t in tasks {
            match t.await {
                Ok(Ok(r)) => ready.push(r),
                Ok(Err(e)) => failure = Some(ReloadError::Start(e)),
                Err(e) => failure = Some(ReloadError::Task(e)),
            }
        }
        if self.stopping() {
            failure = Some(ReloadError::ShuttingDown);
        }
        self.metrics.reloaded(failure.is_none());
        if let Some(reason) = failure {
            for r in ready {
                r.link.shutdown();
                lock(&self.links).remove(&r.link.id);
            }
            tracing::error!(
                generation,
                serving = old,
                reason = %reason,
                "reload failed: the new generation could not start (traceback above); the old generation keeps serving"
            );
            return Err(reason);
        }
        self.generation.store(generation, Ordering::Release);
        let adopt = lock(&self.adopt).clone();
        for (slot, r) in ready.into_iter().enumerate() {
            match adopt.get(slot) {
                Some(tx) => {
                    if let Err(e) = tx.send(r) {
                        e.0.link.shutdown();
                    }
                }
                None => r.link.shutdown(),
            }
        }
        tracing::info!(
            generation,
            previous = old,
            took_ms = started.elapsed().as_millis() as u64,
            "reload: new generation serving; the old one drains"
        );
        Ok(generation)
    }

    async fn died_then_wait(&self, slot: usize, backoff: &mut Duration) {
        let recent = self.record_death();
        if recent >= CRASH_LOOP_DEATHS {
            tracing::error!(
                deaths = recent,
                window_s = CRASH_WINDOW.as_secs(),
                slot,
                next_start_in_ms = backoff.as_millis() as u64,
                "CRASH LOOP: workers keep dying; restarts are slowed down (check the application log above)"
            );
        } else {
            tracing::info!(
                slot,
                backoff_ms = backoff.as_millis() as u64,
                "restarting worker after backoff"
            );
        }
        wait_backoff(backoff).await;
    }

    /// Drains a replaced worker: no new requests, healthy in-flight requests finish, then
    /// it exits. Threads stuck past the request timeout cannot finish, so a worker whose
    /// only remaining requests are stuck (or that exceeds the graceful timeout) is killed.
    async fn drain(self: Arc<Self>, mut old: Running) {
        let link = old.link.clone();
        let id = link.id;
        self.pool.retire(id);
        let deadline = tokio::time::Instant::now() + self.policy.graceful_timeout;
        // Claimed, not just started: a request handed this worker from the queue holds
        // its claim before its frames are sent, and Shutdown must not pass them.
        let only_stuck_left =
            |pool: &Workers| pool.claimed(id).unwrap_or(0) as usize <= link.stuck().0;
        loop {
            let stream_changed = link.changed();
            tokio::select! {
                _ = self.pool.wait_until(only_stuck_left) => break,
                _ = stream_changed => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = async { let _ = old.exited.wait_for(|s| s.is_some()).await; } => break,
            }
        }
        let (stuck, _) = link.stuck();
        let claimed = self.pool.claimed(id).unwrap_or(0);
        if old.exited.borrow().is_some() {
            // It died while draining; its requests got their 502.
        } else if stuck > 0 || claimed > 0 {
            tracing::warn!(
                worker = link.pid,
                generation = link.generation,
                stuck,
                in_flight = claimed,
                "killing drained worker: its remaining requests cannot finish"
            );
            self.kill(id);
        } else {
            link.shutdown();
        }
        if tokio::time::timeout(
            Duration::from_secs(10),
            old.exited.wait_for(|s| s.is_some()),
        )
        .await
        .is_err()
        {
            tracing::warn!(
                worker = link.pid,
                "drained worker did not exit in 10 s; killing it"
            );
            self.kill(id);
            let _ = old.exited.wait_for(|s| s.is_some()).await;
        }
        self.pool.remove(id);
        lock(&self.links).remove(&id);
        let status = old.exited.borrow().clone().unwrap_or_default().status;
        tracing::info!(worker = link.pid, generation = link.generation, served = link.served(), status = %status, "replaced worker exited");
    }

    /// Live workers (ready or draining).
    pub fn workers(&self) -> Vec<Arc<WorkerLink>> {
        lock(&self.links).values().cloned().collect()
    }

    /// Stops respawning and asks every worker to finish and exit.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        for link in lock(&self.links).values() {
            link.shutdown();
        }
    }

    /// Kills every worker at once (hard stop).
    pub fn kill_all(&self) {
        for killer in lock(&self.killers).values() {
            killer.kill();
        }
    }

    /// Kills worker `id`, through the task that reaps it.
    fn kill(&self, id: u64) {
        if let Some(killer) = lock(&self.killers).get(&id) {
            killer.kill();
        }
    }
}

/// Waits `backoff`, then doubles it up to [`MAX_BACKOFF`].
async fn wait_backoff(backoff: &mut Duration) {
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// The operator's explanation when a worker could not start for want of file descriptors.
fn out_of_descriptors(e: &StartError) -> Option<&'static str> {
    match e {
        StartError::Spawn(e) if crate::host::fdlimit::is_exhaustion(e) => {
            Some(crate::host::fdlimit::hint(e))
        }
        _ => None,
    }
}
