//! The worker: runs inside the application's own CPython (loaded there as an extension
//! module), imports the WSGI application once, and serves requests that arrive as frames
//! on a socketpair from the front. It does no client
//! network I/O. One reader thread (no GIL) routes frames; `threads` Python threads call the
//! application and release the GIL whenever they block in Rust.

mod abort;
mod conn;
mod environ;
mod errors;
mod forked;
mod gil;
mod head;
mod held;
mod input;
mod meter;
mod pool;
mod response;
mod scheduling;
mod sizing;

use std::ffi::CString;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spillway_proto::{Frame, LevelStats, WorkerStats, PROTOCOL_VERSION};

use conn::Job;
use conn::{Link, ReadEnd};
use pool::Pool;

use errors::ErrorStream;
pub use sizing::ThreadLimits;

const BOOTSTRAP: &str = include_str!("bootstrap.py");

/// What a worker is told at start; the front passes it on the worker's command line.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// `module:callable`, `module:factory()` or `path/to/file.py:callable`.
    pub app: String,
    /// How many Python threads call the application.
    pub threads: ThreadLimits,
    /// Directories prepended to `sys.path`.
    pub pythonpath: Vec<PathBuf>,
    /// More than one worker process serves the application (`wsgi.multiprocess`).
    pub multiprocess: bool,
    /// Run the worker's threads under `SCHED_BATCH` (`--worker-scheduling batch`).
    pub batch_scheduling: bool,
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The application could not be imported; the traceback was logged.
    #[error("could not load APP '{app}'")]
    AppLoad {
        /// The APP spec.
        app: String,
    },
    /// The interpreter could not be prepared (bootstrap failed).
    #[error("could not start the Python interpreter: {0}")]
    Python(String),
    /// The socket to the front failed.
    #[error("socket to the front: {0}")]
    Io(#[from] std::io::Error),
    /// The front sent something this worker does not understand.
    #[error("frame protocol: {0}")]
    Protocol(String),
}

impl From<spillway_proto::FrameError> for WorkerError {
    fn from(e: spillway_proto::FrameError) -> Self {
        WorkerError::Protocol(e.to_string())
    }
}

/// Everything a Python thread needs to serve requests.
pub(crate) struct Ctx {
    pub app: Py<PyAny>,
    pub link: Arc<Link>,
    /// What every request's environ starts as (`wsgi.*` constants).
    pub environ_base: Py<PyDict>,
    pub format_exception: Py<PyAny>,
    pub pid: u32,
    pub pool: Arc<Pool<Job>>,
}

/// Runs a worker on `socket` until the front asks it to stop or goes away.
pub fn run(spec: WorkerSpec, socket: UnixStream) -> Result<(), WorkerError> {
    let pid = std::process::id();
    // Before any thread starts, so every thread of the worker inherits it.
    if spec.batch_scheduling {
        if let Err(e) = scheduling::batch() {
            tracing::warn!(worker = pid, error = %e, "could not switch the worker to SCHED_BATCH; it keeps the default policy");
        }
    }
    forked::watch();
    let mut reader = socket.try_clone()?;
    let interrupter = abort::Interrupter::start()?;
    let link = Arc::new(Link::new(socket, move |s| interrupter.interrupt(s)));
    // Hello first, so the front knows this pid even if the import then fails.
    link.send(&Frame::Hello {
        version: PROTOCOL_VERSION,
        pid,
    });

    Python::initialize();
    let pool = Arc::new(Pool::new(spec.threads, Instant::now()));
    let ctx = Python::attach(|py| load(py, &spec, link.clone(), pid, pool.clone()))?;
    let ctx = Arc::new(ctx);

    // Warm start: one thread until the first request is done.
    spawn_threads(&ctx, 1)?;
    link.send(&Frame::Ready { threads: 1 });
    let (python, version, prefix) = Python::attach(interpreter);
    tracing::info!(
        worker = pid,
        app = %spec.app,
        python = %python,
        python_version = %version,
        python_prefix = %prefix,
        "worker imported the application"
    );

    match read_until_end(&ctx, &mut reader)? {
        ReadEnd::Shutdown => {
            pool.close();
            pool.wait_empty(Duration::from_secs(24 * 3600));
            Python::attach(|py| {
                if let Ok(atexit) = py.import("atexit") {
                    let _ = atexit.call_method0("_run_exitfuncs");
                }
            });
            tracing::info!(worker = pid, "worker stopped");
            Ok(())
        }
        ReadEnd::FrontGone => {
            // Nobody can receive our responses: wake blocked threads and leave.
            link.cancel_all();
            Ok(())
        }
    }
}

