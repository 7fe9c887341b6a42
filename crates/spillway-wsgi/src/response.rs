//! Runs one request through the application: `start_response`, the `write()` callable,
//! iteration of the result, `close()`, and turning failures into a 500 or a cut response.
//!
//! Frames for one response are gathered in a buffer and written in as few syscalls as
//! the WSGI rules allow: a list or tuple result goes out as one write (head, body, end);
//! a generator is flushed per chunk, because streaming must reach the client as produced.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use spillway_proto::{encode_body, Frame, Kind, ResponseHead, MAX_CHUNK};

use crate::conn::{Job, Link, Stream};
use crate::environ;
use crate::input::Input;
use crate::Ctx;

const ERROR_BODY: &[u8] = b"Internal Server Error\n";

/// Appends a frame that always fits (fixed-size frames and the built-in 500).
fn put(frame: &Frame, dst: &mut BytesMut) {
    if let Err(e) = frame.encode(dst) {
        tracing::error!(worker = std::process::id(), error = %e, "could not encode a frame");
    }
}

/// Response state of one request, shared by `start_response`, `write()` and the handler.
struct Out {
    status: Option<u16>,
    headers: Vec<(Bytes, Bytes)>,
    head_sent: bool,
    pending: BytesMut,
    stream: Arc<Stream>,
    link: Arc<Link>,
    /// HEAD request: the body is produced (side effects stay) but never sent.
    discard_body: bool,
    /// The application's `Content-Length`, if it gave one.
    declared: Option<u64>,
    /// Body bytes produced so far.
    produced: u64,
}

/// The client went away; stop producing output.
struct Cancelled;

impl Out {
    /// Whether `n` more bytes complete the body the application declared: the iterable
    /// then has nothing left to stream, and its last chunk can go with the response's end
    /// in one write instead of two (Flask and most frameworks return an iterator, not a
    /// list, even for a body they hold whole).
    fn completes_declared(&self, n: usize) -> bool {
        self.declared
            .is_some_and(|d| self.produced.saturating_add(n as u64) >= d)
    }

    fn flush(&mut self, py: Python<'_>) {
        if !self.pending.is_empty() {
            let buf = self.pending.split();
            let link = &self.link;
            link.write_hot(py, &buf);
        }
    }

    fn encode_head(&mut self, status: u16) -> PyResult<()> {
        let head = ResponseHead {
            status,
            headers: std::mem::take(&mut self.headers),
        };
        Frame::ResponseHead {
            stream: self.stream.id,
            head: Box::new(head),
        }
        .encode(&mut self.pending)
        .map_err(|e| PyValueError::new_err(format!("response head: {e}")))?;
        self.head_sent = true;
        Ok(())
    }

    /// Queues body bytes (sending the head first), waiting for response credit from the
    /// front when the client reads slower than the application writes.
    fn emit(
        &mut self,
        py: Python<'_>,
        mut data: &[u8],
        flush: bool,
    ) -> PyResult<Result<(), Cancelled>> {
        let Some(status) = self.status else {
            return Err(PyAssertionError::new_err(
                "response body produced before start_response() was called",
            ));
        };
        if data.is_empty() {
            return Ok(Ok(()));
        }
        self.produced = self.produced.saturating_add(data.len() as u64);
        if !self.head_sent {
            self.encode_head(status)?;
        }
        if self.discard_body {
            return Ok(Ok(()));
        }
        while !data.is_empty() {
            let n = match self.stream.take_credit(data.len().min(MAX_CHUNK)) {
                None => return Ok(Err(Cancelled)),
                Some(0) => {
                    // The client reads slower than we write: send what we have, then
                    // wait (GIL released) for the front to grant more.
                    self.flush(py);
                    let stream = &self.stream;
                    crate::gil::detach(py, || {
                        stream.wait_until(|st| {
                            (st.cancelled || st.response_credit.available() > 0).then_some(())
                        })
                    });
                    continue;
                }
                Some(n) => n,
            };
            encode_body(
                Kind::ResponseBody,
                self.stream.id,
                &data[..n],
                &mut self.pending,
            )
            .map_err(|e| PyValueError::new_err(format!("response body: {e}")))?;
            data = &data[n..];
        }
        if flush {
            self.flush(py);
        }
        Ok(Ok(()))
    }
}

