//! The end of a worker process: routing its frames until it goes, waiting for (or killing)
//! the process from the one task that reaps it, and how it ended.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::admission::dispatch::Workers;
use crate::telemetry::metrics::DeathCause;
use crate::workers::spawn::describe_exit;

/// How a worker process ended.
#[derive(Debug, Clone)]
pub(super) struct Exit {
    /// `exit code N` or `killed by signal N`, and any protocol error.
    pub(super) status: String,
    pub(super) cause: DeathCause,
}

impl Default for Exit {
    fn default() -> Exit {
        Exit {
            status: String::new(),
            cause: DeathCause::Exit,
        }
    }
}

/// Why a process that ended with `status` died, had it not been asked to.
fn death_cause(status: std::process::ExitStatus) -> DeathCause {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(libc::SIGKILL) => DeathCause::Killed,
        Some(_) => DeathCause::Crash,
        None => DeathCause::Exit,
    }
}

/// Asks the task that owns a worker's process (and reaps it) to kill it: only that task
/// knows whether the pid is still the worker's, so a reaped pid is never signalled.
#[derive(Clone, Default)]
pub(super) struct Killer(Arc<Notify>);

impl Killer {
    pub(super) fn kill(&self) {
        // A permit is stored if the task is not waiting yet; after it exited, nothing.
        self.0.notify_one();
    }
}

/// Waits for `child` to exit, killing it when `killer` asks.
async fn wait_or_kill(
    child: &mut tokio::process::Child,
    killer: &Killer,
) -> std::io::Result<std::process::ExitStatus> {
    loop {
        tokio::select! {
            status = child.wait() => return status,
            _ = killer.0.notified() => {
                // tokio's Child signals only a process it has not reaped.
                let _ = child.start_kill();
            }
        }
    }
}

/// Routes a worker's frames until it goes, fails its requests, and waits for its process
/// (killing it when `killer` asks, or when its socket ended first): how it ended.
pub(super) async fn reap(
    mut child: tokio::process::Child,
    mut reader: crate::admission::link::WorkerReader,
    killer: &Killer,
    pool: &Workers,
    id: u64,
) -> Exit {
    // The process's own exit (SIGCHLD), not the end of its socket, says it died: a
    // child the application started may hold the socket open long after.
    let (error, exited) = tokio::select! {
        error = reader.route_until_end() => (error, None),
        status = wait_or_kill(&mut child, killer) => {
            // What it wrote before it went is still delivered; a socket kept open
            // by a child of its ends the wait after a moment.
            let error = tokio::time::timeout(Duration::from_millis(50), reader.route_until_end())
                .await
                .unwrap_or(None);
            (error, Some(status))
        }
    };
    // Out of the pool before its requests fail, so that nothing picks it and its
    // claims free nothing.
    reader.fail(|| pool.remove(id));
    let exited_first = exited.is_some();
    let status = match exited {
        Some(status) => status,
        None => {
            // It closed its socket or broke the protocol while still running:
            // useless either way, and its requests have already failed.
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let cause = match (&exited_first, &error, &status) {
        (false, _, _) | (_, Some(_), _) => DeathCause::Protocol,
        (_, _, Ok(st)) => death_cause(*st),
        (_, _, Err(_)) => DeathCause::Exit,
    };
    let status = status.map_or_else(|e| e.to_string(), describe_exit);
    let status = match error {
        Some(e) => format!("{status}; {e}"),
        None => status,
    };
    Exit { status, cause }
}