/// `sys.executable`, the version (`CPython 3.12.1`) and `sys.prefix` of this interpreter.
fn interpreter(py: Python<'_>) -> (String, String, String) {
    let sys = py.import("sys");
    let get = |name: &str| {
        sys.as_ref()
            .ok()
            .and_then(|s| s.getattr(name).ok())
            .and_then(|v| v.extract::<String>().ok())
            .unwrap_or_default()
    };
    let version = py.version_info();
    (
        get("executable"),
        format!(
            "CPython {}.{}.{}",
            version.major, version.minor, version.patch
        ),
        get("prefix"),
    )
}

/// The reader: routes frames, and between reads lets the pool size itself and tells the
/// front what it has.
fn read_until_end(ctx: &Arc<Ctx>, reader: &mut UnixStream) -> Result<ReadEnd, WorkerError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut meter = meter::Meter::new();
    let mut report = Report::default();
    let mut timeout: Option<Duration> = None;
    loop {
        let want = ctx.pool.tick_in();
        if !timeout_close_enough(timeout, want) {
            reader.set_read_timeout(want)?;
            timeout = want;
        }
        if let Some(end) = ctx
            .link
            .read_batch(reader, &mut buf, &mut chunk, &ctx.pool)?
        {
            return Ok(end);
        }
        ctx.link.release_stale();
        let front_full = ctx.link.was_full(Duration::from_millis(100));
        let spawn = ctx.pool.tick(front_full, || meter.sample());
        spawn_threads(ctx, spawn)?;
        report.send(ctx);
    }
}

/// Whether the read timeout already set serves for `want`: a little late (up to 1 ms) or
/// at most twice as early. Setting it is a syscall, and while requests wait the wanted
/// timeout shrinks with every read: it was one `setsockopt` per read.
fn timeout_close_enough(current: Option<Duration>, want: Option<Duration>) -> bool {
    match (current, want) {
        (Some(c), Some(w)) => c >= w / 2 && c <= w + Duration::from_millis(1),
        (c, w) => c == w,
    }
}

/// Starts `n` more Python threads.
fn spawn_threads(ctx: &Arc<Ctx>, n: u16) -> std::io::Result<()> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    for _ in 0..n {
        ctx.pool.started();
        let me = ctx.clone();
        let name = format!("python-{}", SEQ.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = std::thread::Builder::new()
            .name(name)
            .spawn(move || python_thread(&me))
        {
            ctx.pool.exited();
            return Err(e);
        }
    }
    Ok(())
}

/// What the front last heard about the pool, so a report goes out on a change, and
/// otherwise at most once a second while busy.
#[derive(Default)]
struct Report {
    sent: Option<Instant>,
    logged: Option<Instant>,
    /// Changes not yet logged (logging is at most once a second per worker and rule).
    log: sizing::ChangeLog,
    /// The thread count last reported.
    threads: Option<u16>,
}

impl Report {
    fn send(&mut self, ctx: &Ctx) {
        let (snap, change) = ctx.pool.snapshot();
        let due = self
            .sent
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        let quiet = self
            .logged
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
        // A change goes to the front at once (it sizes the worker's request limit by it),
        // whether or not its log line is due yet.
        let changed = change.is_some();
        let lines = match change {
            Some(d) => self.log.push(d, quiet),
            None if !quiet => self.log.flush().into_iter().collect(),
            None => Vec::new(),
        };
        for d in &lines {
            tracing::info!(
                worker = ctx.pid,
                threads_from = d.from,
                threads_to = d.to,
                rule = d.rule.name(),
                busy = snap.busy,
                queued = snap.queued,
                "threads {} -> {} [{}]: {}",
                d.from,
                d.to,
                d.rule.name(),
                d.why
            );
            self.logged = Some(Instant::now());
        }
        // Threads leaving an idle pool (shrunk, or idle past --thread-idle-timeout) are news
        // too: without it the front showed a pool that had long shrunk.
        let moved = self.threads != Some(snap.threads);
        if !(changed || moved || due && snap.busy > 0) {
            return;
        }
        self.threads = Some(snap.threads);
        let (rule, reason) = snap
            .last
            .as_ref()
            .map(|d| (d.rule.name(), d.why.clone()))
            .unwrap_or_default();
        let level = |r: Option<sizing::Rate>| {
            r.map(|r| LevelStats {
                threads: r.threads,
                throughput_milli: (r.throughput * 1e3) as u64,
                service_us: r.service.as_micros().min(u128::from(u64::MAX)) as u64,
            })
            .unwrap_or_default()
        };
        let (gil_wait_ns, gil_takes) = gil::totals();
        ctx.link.send(&Frame::Stats(Box::new(WorkerStats {
            threads: snap.threads,
            target: snap.target,
            busy: snap.busy,
            queued: snap.queued,
            requests: snap.requests,
            cpu_ns: meter::process_cpu_ns(),
            gil_wait_ns,
            gil_takes,
            reason: Bytes::from(reason),
            rule: Bytes::from_static(rule.as_bytes()),
            current: level(snap.levels.0),
            previous: level(snap.levels.1),
        })));
        self.sent = Some(Instant::now());
    }
}