/// The `start_response` callable (a bound method) and the `write` callable it returns.
#[pyclass(module = "spillway", frozen)]
pub struct Responder {
    out: Mutex<Out>,
}

impl Responder {
    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A header string from the application as latin-1 bytes.
fn header_bytes(s: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    let s = s.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!("header {what} must be str, got {}", s.get_type()))
    })?;
    // Nearly every header is ASCII: its UTF-8 view (borrowed, no Python object made) is
    // its latin-1 bytes.
    let text = s.to_str()?;
    if text.is_ascii() {
        return Ok(Bytes::copy_from_slice(text.as_bytes()));
    }
    // SAFETY: `s` is a live str; the call returns a new reference, or NULL with an
    // exception set, which from_owned_ptr_or_err turns into an error.
    let encoded = unsafe {
        Bound::from_owned_ptr_or_err(s.py(), pyo3::ffi::PyUnicode_AsLatin1String(s.as_ptr()))
    }
    .map_err(|_| PyValueError::new_err(format!("header {what} {s} is not latin-1 encodable")))?;
    let bytes = encoded
        .cast::<PyBytes>()
        .map_err(|_| PyTypeError::new_err("latin-1 encoding did not give bytes"))?;
    Ok(Bytes::copy_from_slice(bytes.as_bytes()))
}

/// The `Content-Length` among the application's headers, if one parses.
fn declared_length(headers: &[(Bytes, Bytes)]) -> Option<u64> {
    let (_, v) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(b"content-length"))?;
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(Bytes, Bytes)>> {
    let mut out = Vec::new();
    let mut limits = crate::head::HeaderBudget::default();
    for item in headers.try_iter()? {
        let item = item?;
        let pair = item
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "each header must be a (name, value) tuple",
            ));
        }
        let name = header_bytes(&pair.get_item(0)?, "name")?;
        let value = header_bytes(&pair.get_item(1)?, "value")?;
        limits.check(&name, &value).map_err(PyValueError::new_err)?;
        out.push((name, value));
    }
    Ok(out)
}

#[pymethods]
impl Responder {
    /// PEP 3333 `start_response(status, response_headers, exc_info=None)`.
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn start_response<'py>(
        slf: &Bound<'py, Self>,
        status: &str,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let me = slf.get();
            let out = me.out();
            if let Some(info) = exc_info {
                if out.head_sent {
                    // Too late to change the response: re-raise, as PEP 3333 requires.
                    let value = info.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
            } else if out.status.is_some() {
                return Err(PyAssertionError::new_err(
                    "start_response() called a second time without exc_info",
                ));
            }
        }
        let code = crate::head::parse_status(status).map_err(PyValueError::new_err)?;
        let headers = parse_headers(headers)?;
        {
            let me = slf.get();
            let mut out = me.out();
            out.status = Some(code);
            out.declared = declared_length(&headers);
            out.headers = headers;
        }
        slf.getattr(intern!(slf.py(), "write"))
    }

    /// The legacy `write(data)` callable: sends `data` at once.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!("write() takes bytes, not {}", data.get_type()))
        })?;
        match self.out().emit(py, bytes.as_bytes(), true)? {
            Ok(()) => Ok(()),
            Err(Cancelled) => Err(pyo3::exceptions::PyOSError::new_err("client disconnected")),
        }
    }
}

/// How the application's part of a request ended.
enum Outcome {
    Done,
    Cancelled,
    Failed(PyErr),
}

/// Serves one request on the calling Python thread; never raises.
pub(crate) fn serve(py: Python<'_>, ctx: &Ctx, job: Job) {
    let stream = job.stream.clone();
    stream.lock().running_on = Some(crate::abort::thread_ident());
    serve_request(py, ctx, job);
    crate::abort::finished(py, &stream);
}

