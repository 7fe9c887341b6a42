//! Supervision: keeps `--workers` worker processes running. Each slot starts a worker,
//! waits for it to import the application, registers it with the pool, and when it dies
//! fails exactly its in-flight requests and starts another, backing off while it keeps
//! dying.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::admission::Pool;
use crate::config::WorkerCommand;
use crate::worker::{self, Startup, WorkerLink};

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

/// Shared state of all worker slots.
pub(crate) struct Supervisor {
    pool: Arc<Pool>,
    command: WorkerCommand,
    generation: u64,
    next_id: AtomicU64,
    stopping: AtomicBool,
    /// Some worker has been ready once: from then on, load failures are retried.
    ever_ready: AtomicBool,
    links: Mutex<HashMap<u64, Arc<WorkerLink>>>,
    events: mpsc::UnboundedSender<SlotEvent>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A worker that lived this long is healthy: the next death starts backoff afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

impl Supervisor {
    pub fn new(
        pool: Arc<Pool>,
        command: WorkerCommand,
        events: mpsc::UnboundedSender<SlotEvent>,
    ) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            pool,
            command,
            generation: 1,
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            ever_ready: AtomicBool::new(false),
            links: Mutex::new(HashMap::new()),
            events,
        })
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<WorkerLink>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one worker slot until shutdown.
    pub async fn run_slot(self: Arc<Self>, slot: usize) {
        let mut backoff = MIN_BACKOFF;
        while !self.stopping.load(Ordering::Acquire) {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let spawned = match worker::spawn(&self.command, self.generation) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(slot, error = %e, "could not start a worker process");
                    let _ = self.events.send(SlotEvent::StartFailed(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let (mut child, startup) = worker::handshake(spawned, id, self.generation).await;
            match startup {
                Startup::Ready {
                    link,
                    threads,
                    reader,
                } => {
                    let pid = link.pid;
                    tracing::info!(
                        worker = pid,
                        generation = link.generation,
                        slot,
                        threads,
                        "worker ready"
                    );
                    self.links().insert(id, link.clone());
                    self.pool.add(link.clone(), threads as u32);
                    self.ever_ready.store(true, Ordering::Release);
                    let _ = self.events.send(SlotEvent::Ready);
                    let since = Instant::now();
                    let error = reader.run().await;
                    self.pool.remove(id);
                    self.links().remove(&id);
                    let status = child.wait().await;
                    let status = status.map_or_else(|e| e.to_string(), describe_exit);
                    if self.stopping.load(Ordering::Acquire) {
                        tracing::info!(worker = pid, generation = link.generation, status = %status, "worker exited");
                        return;
                    }
                    tracing::warn!(
                        worker = pid,
                        generation = link.generation,
                        slot,
                        status = %status,
                        lived_s = since.elapsed().as_secs(),
                        protocol_error = error.as_deref().unwrap_or("none"),
                        "worker died; its in-flight requests got 502; starting another"
                    );
                    if since.elapsed() >= HEALTHY_AFTER {
                        backoff = MIN_BACKOFF;
                    }
                }
                Startup::Failed(reason) => {
                    let status = child.wait().await;
                    let load_failed = matches!(&status, Ok(s) if s.code() == Some(spillway_proto::EXIT_APP_LOAD_FAILED));
                    let status = status.map_or_else(|e| e.to_string(), describe_exit);
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    if load_failed {
                        let _ = self.events.send(SlotEvent::AppLoadFailed);
                        if !self.ever_ready.load(Ordering::Acquire) {
                            // At start-up a load failure ends the server: do not respawn.
                            return;
                        }
                    } else {
                        tracing::error!(slot, reason = %reason, status = %status, "worker failed to start");
                        let _ = self.events.send(SlotEvent::StartFailed(reason));
                    }
                }
            }
            tracing::info!(
                slot,
                backoff_ms = backoff.as_millis() as u64,
                "restarting worker after backoff"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Requests in flight on all workers.
    pub fn in_flight(&self) -> usize {
        self.links().values().map(|l| l.in_flight()).sum()
    }

    /// Stops respawning and asks every worker to finish and exit.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        for link in self.links().values() {
            link.shutdown();
        }
    }

    /// Worker pids alive now (for a hard stop).
    pub fn pids(&self) -> Vec<u32> {
        self.links().values().map(|l| l.pid).collect()
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}
