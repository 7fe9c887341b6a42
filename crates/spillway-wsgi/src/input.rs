//! `wsgi.input`: the request body as a blocking file-like object, fed by body frames.
//! Credit is granted to the front only when the application reads, so an application
//! that never reads `wsgi.input` never causes a `100 Continue` and never buffers a body.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use spillway_proto::{Frame, RecvWindow, INITIAL_REQUEST_WINDOW, REQUEST_WINDOW};

use crate::conn::{Link, Stream};

/// What one wait on the stream produced.
enum Fill {
    Data,
    Eof,
    Cancelled,
}

/// The `wsgi.input` object.
#[pyclass(module = "spillway")]
pub struct Input {
    stream: Arc<Stream>,
    link: Arc<Link>,
    buf: BytesMut,
    /// Body credit granted to the front and not yet used.
    window: RecvWindow,
    eof: bool,
}

impl Input {
    /// A reader for one request; `expect_continue` requests start with no credit.
    pub(crate) fn new(stream: Arc<Stream>, link: Arc<Link>, expect_continue: bool) -> Input {
        Input {
            stream,
            link,
            buf: BytesMut::new(),
            window: RecvWindow::new(
                REQUEST_WINDOW,
                if expect_continue {
                    0
                } else {
                    INITIAL_REQUEST_WINDOW
                },
            ),
            eof: false,
        }
    }

    /// Waits for the next body chunk (GIL released); false at the end of the body.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if self.eof {
            return Ok(false);
        }
        if !self.stream.lock().body_done {
            if let Some(bytes) = self.window.replenish() {
                let frame = Frame::BodyCredit {
                    stream: self.stream.id,
                    bytes,
                };
                let link = &self.link;
                crate::gil::detach(py, || link.send(&frame));
            }
        }
        let stream = &self.stream;
        let buf = &mut self.buf;
        let got = crate::gil::detach(py, || {
            stream.wait_until(|st| {
                if st.cancelled {
                    return Some((Fill::Cancelled, 0));
                }
                if let Some(chunk) = st.body.pop_front() {
                    buf.extend_from_slice(&chunk);
                    return Some((Fill::Data, chunk.len()));
                }
                if st.body_done {
                    return Some((Fill::Eof, 0));
                }
                None
            })
        });
        match got {
            (Fill::Data, n) => {
                // More than was granted: the front broke the credit rules.
                self.window.received(n).map_err(|e| {
                    pyo3::exceptions::PyOSError::new_err(format!("request body: {e}"))
                })?;
                Ok(true)
            }
            (Fill::Eof, _) => {
                self.eof = true;
                Ok(false)
            }
            (Fill::Cancelled, _) => Err(crate::abort::client_gone(
                py,
                "client disconnected before the request body was complete",
            )),
        }
    }

    fn take<'py>(&mut self, py: Python<'py>, n: usize) -> Bound<'py, PyBytes> {
        let n = n.min(self.buf.len());
        let out = PyBytes::new(py, &self.buf[..n]);
        self.buf.advance(n);
        out
    }

    fn read_line<'py>(
        &mut self,
        py: Python<'py>,
        limit: Option<usize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut scanned = 0;
        loop {
            let window = limit.map_or(self.buf.len(), |l| l.min(self.buf.len()));
            if let Some(pos) = self.buf[scanned..window].iter().position(|&b| b == b'\n') {
                return Ok(self.take(py, scanned + pos + 1));
            }
            if limit.is_some_and(|l| self.buf.len() >= l) {
                return Ok(self.take(py, window));
            }
            scanned = window;
            if !self.fill(py)? {
                let n = self.buf.len();
                return Ok(self.take(py, n));
            }
        }
    }
}

/// Negative or missing sizes mean "no limit", as for io objects.
fn limit(size: Option<isize>) -> Option<usize> {
    match size {
        Some(n) if n >= 0 => Some(n as usize),
        _ => None,
    }
}

#[pymethods]
impl Input {
    /// `read(size=-1)`: up to `size` bytes, fewer only at the end of the body.
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        match limit(size) {
            Some(n) => {
                while self.buf.len() < n && self.fill(py)? {}
                Ok(self.take(py, n))
            }
            None => {
                while self.fill(py)? {}
                let n = self.buf.len();
                Ok(self.take(py, n))
            }
        }
    }

    /// `readline(size=-1)`: through the next `\n`, at most `size` bytes.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.read_line(py, limit(size))
    }

    /// `readlines(hint=-1)`: lines until the body ends or `hint` bytes were read.
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.read_line(py, None)?;
            let n = line.as_bytes().len();
            if n == 0 {
                break;
            }
            lines.append(line)?;
            total += n;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.read_line(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
