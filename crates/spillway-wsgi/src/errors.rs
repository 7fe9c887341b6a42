//! `wsgi.errors`: application error output, written to the server log one line per event
//! with the worker's pid.

use std::sync::Mutex;

use pyo3::prelude::*;

/// The `wsgi.errors` stream, shared by every request of a worker.
#[pyclass(module = "spillway", frozen)]
pub struct ErrorStream {
    partial: Mutex<String>,
    pid: u32,
}

impl ErrorStream {
    /// A stream that logs as worker `pid`.
    pub fn new(pid: u32) -> ErrorStream {
        ErrorStream {
            partial: Mutex::new(String::new()),
            pid,
        }
    }

    fn emit(&self, line: &str) {
        tracing::warn!(target: "wsgi.errors", worker = self.pid, "{}", line);
    }
}

#[pymethods]
impl ErrorStream {
    /// Buffers text; every complete line is logged.
    fn write(&self, s: &str) {
        let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
        partial.push_str(s);
        while let Some(pos) = partial.find('\n') {
            let line: String = partial.drain(..=pos).collect();
            self.emit(line.trim_end_matches(['\n', '\r']));
        }
    }

    /// Writes each string of an iterable.
    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(line?.extract::<&str>()?);
        }
        Ok(())
    }

    /// Logs a pending partial line.
    fn flush(&self) {
        let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
        if !partial.is_empty() {
            let line = std::mem::take(&mut *partial);
            self.emit(&line);
        }
    }
}
