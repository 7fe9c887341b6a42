//! The access log: one line per finished request, with the numbers an operator needs under
//! stress (time in the admission queue, total time, which worker and generation served it).
//!
//! Lines are formatted and written by a thread of their own through a buffered writer, so
//! the event loop never blocks on `write(2)` to a slow disk or a full pipe; the buffer is
//! flushed whenever the thread has nothing more queued, and at shutdown every queued line
//! is written before the server exits. If the disk falls so far behind that the queue
//! fills, further lines are counted and dropped (with a warning), not waited for.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::AccessLog;

/// Lines queued for the writer thread before new ones are dropped.
const QUEUE: usize = 64 * 1024;

/// What is known about a request when its response finishes.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    pub client: String,
    /// `METHOD target HTTP/1.x`.
    pub request_line: String,
    pub started: Instant,
    pub status: u16,
    pub queued: Duration,
    pub worker: u32,
    pub generation: u64,
    pub bytes: u64,
}

enum Msg {
    Line(AccessRecord, Duration),
    Stop,
}

/// Writes access log lines to stdout or a file, from a thread of its own.
pub(crate) struct AccessLogger {
    tx: SyncSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    dropped: AtomicU64,
    /// When a drop was last reported (ms since `epoch`), so the warning is rate-limited.
    warned_ms: AtomicU64,
    epoch: Instant,
}

impl AccessLogger {
    /// Opens the destination (a file is appended to, created if missing) and starts the
    /// writer thread.
    pub fn open(target: &AccessLog) -> io::Result<AccessLogger> {
        let out: Box<dyn Write + Send> = match target {
            AccessLog::Stdout => Box::new(io::stdout()),
            AccessLog::File(p) => Box::new(OpenOptions::new().create(true).append(true).open(p)?),
        };
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, BufWriter::with_capacity(64 * 1024, out)))?;
        Ok(AccessLogger {
            tx,
            thread: Mutex::new(Some(thread)),
            dropped: AtomicU64::new(0),
            warned_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Logs one finished request (never blocks).
    pub fn write(&self, r: AccessRecord) {
        let total = r.started.elapsed();
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(r, total)) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = self.epoch.elapsed().as_millis() as u64;
            let last = self.warned_ms.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000
                && self
                    .warned_ms
                    .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    dropped_total = n,
                    "access log cannot keep up (slow disk or pipe); lines are being dropped"
                );
            }
        }
    }

    /// Writes every queued line and stops the writer thread.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Stop);
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn write_lines(rx: Receiver<Msg>, mut out: BufWriter<Box<dyn Write + Send>>) {
    let mut failed = false;
    let mut line = String::with_capacity(256);
    loop {
        // Block for the next line, then take whatever else is queued before flushing: a
        // busy server writes in large batches, a quiet one line by line.
        let mut msg = rx.recv().ok();
        loop {
            match msg {
                Some(Msg::Line(r, total)) => {
                    line.clear();
                    format_line(&mut line, &r, total);
                    if let Err(e) = out.write_all(line.as_bytes()) {
                        report(&mut failed, &e);
                    }
                }
                Some(Msg::Stop) | None => {
                    if let Err(e) = out.flush() {
                        report(&mut failed, &e);
                    }
                    return;
                }
            }
            msg = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            };
        }
        if let Err(e) = out.flush() {
            report(&mut failed, &e);
        }
    }
}

/// A full disk must not take requests down with it; the error log says why, once.
fn report(failed: &mut bool, e: &io::Error) {
    if !*failed {
        tracing::warn!(error = %e, "access log write failed");
        *failed = true;
    }
}

fn format_line(out: &mut String, r: &AccessRecord, total: Duration) {
    use std::fmt::Write as _;
    push_escaped(out, &r.client);
    out.push_str(" \"");
    push_escaped(out, &r.request_line);
    let _ = writeln!(
        out,
        "\" {} {} {:.3}ms queue={:.3}ms worker={} generation={}",
        r.status,
        r.bytes,
        total.as_secs_f64() * 1e3,
        r.queued.as_secs_f64() * 1e3,
        r.worker,
        r.generation,
    );
}

/// Appends what a client sent as Apache does: `"` and `\` backslashed, bytes outside
/// printable ASCII as `\xhh`, so no value can end its field or start a forged line.
fn push_escaped(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u16) -> AccessRecord {
        AccessRecord {
            client: "127.0.0.1:5000".into(),
            request_line: "GET /x HTTP/1.1".into(),
            started: Instant::now(),
            status,
            queued: Duration::from_micros(1500),
            worker: 42,
            generation: 3,
            bytes: 12,
        }
    }

    #[test]
    fn a_line_has_every_field() {
        let mut s = String::new();
        format_line(&mut s, &record(200), Duration::from_millis(2));
        assert_eq!(
            s,
            "127.0.0.1:5000 \"GET /x HTTP/1.1\" 200 12 2.000ms queue=1.500ms worker=42 generation=3\n"
        );
    }

    #[test]
    fn what_a_client_sent_cannot_end_a_field_or_a_line() {
        let mut r = record(400);
        r.request_line = "GET /a\"b\\c\n2026 INFO \u{e9} HTTP/1.1".into();
        let mut s = String::new();
        format_line(&mut s, &r, Duration::from_millis(2));
        assert_eq!(s.lines().count(), 1, "{s}");
        assert!(
            s.contains(r#""GET /a\"b\\c\x0a2026 INFO \xc3\xa9 HTTP/1.1""#),
            "{s}"
        );
    }

    #[test]
    fn every_queued_line_is_written_at_shutdown() {
        let dir = std::env::temp_dir().join(format!("spillway-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log = AccessLogger::open(&AccessLog::File(path.clone())).unwrap();
        for i in 0..5000 {
            log.write(record(200 + (i % 3)));
        }
        log.shutdown();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5000);
        assert!(text.lines().all(|l| l.ends_with("generation=3")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