/// The Python traceback of `e` as text (falls back to the exception's message).
pub(crate) fn traceback(py: Python<'_>, format_exception: &Bound<'_, PyAny>, e: &PyErr) -> String {
    // Pass the traceback explicitly: on 3.11 a fetched exception's __traceback__ is unset.
    format_exception
        .call1((e.value(py), e.traceback(py)))
        .and_then(|t| t.extract::<String>())
        .unwrap_or_else(|_| e.to_string())
}

fn python_thread(ctx: &Arc<Ctx>) {
    let wanted = Instant::now();
    Python::attach(|py| {
        gil::taken(wanted);
        loop {
            // The hot path: the next request is already here, and this thread keeps the
            // GIL for it.
            let job = match ctx.pool.try_take() {
                Some(job) => job,
                None => {
                    // Responses held back for a next request that another thread took.
                    ctx.link.release_held(py);
                    match gil::detach(py, || ctx.pool.take()) {
                        pool::Next::Job(job) => job,
                        pool::Next::Exit => break,
                    }
                }
            };
            // Every request's service time feeds the sizing (one clock read each way).
            let route = sizing::Route::of(&job.head.method, &job.head.path_info);
            let started = Instant::now();
            response::serve(py, ctx, job);
            let spawn = ctx.pool.done(started, route);
            if spawn > 0 {
                if let Err(e) = spawn_threads(ctx, spawn) {
                    tracing::error!(worker = ctx.pid, error = %e, "could not start a Python thread");
                }
            }
        }
    });
}

fn load(
    py: Python<'_>,
    spec: &WorkerSpec,
    link: Arc<Link>,
    pid: u32,
    pool: Arc<Pool<Job>>,
) -> Result<Ctx, WorkerError> {
    let code = CString::new(BOOTSTRAP).map_err(|e| WorkerError::Python(e.to_string()))?;
    let boot = PyModule::from_code(py, &code, c"spillway_bootstrap.py", c"spillway_bootstrap")
        .map_err(|e| WorkerError::Python(e.to_string()))?;
    abort::init(py, &boot).map_err(|e| WorkerError::Python(e.to_string()))?;
    let format_exception = boot
        .getattr("format_exception")
        .map_err(|e| WorkerError::Python(e.to_string()))?;
    let traceback = |e: &PyErr| traceback(py, &format_exception, e);
    let pythonpath: Vec<String> = spec
        .pythonpath
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    boot.getattr("prepare")
        .and_then(|f| f.call1(("spillway", pythonpath)))
        .map_err(|e| {
            tracing::error!(
                "could not prepare the interpreter worker={pid}\n{}",
                traceback(&e)
            );
            WorkerError::AppLoad {
                app: spec.app.clone(),
            }
        })?;
    let app = boot
        .getattr("load")
        .and_then(|f| f.call1((spec.app.as_str(),)))
        .map_err(|e| {
            tracing::error!(
                "could not load APP '{}' worker={pid}\n{}",
                spec.app,
                traceback(&e)
            );
            WorkerError::AppLoad {
                app: spec.app.clone(),
            }
        })?;
    let py_err = |e: PyErr| WorkerError::Python(e.to_string());
    let errors = Bound::new(py, ErrorStream::new(pid)).map_err(py_err)?;
    let file_wrapper = boot.getattr("FileWrapper").map_err(py_err)?;
    let environ_base = environ::base(
        py,
        errors.as_any(),
        &file_wrapper,
        spec.threads.multithread(),
        spec.multiprocess,
    )
    .map_err(py_err)?;
    Ok(Ctx {
        app: app.unbind(),
        link,
        environ_base: environ_base.unbind(),
        format_exception: format_exception.unbind(),
        pid,
        pool,
    })
}

#[cfg(test)]
mod tests {
    use super::timeout_close_enough;
    use std::time::Duration;

    #[test]
    fn the_read_timeout_is_set_again_only_when_far_off() {
        let ms = |n: u64| Some(Duration::from_micros(n * 1000));
        // Waiting requests shrink the wanted timeout a little with every read: kept.
        assert!(timeout_close_enough(
            ms(1),
            Some(Duration::from_micros(700))
        ));
        // Idle after busy: a 100 ms timeout where 1 s is wanted wakes 10x too often.
        assert!(!timeout_close_enough(ms(100), ms(1000)));
        // Busy after idle: a 1 s timeout where 100 ms is wanted is far too late.
        assert!(!timeout_close_enough(ms(1000), ms(100)));
        assert!(timeout_close_enough(None, None));
        assert!(!timeout_close_enough(None, ms(1)));
    }
}