fn serve_request(py: Python<'_>, ctx: &Ctx, job: Job) {
    let Job { stream, head } = job;
    let id = stream.id;
    if stream.is_cancelled() {
        // The client left while the request waited for a thread: never run it.
        let mut buf = BytesMut::new();
        put(&Frame::ResponseEnd { stream: id }, &mut buf);
        ctx.link.write_hot(py, &buf);
        ctx.link.remove(id);
        return;
    }
    let out = Out {
        status: None,
        headers: Vec::new(),
        head_sent: false,
        pending: BytesMut::with_capacity(256),
        stream: stream.clone(),
        link: ctx.link.clone(),
        discard_body: head.method.as_ref() == b"HEAD",
        declared: None,
        produced: 0,
    };
    let responder = match Bound::new(
        py,
        Responder {
            out: Mutex::new(out),
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            log_app_error(py, ctx, &head, &e);
            fail_before_head(py, ctx, id);
            return;
        }
    };
    let outcome = match call_app(py, ctx, &head, &stream, &responder) {
        Ok(o) => o,
        Err(e) => Outcome::Failed(e),
    };
    let r = responder.get();
    let mut out = r.out();
    match outcome {
        Outcome::Done => match out.status {
            Some(status) if !out.head_sent => {
                if let Err(e) = out.encode_head(status) {
                    log_app_error(py, ctx, &head, &e);
                    out.pending.clear();
                    encode_500(id, &mut out.pending);
                }
            }
            Some(_) => {}
            None => {
                let e = PyAssertionError::new_err(
                    "the application returned without calling start_response()",
                );
                log_app_error(py, ctx, &head, &e);
                out.pending.clear();
                encode_500(id, &mut out.pending);
            }
        },
        Outcome::Cancelled => out.pending.clear(),
        Outcome::Failed(e) => {
            log_app_error(py, ctx, &head, &e);
            if out.head_sent {
                // Part of the response is on its way: the only honest signal left is to
                // cut the connection, so the client cannot take it as complete.
                put(&Frame::ResponseAbort { stream: id }, &mut out.pending);
                out.flush(py);
                ctx.link.remove(id);
                return;
            }
            out.pending.clear();
            encode_500(id, &mut out.pending);
        }
    }
    put(&Frame::ResponseEnd { stream: id }, &mut out.pending);
    let last = out.pending.split();
    drop(out);
    ctx.link.write_end(py, &last, ctx.pool.may_hold_response());
    ctx.link.remove(id);
}

fn encode_500(stream: u32, dst: &mut BytesMut) {
    let head = Frame::ResponseHead {
        stream,
        head: Box::new(ResponseHead {
            status: 500,
            headers: vec![
                (
                    Bytes::from_static(b"Content-Type"),
                    Bytes::from_static(b"text/plain; charset=utf-8"),
                ),
                (
                    Bytes::from_static(b"Content-Length"),
                    Bytes::from(ERROR_BODY.len().to_string()),
                ),
            ],
        }),
    };
    put(&head, dst);
    put(
        &Frame::ResponseBody {
            stream,
            data: Bytes::from_static(ERROR_BODY),
        },
        dst,
    );
}

fn fail_before_head(py: Python<'_>, ctx: &Ctx, stream: u32) {
    let mut buf = BytesMut::new();
    encode_500(stream, &mut buf);
    put(&Frame::ResponseEnd { stream }, &mut buf);
    let link = &ctx.link;
    link.write_hot(py, &buf);
    ctx.link.remove(stream);
}

