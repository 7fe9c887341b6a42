//! Stopping a request from outside its thread. At `--timeout` the front sends `Expire`:
//! the handler's thread gets an asynchronous `RequestTimeout` (as mod_wsgi 6 does), so a
//! thread running Python code returns to the pool; one stuck in C code finishes when it
//! comes back to Python, or its worker is replaced. And `wsgi.input` raises
//! `ClientDisconnected` when the client is gone, which is logged as the client's doing,
//! without a traceback.

use std::os::raw::c_long;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::conn::Stream;

static TIMEOUT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CLIENT_GONE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Takes the exception classes from the bootstrap module.
pub(crate) fn init(py: Python<'_>, boot: &Bound<'_, PyModule>) -> PyResult<()> {
    let timeout = boot
        .getattr("RequestTimeout")?
        .cast_into::<PyType>()?
        .unbind();
    let gone = boot
        .getattr("ClientDisconnected")?
        .cast_into::<PyType>()?
        .unbind();
    let _ = TIMEOUT.set(py, timeout);
    let _ = CLIENT_GONE.set(py, gone);
    Ok(())
}

/// The exception `wsgi.input` raises when the client is gone.
pub(crate) fn client_gone(py: Python<'_>, msg: &'static str) -> PyErr {
    match CLIENT_GONE.get(py) {
        Some(t) => PyErr::from_type(t.bind(py).clone(), msg),
        None => pyo3::exceptions::PyOSError::new_err(msg),
    }
}

/// How a failed request ended, for its log line.
pub(crate) enum Cause {
    /// The application raised (log it with its traceback).
    Application,
    /// The client went away or broke its body (one line, rate-limited).
    Client,
    /// Interrupted at `--timeout` (one line).
    Timeout,
}

/// Whose failure `e` is.
pub(crate) fn cause(py: Python<'_>, e: &PyErr) -> Cause {
    let is = |t: &PyOnceLock<Py<PyType>>| t.get(py).is_some_and(|t| e.is_instance(py, t.bind(py)));
    if is(&TIMEOUT) {
        Cause::Timeout
    } else if is(&CLIENT_GONE) {
        Cause::Client
    } else {
        Cause::Application
    }
}

/// The calling thread's id as CPython knows it (`threading.get_ident()`).
pub(crate) fn thread_ident() -> c_long {
    // SAFETY: pthread_self has no preconditions; CPython's thread ident is its value.
    unsafe { libc::pthread_self() as c_long }
}

/// A thread of its own that interrupts expired requests' handlers. It needs the GIL,
/// which a handler stuck in C code may hold for good: the reader must never wait for it.
pub(crate) struct Interrupter {
    tx: mpsc::Sender<Arc<Stream>>,
}

impl Interrupter {
    /// Starts the thread (it holds nothing until a request expires).
    pub fn start() -> std::io::Result<Interrupter> {
        let (tx, rx) = mpsc::channel::<Arc<Stream>>();
        std::thread::Builder::new()
            .name("spillway-interrupter".into())
            .spawn(move || {
                while let Ok(stream) = rx.recv() {
                    Python::attach(|py| interrupt(py, &stream));
                }
            })?;
        Ok(Interrupter { tx })
    }

    /// Has the handler of `stream` interrupted, soon.
    pub fn interrupt(&self, stream: Arc<Stream>) {
        // The thread ends only with the process.
        let _ = self.tx.send(stream);
    }
}

/// Raises `RequestTimeout` in the thread serving `stream`, if one is. The caller holds
/// the GIL, so the thread cannot move on to another request meanwhile: it is either in
/// this request's Python code or waiting, inside it, for the GIL or for I/O.
fn interrupt(py: Python<'_>, stream: &Stream) {
    let Some(exc) = TIMEOUT.get(py) else { return };
    let mut st = stream.lock();
    let Some(ident) = st.running_on.filter(|_| !st.interrupted) else {
        return;
    };
    st.interrupted = true;
    // SAFETY: called with the GIL held (the `py` token); `ident` names a live thread of
    // this interpreter that is inside this request (it clears `running_on`, holding the
    // GIL, before it leaves), and the exception class outlives the call.
    unsafe {
        pyo3::ffi::PyThreadState_SetAsyncExc(ident as _, exc.as_ptr());
    }
}

/// The thread serving `stream` is done with it: it stops being interruptible, and an
/// interruption that came too late to be raised is dropped, not left for the next request.
pub(crate) fn finished(_py: Python<'_>, stream: &Stream) {
    let mut st = stream.lock();
    st.running_on = None;
    if st.interrupted {
        // SAFETY: called with the GIL held, for the calling thread itself; a null
        // exception clears a pending one.
        unsafe {
            pyo3::ffi::PyThreadState_SetAsyncExc(thread_ident() as _, std::ptr::null_mut());
        }
    }
}

/// Whether a client failure may be logged now: one line per second at most, so a client
/// cannot flood the log.
pub(crate) fn may_log_client_failure() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.swap(now, Ordering::Relaxed) != now
}
