//! `wsgi.errors`: application error output, written to the server log one line per event
//! with the worker's pid.

use std::borrow::Cow;
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
        tracing::warn!(target: "wsgi.errors", worker = self.pid, "{}", escape_controls(line));
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
            self.write(&line?.extract::<String>()?);
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

/// `s` with control characters (a carriage return, an escape sequence) written as
/// `\u{…}`: text an application logs may hold what a client sent, and must not rewrite
/// or fake what a terminal or a log reader shows.
pub(crate) fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// A Python traceback for the log, every line indented and its control characters
/// escaped: a message that holds a newline (an exception about a client's input) cannot
/// start a line that looks like the server's own.
pub(crate) fn indent_traceback(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.trim_end().split('\n') {
        out.push_str("\n    ");
        out.push_str(&escape_controls(line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("plain é"), "plain é");
        assert_eq!(escape_controls("a\rb\x1b[2J"), "a\\u{d}b\\u{1b}[2J");
    }

    #[test]
    fn every_traceback_line_is_indented() {
        let tb =
            "Traceback (most recent call last):\n  File \"x\"\nValueError: /x\n2026 INFO forged\n";
        let out = indent_traceback(tb);
        assert!(out.lines().skip(1).all(|l| l.starts_with("    ")), "{out}");
        assert_eq!(out.lines().count(), 5, "{out}");
    }
}