/// Calls the application, iterates its result and always calls `close()` if it exists.
fn call_app(
    py: Python<'_>,
    ctx: &Ctx,
    head: &spillway_proto::RequestHead,
    stream: &Arc<Stream>,
    responder: &Bound<'_, Responder>,
) -> PyResult<Outcome> {
    let input = Bound::new(
        py,
        Input::new(stream.clone(), ctx.link.clone(), head.expect_continue),
    )?;
    let environ = environ::build(py, ctx, head, input)?;
    let start_response = responder.getattr(intern!(py, "start_response"))?;
    let result = ctx.app.bind(py).call1((environ, start_response));
    leave_if_forked();
    let result = result?;
    let iterated = iterate(py, responder, &result);
    leave_if_forked();
    // A list or tuple has no close(); asking would raise (and format) an AttributeError
    // per request on Pythons before 3.13.
    let plain = result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>();
    let closed = match if plain {
        Ok(None)
    } else {
        result.getattr_opt(intern!(py, "close"))
    } {
        Ok(Some(close)) => close.call0().map(|_| ()),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    match (iterated, closed) {
        (Err(e), Err(close_err)) => {
            log_app_error(py, ctx, head, &close_err);
            Ok(Outcome::Failed(e))
        }
        (Err(e), Ok(())) | (Ok(Outcome::Done), Err(e)) => Ok(Outcome::Failed(e)),
        (Ok(o), Err(close_err)) => {
            log_app_error(py, ctx, head, &close_err);
            Ok(o)
        }
        (Ok(o), Ok(())) => Ok(o),
    }
}

fn iterate(
    py: Python<'_>,
    responder: &Bound<'_, Responder>,
    result: &Bound<'_, PyAny>,
) -> PyResult<Outcome> {
    // A list or tuple is already complete: no need to flush between items.
    let flush_each =
        !(result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>());
    let r = responder.get();
    for item in result.try_iter()? {
        let item = item?;
        let bytes = item.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "the application's iterable yielded {}, but WSGI bodies are bytes",
                item.get_type()
            ))
        })?;
        let mut out = r.out();
        let flush = flush_each && !out.completes_declared(bytes.as_bytes().len());
        if let Err(Cancelled) = out.emit(py, bytes.as_bytes(), flush)? {
            return Ok(Outcome::Cancelled);
        }
    }
    if r.out().stream.is_cancelled() {
        return Ok(Outcome::Cancelled);
    }
    Ok(Outcome::Done)
}

/// A process the application forked (`os.fork()` without exec) that returns from the
/// application into this worker's machinery: it must not answer on the worker's socket,
/// and it has none of the worker's threads to wait for. It leaves at once. (Checked with a
/// flag set in the fork's child rather than `getpid()`: that was two syscalls per request.)
fn leave_if_forked() {
    if crate::forked::in_child() {
        // SAFETY: _exit ends this (forked) process without running the parent's atexit
        // handlers or flushing buffers that belong to the parent.
        unsafe { libc::_exit(0) }
    }
}

/// Logs why a request failed: an application exception with its Python traceback; a
/// client that went away or broke its body, or an interruption at `--timeout`, in one
/// line. The request's fields are escaped: the path is the client's, and a newline in it
/// must not start a forged line.
pub(crate) fn log_app_error(
    py: Python<'_>,
    ctx: &Ctx,
    head: &spillway_proto::RequestHead,
    e: &PyErr,
) {
    let (method, path) = (&head.method[..], &head.path_info[..]);
    // The front puts the request id last.
    let request_id = match head.headers.last() {
        Some((k, v)) if k.as_ref() == b"HTTP_X_REQUEST_ID" => escape(v),
        _ => String::new(),
    };
    // Failures that are not the application's: one WARN line (rate-limited for clients),
    // no traceback.
    let expected = match crate::abort::cause(py, e) {
        crate::abort::Cause::Application => None,
        crate::abort::Cause::Client => Some((
            crate::abort::may_log_client_failure(),
            "the client went away or broke its request body while the application read it (logged at most once a second)",
        )),
        crate::abort::Cause::Timeout => Some((
            true,
            "request interrupted: it ran past --timeout (the client got 504); its thread is free again",
        )),
    };
    if let Some((log, what)) = expected {
        if log {
            tracing::warn!(
                worker = ctx.pid,
                method = %escape(method),
                path = %escape(path),
                request_id = %request_id,
                "{what}"
            );
        }
        return;
    }
    let text = crate::traceback(py, ctx.format_exception.bind(py), e);
    // The fields go in the first line (the one operators grep); the traceback follows.
    tracing::error!(
        "application error worker={} method={} path={} request_id={}{}",
        ctx.pid,
        escape(method),
        escape(path),
        request_id,
        crate::errors::indent_traceback(&text),
    );
}

/// Bytes a client sent, for a log line: printable ASCII as is, everything else escaped.
pub(crate) fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}
