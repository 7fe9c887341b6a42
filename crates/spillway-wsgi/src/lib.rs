//! The worker: a process that embeds CPython, imports the WSGI application once, and
//! serves requests that arrive as frames on a socketpair from the front. It does no client
//! network I/O. One reader thread (no GIL) routes frames; `threads` Python threads call the
//! application and release the GIL whenever they block in Rust.

mod conn;
mod environ;
mod errors;
mod head;
mod input;
mod response;

use std::ffi::CString;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyModule, PyTuple};
use spillway_proto::{Frame, PROTOCOL_VERSION};

use conn::{JobQueue, Link, ReadEnd};
use errors::ErrorStream;

const BOOTSTRAP: &str = include_str!("bootstrap.py");

/// Interpreter baked in at build time: what `sys.executable` should name.
const BUILD_PYTHON: Option<&str> = option_env!("SPILLWAY_BUILD_PYTHON");

/// What a worker is told at start; the front passes it on the worker's command line.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// `module:callable`, `module:factory()` or `path/to/file.py:callable`.
    pub app: String,
    /// Python threads calling the application.
    pub threads: u16,
    /// Directories prepended to `sys.path`.
    pub pythonpath: Vec<PathBuf>,
    /// A virtualenv whose site-packages take precedence.
    pub virtualenv: Option<PathBuf>,
    /// More than one worker process serves the application (`wsgi.multiprocess`).
    pub multiprocess: bool,
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
    pub errors: Py<ErrorStream>,
    pub file_wrapper: Py<PyAny>,
    pub format_exception: Py<PyAny>,
    pub version: Py<PyTuple>,
    pub multithread: bool,
    pub multiprocess: bool,
    pub pid: u32,
}

/// Runs a worker on `socket` until the front asks it to stop or goes away.
pub fn run(spec: WorkerSpec, socket: UnixStream) -> Result<(), WorkerError> {
    let pid = std::process::id();
    let reader = socket.try_clone()?;
    let link = Arc::new(Link::new(socket));
    // Hello first, so the front knows this pid even if the import then fails.
    link.send(&Frame::Hello {
        version: PROTOCOL_VERSION,
        pid,
    });

    Python::initialize();
    let ctx = Python::attach(|py| load(py, &spec, link.clone(), pid))?;
    let ctx = Arc::new(ctx);

    let threads = spec.threads.max(1);
    let jobs = Arc::new(JobQueue::new());
    let mut handles = Vec::with_capacity(threads as usize);
    for i in 0..threads {
        let jobs = jobs.clone();
        let ctx = ctx.clone();
        let h = std::thread::Builder::new()
            .name(format!("python-{i}"))
            .spawn(move || python_thread(&ctx, &jobs))?;
        handles.push(h);
    }
    link.send(&Frame::Ready { threads });
    tracing::debug!(worker = pid, app = %spec.app, threads, "worker imported the application");

    match link.read_loop(reader, &jobs)? {
        ReadEnd::Shutdown => {
            jobs.close();
            for h in handles {
                let _ = h.join();
            }
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

/// The Python traceback of `e` as text (falls back to the exception's message).
pub(crate) fn traceback(py: Python<'_>, format_exception: &Bound<'_, PyAny>, e: &PyErr) -> String {
    // Pass the traceback explicitly: on 3.11 a fetched exception's __traceback__ is unset.
    format_exception
        .call1((e.value(py), e.traceback(py)))
        .and_then(|t| t.extract::<String>())
        .unwrap_or_else(|_| e.to_string())
}

fn python_thread(ctx: &Ctx, jobs: &JobQueue) {
    Python::attach(|py| {
        while let Some(job) = py.detach(|| jobs.next()) {
            response::serve(py, ctx, job);
        }
    });
}

fn load(py: Python<'_>, spec: &WorkerSpec, link: Arc<Link>, pid: u32) -> Result<Ctx, WorkerError> {
    let code = CString::new(BOOTSTRAP).map_err(|e| WorkerError::Python(e.to_string()))?;
    let boot = PyModule::from_code(py, &code, c"spillway_bootstrap.py", c"spillway_bootstrap")
        .map_err(|e| WorkerError::Python(e.to_string()))?;
    let format_exception = boot
        .getattr("format_exception")
        .map_err(|e| WorkerError::Python(e.to_string()))?;
    let traceback = |e: &PyErr| traceback(py, &format_exception, e);
    let pythonpath: Vec<String> = spec
        .pythonpath
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let venv = spec
        .virtualenv
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    boot.getattr("prepare")
        .and_then(|f| f.call1(("spillway", BUILD_PYTHON, None::<String>, pythonpath, venv)))
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
    Ok(Ctx {
        app: app.unbind(),
        link,
        errors: Py::new(py, ErrorStream::new(pid)).map_err(py_err)?,
        file_wrapper: boot.getattr("FileWrapper").map_err(py_err)?.unbind(),
        format_exception: format_exception.unbind(),
        version: PyTuple::new(py, [1, 0]).map_err(py_err)?.unbind(),
        multithread: spec.threads > 1,
        multiprocess: spec.multiprocess,
        pid,
    })
}
